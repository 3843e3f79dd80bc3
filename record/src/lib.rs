//! The pyusage import record, defined once.
//!
//! One record = one (process, top-level package) pair; field names and meanings follow
//! `docs/record-schema.md` (a superset of the shared contract). The daemon builds [`Record`]s,
//! the spool and syslog carry their JSON form, and the Parquet dataset stores the Arrow form
//! given by [`arrow_schema()`]; readers (`pyusage show`, analysis) decode back to [`Record`].
#![deny(missing_docs)]

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use columns::*;
use serde::{Deserialize, Serialize};

pub mod atomic;
pub mod columns;
pub mod data_dir;
pub mod dataset;
mod kinds;
pub mod lines;
pub mod segment;

pub use kinds::{EnvKind, Exit, JobSource, Source, UnknownValue};

/// An error and its causes on one line, `a: b: c`, for a log line or a terminal, leaving out
/// a cause whose text the line already contains (errors that print their source themselves).
pub fn error_line(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

/// Reading records back (a spool segment, a Parquet file, a data directory) failed; every
/// error names the file, and a bad line its number.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening, listing or reading.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A line of a spool segment is not a record (and not the torn last line).
    #[error("{}:{line}: {source}", path.display())]
    Line {
        /// The segment.
        path: std::path::PathBuf,
        /// 1-based line number.
        line: usize,
        /// Cause.
        source: serde_json::Error,
    },
    /// A Parquet file could not be decoded.
    #[error("{}: {source}", path.display())]
    Parquet {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        source: parquet::errors::ParquetError,
    },
    /// A decoded batch did not convert to records.
    #[error("{}: {source}", path.display())]
    Arrow {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        source: arrow_schema::ArrowError,
    },
    /// A row of a Parquet file is not a record of this schema.
    #[error("{}: {source}", path.display())]
    Row {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        source: serde_json::Error,
    },
    /// Neither a data directory nor a dataset root.
    #[error("{}: no such data directory", path.display())]
    NoDataDir {
        /// What was given.
        path: std::path::PathBuf,
    },
}

/// Microseconds since the Unix epoch, UTC. Serialised as RFC 3339 with microseconds
/// (`2026-11-25T13:04:08.123456Z`), which Arrow's JSON decoder reads as `Timestamp(µs, UTC)`.
pub type Micros = i64;

