//! Daemon configuration: every field with its default. The file form is
//! `/etc/pyusage/config.toml` (path overridable with `--config`); command-line flags override
//! it field by field in one place (`cli/src/daemon.rs`). An invalid file is rejected at start with
//! the field and the reason.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{privacy::PrivacyConfig, ranks::RankPolicy, sinks::syslog::SyslogConfig};

/// The default configuration file.
pub const DEFAULT_PATH: &str = "/etc/pyusage/config.toml";

/// Daemon settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the spool (`spool/`), the Parquet dataset (`parquet/`), sink offsets (`sinks/`)
    /// and `status.json` live. Default `data` (relative to the working directory).
    pub data_dir: PathBuf,
    /// Host name in records; default: the short host name.
    pub host: Option<String>,
    /// Cluster name (`system`); default: the job's `SLURM_CLUSTER_NAME`.
    pub system: Option<String>,
    /// Node class (`subsystem`); default none.
    pub subsystem: Option<String>,
    /// Whether this is a compute node (`is_compute`); default false.
    pub is_compute: bool,
    /// Members of this group are staff (`is_staff`); default none.
    pub staff_group: Option<String>,
    /// Seconds between `running` snapshots of long-lived processes; default 300.
    pub flush_secs: u64,
    /// Close the spool segment and convert it to Parquet after this many seconds (default
    /// 3600)…
    pub rotate_secs: u64,
    /// …or this many bytes (default 64 MiB), whichever comes first.
    pub rotate_bytes: u64,
    /// Bound on the spool directory (default 1 GiB). When reached, the oldest segments that
    /// are already in Parquet but not yet delivered by every sink are retired anyway
    /// (`spool_bound_hits` in status; each sink counts what it missed as its `dropped`);
    /// records are never dropped before they are in Parquet.
    pub spool_max_bytes: u64,
    /// tracefs mount point; default `/sys/kernel/tracing`.
    pub tracefs: PathBuf,
    /// Records of MPI ranks: `all` (default), `first` or `per-node` (see `ranks.rs`).
    pub ranks: RankPolicy,
    /// Under `per-node`: seconds after the last rank of a job step ended before its aggregate
    /// record is written; default 10.
    pub rank_window_secs: u64,
    /// Entries of the kernel's process map (default 65,536): processes on probation and
    /// Python processes at once. Each non-root uid may hold a sixteenth of it on probation,
    /// so that no user's idle processes can fill it for everyone.
    pub kernel_procs: u32,
    /// Size of the kernel's ring buffer of events in MiB, a power of two (default 16: ~2,000
    /// Python starts with full environments). Once it is half full, no non-root uid may write
    /// more than an eighth of it between two drains.
    pub kernel_ring_mib: u32,
    /// Samples per CPU-second of the CPU sampler (default 19; 0 switches it off). Each sample
    /// of a Python process records which packages it was running (`cpu_samples_*`).
    pub sample_hz: u32,
    /// The syslog sink (off unless `[syslog] target` is set).
    pub syslog: SyslogConfig,
    /// Pseudonymous users, redacted paths, dropped fields (see `SECURITY.md`).
    pub privacy: PrivacyConfig,
    /// Whether to attach the eBPF tracer (default true). Off, or when attaching fails and a
    /// preload socket is set, the daemon runs in preload-only mode: imports from the preload
    /// library, forks/execs/exits from the kernel's process connector.
    pub ebpf: bool,
    /// Where the preload library's socket listens (default: none, off). The library connects
    /// to `/run/pyusage/preload.sock` unless its own configuration file says otherwise.
    pub preload_socket: Option<PathBuf>,
    /// Bounds per uid on the preload socket.
    pub preload_limits: crate::preload::Limits,
    /// The user the daemon becomes once attached (keeping only `CAP_DAC_READ_SEARCH` and
    /// `CAP_SYS_PTRACE`); it is given the data directory. Default: stay root (with every other
    /// capability dropped); the shipped configuration sets `pyusage`.
    pub user: Option<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("data"),
            host: None,
            system: None,
            subsystem: None,
            is_compute: false,
            staff_group: None,
            flush_secs: 300,
            rotate_secs: 3600,
            rotate_bytes: 64 << 20,
            spool_max_bytes: 1 << 30,
            tracefs: PathBuf::from("/sys/kernel/tracing"),
            ranks: RankPolicy::All,
            rank_window_secs: 10,
            kernel_procs: 65536,
            kernel_ring_mib: 16,
            sample_hz: 19,
            syslog: SyslogConfig::default(),
            privacy: PrivacyConfig::default(),
            ebpf: true,
            preload_socket: None,
            preload_limits: crate::preload::Limits::default(),
            user: None,
        }
    }
}

