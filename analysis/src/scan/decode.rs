//! One Arrow batch → rows appended to a [`Chunk`]: string columns to global ids (once per
//! distinct value of the batch, not per row), `--filter` evaluated, flags derived.
use std::sync::Mutex;

use arrow_array::{
    cast::AsArray, types::Int32Type, Array, ArrayRef, BooleanArray, Int32Array, Int64Array,
    ListArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use arrow_schema::DataType;
use pyusage_record::{columns as c, sampling, EnvKind, Exit};
use rustc_hash::FxHashMap;

use super::Selection;
use crate::{
    filter::Filter,
    model::{
        flag, month_of, sample_us, Chunk, Interner, Names, RowSamples, MAX_NODES, NONE, NO_CPU,
        NO_JOB,
    },
};

/// A batch whose columns are not what the analysis reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A column the analysis or the filter reads is absent.
    #[error("no column {0}")]
    MissingColumn(String),
    /// A column of another type than the record schema's.
    #[error("column {column}: expected {expected}, found {found}")]
    WrongType {
        /// The column.
        column: String,
        /// What the analysis reads.
        expected: &'static str,
        /// What the file has.
        found: DataType,
    },
    /// `--filter` on a column whose values it cannot compare (not text, bool or integer).
    #[error("cannot filter on a column of type {found} ({column})")]
    CannotFilter {
        /// The column.
        column: String,
        /// Its type.
        found: DataType,
    },
}

/// Process key: (host id, pid, start µs).
pub(super) type ProcessKey = (u32, i32, i64);

/// Appends the kept rows of `b` to `out`; `procs` numbers the chunk's processes.
pub(super) fn decode(
    b: &RecordBatch,
    sel: &Selection,
    names: &Names,
    out: &mut Chunk,
    procs: &mut FxHashMap<ProcessKey, u32>,
) -> Result<(), DecodeError> {
    let filter = sel.filter.as_ref();
    let c = Columns::read(b)?;
    let mut keep: Vec<bool> = match filter {
        Some(f) => keep_rows(b, f)?,
        None => (0..b.num_rows()).map(|i| !c.staff.value(i)).collect(),
    };
    if let Some(g) = &sel.hosts {
        // Once per distinct host of the batch, not per row.
        let hit: Vec<bool> = c.host.values.iter().map(|h| g.is_match(h)).collect();
        for (k, &code) in keep.iter_mut().zip(&c.host.codes) {
            *k &= code != NONE && hit[code as usize];
        }
    }
    let ids = BatchIds::new(&c, names);
    let mut rows = RowIds::default();
    for (i, _) in keep.iter().enumerate().filter(|(_, &k)| k) {
        let p = ids.package[c.package.codes[i] as usize];
        let user = rows.user(&c, &ids, names, i);
        let month = rows.month(c.start.value(i));
        let process = rows.process(&c, &ids, procs, i);
        let version = rows.version(&c, names, p, i);
        let job = match c.job.codes[i] {
            NONE => NO_JOB,
            j => ids.job[j as usize],
        };
        let (e, bl) = (c.env.codes[i], c.blas.codes[i]);
        out.month.push(month);
        out.package.push(p);
        out.user.push(user);
        out.job.push(job);
        out.process.push(process);
        out.nodes.push(c.nodes.value(i).min(MAX_NODES - 1));
        out.version.push(version);
        out.env_kind
            .push(if e == NONE { NONE } else { ids.env[e as usize] });
        out.blas.push(if bl == NONE {
            NONE
        } else {
            ids.blas[bl as usize]
        });
        let mut fl = ids.flags(&c, i, filter.is_some(), job, version);
        out.cpu_us.push(c.cpu.us(i));
        match c
            .samples
            .row(i, p, names, &mut rows.callers, &mut out.callers)
        {
            Some(s) => {
                fl |= flag::SAMPLED;
                out.sample.push(out.samples.len() as u32);
                out.samples.push(s);
            }
            None => out.sample.push(NONE),
        }
        out.flags.push(fl);
    }
    Ok(())
}

/// The CPU sampler's columns (`cpu_sampling`, `cpu_sample_hz`, `cpu_samples_*`): optional,
/// since datasets written before them lack them (their processes were not sampled).
enum SampleColumns<'a> {
    Absent,
    Present {
        status: Codes<'a>,
        /// Per status code: `sampled`.
        sampled: Vec<bool>,
        hz: &'a UInt32Array,
        total: &'a UInt64Array,
        own: &'a UInt64Array,
        inclusive: &'a UInt64Array,
        callers: &'a ListArray,
        caller_names: &'a StringArray,
        caller_samples: &'a UInt64Array,
    },
}