/// One import record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Globally unique id (UUIDv7): consumers drop duplicates of an at-least-once resend by it.
    pub record_id: String,
    /// Per-host sequence number, gap-free; a gap means loss.
    pub seq: u64,
    /// Which collector saw the import: `ebpf` (or `ebpf-seeded`) whenever the kernel saw it,
    /// else `preload` or `atexit`.
    pub source: Source,
    /// Every collector that saw this package in this process (`source` first), so that a node
    /// running the eBPF tracer and the preload library together writes one record per process
    /// and package, not one per collector. Absent in records written before the field (read
    /// as `[source]` is meant; an empty list).
    #[serde(default)]
    pub sources: Vec<Source>,
    /// Short host name.
    pub host: String,
    /// Cluster name.
    pub system: Option<String>,
    /// Node class.
    pub subsystem: Option<String>,
    /// Compute node (configuration).
    pub is_compute: bool,
    /// Process id (initial PID namespace).
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// First Python process of this process tree.
    pub root_pid: i32,
    /// Exec time of the interpreter (fork time for a fork child).
    #[serde(with = "ts")]
    pub process_start: Micros,
    /// End of the process; null while running.
    #[serde(with = "ts_opt")]
    pub process_end: Option<Micros>,
    /// How the process ended, or that it is still running.
    pub exit: Exit,
    /// Exit status for `exited`.
    pub exit_code: Option<i32>,
    /// Signal name for `signaled`.
    pub exit_signal: Option<String>,
    /// Interpreter path as executed.
    pub executable: String,
    /// `3.11` etc.
    pub python_version: Option<String>,
    /// Script path, `-c` or `-m <module>`.
    pub main: Option<String>,
    /// Real uid.
    pub uid: u32,
    /// User name.
    pub username: Option<String>,
    /// In the configured staff group.
    pub is_staff: bool,
    /// In a mount namespace other than the host's.
    pub in_container: bool,
    /// Container runtime when known.
    pub container_runtime: Option<String>,
    /// BLAS backend the process loaded.
    pub blas: Option<String>,
    /// Slurm job id (`<array>_<task>` for array jobs).
    pub job_id: Option<String>,
    /// Slurm step.
    pub step_id: Option<String>,
    /// Where `job_id` and `step_id` came from: `cgroup` (the scheduler's cgroup, which the
    /// user cannot change) or `env` (the environment, outside Slurm's cgroups); null without
    /// a job.
    #[serde(default)]
    pub job_source: Option<JobSource>,
    /// MPI rank.
    pub rank: Option<i32>,
    /// Under `--ranks per-node`: how many ranks of this job step on this node imported the
    /// package (this record stands for all of them); null otherwise.
    #[serde(default)]
    pub n_ranks: Option<u32>,
    /// Nodes in the job; 1 outside a job.
    pub num_nodes: u32,
    /// Slurm QOS.
    pub qos: Option<String>,
    /// Charge account.
    pub account: Option<String>,
    /// Slurm partition.
    pub partition: Option<String>,
    /// Top-level import name.
    pub package: String,
    /// Installed distribution owning the files.
    pub distribution: Option<String>,
    /// Version of the distribution.
    pub version: Option<String>,
    /// What kind of environment the package was imported from.
    pub env_kind: EnvKind,
    /// Root of the environment.
    pub env_prefix: Option<String>,
    /// First module file of the package opened.
    pub first_path: String,
    /// Module files of this package opened.
    pub n_files: u32,
    /// First open of a file of this package.
    #[serde(with = "ts")]
    pub first_seen: Micros,
    /// The process's CPU time in user mode, µs, all threads (the same in each of the
    /// process's records): at the exit, the kernel's exact runtime split in its tick
    /// proportion; in a `running` record, `/proc/<pid>/stat` (10 ms resolution). Null when
    /// unknown: preload-only exits, lost exits, records written before the field.
    #[serde(default)]
    pub cpu_user_us: Option<u64>,
    /// The process's CPU time in the kernel, µs; as `cpu_user_us`.
    #[serde(default)]
    pub cpu_sys_us: Option<u64>,
    /// Whether the daemon's CPU sampler walked this process's Python stacks:
    /// [`sampling::SAMPLED`], or `unsupported:<reason>` ([`sampling::UNSUPPORTED`]: the
    /// sampler could not read this interpreter, e.g. `unsupported:python-3.7`, and counted
    /// nothing rather than something wrong). Null when the process was not sampled: sampling
    /// off, preload-only mode, atexit-hook and imported records, records written before the
    /// field.
    #[serde(default)]
    pub cpu_sampling: Option<String>,
    /// The node's sampling rate, samples per CPU-second (samples / hz = CPU-seconds); set
    /// exactly when `cpu_sampling` is.
    #[serde(default)]
    pub cpu_sample_hz: Option<u32>,
    /// The process's samples, all threads (the same in each of its records); null unless
    /// `cpu_sampling` is `sampled`, as are the other two counts.
    #[serde(default)]
    pub cpu_samples_total: Option<u64>,
    /// Samples whose innermost Python frame was in this package, or whose interrupted
    /// instruction was in a native library (`.so`) of this package.
    #[serde(default)]
    pub cpu_samples_self: Option<u64>,
    /// Samples with this package anywhere on the stack, counted once per sample.
    #[serde(default)]
    pub cpu_samples_inclusive: Option<u64>,
    /// Of this package's self samples, how many had each other package on the stack further
    /// out (each counted once per sample): at most [`sampling::MAX_CALLERS`], the largest,
    /// by samples descending then name. Empty unless `cpu_sampling` is `sampled`.
    #[serde(default)]
    pub cpu_samples_callers: Vec<CallerSamples>,
}

