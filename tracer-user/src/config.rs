//! Daemon configuration: every field with its default. The command line overrides fields in
//! one place ([`crate::cli`]); the file form (`/etc/pyusage/config.toml`) uses the same names.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Daemon settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the spool (`spool/`), the Parquet dataset (`parquet/`) and `status.json` live.
    pub data_dir: PathBuf,
    /// Host name in records; default: the short host name.
    pub host: Option<String>,
    /// Cluster name (`system`); default: the job's `SLURM_CLUSTER_NAME`.
    pub system: Option<String>,
    /// Node class (`subsystem`).
    pub subsystem: Option<String>,
    /// Whether this is a compute node (`is_compute`).
    pub is_compute: bool,
    /// Members of this group are staff (`is_staff`).
    pub staff_group: Option<String>,
    /// Seconds between `running` snapshots of long-lived processes.
    pub flush_secs: u64,
    /// Close the spool segment and convert it to Parquet after this many seconds…
    pub rotate_secs: u64,
    /// …or this many bytes, whichever comes first.
    pub rotate_bytes: u64,
    /// tracefs mount point.
    pub tracefs: PathBuf,
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
            tracefs: PathBuf::from("/sys/kernel/tracing"),
        }
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

    #[test]
    fn defaults_round_trip_and_unknown_fields_are_rejected() {
        let c = Config::default();
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Config>(&j).unwrap(), c);
        assert_eq!(serde_json::from_str::<Config>("{}").unwrap(), c);
        let e = serde_json::from_str::<Config>(r#"{"flush_sec": 5}"#).unwrap_err();
        assert!(e.to_string().contains("flush_sec"), "{e}");
    }
}
