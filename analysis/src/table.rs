//! The dataset as integer columns. Strings (package, user, job, host) become global ids from
//! one interner per column shared by every file and row group, so distinct counts never mix
//! up per-file dictionary codes. Only the columns the analyses need are read (projection), and
//! `date=` partitions outside the requested range are skipped without opening their files.
use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
};

use arrow_array::{
    Array, BooleanArray, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array,
};
use parquet::arrow::{arrow_reader::ParquetRecordBatchReaderBuilder, ProjectionMask};
use pyusage_record::Record;

/// Errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// A file or directory could not be read.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Strings ↔ dense ids.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    map: HashMap<String, u32>,
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

/// No job.
pub const NO_JOB: u32 = u32::MAX;
/// No value (version, BLAS).
pub const NONE: u32 = u32::MAX;

/// `year * 12 + (month - 1)` of a µs timestamp (UTC).
pub fn month_of(us: i64) -> u32 {
    use chrono::Datelike;
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.year().max(0) as u32 * 12 + t.month0())
        .unwrap_or(0)
}

/// The fields of one record the analyses use.
struct Row<'a> {
    package: &'a str,
    user: &'a str,
    job: Option<&'a str>,
    host: &'a str,
    pid: i32,
    start: i64,
    nodes: u32,
    staff: bool,
    compute: bool,
    version: Option<&'a str>,
    env_kind: &'a str,
    blas: Option<&'a str>,
    signaled: bool,
}

/// One row per record, integer columns only.
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// Package names.
    pub packages: Interner,
    /// User names (`username`, else `uid:<n>`).
    pub users: Interner,
    /// Job ids.
    pub jobs: Interner,
    /// Versions.
    pub versions: Interner,
    /// Environment kinds.
    pub env_kinds: Interner,
    /// BLAS backends.
    pub blases: Interner,
    /// Package id per row.
    pub package: Vec<u32>,
    /// User id per row.
    pub user: Vec<u32>,
    /// Job id per row, [`NO_JOB`] outside a job.
    pub job: Vec<u32>,
    /// Process id per row (distinct host, pid, process_start).
    pub process: Vec<u32>,
    /// Nodes of the job.
    pub num_nodes: Vec<u32>,
    /// Staff user.
    pub is_staff: Vec<bool>,
    /// Compute node.
    pub is_compute: Vec<bool>,
    /// Month of `process_start`, as `year * 12 + (month - 1)` (UTC).
    pub month: Vec<u32>,
    /// Version id per row, [`NONE`] when unknown.
    pub version: Vec<u32>,
    /// Environment kind id per row.
    pub env_kind: Vec<u32>,
    /// BLAS id per row, [`NONE`] when none was seen.
    pub blas: Vec<u32>,
    /// The process ended by a signal.
    pub signaled: Vec<bool>,
    processes: HashMap<(u32, i32, i64), u32>,
    hosts: Interner,
}

impl Table {
    fn push(&mut self, r: Row<'_>) {
        let p = self.packages.id(r.package);
        let u = self.users.id(r.user);
        let j = r.job.map(|j| self.jobs.id(j)).unwrap_or(NO_JOB);
        let h = self.hosts.id(r.host);
        let next = self.processes.len() as u32;
        let proc_id = *self.processes.entry((h, r.pid, r.start)).or_insert(next);
        self.package.push(p);
        self.user.push(u);
        self.job.push(j);
        self.process.push(proc_id);
        self.num_nodes.push(r.nodes);
        self.is_staff.push(r.staff);
        self.is_compute.push(r.compute);
        self.month.push(month_of(r.start));
        let v = r.version.map(|v| self.versions.id(v)).unwrap_or(NONE);
        self.version.push(v);
        let e = self.env_kinds.id(r.env_kind);
        self.env_kind.push(e);
        let b = r.blas.map(|b| self.blases.id(b)).unwrap_or(NONE);
        self.blas.push(b);
        self.signaled.push(r.signaled);
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.package.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.package.is_empty()
    }