/// One entry of [`Record::cpu_samples_callers`]: a package further out on the stack and the
/// self samples it was there for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSamples {
    /// The calling package (top-level import name).
    pub package: String,
    /// Self samples of the record's package with `package` further out on the stack.
    pub samples: u64,
}

/// The values of [`Record::cpu_sampling`] and the limits of the sample fields.
pub mod sampling {
    /// The sampler walked the process's Python stacks: the sample counts are set.
    pub const SAMPLED: &str = "sampled";
    /// Prefix of `unsupported:<reason>`: the sampler could not walk this process's stacks.
    pub const UNSUPPORTED: &str = "unsupported:";
    /// At most this many entries in `cpu_samples_callers`.
    pub const MAX_CALLERS: usize = 8;
    /// At most this many bytes in the reason of `unsupported:<reason>`.
    pub const MAX_REASON: usize = 64;

    /// Whether `s` is a value `cpu_sampling` may hold: `sampled`, or `unsupported:` and a
    /// reason of 1 to [`MAX_REASON`] lower-case ASCII letters, digits, `.`, `-` and `_`.
    pub fn is_valid(s: &str) -> bool {
        s == SAMPLED
            || s.strip_prefix(UNSUPPORTED).is_some_and(|why| {
                !why.is_empty()
                    && why.len() <= MAX_REASON
                    && why.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            })
    }
}

impl Record {
    /// Whether the CPU sampler walked this process's stacks (the sample counts are set).
    pub fn is_sampled(&self) -> bool {
        self.cpu_sampling.as_deref() == Some(sampling::SAMPLED)
    }

    /// The identity readers de-duplicate on: a process (`host`, `pid`, `process_start`) and a
    /// package. A periodic `running` record and the final one share it. Without a pid (pid 0:
    /// imported customs data, whose processes have none) nothing identifies a process: each
    /// record is its own (by `record_id`, the same when the same line is imported again).
    pub fn key(&self) -> (String, i32, Micros, String, Option<String>) {
        (
            self.host.clone(),
            self.pid,
            self.process_start,
            self.package.clone(),
            (self.pid == 0).then(|| self.record_id.clone()),
        )
    }

    /// Whether `self` should replace `other` (same key): a final record beats a `running`
    /// one, and otherwise the later `seq` wins.
    pub fn supersedes(&self, other: &Record) -> bool {
        let fin = |r: &Record| r.exit != Exit::Running;
        match (fin(self), fin(other)) {
            (true, false) => true,
            (false, true) => false,
            _ => self.seq > other.seq,
        }
    }
}

/// Where [`format_micros`] puts what between its digits (`YYYY-MM-DDTHH:MM:SS.ffffffZ`).
const SEPARATORS: [(usize, u8); 7] = [
    (4, b'-'),
    (7, b'-'),
    (10, b'T'),
    (13, b':'),
    (16, b':'),
    (19, b'.'),
    (26, b'Z'),
];

/// Formats µs since the epoch as RFC 3339 UTC with microseconds
/// (`2026-11-25T13:04:08.123456Z`). Written out by hand: every record carries two or three
/// timestamps, and a `format()` string is parsed anew on each call.
pub fn format_micros(us: Micros) -> String {
    use chrono::{Datelike, Timelike};
    let Some(t) = chrono::DateTime::from_timestamp_micros(us) else {
        return us.to_string();
    };
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    }
    let mut b = [0u8; 27];
    let mut put = |at: usize, v: u32, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, t.month(), 2);
    put(8, t.day(), 2);
    put(11, t.hour(), 2);
    put(14, t.minute(), 2);
    put(17, t.second(), 2);
    put(20, us.rem_euclid(1_000_000) as u32, 6);
    for (at, c) in SEPARATORS {
        b[at] = c;
    }
    String::from_utf8(b.to_vec()).expect("ASCII digits and separators")
}

