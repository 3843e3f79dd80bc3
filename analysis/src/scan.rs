//! Stage 1: the Parquet dataset → integer [`Chunk`]s, one per `date=` partition.
//!
//! Only the columns the analyses (and the filter) need are read (projection); partitions
//! outside `--from/--to` are skipped without opening their files (pruning). String columns
//! are read as Arrow dictionaries, and each dictionary value is mapped to a *global* id once
//! per batch: dictionary codes differ between files and row groups, and mixing them up is a
//! classic source of wrong distinct counts. Rows the filter rejects are dropped here, so later
//! stages only see kept rows.
//!
//! A process lives in exactly one partition (the daemon partitions by `process_start`), so
//! process ids are local to a chunk; back ends that need global ones add an offset.
use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use arrow_array::{
    cast::AsArray, types::Int32Type, Array, ArrayRef, BooleanArray, Int32Array, RecordBatch,
    TimestampMicrosecondArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::{
    arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder},
    ProjectionMask,
};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::filter::Filter;

/// Errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A file or directory could not be read or has an unexpected shape.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Row flags.
pub mod flag {
    /// Kept by the filter for job-based tables (paper: compute nodes only).
    pub const KEEP_JOB: u8 = 1;
    /// The record belongs to a job.
    pub const HAS_JOB: u8 = 2;
    /// The process ended by a signal.
    pub const SIGNALED: u8 = 4;
    /// The package is numpy or scipy (BLAS table).
    pub const NUMPYISH: u8 = 8;
    /// The version is known.
    pub const HAS_VERSION: u8 = 16;
    /// The environment kind is not `stdlib`.
    pub const NON_STDLIB: u8 = 32;
}

/// No value (job, version, BLAS).
pub const NONE: u32 = u32::MAX;
/// No job.
pub const NO_JOB: u64 = u64::MAX;
/// Node counts are clamped below this (no machine has 65,535 nodes; the bound keeps the
/// job-size histogram dense on both back ends).
pub const MAX_NODES: u32 = 1 << 16;

/// Strings ↔ dense ids.
#[derive(Debug, Default)]
pub struct Interner {
    map: FxHashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    /// The id of `s`, assigning the next one if new.
    pub fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.map.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.map.insert(s.to_owned(), i);
        self.names.push(s.to_owned());
        i
    }

    /// The id of `s`, if known.
    pub fn get(&self, s: &str) -> Option<u32> {
        self.map.get(s).copied()
    }

    /// The string of an id.
    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    /// Number of distinct strings.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Global ids of every string column, shared by all partitions of one run.
#[derive(Debug, Default)]
pub struct Names {
    /// Packages.
    pub packages: Mutex<Interner>,
    /// Users (`username`, else `uid:<n>`).
    pub users: Mutex<Interner>,
    /// (package, version) pairs as `package\0version`.
    pub versions: Mutex<Interner>,
    /// Environment kinds.
    pub env_kinds: Mutex<Interner>,
    /// BLAS backends.
    pub blases: Mutex<Interner>,
    /// Hosts.
    pub hosts: Mutex<Interner>,
    /// Job ids that are not plain numbers (`123_4` array tasks, `123+1` het jobs).
    pub odd_jobs: Mutex<Interner>,
}

/// The kept rows of one partition as integer columns.
#[derive(Debug, Default, Clone)]
pub struct Chunk {
    /// `year * 12 + month0` of `process_start` (UTC).
    pub month: Vec<u16>,
    /// Package id.
    pub package: Vec<u32>,
    /// User id.
    pub user: Vec<u32>,
    /// Job key: the numeric job id, or `1 << 63 | odd id`; [`NO_JOB`] outside a job.
    pub job: Vec<u64>,
    /// Process id, local to this chunk.
    pub process: Vec<u32>,
    /// Nodes of the job, below [`MAX_NODES`].
    pub nodes: Vec<u32>,
    /// (package, version) id or [`NONE`].
    pub version: Vec<u32>,
    /// Environment kind id.
    pub env_kind: Vec<u32>,
    /// BLAS id or [`NONE`].
    pub blas: Vec<u32>,
    /// [`flag`] bits.
    pub flags: Vec<u8>,
    /// Distinct processes in the chunk.
    pub processes: u32,
}

impl Chunk {
    /// Rows.
    pub fn len(&self) -> usize {
        self.package.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.package.is_empty()
    }
}

/// `year * 12 + month0` of a µs timestamp (UTC).
pub fn month_of(us: i64) -> u16 {
    use chrono::Datelike;
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| (t.year().clamp(0, 5000) as u32 * 12 + t.month0()) as u16)
        .unwrap_or(0)
}

/// Histogram bin of a node count: 0 for 1 node, k for (2^(k-1), 2^k].
pub fn node_bin(nodes: u32) -> u32 {
    32 - nodes.max(1).saturating_sub(1).leading_zeros()
}

