//! The customs-style record (NERSC's `customs`, SciPy 2021, Table 1) and its mapping to and
//! from this project's record.
//!
//! The old tool's `sitecustomize` looked at `sys.modules` when the interpreter exited and wrote
//! one JSON object per (process, package) with the paper's Table 1 fields. [`CustomsRow`] is
//! that object: [`CustomsRow::parse`] reads one line of old data (`pyusage import-customs`),
//! [`CustomsRow::to_record`] maps it into this schema, and [`CustomsRow::from_record`] is the
//! export view (`pyusage show --format customs`). The mapping, both ways, and what it loses
//! are in `docs/customs.md`.
use std::{num::ParseIntError, str::FromStr};

use pyusage_record::{EnvKind, Exit, JobSource, Micros, Record, Source};
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// `first_path` of an imported record: the old tool saw modules, not files. Not a path (no
/// `/`), in the style of Python's own `<frozen …>` and `<string>`.
pub const FIRST_PATH: &str = "<customs>";

/// `host` of an imported record when the line has none and no `--host` is given.
pub const UNKNOWN_HOST: &str = "unknown";

/// `container_runtime` of a record imported from a line with `is_shifter: true`.
pub const SHIFTER: &str = "shifter";

/// One customs-style line: the Table 1 fields (null or absent = unknown), the package and
/// the timestamp, and the few extras this project's export adds (`version`, `host`, `pid`,
/// `uid`). Serialised in the old field names (the export); read with [`CustomsRow::parse`]
/// (or serde, which uses it), which accepts the aliases `module` and `hostname` and ignores
/// unknown keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomsRow {
    /// Interpreter path (`sys.executable`).
    pub executable: Option<String>,
    /// Ran on a compute node.
    pub is_compute: Option<bool>,
    /// Ran in a Shifter container.
    pub is_shifter: Option<bool>,
    /// The user is a staff member.
    pub is_staff: Option<bool>,
    /// Slurm job id (a string; an integer is accepted on input).
    pub job_id: Option<String>,
    /// Main script (`sys.argv[0]`-like).
    pub main: Option<String>,
    /// Nodes in the job.
    pub num_nodes: Option<u32>,
    /// Slurm QOS.
    pub qos: Option<String>,
    /// Charge account (NERSC "repo").
    pub repo: Option<String>,
    /// Node class.
    pub subsystem: Option<String>,
    /// Cluster.
    pub system: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Module name as the old tool wrote it (possibly dotted: `numpy.linalg`); alias `module`.
    pub package: String,
    /// Version of the package, when known.
    pub version: Option<String>,
    /// µs since the epoch. Written as epoch seconds (a float, like Python's `time.time()`);
    /// read from epoch seconds (integer or float) or an RFC 3339 string.
    #[serde(serialize_with = "epoch_seconds")]
    pub timestamp: Micros,
    /// Host name; alias `hostname`.
    pub host: Option<String>,
    /// Process id.
    pub pid: Option<i32>,
    /// Real uid.
    pub uid: Option<u32>,
}

/// A line that is not a customs-style record. Each error says which field; the cause (JSON
/// syntax, a type, a number or a date) is its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum CustomsError {
    /// The line is empty (or blank).
    #[error("empty line")]
    Empty,
    /// Not UTF-8.
    #[error("not UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// Not JSON.
    #[error("not JSON")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not an object.
    #[error("not a JSON object but {found}")]
    NotAnObject {
        /// What it is.
        found: &'static str,
    },
    /// A required field is absent or null.
    #[error("no {field:?}")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// A field and its alias are both given.
    #[error("both {field:?} and its alias {alias:?}")]
    Both {
        /// The field.
        field: &'static str,
        /// The alias.
        alias: &'static str,
    },
    /// A field of the wrong type.
    #[error("{field:?}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// Cause (serde's: what was expected and what was found).
        source: serde_json::Error,
    },
    /// A number given as a string that is not one.
    #[error("{field:?}: {value:?} is not a number")]
    NotANumber {
        /// The field.
        field: &'static str,
        /// The string.
        value: String,
        /// Cause.
        source: ParseIntError,
    },
    /// A process id above `i32::MAX`.
    #[error("{field:?}: {value} is out of range")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// `timestamp` is neither a number nor a string.
    #[error("\"timestamp\": expected epoch seconds or an RFC 3339 string, found {found}")]
    TimestampType {
        /// What it is.
        found: &'static str,
    },
    /// `timestamp` is a string but not RFC 3339.
    #[error("\"timestamp\": {value:?} is not RFC 3339")]
    TimestampText {
        /// The string.
        value: String,
        /// Cause.
        source: chrono::ParseError,
    },
    /// A string field holds a control character (NUL, ESC, …) or a bidirectional override:
    /// no field of the old tool legitimately does, and a terminal would act on some.
    #[error(
        "{field:?} holds a control or bidirectional-override character: {}",
        escaped(value)
    )]
    Hostile {
        /// The field.
        field: &'static str,
        /// The value, as given.
        value: String,
    },
    /// `package` does not start with a module name (empty, or a leading dot).
    #[error("\"package\": {value:?} is not a module name")]
    BadPackage {
        /// The value.
        value: String,
    },
}