/// Parses RFC 3339 (any offset) to µs since the epoch.
pub fn parse_micros(s: &str) -> Result<Micros, chrono::ParseError> {
    if let Some(us) = parse_micros_utc(s.as_bytes()) {
        return Ok(us);
    }
    Ok(chrono::DateTime::parse_from_rfc3339(s)?.timestamp_micros())
}

/// The form [`format_micros`] writes (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, every record's two or
/// three timestamps) read digit by digit; `None` for anything else, which chrono then parses
/// (its general RFC 3339 parser was a tenth of the time a record took to decode, measured).
fn parse_micros_utc(b: &[u8]) -> Option<Micros> {
    if b.len() != 27 {
        return None;
    }
    let num = |at: usize, width: usize| -> Option<u32> {
        b[at..at + width].iter().try_fold(0u32, |v, &c| {
            c.is_ascii_digit().then(|| v * 10 + (c - b'0') as u32)
        })
    };
    for (at, c) in SEPARATORS {
        if b[at] != c {
            return None;
        }
    }
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if h > 23 || mi > 59 || sec > 59 {
        // A leap second (`:60`) and the like: chrono's rules.
        return None;
    }
    let days = days_since_epoch(num(0, 4)?, num(5, 2)?, num(8, 2)?)?;
    Some((days * 86_400 + (h * 3600 + mi * 60 + sec) as i64) * 1_000_000 + num(20, 6)? as i64)
}

/// Days from 1970-01-01 to a valid date of the proleptic Gregorian calendar (year 0 to 9999),
/// `None` for an invalid one: chrono's `from_ymd_opt` and `signed_duration_since` without
/// their generality (a twentieth of ingest's reading thread; a test compares every day).
fn days_since_epoch(y: u32, m: u32, d: u32) -> Option<i64> {
    let leap = y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400));
    let len = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if d == 0 || d > len || y > 9999 {
        return None;
    }
    // Howard Hinnant's days_from_civil, years counted from March (year 0 - 1 is -1).
    let y = y as i64 - (m <= 2) as i64;
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m as i64 + 9) % 12) + 2) / 5 + d as i64 - 1;
    Some(era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468)
}

mod ts {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_micros(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_str(Text)
    }

    /// A timestamp's text, parsed where it lies (no `String` made for it).
    pub struct Text;

    impl de::Visitor<'_> for Text {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<i64, E> {
            super::parse_micros(s).map_err(E::custom)
        }
    }
}

mod ts_opt {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::ts::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_option(Opt)
    }

    struct Opt;

    impl<'de> de::Visitor<'de> for Opt {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
            super::ts::deserialize(d).map(Some)
        }
    }
}

