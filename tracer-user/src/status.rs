//! `status.json`: what the daemon reports of itself (attach state, kernel counters, fidelity,
//! spool, sinks), rewritten every few seconds and at shutdown, read by `pyusage status`,
//! `pyusage canary` and the tests.
use std::{collections::BTreeMap, path::Path};

use pyusage_record::atomic::{write_bytes_atomic, Durability, PathError};
use serde::{Deserialize, Serialize};

use crate::{
    loader::{Counters, ProgStat},
    sinks::SinkStatus,
};

/// The file's name in the data directory.
pub const FILE: &str = "status.json";

/// What `status.json` holds (read by `pyusage status` and the tests).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// Daemon pid.
    pub pid: u32,
    /// Kernel counters.
    pub counters: Counters,
    /// Ring-buffer records that could not be decoded.
    pub undecodable: u64,
    /// Times the bounded queue between the ring-buffer reader and the processor was full (the
    /// processor was behind; the ring held the events meanwhile, and `ring_full` counts what
    /// it could not).
    #[serde(default)]
    pub queue_full: u64,
    /// Users' metadata files refused or cut, by cause (links, special files, size, permission,
    /// deadline).
    #[serde(default)]
    pub metadata: crate::untrusted::RefusalCounts,
    /// Live Python processes in the table.
    pub live_processes: usize,
    /// Records written to the spool since start.
    pub records_spooled: u64,
    /// Next sequence number.
    pub next_seq: u64,
    /// Spool errors since start.
    pub spool_errors: u64,
    /// Per-program BPF run statistics.
    pub programs: Vec<ProgStat>,
    /// Bytes in the spool directory.
    pub spool_bytes: u64,
    /// Segments retired while still undelivered because the spool bound was reached.
    pub spool_bound_hits: u64,
    /// Each configured sink by name (`"syslog": {…}`), at the top level of the file.
    #[serde(flatten)]
    pub sinks: BTreeMap<String, SinkStatus>,
    /// Rank records folded into another rank's (`--ranks first|per-node`).
    pub rank_duplicates: u64,
    /// Module opens seen and not recorded, by reason (reads, compilation, …).
    #[serde(default)]
    pub fidelity: crate::proctable::Fidelity,
}

/// Bytes in the spool's segments.
pub fn spool_bytes(dir: &Path) -> u64 {
    pyusage_record::segment::segments(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

impl Status {
    /// Replaces `<data>/status.json`. Best effort (no `fsync`): it describes the present and
    /// is rewritten within seconds; a crash leaves the previous version, never a torn one.
    pub fn write(&self, data: &Path) -> Result<(), PathError> {
        let path = data.join(FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| PathError {
            path: path.clone(),
            source: e.into(),
        })?;
        write_bytes_atomic(&path, &json, Durability::BestEffort)
    }

    /// Reads `<data>/status.json`.
    pub fn read(data: &Path) -> Result<Status, PathError> {
        let path = data.join(FILE);
        let text = std::fs::read(&path).map_err(PathError::at(&path))?;
        serde_json::from_slice(&text).map_err(|e| PathError {
            path,
            source: e.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_sit_at_the_top_level_and_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Status {
            pid: 7,
            ..Default::default()
        };
        s.sinks.insert(
            "syslog".into(),
            SinkStatus {
                delivered_seq: 5,
                ..Default::default()
            },
        );
        s.write(d.path()).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join(FILE)).unwrap()).unwrap();
        assert_eq!(v["syslog"]["delivered_seq"], 5);
        let back = Status::read(d.path()).unwrap();
        assert_eq!(back.sinks["syslog"].delivered_seq, 5);
        assert_eq!(back.pid, 7);
    }
}
