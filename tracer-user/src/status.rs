//! `status.json`: what the daemon reports of itself (attach state, kernel counters, fidelity,
//! spool, sinks), rewritten every few seconds and at shutdown, read by `pyusage status`,
//! `pyusage canary` and the tests.
use std::{collections::BTreeMap, path::Path};

use pyusage_record::atomic::{write_bytes_atomic, Durability, PathError};
use serde::{Deserialize, Serialize};

use tracer_common::{Counter, COUNTER_COUNT};

use crate::sinks::SinkStatus;

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
    /// Each configured sink by name (`"syslog": {…}`), at the top level of the file. Read
    /// leniently: any other top-level value (`"syslog": null` from an older daemon, a field
    /// a newer one added) is not a sink.
    #[serde(flatten, deserialize_with = "sinks")]
    pub sinks: BTreeMap<String, SinkStatus>,
    /// Rank records folded into another rank's (`--ranks first|per-node`).
    pub rank_duplicates: u64,
    /// Module opens seen and not recorded, by reason (reads, compilation, …).
    #[serde(default)]
    pub fidelity: crate::proctable::Fidelity,
    /// What captures imports: `ebpf`, `preload`, or both.
    #[serde(default)]
    pub collectors: Vec<String>,
    /// The preload socket's counters, when it listens.
    #[serde(default)]
    pub preload: Option<crate::preload::PreloadCounters>,
    /// The CPU sampler's rate, samples per CPU-second; absent when sampling is off.
    #[serde(default)]
    pub sample_hz: Option<u32>,
    /// The CPU sampler's counters, when sampling is on.
    #[serde(default)]
    pub sampler: Option<crate::sampler::SamplerCounts>,
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

/// The kernel's counters summed over CPUs, indexed by [`Counter`]; in `status.json` an
/// object with one field per [`Counter::name`] (a name this build does not know is ignored,
/// one it lacks reads as 0, so an older status file still reads).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters([u64; COUNTER_COUNT as usize]);

impl std::ops::Index<Counter> for Counters {
    type Output = u64;
    fn index(&self, c: Counter) -> &u64 {
        &self.0[c as usize]
    }
}

impl std::ops::IndexMut<Counter> for Counters {
    fn index_mut(&mut self, c: Counter) -> &mut u64 {
        &mut self.0[c as usize]
    }
}

impl serde::Serialize for Counters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(Counter::ALL.len()))?;
        for &c in Counter::ALL {
            m.serialize_entry(c.name(), &self[c])?;
        }
        m.end()
    }
}

impl<'de> serde::Deserialize<'de> for Counters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Counters, D::Error> {
        let m = std::collections::HashMap::<String, u64>::deserialize(d)?;
        let mut out = Counters::default();
        for &c in Counter::ALL {
            out.0[c as usize] = m.get(c.name()).copied().unwrap_or(0);
        }
        Ok(out)
    }
}

/// Run statistics of one program.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ProgStat {
    /// Program name.
    pub name: String,
    /// Runs counted.
    pub run_count: u64,
    /// Total run time, ns.
    pub run_time_ns: u64,
}

fn sinks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, SinkStatus>, D::Error> {
    let rest = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
    Ok(rest
        .into_iter()
        .filter_map(|(k, v)| Some((k, serde_json::from_value(v).ok()?)))
        .collect())
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
    fn counters_are_named_once_and_an_older_status_still_reads() {
        let mut c = Counters::default();
        for (i, &k) in Counter::ALL.iter().enumerate() {
            c.0[k as usize] = i as u64 + 1;
        }
        let v = serde_json::to_value(c).unwrap();
        assert_eq!(v.as_object().unwrap().len(), COUNTER_COUNT as usize);
        assert_eq!(v["ring_full"], 3);
        assert_eq!(v["kpath_unread"], 14);
        assert_eq!(serde_json::from_value::<Counters>(v).unwrap(), c);
        let old: Counters = serde_json::from_str(r#"{"ring_full": 5, "gone_counter": 1}"#).unwrap();
        assert_eq!((old[Counter::RingFull], old[Counter::KpathUnread]), (5, 0));
    }

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
        // An older daemon's file: no sink was `"syslog": null`; an unknown field is ignored.
        let mut v = v;
        v["syslog"] = serde_json::Value::Null;
        v["added_later"] = 1.into();
        std::fs::write(d.path().join(FILE), v.to_string()).unwrap();
        let old = Status::read(d.path()).unwrap();
        assert!(old.sinks.is_empty(), "{:?}", old.sinks);
    }
}
