//! The pyusage import record, defined once.
//!
//! One record = one (process, top-level package) pair; field names and meanings follow
//! `docs/record-schema.md` (a superset of the shared contract). The daemon builds [`Record`]s,
//! the spool and syslog carry their JSON form, and the Parquet dataset stores the Arrow form
//! given by [`arrow_schema()`]; readers (`pyusage show`, analysis) decode back to [`Record`].
#![deny(missing_docs)]

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use serde::{Deserialize, Serialize};

pub mod dataset;

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
    /// `ebpf`, `preload` or `atexit`.
    pub source: String,
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
    /// `exited`, `signaled`, `running`, `unknown`.
    pub exit: String,
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
    pub job_source: Option<String>,
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
    /// `stdlib`, `system`, `venv`, `conda`, `user`, `pythonpath`, `container`, `unknown`.
    pub env_kind: String,
    /// Root of the environment.
    pub env_prefix: Option<String>,
    /// First module file of the package opened.
    pub first_path: String,
    /// Module files of this package opened.
    pub n_files: u32,
    /// First open of a file of this package.
    #[serde(with = "ts")]
    pub first_seen: Micros,
}

impl Record {
    /// The identity readers de-duplicate on: a process (`host`, `pid`, `process_start`) and a
    /// package. A periodic `running` record and the final one share it.
    pub fn key(&self) -> (String, i32, Micros, String) {
        (
            self.host.clone(),
            self.pid,
            self.process_start,
            self.package.clone(),
        )
    }

    /// Whether `self` should replace `other` (same key): a final record beats a `running`
    /// one, and otherwise the later `seq` wins.
    pub fn supersedes(&self, other: &Record) -> bool {
        let fin = |r: &Record| r.exit != "running";
        match (fin(self), fin(other)) {
            (true, false) => true,
            (false, true) => false,
            _ => self.seq > other.seq,
        }
    }
}

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
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        b[at] = c;
    }
    String::from_utf8(b.to_vec()).expect("ASCII digits and separators")
}

/// Parses RFC 3339 (any offset) to µs since the epoch.
pub fn parse_micros(s: &str) -> Result<Micros, chrono::ParseError> {
    Ok(chrono::DateTime::parse_from_rfc3339(s)?.timestamp_micros())
}

mod ts {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_micros(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_micros(&s).map_err(serde::de::Error::custom)
    }
}

mod ts_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::ts::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => super::parse_micros(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
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
        s("record_id", false),
        Field::new("seq", DataType::UInt64, false),
        s("source", false),
        s("host", false),
        s("system", true),
        s("subsystem", true),
        Field::new("is_compute", DataType::Boolean, false),
        Field::new("pid", DataType::Int32, false),
        Field::new("ppid", DataType::Int32, false),
        Field::new("root_pid", DataType::Int32, false),
        ts("process_start", false),
        ts("process_end", true),
        s("exit", false),
        Field::new("exit_code", DataType::Int32, true),
        s("exit_signal", true),
        s("executable", false),
        s("python_version", true),
        s("main", true),
        Field::new("uid", DataType::UInt32, false),
        s("username", true),
        Field::new("is_staff", DataType::Boolean, false),
        Field::new("in_container", DataType::Boolean, false),
        s("container_runtime", true),
        s("blas", true),
        s("job_id", true),
        s("step_id", true),
        s("job_source", true),
        Field::new("rank", DataType::Int32, true),
        Field::new("n_ranks", DataType::UInt32, true),
        Field::new("num_nodes", DataType::UInt32, false),
        s("qos", true),
        s("account", true),
        s("partition", true),
        s("package", false),
        s("distribution", true),
        s("version", true),
        s("env_kind", false),
        s("env_prefix", true),
        s("first_path", false),
        Field::new("n_files", DataType::UInt32, false),
        ts("first_seen", false),
    ]))
}

impl Record {
    /// An example record with plausible values (for tests and examples).
    pub fn sample() -> Record {
        Record {
            record_id: "0190-x".into(),
            seq: 7,
            source: "ebpf".into(),
            host: "n1".into(),
            system: None,
            subsystem: None,
            is_compute: true,
            pid: 10,
            ppid: 1,
            root_pid: 10,
            process_start: 1_764_000_000_123_456,
            process_end: None,
            exit: "running".into(),
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
            env_kind: "venv".into(),
            env_prefix: Some("/v".into()),
            first_path: "/v/lib/python3.11/site-packages/yaml/__init__.py".into(),
            n_files: 3,
            first_seen: 1_764_000_000_223_456,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record::sample()
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
    fn final_record_supersedes_running() {
        let running = sample();
        let mut fin = sample();
        fin.exit = "signaled".into();
        fin.seq = 3;
        assert!(fin.supersedes(&running));
        assert!(!running.supersedes(&fin));
    }
}