    /// From records in memory (tests, small inputs).
    pub fn from_records(records: &[Record]) -> Table {
        let mut t = Table::default();
        for r in records {
            let user = r
                .username
                .clone()
                .unwrap_or_else(|| format!("uid:{}", r.uid));
            t.push(Row {
                package: &r.package,
                user: &user,
                job: r.job_id.as_deref(),
                host: &r.host,
                pid: r.pid,
                start: r.process_start,
                nodes: r.num_nodes,
                staff: r.is_staff,
                compute: r.is_compute,
                version: r.version.as_deref(),
                env_kind: &r.env_kind,
                blas: r.blas.as_deref(),
                signaled: r.exit == "signaled",
            });
        }
        t
    }

    /// Loads the Parquet dataset under `root` (`date=YYYY-MM-DD/*.parquet`), keeping the
    /// partitions within `[from, to]` (inclusive, `YYYY-MM-DD`).
    pub fn load(root: &Path, from: Option<&str>, to: Option<&str>) -> Result<Table, TableError> {
        let err = |path: &Path, m: &dyn std::fmt::Display| TableError::Read {
            path: path.to_path_buf(),
            message: m.to_string(),
        };
        let mut files = Vec::new();
        for part in std::fs::read_dir(root).map_err(|e| err(root, &e))? {
            let part = part.map_err(|e| err(root, &e))?;
            let name = part.file_name().to_string_lossy().into_owned();
            let Some(date) = name.strip_prefix("date=") else {
                continue;
            };
            if from.is_some_and(|f| date < f) || to.is_some_and(|t| date > t) {
                continue;
            }
            for f in std::fs::read_dir(part.path()).map_err(|e| err(&part.path(), &e))? {
                let f = f.map_err(|e| err(&part.path(), &e))?.path();
                if f.extension().is_some_and(|e| e == "parquet")
                    && !f
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                {
                    files.push(f);
                }
            }
        }
        files.sort();
        let mut t = Table::default();
        const COLS: &[&str] = &[
            "version",
            "env_kind",
            "blas",
            "exit",
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
        ];
        for f in files {
            let file = File::open(&f).map_err(|e| err(&f, &e))?;
            let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| err(&f, &e))?;
            let mask = ProjectionMask::columns(b.parquet_schema(), COLS.iter().copied());
            for batch in b.with_projection(mask).build().map_err(|e| err(&f, &e))? {
                let batch = batch.map_err(|e| err(&f, &e))?;
                t.add_batch(&batch).map_err(|m| err(&f, &m))?;
            }
        }
        Ok(t)
    }

    fn add_batch(&mut self, b: &RecordBatch) -> Result<(), String> {
        fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, String> {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<T>())
                .ok_or_else(|| format!("column {name} missing or of an unexpected type"))
        }
        let package = col::<StringArray>(b, "package")?;
        let username = col::<StringArray>(b, "username")?;
        let uid = col::<UInt32Array>(b, "uid")?;
        let job = col::<StringArray>(b, "job_id")?;
        let host = col::<StringArray>(b, "host")?;
        let pid = col::<Int32Array>(b, "pid")?;
        let start = col::<TimestampMicrosecondArray>(b, "process_start")?;
        let nodes = col::<UInt32Array>(b, "num_nodes")?;
        let staff = col::<BooleanArray>(b, "is_staff")?;
        let compute = col::<BooleanArray>(b, "is_compute")?;
        let version = col::<StringArray>(b, "version")?;
        let env_kind = col::<StringArray>(b, "env_kind")?;
        let blas = col::<StringArray>(b, "blas")?;
        let exit = col::<StringArray>(b, "exit")?;
        for i in 0..b.num_rows() {
            let user = if username.is_null(i) {
                format!("uid:{}", uid.value(i))
            } else {
                username.value(i).to_owned()
            };
            let job = (!job.is_null(i)).then(|| job.value(i));
            self.push(Row {
                package: package.value(i),
                user: &user,
                job,
                host: host.value(i),
                pid: pid.value(i),
                start: start.value(i),
                nodes: nodes.value(i),
                staff: staff.value(i),
                compute: compute.value(i),
                version: (!version.is_null(i)).then(|| version.value(i)),
                env_kind: env_kind.value(i),
                blas: (!blas.is_null(i)).then(|| blas.value(i)),
                signaled: exit.value(i) == "signaled",
            });
        }
        Ok(())
    }
}
