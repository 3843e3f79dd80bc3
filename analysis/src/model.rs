//! The data model every stage shares: strings ↔ dense global ids ([`Interner`], [`Names`]) and
//! the kept rows of one partition as integer columns ([`Chunk`]), with the derived keys (month,
//! node bin) both back ends compute identically. No I/O and no back-end code here: the scan
//! (Parquet in) fills it, the back ends and [`crate::counts`] read it, and the report and its
//! outputs (JSON, CSV, HTML) only see names — so dependencies point from the edges to this core.
//!
//! A process lives in exactly one partition (the daemon partitions by `process_start`), so
//! process ids are local to a chunk; back ends that need global ones add an offset.
use std::sync::Mutex;

use rustc_hash::FxHashMap;
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
    /// The environment kind is known (not null).
    pub const HAS_ENV: u8 = 64;
    /// The CPU sampler walked the process's stacks (`cpu_sampling = sampled`, with counts
    /// and a rate): the row has an entry in [`super::Chunk::samples`].
    pub const SAMPLED: u8 = 128;
}

/// No value (job, version, BLAS).
pub const NONE: u32 = u32::MAX;
/// No job.
pub const NO_JOB: u64 = u64::MAX;
/// CPU time unknown (a record without `cpu_user_us`/`cpu_sys_us`, or a dataset older than them).
pub const NO_CPU: u64 = u64::MAX;
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
    /// The process's CPU time (user + system, µs) as of this record, or [`NO_CPU`]. A running
    /// snapshot holds the time so far; the final record, the whole.
    pub cpu_us: Vec<u64>,
    /// Index into `samples` of a [`flag::SAMPLED`] row, else [`NONE`].
    pub sample: Vec<u32>,
    /// The sampled rows' counts (sparse: rows of unsampled processes have none).
    pub samples: Vec<RowSamples>,
    /// `(caller package id, samples)` of the sampled rows, each row's a range of it
    /// ([`RowSamples::callers`]).
    pub callers: Vec<(u32, u64)>,
    /// Distinct processes in the chunk.
    pub processes: u32,
}

/// The CPU sampler's counts of one record (see the record's `cpu_samples_*` fields). A
/// running snapshot holds the samples so far; the final record, all.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RowSamples {
    /// The process's samples.
    pub total: u64,
    /// Samples in this package's own code.
    pub own: u64,
    /// Samples with this package on the stack.
    pub inclusive: u64,
    /// The process's samples as CPU time: `total × 10⁶ / hz`, µs, rounded down.
    pub total_us: u64,
    /// The self samples as CPU time: `own × 10⁶ / hz`, µs, rounded down.
    pub own_us: u64,
    /// The row's callers: `callers[start..end]` of the chunk.
    pub callers: (u32, u32),
}

/// Samples as CPU time at `hz` samples per CPU-second: µs, rounded down (saturating).
pub fn sample_us(samples: u64, hz: u32) -> u64 {
    (samples as u128 * 1_000_000 / hz.max(1) as u128).min(u64::MAX as u128) as u64
}

impl Chunk {
    /// Rows.
    pub fn len(&self) -> usize {
        self.package.len()
    }

    /// The sampler's counts of row `i`, if its process was sampled.
    pub fn samples_of(&self, i: usize) -> Option<&RowSamples> {
        match self.sample.get(i) {
            Some(&s) if s != NONE => self.samples.get(s as usize),
            _ => None,
        }
    }

    /// The callers of a sampled row: `(caller package id, samples)`.
    pub fn callers_of(&self, s: &RowSamples) -> &[(u32, u64)] {
        &self.callers[s.callers.0 as usize..s.callers.1 as usize]
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