/// The Arrow schema of the Parquet dataset; strings dictionary-encoded by the writer.
/// Timestamps carry the fixed offset `+00:00` (UTC) rather than the zone name `UTC`, which
/// arrow can only resolve with the chrono-tz database compiled in.
pub fn arrow_schema() -> Arc<Schema> {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let ts = |n: &str, null: bool| {
        Field::new(
            n,
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            null,
        )
    };
    Arc::new(Schema::new(vec![
        s(RECORD_ID, false),
        Field::new(SEQ, DataType::UInt64, false),
        s(SOURCE, false),
        Field::new(
            SOURCES,
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        s(HOST, false),
        s(SYSTEM, true),
        s(SUBSYSTEM, true),
        Field::new(IS_COMPUTE, DataType::Boolean, false),
        Field::new(PID, DataType::Int32, false),
        Field::new(PPID, DataType::Int32, false),
        Field::new(ROOT_PID, DataType::Int32, false),
        ts(PROCESS_START, false),
        ts(PROCESS_END, true),
        s(EXIT, false),
        Field::new(EXIT_CODE, DataType::Int32, true),
        s(EXIT_SIGNAL, true),
        s(EXECUTABLE, false),
        s(PYTHON_VERSION, true),
        s(MAIN, true),
        Field::new(UID, DataType::UInt32, false),
        s(USERNAME, true),
        Field::new(IS_STAFF, DataType::Boolean, false),
        Field::new(IN_CONTAINER, DataType::Boolean, false),
        s(CONTAINER_RUNTIME, true),
        s(BLAS, true),
        s(JOB_ID, true),
        s(STEP_ID, true),
        s(JOB_SOURCE, true),
        Field::new(RANK, DataType::Int32, true),
        Field::new(N_RANKS, DataType::UInt32, true),
        Field::new(NUM_NODES, DataType::UInt32, false),
        s(QOS, true),
        s(ACCOUNT, true),
        s(PARTITION, true),
        s(PACKAGE, false),
        s(DISTRIBUTION, true),
        s(VERSION, true),
        s(ENV_KIND, false),
        s(ENV_PREFIX, true),
        s(FIRST_PATH, false),
        Field::new(N_FILES, DataType::UInt32, false),
        ts(FIRST_SEEN, false),
        Field::new(CPU_USER_US, DataType::UInt64, true),
        Field::new(CPU_SYS_US, DataType::UInt64, true),
        s(CPU_SAMPLING, true),
        Field::new(CPU_SAMPLE_HZ, DataType::UInt32, true),
        Field::new(CPU_SAMPLES_TOTAL, DataType::UInt64, true),
        Field::new(CPU_SAMPLES_SELF, DataType::UInt64, true),
        Field::new(CPU_SAMPLES_INCLUSIVE, DataType::UInt64, true),
        Field::new(
            CPU_SAMPLES_CALLERS,
            DataType::List(Arc::new(Field::new("item", caller_struct(), true))),
            false,
        ),
    ]))
}

/// The Arrow type of one [`CallerSamples`]: `Struct<package Utf8, samples UInt64>`.
pub fn caller_struct() -> DataType {
    DataType::Struct(
        vec![
            Field::new("package", DataType::Utf8, false),
            Field::new("samples", DataType::UInt64, false),
        ]
        .into(),
    )
}

#[cfg(any(test, feature = "testing"))]
impl Record {
    /// An example record with plausible values: the one hand-written record that tests in
    /// every crate start from (change the fields a test is about). Test-only: other crates
    /// get it through the `testing` feature of their dev-dependency.
    pub fn example() -> Record {
        Record {
            record_id: "0190-x".into(),
            seq: 7,
            source: Source::Ebpf,
            sources: vec![Source::Ebpf],
            host: "n1".into(),
            system: None,
            subsystem: None,
            is_compute: true,
            pid: 10,
            ppid: 1,
            root_pid: 10,
            process_start: 1_764_000_000_123_456,
            process_end: None,
            exit: Exit::Running,
            exit_code: None,
            exit_signal: None,
            executable: "/usr/bin/python3.11".into(),
            python_version: Some("3.11".into()),
            main: Some("-c".into()),
            uid: 0,
            username: Some("root".into()),
            is_staff: false,
            in_container: false,
            container_runtime: None,
            blas: None,
            job_id: None,
            step_id: None,
            job_source: None,
            rank: None,
            n_ranks: None,
            num_nodes: 1,
            qos: None,
            account: None,
            partition: None,
            package: "yaml".into(),
            distribution: Some("PyYAML".into()),
            version: Some("6.0.1".into()),
            env_kind: EnvKind::Venv,
            env_prefix: Some("/v".into()),
            first_path: "/v/lib/python3.11/site-packages/yaml/__init__.py".into(),
            n_files: 3,
            first_seen: 1_764_000_000_223_456,
            cpu_user_us: None,
            cpu_sys_us: None,
            cpu_sampling: None,
            cpu_sample_hz: None,
            cpu_samples_total: None,
            cpu_samples_self: None,
            cpu_samples_inclusive: None,
            cpu_samples_callers: Vec::new(),
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl Record {
    /// Records with the values a writer or reader could get wrong: every optional field null,
    /// every one set, unicode and JSON escapes, a running snapshot, empty and long `sources`,
    /// extreme numbers and a timestamp before 1970.
    pub fn odd_examples() -> Vec<Record> {
        let base = Record::example();
        let mut all_set = base.clone();
        all_set.record_id = "01937f5e-8d2c-7abc-9def-0123456789ab".into();
        all_set.sources = vec![Source::EbpfSeeded, Source::Preload, Source::Atexit];
        all_set.source = Source::EbpfSeeded;
        all_set.system = Some("perlmutter".into());
        all_set.subsystem = Some("gpu".into());
        all_set.process_end = Some(base.process_start + 5_000_001);
        all_set.exit = Exit::Signaled;
        all_set.exit_code = Some(-1);
        all_set.exit_signal = Some("SIGKILL".into());
        all_set.container_runtime = Some("podman".into());
        all_set.blas = Some("openblas".into());
        all_set.job_id = Some("123_4".into());
        all_set.step_id = Some("batch".into());
        all_set.job_source = Some(JobSource::Cgroup);
        all_set.rank = Some(i32::MAX);
        all_set.n_ranks = Some(u32::MAX);
        all_set.qos = Some("regular".into());
        all_set.account = Some("m1234".into());
        all_set.partition = Some("debug".into());
        all_set.env_kind = EnvKind::Conda;
        all_set.seq = u64::MAX;
        all_set.uid = u32::MAX;
        all_set.pid = i32::MIN;
        all_set.cpu_user_us = Some(u64::MAX);
        all_set.cpu_sys_us = Some(0);
        all_set.cpu_sampling = Some(sampling::SAMPLED.into());
        all_set.cpu_sample_hz = Some(19);
        all_set.cpu_samples_total = Some(u64::MAX);
        all_set.cpu_samples_self = Some(0);
        all_set.cpu_samples_inclusive = Some(1 << 53);
        all_set.cpu_samples_callers = vec![
            CallerSamples {
                package: "xarray".into(),
                samples: u64::MAX,
            },
            CallerSamples {
                package: "dask".into(),
                samples: 0,
            },
        ];
        let mut nulls = base.clone();
        nulls.sources = vec![];
        nulls.python_version = None;
        nulls.main = None;
        nulls.username = None;
        nulls.distribution = None;
        nulls.version = None;
        nulls.env_prefix = None;
        nulls.process_start = -1_234_567;
        nulls.first_seen = -1;
        let mut odd_text = base.clone();
        odd_text.record_id = "ünï-\"quoted\"\\back\nline\u{1F40D}".into();
        odd_text.host = "höst-日本".into();
        odd_text.package = "π".into();
        odd_text.first_path = "/tmp/\t\u{0}ctl/\u{7f}/é.py".into();
        odd_text.main = Some(String::new());
        odd_text.username = Some("用户".into());
        odd_text.exit = Exit::Unknown;
        odd_text.job_source = Some(JobSource::Env);
        odd_text.env_kind = EnvKind::PythonPath;
        odd_text.cpu_sampling = Some("unsupported:python-3.7".into());
        odd_text.cpu_sample_hz = Some(u32::MAX);
        odd_text.cpu_samples_callers = vec![CallerSamples {
            package: "ünï-\"quoted\"\n\u{1F40D}".into(),
            samples: 1,
        }];
        let mut running = base;
        running.exit = Exit::Running;
        running.process_end = None;
        vec![all_set, nulls, odd_text, running]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record::example()
    }

    #[test]
    fn the_fast_timestamp_parser_agrees_with_chrono() {
        let chrono_us = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_micros()
        };
        let mut us: i64 = -62_135_596_800_000_000; // 0001-01-01
        while us < 253_402_300_799_999_999 {
            let s = format_micros(us);
            assert_eq!(parse_micros_utc(s.as_bytes()), Some(us), "{s}");
            assert_eq!(chrono_us(&s), us, "{s}");
            us += 7_919_999_999_977; // about three months, every time of day in turn
        }
        for s in ["1969-12-31T23:59:59.999999Z", "2024-02-29T12:00:00.000001Z"] {
            assert_eq!(parse_micros(s).unwrap(), chrono_us(s), "{s}");
        }
        // Other spellings go to chrono, which keeps its rules.
        for s in [
            "2026-11-25T13:04:08Z",
            "2026-11-25t13:04:08.5z",
            "2026-11-25T14:04:08.123456+01:00",
            "2016-12-31T23:59:60.000000Z",
        ] {
            assert_eq!(parse_micros_utc(s.as_bytes()), None, "{s}");
            assert_eq!(parse_micros(s).unwrap(), chrono_us(s), "{s}");
        }
        for s in [
            "2026-02-30T00:00:00.000000Z",
            "2026-11-25T24:00:00.000000Z",
            "x",
        ] {
            assert_eq!(parse_micros_utc(s.as_bytes()), None, "{s}");
            assert!(parse_micros(s).is_err(), "{s}");
        }
    }

    #[test]
    fn json_round_trip_keeps_microseconds_and_nulls() {
        let r = sample();
        let j = serde_json::to_string(&r).unwrap();
        assert!(
            j.contains("\"process_start\":\"2025-11-24T16:00:00.123456Z\""),
            "{j}"
        );
        assert!(j.contains("\"process_end\":null"));
        let back: Record = serde_json::from_str(&j).unwrap();
        assert_eq!(back, r);
    }

    /// The daemon converts the records of a segment it wrote from memory (not read back):
    /// what a segment's line reads back as must be the record written, for every odd value.
    #[test]
    fn every_odd_example_reads_back_as_written() {
        for r in Record::odd_examples() {
            let j = serde_json::to_string(&r).unwrap();
            let back: Record = serde_json::from_str(&j).unwrap();
            assert_eq!(back, r, "{j}");
        }
    }

    #[test]
    fn timestamps_format_like_chrono_before_and_after_the_epoch() {
        for us in [
            0,
            1,
            999_999,
            1_764_000_000_223_456,
            -1,
            -1_000_001,
            253_402_300_799_999_999,
        ] {
            let t = chrono::DateTime::from_timestamp_micros(us).unwrap();
            assert_eq!(
                format_micros(us),
                t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                "{us}"
            );
        }
    }

    #[test]
    fn schema_names_match_json_fields() {
        let j = serde_json::to_value(sample()).unwrap();
        let obj = j.as_object().unwrap();
        let schema = arrow_schema();
        assert_eq!(obj.len(), schema.fields().len());
        for f in schema.fields() {
            assert!(obj.contains_key(f.name()), "{} missing from JSON", f.name());
        }
    }

    #[test]
    fn the_column_constants_are_the_schema() {
        let schema = arrow_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, columns::ALL);
        assert_eq!(columns::all_known(["package", "nope"]), Err("nope"));
    }

    #[test]
    fn cpu_time_round_trips_and_is_null_in_older_records() {
        let mut r = sample();
        (r.cpu_user_us, r.cpu_sys_us) = (Some(1_089_653), Some(19_388));
        let j = serde_json::to_string(&r).unwrap();
        assert!(
            j.contains("\"cpu_user_us\":1089653,\"cpu_sys_us\":19388"),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<Record>(&j).unwrap(), r);
        let batch = dataset::to_batch(std::slice::from_ref(&r)).unwrap();
        let col = batch.column_by_name(CPU_USER_US).unwrap();
        assert_eq!(col.data_type(), &DataType::UInt64);
        // A record written before the fields (spool, syslog, ingest input) reads as unknown.
        let mut old = serde_json::to_value(sample()).unwrap();
        let obj = old.as_object_mut().unwrap();
        obj.remove(CPU_USER_US);
        obj.remove(CPU_SYS_US);
        let back: Record = serde_json::from_value(old).unwrap();
        assert_eq!((back.cpu_user_us, back.cpu_sys_us), (None, None));
    }

    #[test]
    fn sampled_cpu_round_trips_and_is_null_in_older_records() {
        let mut r = sample();
        r.cpu_sampling = Some(sampling::SAMPLED.into());
        r.cpu_sample_hz = Some(19);
        (r.cpu_samples_total, r.cpu_samples_self) = (Some(1900), Some(400));
        r.cpu_samples_inclusive = Some(950);
        r.cpu_samples_callers = vec![CallerSamples {
            package: "xarray".into(),
            samples: 300,
        }];
        assert!(r.is_sampled());
        let j = serde_json::to_string(&r).unwrap();
        assert!(
            j.contains(
                "\"cpu_sampling\":\"sampled\",\"cpu_sample_hz\":19,\"cpu_samples_total\":1900,\
                 \"cpu_samples_self\":400,\"cpu_samples_inclusive\":950,\
                 \"cpu_samples_callers\":[{\"package\":\"xarray\",\"samples\":300}]"
            ),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<Record>(&j).unwrap(), r);
        let batch = dataset::to_batch(std::slice::from_ref(&r)).unwrap();
        let col = batch.column_by_name(CPU_SAMPLES_CALLERS).unwrap();
        assert_eq!(
            col.data_type(),
            &DataType::List(Arc::new(Field::new("item", caller_struct(), true)))
        );
        assert_eq!(
            batch.column_by_name(CPU_SAMPLE_HZ).unwrap().data_type(),
            &DataType::UInt32
        );
        // A record written before the fields reads as not sampled.
        let mut old = serde_json::to_value(&r).unwrap();
        let obj = old.as_object_mut().unwrap();
        for f in [
            CPU_SAMPLING,
            CPU_SAMPLE_HZ,
            CPU_SAMPLES_TOTAL,
            CPU_SAMPLES_SELF,
            CPU_SAMPLES_INCLUSIVE,
            CPU_SAMPLES_CALLERS,
        ] {
            obj.remove(f);
        }
        let back: Record = serde_json::from_value(old).unwrap();
        assert_eq!(back, sample());
        assert!(!back.is_sampled());
        // A caller with an unknown field is refused, as the record is.
        let bad = j.replace("\"samples\":300", "\"samples\":300,\"x\":1");
        assert!(serde_json::from_str::<Record>(&bad).is_err());
    }

    #[test]
    fn days_since_epoch_is_chronos() {
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        for y in 0..=9999 {
            for m in 0..=13 {
                for d in 0..=32 {
                    let want = chrono::NaiveDate::from_ymd_opt(y as i32, m, d)
                        .map(|day| day.signed_duration_since(epoch).num_days());
                    assert_eq!(days_since_epoch(y, m, d), want, "{y}-{m}-{d}");
                }
            }
        }
    }

    #[test]
    fn sampling_values() {
        for ok in [
            "sampled",
            "unsupported:python-3.7",
            "unsupported:free-threaded",
            "unsupported:debug-build",
            "unsupported:read-stalled",
        ] {
            assert!(sampling::is_valid(ok), "{ok}");
        }
        let long = format!("unsupported:{}", "x".repeat(65));
        for bad in [
            "",
            "Sampled",
            "unsupported",
            "unsupported:",
            "unsupported:Python 3.7",
            "unsupported:a\n",
            long.as_str(),
        ] {
            assert!(!sampling::is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn final_record_supersedes_running() {
        let running = sample();
        let mut fin = sample();
        fin.exit = Exit::Signaled;
        fin.seq = 3;
        assert!(fin.supersedes(&running));
        assert!(!running.supersedes(&fin));
    }
}