impl<'a> SampleColumns<'a> {
    fn read(b: &'a RecordBatch) -> Result<SampleColumns<'a>, DecodeError> {
        let present = super::SAMPLED.iter().all(|n| b.column_by_name(n).is_some());
        if !present {
            return Ok(SampleColumns::Absent);
        }
        let status = codes(b, c::CPU_SAMPLING)?;
        let sampled = status
            .values
            .iter()
            .map(|v| *v == sampling::SAMPLED)
            .collect();
        let callers: &ListArray = typed(b, c::CPU_SAMPLES_CALLERS, "a list of structs")?;
        let wrong = || DecodeError::WrongType {
            column: c::CPU_SAMPLES_CALLERS.to_owned(),
            expected: "a list of structs (package: string, samples: unsigned 64-bit integer)",
            found: callers.data_type().clone(),
        };
        let items = callers.values().as_struct_opt().ok_or_else(wrong)?;
        let caller_names = items
            .column_by_name("package")
            .and_then(|a| a.as_string_opt::<i32>())
            .ok_or_else(wrong)?;
        let caller_samples = items
            .column_by_name("samples")
            .and_then(|a| a.as_primitive_opt())
            .ok_or_else(wrong)?;
        Ok(SampleColumns::Present {
            status,
            sampled,
            hz: typed(b, c::CPU_SAMPLE_HZ, "unsigned 32-bit integers")?,
            total: typed(b, c::CPU_SAMPLES_TOTAL, "unsigned 64-bit integers")?,
            own: typed(b, c::CPU_SAMPLES_SELF, "unsigned 64-bit integers")?,
            inclusive: typed(b, c::CPU_SAMPLES_INCLUSIVE, "unsigned 64-bit integers")?,
            callers,
            caller_names,
            caller_samples,
        })
    }

    /// The counts of row `i` (package id `package`) if its process was sampled — status
    /// `sampled`, a rate above 0, the three counts — its callers appended to `out` (names to
    /// ids through `ids`, this batch's; a caller naming the row's own package is left out).
    fn row(
        &self,
        i: usize,
        package: u32,
        names: &Names,
        ids: &mut FxHashMap<&'a str, u32>,
        out: &mut Vec<(u32, u64)>,
    ) -> Option<RowSamples> {
        let SampleColumns::Present {
            status,
            sampled,
            hz,
            total,
            own,
            inclusive,
            callers,
            caller_names,
            caller_samples,
        } = self
        else {
            return None;
        };
        let code = status.codes[i];
        if code == NONE || !sampled[code as usize] {
            return None;
        }
        let valid = |a: &UInt64Array| a.is_valid(i).then(|| a.value(i));
        let hz = hz.is_valid(i).then(|| hz.value(i)).filter(|&h| h > 0)?;
        let (total, own, inclusive) = (valid(total)?, valid(own)?, valid(inclusive)?);
        let start = out.len() as u32;
        if callers.is_valid(i) {
            let offsets = callers.value_offsets();
            for j in offsets[i] as usize..offsets[i + 1] as usize {
                if !caller_names.is_valid(j) || !caller_samples.is_valid(j) {
                    continue;
                }
                let name = caller_names.value(j);
                let id = *ids
                    .entry(name)
                    .or_insert_with(|| names.packages.lock().expect("lock").id(name));
                if id != package {
                    out.push((id, caller_samples.value(j)));
                }
            }
        }
        Some(RowSamples {
            total,
            own,
            inclusive,
            total_us: sample_us(total, hz),
            own_us: sample_us(own, hz),
            callers: (start, out.len() as u32),
        })
    }
}

/// `cpu_user_us` and `cpu_sys_us`: optional, since datasets written before the columns
/// existed lack them (their processes' CPU time is unknown, not zero).
enum CpuColumns<'a> {
    Absent,
    Unsigned(&'a UInt64Array, &'a UInt64Array),
    Signed(&'a Int64Array, &'a Int64Array),
}

impl CpuColumns<'_> {
    fn read(b: &RecordBatch) -> Result<CpuColumns<'_>, DecodeError> {
        let (Some(u), Some(s)) = (
            b.column_by_name(c::CPU_USER_US),
            b.column_by_name(c::CPU_SYS_US),
        ) else {
            return Ok(CpuColumns::Absent);
        };
        if let (Some(u), Some(s)) = (u.as_primitive_opt(), s.as_primitive_opt()) {
            return Ok(CpuColumns::Unsigned(u, s));
        }
        if let (Some(u), Some(s)) = (u.as_primitive_opt(), s.as_primitive_opt()) {
            return Ok(CpuColumns::Signed(u, s));
        }
        Err(DecodeError::WrongType {
            column: c::CPU_USER_US.to_owned(),
            expected: "64-bit integers",
            found: u.data_type().clone(),
        })
    }

    /// User + system µs of row `i`, or [`NO_CPU`] when either is null (or negative).
    fn us(&self, i: usize) -> u64 {
        let known = |a: &dyn Array| a.is_valid(i);
        match self {
            CpuColumns::Absent => NO_CPU,
            CpuColumns::Unsigned(u, s) if known(*u) && known(*s) => {
                u.value(i).saturating_add(s.value(i)).min(NO_CPU - 1)
            }
            CpuColumns::Signed(u, s) if known(*u) && known(*s) => {
                match (u64::try_from(u.value(i)), u64::try_from(s.value(i))) {
                    (Ok(u), Ok(s)) => u.saturating_add(s).min(NO_CPU - 1),
                    _ => NO_CPU,
                }
            }
            _ => NO_CPU,
        }
    }
}