/// Number of node bins.
pub const NODE_BINS: u32 = 17;

/// What to read: where, which dates, which rows.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Dataset root (`date=YYYY-MM-DD/*.parquet`).
    pub root: PathBuf,
    /// First date, inclusive.
    pub from: Option<String>,
    /// Last date, inclusive.
    pub to: Option<String>,
    /// `--filter`; `None` applies the paper's defaults (staff excluded everywhere, compute
    /// nodes only for job-based tables).
    pub filter: Option<Filter>,
}

/// The partitions to read, each with its files, in date order.
pub fn partitions(sel: &Selection) -> Result<Vec<(String, Vec<PathBuf>)>, ScanError> {
    let err = |path: &Path, m: &dyn std::fmt::Display| ScanError::Read {
        path: path.to_path_buf(),
        message: m.to_string(),
    };
    let mut out = Vec::new();
    for part in std::fs::read_dir(&sel.root).map_err(|e| err(&sel.root, &e))? {
        let part = part.map_err(|e| err(&sel.root, &e))?;
        let name = part.file_name().to_string_lossy().into_owned();
        let Some(date) = name.strip_prefix("date=") else {
            continue;
        };
        if sel.from.as_deref().is_some_and(|f| date < f)
            || sel.to.as_deref().is_some_and(|t| date > t)
        {
            continue;
        }
        let mut files = Vec::new();
        for f in std::fs::read_dir(part.path()).map_err(|e| err(&part.path(), &e))? {
            let f = f.map_err(|e| err(&part.path(), &e))?.path();
            let hidden = f
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if f.extension().is_some_and(|e| e == "parquet") && !hidden {
                files.push(f);
            }
        }
        files.sort();
        out.push((date.to_owned(), files));
    }
    out.sort();
    Ok(out)
}

/// Reads the partitions `parts` (from [`partitions`]) in parallel and hands each chunk to
/// `sink` (from the worker threads); `progress` is called once per partition done.
pub fn scan(
    sel: &Selection,
    parts: &[(String, Vec<PathBuf>)],
    names: &Names,
    sink: &(dyn Fn(Chunk) + Sync),
    progress: &(dyn Fn() + Sync),
) -> Result<(), ScanError> {
    parts.par_iter().try_for_each(|(_, files)| {
        let mut chunk = Chunk::default();
        let mut procs = FxHashMap::default();
        for f in files {
            read_file(f, sel, names, &mut chunk, &mut procs)?;
        }
        chunk.processes = procs.len() as u32;
        sink(chunk);
        progress();
        Ok(())
    })
}

const COLUMNS: &[&str] = &[
    "package",
    "username",
    "uid",
    "job_id",
    "host",
    "pid",
    "process_start",
    "num_nodes",
    "is_staff",
    "is_compute",
    "version",
    "env_kind",
    "blas",
    "exit",
];

fn read_file(
    f: &Path,
    sel: &Selection,
    names: &Names,
    chunk: &mut Chunk,
    procs: &mut FxHashMap<(u32, i32, i64), u32>,
) -> Result<(), ScanError> {
    let err = |m: &dyn std::fmt::Display| ScanError::Read {
        path: f.to_path_buf(),
        message: m.to_string(),
    };
    let open = || File::open(f).map_err(|e| err(&e));
    // Ask for string columns as dictionaries (codes + a small values array per batch).
    let plain = ParquetRecordBatchReaderBuilder::try_new(open()?).map_err(|e| err(&e))?;
    let hint = Schema::new_with_metadata(
        plain
            .schema()
            .fields()
            .iter()
            .map(|fl| match fl.data_type() {
                DataType::Utf8 => Arc::new(Field::new(
                    fl.name(),
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    fl.is_nullable(),
                )),
                _ => fl.clone(),
            })
            .collect::<Vec<_>>(),
        plain.schema().metadata().clone(),
    );
    drop(plain);
    let b = ParquetRecordBatchReaderBuilder::try_new_with_options(
        open()?,
        ArrowReaderOptions::new().with_schema(Arc::new(hint)),
    )
    .map_err(|e| err(&e))?;
    let mut cols: Vec<&str> = COLUMNS.to_vec();
    if let Some(fl) = &sel.filter {
        cols.extend(fl.fields());
    }
    for c in &cols {
        if b.schema().field_with_name(c).is_err() {
            return Err(err(&format!("no column {c}")));
        }
    }
    let mask = ProjectionMask::columns(b.parquet_schema(), cols.iter().copied());
    let reader = b
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| err(&e))?;
    for batch in reader {
        let batch = batch.map_err(|e| err(&e))?;
        decode(&batch, sel.filter.as_ref(), names, chunk, procs).map_err(|m| err(&m))?;
    }
    Ok(())
}