/// A configuration problem, with the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax or type error (toml's message names the key and line; printed on one
    /// line, as logs want it, and so not also offered as the error's source).
    #[error("{}: {}", path.display(), toml.to_string().trim().replace('\n', " "))]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        toml: toml::de::Error,
    },
    /// A `[syslog]` value out of range.
    #[error(transparent)]
    Syslog(#[from] crate::sinks::syslog::SyslogConfigError),
    /// A value out of range.
    #[error("configuration field {field}: {why}")]
    Invalid {
        /// Dotted field name.
        field: &'static str,
        /// Why.
        why: String,
    },
}

impl Config {
    /// Reads `path`; with `None`, reads [`DEFAULT_PATH`] if it exists, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default())
            }
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        let cfg: Config = toml::from_str(&text).map_err(|toml| ConfigError::Parse {
            path: path.clone(),
            toml,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges that types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, why: &str| {
            Err(ConfigError::Invalid {
                field,
                why: why.into(),
            })
        };
        if self.flush_secs == 0 {
            return bad("flush_secs", "must be at least 1");
        }
        if self.rotate_secs == 0 {
            return bad("rotate_secs", "must be at least 1");
        }
        if self.rotate_bytes < 4096 {
            return bad("rotate_bytes", "must be at least 4096");
        }
        if self.spool_max_bytes < self.rotate_bytes.saturating_mul(2) {
            return bad("spool_max_bytes", "must be at least twice rotate_bytes");
        }
        if !(1024..=1 << 22).contains(&self.kernel_procs) {
            return bad("kernel_procs", "must be between 1024 and 4194304");
        }
        if !self.ebpf && self.preload_socket.is_none() {
            return bad(
                "ebpf",
                "without eBPF the preload socket is the only source: set preload_socket",
            );
        }
        if self
            .preload_socket
            .as_ref()
            .is_some_and(|p| p.is_relative())
        {
            return bad("preload_socket", "must be an absolute path");
        }
        let l = &self.preload_limits;
        if l.rate == 0 || l.burst == 0 || l.connections == 0 || l.connections_per_uid == 0 {
            return bad(
                "preload_limits",
                "rate, burst and connections must be above 0",
            );
        }
        if !self.kernel_ring_mib.is_power_of_two() || self.kernel_ring_mib > 1024 {
            return bad("kernel_ring_mib", "must be a power of two, at most 1024");
        }
        if self.sample_hz > 1000 {
            return bad(
                "sample_hz",
                "must be at most 1000 (0 switches sampling off)",
            );
        }
        Ok(self.syslog.validate()?)
    }
}

/// The short host name.
pub fn short_hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| {
            h.to_string_lossy()
                .split('.')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(s: &str) -> Result<Config, ConfigError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, s).unwrap();
        Config::load(Some(&p))
    }

    #[test]
    fn defaults_and_a_full_file() {
        assert_eq!(load_str("").unwrap(), Config::default());
        let c = load_str(
            "data_dir = \"/var/lib/pyusage\"\nis_compute = true\nflush_secs = 60\n\
             [syslog]\ntarget = \"tcp:127.0.0.1:514\"\nmax_message_bytes = 65536\n",
        )
        .unwrap();
        assert!(c.is_compute);
        assert_eq!(c.syslog.target.as_deref(), Some("tcp:127.0.0.1:514"));
        assert_eq!(c.syslog.max_message_bytes, 65536);
    }

    #[test]
    fn errors_name_the_field() {
        let e = load_str("flush_sec = 5").unwrap_err().to_string();
        assert!(e.contains("flush_sec"), "{e}");
        let e = load_str("flush_secs = \"soon\"").unwrap_err().to_string();
        assert!(e.contains("flush_secs"), "{e}");
        let e = load_str("flush_secs = 0").unwrap_err().to_string();
        assert_eq!(e, "configuration field flush_secs: must be at least 1");
        let e = load_str("[syslog]\ntarget = \"carrier-pigeon:x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("syslog.target"), "{e}");
        let e = Config::load(Some(Path::new("/nonexistent/c.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/c.toml: "), "{e}");
    }
}

#[cfg(test)]
mod packaging_tests {
    use super::*;

    #[test]
    fn the_packaged_example_config_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config.toml");
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.data_dir, Path::new("/var/lib/pyusage"));
        assert!(c.is_compute);
    }
}