/// The columns the analysis reads, by name (see `COLUMNS` in the parent module).
struct Columns<'a> {
    staff: &'a BooleanArray,
    compute: &'a BooleanArray,
    package: Codes<'a>,
    username: Codes<'a>,
    job: Codes<'a>,
    host: Codes<'a>,
    version: Codes<'a>,
    env: Codes<'a>,
    blas: Codes<'a>,
    exit: Codes<'a>,
    uid: &'a UInt32Array,
    pid: &'a Int32Array,
    start: &'a TimestampMicrosecondArray,
    nodes: &'a UInt32Array,
    cpu: CpuColumns<'a>,
    samples: SampleColumns<'a>,
}

impl<'a> Columns<'a> {
    fn read(b: &'a RecordBatch) -> Result<Columns<'a>, DecodeError> {
        Ok(Columns {
            staff: typed(b, c::IS_STAFF, "booleans")?,
            compute: typed(b, c::IS_COMPUTE, "booleans")?,
            package: codes(b, c::PACKAGE)?,
            username: codes(b, c::USERNAME)?,
            job: codes(b, c::JOB_ID)?,
            host: codes(b, c::HOST)?,
            version: codes(b, c::VERSION)?,
            env: codes(b, c::ENV_KIND)?,
            blas: codes(b, c::BLAS)?,
            exit: codes(b, c::EXIT)?,
            uid: typed(b, c::UID, "unsigned 32-bit integers")?,
            pid: typed(b, c::PID, "32-bit integers")?,
            start: typed(b, c::PROCESS_START, "timestamps in µs")?,
            nodes: typed(b, c::NUM_NODES, "unsigned 32-bit integers")?,
            cpu: CpuColumns::read(b)?,
            samples: SampleColumns::read(b)?,
        })
    }
}

/// What is known per distinct value of the batch: its global id, and the value tests the
/// flags need, indexed by the batch's local codes.
struct BatchIds {
    package: Vec<u32>,
    user: Vec<u32>,
    host: Vec<u32>,
    env: Vec<u32>,
    blas: Vec<u32>,
    job: Vec<u64>,
    signaled: Vec<bool>,
    stdlib: Vec<bool>,
    numpyish: Vec<bool>,
}

impl BatchIds {
    fn new(c: &Columns<'_>, names: &Names) -> BatchIds {
        BatchIds {
            package: global(&c.package, &names.packages),
            user: global(&c.username, &names.users),
            host: global(&c.host, &names.hosts),
            env: global(&c.env, &names.env_kinds),
            blas: global(&c.blas, &names.blases),
            job: job_keys(&c.job, names),
            signaled: c
                .exit
                .values
                .iter()
                .map(|v| *v == Exit::Signaled.as_str())
                .collect(),
            stdlib: c
                .env
                .values
                .iter()
                .map(|v| *v == EnvKind::Stdlib.as_str())
                .collect(),
            numpyish: c
                .package
                .values
                .iter()
                .map(|v| *v == "numpy" || *v == "scipy")
                .collect(),
        }
    }

    /// The [`flag`] bits of row `i`.
    fn flags(&self, c: &Columns<'_>, i: usize, filtered: bool, job: u64, version: u32) -> u8 {
        let (e, x) = (c.env.codes[i], c.exit.codes[i]);
        let mut fl = 0;
        if filtered || c.compute.value(i) {
            fl |= flag::KEEP_JOB;
        }
        if job != NO_JOB {
            fl |= flag::HAS_JOB;
        }
        if x != NONE && self.signaled[x as usize] {
            fl |= flag::SIGNALED;
        }
        if self.numpyish[c.package.codes[i] as usize] {
            fl |= flag::NUMPYISH;
        }
        if version != NONE {
            fl |= flag::HAS_VERSION;
        }
        if e != NONE {
            fl |= flag::HAS_ENV;
            if !self.stdlib[e as usize] {
                fl |= flag::NON_STDLIB;
            }
        }
        fl
    }
}

/// A job id is a number almost always: use it directly, intern the rest (with the top bit set).
fn job_keys(job: &Codes<'_>, names: &Names) -> Vec<u64> {
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
}

/// Ids derived per row, remembered across the rows of a batch: rows come sorted by process
/// start, so the day, month and process rarely change from one row to the next.
struct RowIds<'a> {
    /// Callers' package names → ids.
    callers: FxHashMap<&'a str, u32>,
    uid_users: FxHashMap<u32, u32>,
    versions: FxHashMap<(u32, u32), u32>,
    last_day: i64,
    last_month: u16,
    last_proc: (ProcessKey, u32),
}