/// A string column as per-row codes into a small list of values (`NONE` for null).
struct Codes<'a> {
    codes: Vec<u32>,
    values: Vec<&'a str>,
}

fn codes<'a>(b: &'a RecordBatch, name: &str) -> Result<Codes<'a>, String> {
    let col: &ArrayRef = b
        .column_by_name(name)
        .ok_or_else(|| format!("column {name} missing"))?;
    if let Some(d) = col.as_dictionary_opt::<Int32Type>() {
        let values = d
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("column {name}: dictionary of non-strings"))?;
        let values: Vec<&str> = (0..values.len()).map(|i| values.value(i)).collect();
        let keys = d.keys();
        let codes = (0..keys.len())
            .map(|i| {
                if keys.is_null(i) {
                    NONE
                } else {
                    keys.value(i) as u32
                }
            })
            .collect();
        return Ok(Codes { codes, values });
    }
    let s = col
        .as_string_opt::<i32>()
        .ok_or_else(|| format!("column {name}: expected strings, found {}", col.data_type()))?;
    let mut map: FxHashMap<&str, u32> = FxHashMap::default();
    let mut values = Vec::new();
    let codes = (0..s.len())
        .map(|i| {
            if s.is_null(i) {
                return NONE;
            }
            let v = s.value(i);
            *map.entry(v).or_insert_with(|| {
                values.push(v);
                values.len() as u32 - 1
            })
        })
        .collect();
    Ok(Codes { codes, values })
}

/// Maps a batch's local codes to global ids, once per distinct value.
fn global(c: &Codes<'_>, interner: &Mutex<Interner>) -> Vec<u32> {
    let mut g = interner.lock().expect("interner lock");
    c.values.iter().map(|v| g.id(v)).collect()
}

fn typed<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, String> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| format!("column {name} missing or of an unexpected type"))
}

/// Evaluates `--filter` on a batch.
fn keep_rows(b: &RecordBatch, f: &Filter) -> Result<Vec<bool>, String> {
    let n = b.num_rows();
    let mut any = vec![false; n];
    for conj in &f.any {
        let mut all = vec![true; n];
        for cmp in conj {
            let col = b
                .column_by_name(&cmp.field)
                .ok_or_else(|| format!("column {} missing", cmp.field))?;
            if let Some(bools) = col.as_boolean_opt() {
                for (i, a) in all.iter_mut().enumerate() {
                    let v =
                        (!bools.is_null(i)).then(|| if bools.value(i) { "true" } else { "false" });
                    *a &= cmp.matches(v);
                }
            } else if matches!(col.data_type(), DataType::Dictionary(..) | DataType::Utf8) {
                let c = codes(b, &cmp.field)?;
                let hit: Vec<bool> = c.values.iter().map(|v| cmp.matches(Some(v))).collect();
                let null = cmp.matches(None);
                for (a, &code) in all.iter_mut().zip(&c.codes) {
                    *a &= if code == NONE {
                        null
                    } else {
                        hit[code as usize]
                    };
                }
            } else {
                let text = arrow_cast_display(col)?;
                for (a, v) in all.iter_mut().zip(&text) {
                    *a &= cmp.matches(v.as_deref());
                }
            }
        }
        for (x, a) in any.iter_mut().zip(all) {
            *x |= a;
        }
    }
    Ok(any)
}

/// Decimal text of an integer column.
fn arrow_cast_display(col: &ArrayRef) -> Result<Vec<Option<String>>, String> {
    let text = |i: usize, v: String| (!col.is_null(i)).then_some(v);
    if let Some(a) = col.as_any().downcast_ref::<UInt32Array>() {
        return Ok((0..a.len())
            .map(|i| text(i, a.value(i).to_string()))
            .collect());
    }
    if let Some(a) = col.as_any().downcast_ref::<Int32Array>() {
        return Ok((0..a.len())
            .map(|i| text(i, a.value(i).to_string()))
            .collect());
    }
    Err(format!(
        "cannot filter on a column of type {}",
        col.data_type()
    ))
}