/// A character a terminal could interpret, or that reorders what it shows: a control
/// character (C0 including NUL and ESC, DEL, C1) or a bidirectional override/isolate.
pub fn hostile(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` quoted, with every [`hostile`] character as a `\u{..}` escape.
fn escaped(s: &str) -> String {
    let inner: String = s
        .chars()
        .map(|c| {
            if hostile(c) || c == '"' || c == '\\' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    format!("\"{inner}\"")
}

/// The name of a JSON value's type, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The top-level package of a module name: `numpy.linalg` → `numpy` (this schema has one
/// record per top-level package). A name ending in an archive suffix (`deps.zip`, `x.egg`,
/// `app.pyz`, `w.whl`) is this schema's package for an import from an archive and is kept
/// whole, so that the export of such a record reads back unchanged.
pub fn top_level(name: &str) -> &str {
    const ARCHIVES: &[&str] = &[".zip", ".egg", ".pyz", ".whl"];
    if ARCHIVES.iter().any(|a| name.ends_with(a)) {
        return name;
    }
    name.split('.').next().unwrap_or(name)
}

/// The JSON object of a line, its known fields taken out one by one.
struct Fields(Map<String, Value>);

impl Fields {
    /// The field's value (under its name or `alias`); null is absent.
    fn take(
        &mut self,
        field: &'static str,
        alias: Option<&'static str>,
    ) -> Result<Option<Value>, CustomsError> {
        let v = self.0.remove(field);
        let a = alias.and_then(|a| self.0.remove(a));
        match (v, a) {
            (Some(v), Some(a)) if !v.is_null() && !a.is_null() => Err(CustomsError::Both {
                field,
                alias: alias.expect("an alias was found"),
            }),
            (v, a) => Ok(v.filter(|v| !v.is_null()).or(a.filter(|a| !a.is_null()))),
        }
    }

    fn typed<T: DeserializeOwned>(
        &mut self,
        field: &'static str,
        alias: Option<&'static str>,
    ) -> Result<Option<T>, CustomsError> {
        self.take(field, alias)?
            .map(|v| {
                serde_json::from_value(v)
                    .map_err(|source| CustomsError::WrongType { field, source })
            })
            .transpose()
    }

    fn boolean(&mut self, field: &'static str) -> Result<Option<bool>, CustomsError> {
        self.typed(field, None)
    }

    /// A string without [`hostile`] characters.
    fn string(
        &mut self,
        field: &'static str,
        alias: Option<&'static str>,
    ) -> Result<Option<String>, CustomsError> {
        let s: Option<String> = self.typed(field, alias)?;
        safe(field, s)
    }

    /// A non-negative integer, or a string of one (the old tool copied some from Slurm's
    /// environment as they were).
    fn count<T>(&mut self, field: &'static str) -> Result<Option<T>, CustomsError>
    where
        T: DeserializeOwned + FromStr<Err = ParseIntError>,
    {
        match self.take(field, None)? {
            Some(Value::String(s)) => {
                s.trim()
                    .parse()
                    .map(Some)
                    .map_err(|source| CustomsError::NotANumber {
                        field,
                        value: s,
                        source,
                    })
            }
            v => v
                .map(|v| {
                    serde_json::from_value(v)
                        .map_err(|source| CustomsError::WrongType { field, source })
                })
                .transpose(),
        }
    }

    /// `job_id`: a string, or an integer written as one.
    fn job_id(&mut self) -> Result<Option<String>, CustomsError> {
        const FIELD: &str = "job_id";
        match self.take(FIELD, None)? {
            Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
            Some(v) => {
                let s = serde_json::from_value(v).map_err(|source| CustomsError::WrongType {
                    field: FIELD,
                    source,
                })?;
                safe(FIELD, Some(s))
            }
            None => Ok(None),
        }
    }

    /// `timestamp` in µs: epoch seconds (integer or float, to the µs) or RFC 3339.
    fn timestamp(&mut self) -> Result<Micros, CustomsError> {
        let v = self
            .take("timestamp", None)?
            .ok_or(CustomsError::Missing { field: "timestamp" })?;
        let range = |value: String| CustomsError::OutOfRange {
            field: "timestamp",
            value,
        };
        let us = match &v {
            Value::Number(n) => match n.as_i64() {
                Some(s) => s
                    .checked_mul(1_000_000)
                    .ok_or_else(|| range(n.to_string()))?,
                None => {
                    let x = n.as_f64().filter(|x| x.abs() < 9.2e12);
                    let x = x.ok_or_else(|| range(n.to_string()))?;
                    // Whole seconds and the fraction apart: the subtraction is exact, so the
                    // µs are those of the float (at today's epoch a double holds 0.24 µs).
                    let secs = x.trunc();
                    secs as i64 * 1_000_000 + ((x - secs) * 1e6).round() as i64
                }
            },
            Value::String(s) => {
                pyusage_record::parse_micros(s).map_err(|source| CustomsError::TimestampText {
                    value: s.clone(),
                    source,
                })?
            }
            other => return Err(CustomsError::TimestampType { found: kind(other) }),
        };
        match chrono::DateTime::from_timestamp_micros(us) {
            Some(_) => Ok(us),
            None => Err(range(v.to_string())),
        }
    }
}

/// `s`, unless it holds a [`hostile`] character.
fn safe(field: &'static str, s: Option<String>) -> Result<Option<String>, CustomsError> {
    match s {
        Some(value) if value.chars().any(hostile) => Err(CustomsError::Hostile { field, value }),
        s => Ok(s),
    }
}

fn epoch_seconds<S: Serializer>(us: &Micros, s: S) -> Result<S::Ok, S::Error> {
    if us % 1_000_000 == 0 {
        s.serialize_i64(us / 1_000_000)
    } else {
        s.serialize_f64(*us as f64 / 1e6)
    }
}

impl CustomsRow {
    /// Reads one line of customs-style JSON.
    pub fn parse(line: &str) -> Result<CustomsRow, CustomsError> {
        if line.trim().is_empty() {
            return Err(CustomsError::Empty);
        }
        match serde_json::from_str(line).map_err(CustomsError::NotJson)? {
            Value::Object(map) => CustomsRow::from_map(map),
            other => Err(CustomsError::NotAnObject {
                found: kind(&other),
            }),
        }
    }

    /// Reads one line given as bytes (old files are not always UTF-8).
    pub fn parse_bytes(line: &[u8]) -> Result<CustomsRow, CustomsError> {
        CustomsRow::parse(std::str::from_utf8(line).map_err(CustomsError::NotUtf8)?)
    }

    /// The row of a JSON object: known keys typed, unknown keys ignored.
    pub fn from_map(map: Map<String, Value>) -> Result<CustomsRow, CustomsError> {
        let mut f = Fields(map);
        let package = f
            .string("package", Some("module"))?
            .ok_or(CustomsError::Missing { field: "package" })?;
        if top_level(&package).is_empty() {
            return Err(CustomsError::BadPackage { value: package });
        }
        let pid: Option<u32> = f.count("pid")?;
        let pid = pid
            .map(|p| {
                i32::try_from(p).map_err(|_| CustomsError::OutOfRange {
                    field: "pid",
                    value: p.to_string(),
                })
            })
            .transpose()?;
        Ok(CustomsRow {
            timestamp: f.timestamp()?,
            executable: f.string("executable", None)?,
            is_compute: f.boolean("is_compute")?,
            is_shifter: f.boolean("is_shifter")?,
            is_staff: f.boolean("is_staff")?,
            job_id: f.job_id()?,
            main: f.string("main", None)?,
            num_nodes: f.count("num_nodes")?,
            qos: f.string("qos", None)?,
            repo: f.string("repo", None)?,
            subsystem: f.string("subsystem", None)?,
            system: f.string("system", None)?,
            username: f.string("username", None)?,
            version: f.string("version", None)?,
            host: f.string("host", Some("hostname"))?,
            uid: f.count("uid")?,
            pid,
            package,
        })
    }

    /// This schema's record of the row. `host` is used when the row has none (or an empty
    /// one); `record_id` and `seq` are the importer's (see [`record_id`]). What each field
    /// becomes is in `docs/customs.md`.
    pub fn to_record(&self, host: &str, record_id: String, seq: u64) -> Record {
        let ts = self.timestamp;
        let pid = self.pid.unwrap_or(0);
        let shifter = self.is_shifter.unwrap_or(false);
        Record {
            record_id,
            seq,
            source: Source::Atexit,
            sources: vec![Source::Atexit],
            host: self
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| host.to_owned()),
            system: self.system.clone(),
            subsystem: self.subsystem.clone(),
            is_compute: self.is_compute.unwrap_or(false),
            pid,
            ppid: 0,
            root_pid: pid,
            // The old hook wrote at exit: its one time is all three.
            process_start: ts,
            process_end: Some(ts),
            exit: Exit::Exited,
            exit_code: None,
            exit_signal: None,
            executable: self.executable.clone().unwrap_or_default(),
            python_version: None,
            main: self.main.clone(),
            uid: self.uid.unwrap_or(0),
            username: self.username.clone(),
            is_staff: self.is_staff.unwrap_or(false),
            in_container: shifter,
            container_runtime: shifter.then(|| SHIFTER.to_owned()),
            blas: None,
            job_id: self.job_id.clone(),
            step_id: None,
            // The old hook read the job from the environment.
            job_source: self.job_id.as_ref().map(|_| JobSource::Env),
            rank: None,
            n_ranks: None,
            num_nodes: self.num_nodes.unwrap_or(1),
            qos: self.qos.clone(),
            account: self.repo.clone(),
            partition: None,
            package: top_level(&self.package).to_owned(),
            distribution: None,
            version: self.version.clone(),
            env_kind: EnvKind::Unknown,
            env_prefix: None,
            first_path: FIRST_PATH.to_owned(),
            n_files: 0,
            first_seen: ts,
            // The legacy collector recorded no CPU time and sampled nothing.
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

    /// The export view of a record: the old names, `timestamp` = `process_start` (so that
    /// importing the export gives the same processes in the same periods), `is_shifter` =
    /// `in_container` whatever the runtime, and an empty `executable` as null.
    pub fn from_record(r: &Record) -> CustomsRow {
        CustomsRow {
            executable: Some(r.executable.clone()).filter(|e| !e.is_empty()),
            is_compute: Some(r.is_compute),
            is_shifter: Some(r.in_container),
            is_staff: Some(r.is_staff),
            job_id: r.job_id.clone(),
            main: r.main.clone(),
            num_nodes: Some(r.num_nodes),
            qos: r.qos.clone(),
            repo: r.account.clone(),
            subsystem: r.subsystem.clone(),
            system: r.system.clone(),
            username: r.username.clone(),
            package: r.package.clone(),
            version: r.version.clone(),
            timestamp: r.process_start,
            host: Some(r.host.clone()),
            pid: Some(r.pid),
            uid: Some(r.uid),
        }
    }
}

impl<'de> Deserialize<'de> for CustomsRow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = Map::deserialize(d)?;
        CustomsRow::from_map(map)
            .map_err(|e| serde::de::Error::custom(pyusage_record::error_line(&e)))
    }
}

/// FNV-1a, 64 bits: a hash that is the same in every build (std's is not promised to be).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The `record_id` of line `line_no` (1-based) whose bytes are `line`: `customs-<hash of
/// the line>-<line number>`, the same every time the file is imported.
pub fn record_id(line: &[u8], line_no: u64) -> String {
    format!("customs-{:016x}-{line_no}", fnv1a(line))
}

/// Lines one import may hold: `seq` is [`seq_base`] + the line's rank in the run.
const RUN_BITS: u32 = 27;

/// The first `seq` of an import whose first line is `first_line`: a hash of that line,
/// shifted above the lines of one run (2^27, 134 million). The dataset names its files
/// `<host>-<first seq>`: importing the same input again gives the same names (the files are
/// replaced by identical ones), while another input, imported into the same dataset with
/// the same host, gets other names instead of replacing the first one's files.
pub fn seq_base(first_line: &[u8]) -> u64 {
    (fnv1a(first_line) & ((1 << 36) - 1)) << RUN_BITS
}

#[cfg(test)]
mod tests;