impl Default for RowIds<'_> {
    fn default() -> Self {
        RowIds {
            callers: FxHashMap::default(),
            uid_users: FxHashMap::default(),
            versions: FxHashMap::default(),
            last_day: i64::MIN,
            last_month: 0,
            last_proc: ((u32::MAX, 0, 0), 0),
        }
    }
}

impl RowIds<'_> {
    /// The user: `username`, else `uid:<n>`.
    fn user(&mut self, c: &Columns<'_>, ids: &BatchIds, names: &Names, i: usize) -> u32 {
        match c.username.codes[i] {
            NONE => *self.uid_users.entry(c.uid.value(i)).or_insert_with(|| {
                names
                    .users
                    .lock()
                    .expect("lock")
                    .id(&format!("uid:{}", c.uid.value(i)))
            }),
            u => ids.user[u as usize],
        }
    }

    /// The month of a process start (µs), recomputed once per day.
    fn month(&mut self, start: i64) -> u16 {
        let day = start.div_euclid(86_400_000_000);
        if day != self.last_day {
            self.last_day = day;
            self.last_month = month_of(start);
        }
        self.last_month
    }

    /// The chunk-local id of the row's process.
    fn process(
        &mut self,
        c: &Columns<'_>,
        ids: &BatchIds,
        procs: &mut FxHashMap<ProcessKey, u32>,
        i: usize,
    ) -> u32 {
        let key = (
            ids.host[c.host.codes[i] as usize],
            c.pid.value(i),
            c.start.value(i),
        );
        if key != self.last_proc.0 {
            let next = procs.len() as u32;
            self.last_proc = (key, *procs.entry(key).or_insert(next));
        }
        self.last_proc.1
    }

    /// The (package, version) id of the row, or [`NONE`].
    fn version(&mut self, c: &Columns<'_>, names: &Names, package: u32, i: usize) -> u32 {
        match c.version.codes[i] {
            NONE => NONE,
            v => *self.versions.entry((package, v)).or_insert_with(|| {
                let name = format!(
                    "{}\0{}",
                    c.package.values[c.package.codes[i] as usize], c.version.values[v as usize]
                );
                names.versions.lock().expect("lock").id(&name)
            }),
        }
    }
}

/// A string column as per-row codes into a small list of values (`NONE` for null).
struct Codes<'a> {
    codes: Vec<u32>,
    values: Vec<&'a str>,
}

fn codes<'a>(b: &'a RecordBatch, name: &str) -> Result<Codes<'a>, DecodeError> {
    let col: &ArrayRef = b
        .column_by_name(name)
        .ok_or_else(|| DecodeError::MissingColumn(name.to_owned()))?;
    let wrong = |found: &DataType| DecodeError::WrongType {
        column: name.to_owned(),
        expected: "strings",
        found: found.clone(),
    };
    if let Some(d) = col.as_dictionary_opt::<Int32Type>() {
        let values = d
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| wrong(col.data_type()))?;
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
        .ok_or_else(|| wrong(col.data_type()))?;
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

/// A column as its Arrow array type; `expected` says which, in words, for the error.
fn typed<'a, T: 'static>(
    b: &'a RecordBatch,
    name: &str,
    expected: &'static str,
) -> Result<&'a T, DecodeError> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| DecodeError::MissingColumn(name.to_owned()))?;
    col.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| DecodeError::WrongType {
            column: name.to_owned(),
            expected,
            found: col.data_type().clone(),
        })
}

/// Evaluates `--filter` on a batch.
fn keep_rows(b: &RecordBatch, f: &Filter) -> Result<Vec<bool>, DecodeError> {
    let n = b.num_rows();
    let mut any = vec![false; n];
    for conj in &f.any {
        let mut all = vec![true; n];
        for cmp in conj {
            let col = b
                .column_by_name(&cmp.field)
                .ok_or_else(|| DecodeError::MissingColumn(cmp.field.clone()))?;
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
                let text = integer_text(&cmp.field, col)?;
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

/// Decimal text of an integer column (what a filter's number is compared with).
fn integer_text(name: &str, col: &ArrayRef) -> Result<Vec<Option<String>>, DecodeError> {
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
    Err(DecodeError::CannotFilter {
        column: name.to_owned(),
        found: col.data_type().clone(),
    })
}