fn decode(
    b: &RecordBatch,
    filter: Option<&Filter>,
    names: &Names,
    out: &mut Chunk,
    procs: &mut FxHashMap<(u32, i32, i64), u32>,
) -> Result<(), String> {
    let n = b.num_rows();
    let staff = typed::<BooleanArray>(b, "is_staff")?;
    let compute = typed::<BooleanArray>(b, "is_compute")?;
    let keep: Vec<bool> = match filter {
        Some(f) => keep_rows(b, f)?,
        None => (0..n).map(|i| !staff.value(i)).collect(),
    };
    let package = codes(b, "package")?;
    let username = codes(b, "username")?;
    let job = codes(b, "job_id")?;
    let host = codes(b, "host")?;
    let version = codes(b, "version")?;
    let env = codes(b, "env_kind")?;
    let blas = codes(b, "blas")?;
    let exit = codes(b, "exit")?;
    let uid = typed::<UInt32Array>(b, "uid")?;
    let pid = typed::<Int32Array>(b, "pid")?;
    let start = typed::<TimestampMicrosecondArray>(b, "process_start")?;
    let nodes = typed::<UInt32Array>(b, "num_nodes")?;

    let g_pkg = global(&package, &names.packages);
    let g_user = global(&username, &names.users);
    let g_host = global(&host, &names.hosts);
    let g_env = global(&env, &names.env_kinds);
    let g_blas = global(&blas, &names.blases);
    let signaled: Vec<bool> = exit.values.iter().map(|v| *v == "signaled").collect();
    let stdlib: Vec<bool> = env.values.iter().map(|v| *v == "stdlib").collect();
    let numpyish: Vec<bool> = package
        .values
        .iter()
        .map(|v| *v == "numpy" || *v == "scipy")
        .collect();
    // A job id is a number almost always: use it directly, intern the rest.
    let g_job: Vec<u64> = {
        let mut odd = None;
        job.values
            .iter()
            .map(|v| match v.parse::<u64>() {
                Ok(x) if x < 1 << 63 => x,
                _ => {
                    let o = odd.get_or_insert_with(|| names.odd_jobs.lock().expect("lock"));
                    1 << 63 | o.id(v) as u64
                }
            })
            .collect()
    };
    let mut uid_users: FxHashMap<u32, u32> = FxHashMap::default();
    let mut versions: FxHashMap<(u32, u32), u32> = FxHashMap::default();
    let (mut last_day, mut last_month) = (i64::MIN, 0u16);
    let mut last_proc = ((u32::MAX, 0i32, 0i64), 0u32);
    for i in 0..n {
        if !keep[i] {
            continue;
        }
        let p = g_pkg[package.codes[i] as usize];
        let user = match username.codes[i] {
            NONE => *uid_users.entry(uid.value(i)).or_insert_with(|| {
                names
                    .users
                    .lock()
                    .expect("lock")
                    .id(&format!("uid:{}", uid.value(i)))
            }),
            c => g_user[c as usize],
        };
        let s = start.value(i);
        let day = s.div_euclid(86_400_000_000);
        if day != last_day {
            last_day = day;
            last_month = month_of(s);
        }
        let key = (g_host[host.codes[i] as usize], pid.value(i), s);
        if key != last_proc.0 {
            let next = procs.len() as u32;
            last_proc = (key, *procs.entry(key).or_insert(next));
        }
        let v = match version.codes[i] {
            NONE => NONE,
            c => *versions.entry((p, c)).or_insert_with(|| {
                let name = format!(
                    "{}\0{}",
                    package.values[package.codes[i] as usize], version.values[c as usize]
                );
                names.versions.lock().expect("lock").id(&name)
            }),
        };
        let j = match job.codes[i] {
            NONE => NO_JOB,
            c => g_job[c as usize],
        };
        let e = env.codes[i];
        let bl = blas.codes[i];
        let mut fl = 0;
        if filter.is_some() || compute.value(i) {
            fl |= flag::KEEP_JOB;
        }
        if j != NO_JOB {
            fl |= flag::HAS_JOB;
        }
        if exit.codes[i] != NONE && signaled[exit.codes[i] as usize] {
            fl |= flag::SIGNALED;
        }
        if numpyish[package.codes[i] as usize] {
            fl |= flag::NUMPYISH;
        }
        if v != NONE {
            fl |= flag::HAS_VERSION;
        }
        if e != NONE && !stdlib[e as usize] {
            fl |= flag::NON_STDLIB;
        }
        out.month.push(last_month);
        out.package.push(p);
        out.user.push(user);
        out.job.push(j);
        out.process.push(last_proc.1);
        out.nodes.push(nodes.value(i).min(MAX_NODES - 1));
        out.version.push(v);
        out.env_kind
            .push(if e == NONE { NONE } else { g_env[e as usize] });
        out.blas.push(if bl == NONE {
            NONE
        } else {
            g_blas[bl as usize]
        });
        out.flags.push(fl);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_bins_are_powers_of_two() {
        let bins: Vec<u32> = [1, 2, 3, 4, 5, 8, 9, 1024, 1025, 4096, 65535]
            .iter()
            .map(|&n| node_bin(n))
            .collect();
        assert_eq!(bins, [0, 1, 2, 2, 3, 3, 4, 10, 11, 12, 16]);
        assert_eq!(node_bin(0), 0);
        assert!(node_bin(MAX_NODES - 1) < NODE_BINS);
    }
}
