//! Central ingest: the collector end of the syslog path.
//!
//! Node daemons send each record as an RFC 5424 message; rsyslog relays carry them (queues,
//! disk-assisted buffering, TLS are rsyslog's) to a central rsyslog that runs
//! `pyusage ingest --out DATASET` through `omprog`. Ingest turns that stream into one Hive
//! Parquet dataset of the node layout (`date=YYYY-MM-DD/<name>-<first number>.parquet`),
//! so `pyusage analyze`, DuckDB and polars read it unchanged. The stages, one file each:
//!
//! - [`protocol`]: omprog's confirmation protocol; `OK` only once a transaction is durable;
//! - [`parse`]: a line → a validated record ([`view`]: its strings borrowed from the line),
//!   or why not;
//! - [`quarantine`]: malformed messages kept with their reason, counted;
//! - [`index`]: de-duplication by `record_id` across resends and restarts, and final
//!   records beating `running` snapshots;
//! - [`wal`]: one `fdatasync` per transaction;
//! - [`block`]: accepted records held column by column until they are converted;
//! - [`writer`]: WAL segments → Parquet on a second thread; [`compact`]: small files merged;
//! - [`engine`]: the above tied together; [`merge`]: node datasets (`--from-dir`) through the
//!   same engine; [`lanes`]: which lane a node's records belong to.
//!
//! State lives in `DATASET/.ingest/` (hidden: readers of the dataset skip it), the quarantine
//! in `DATASET/_quarantine.jsonl` (the Hive convention: readers skip `_` files).
//!
//! Several ingests can write one dataset at once, each in its own *lane* (`--lane K --lanes
//! N`): rsyslog waits for a reply to every message it hands an omprog program, so one
//! instance is bound by that round trip, not by its CPU, and the collector's rsyslog routes
//! each node (by a hash of its host name, [`lanes`]) to one of N omprog actions. A lane has
//! its own lock, WAL, index, counters and quarantine (`.ingest/lane-K/`,
//! `_quarantine-lane-K.jsonl`) and its own Parquet files (`<name>-lK-<number>.parquet`), which
//! only it compacts. De-duplication stays exact because every copy of a record comes from the
//! node that made it, and so through the same lane (a lane counts what reaches it from
//! another's node); `--from-dir` routes each node's records the same way. Lane 0's state is
//! where a one-lane dataset keeps it; the lane count is fixed when a dataset is created
//! (`.ingest/lanes.json`) and another is refused, since a node's records are in its lane's
//! index only (a `--from-dir` of the dataset into a new one changes it).
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

pub mod block;
pub mod compact;
pub mod engine;
pub mod index;
pub mod lanes;
pub mod merge;
pub mod parse;
pub mod protocol;
pub mod quarantine;
pub mod view;
pub mod wal;
pub mod writer;

pub use engine::{Ingest, IngestError, Options, Outcome, Stats};
pub use lanes::Lane;

/// Where everything lives under a dataset root.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The dataset root (`--out`).
    pub out: PathBuf,
    /// `.ingest/` (lane K > 0: `.ingest/lane-K/`).
    pub state_dir: PathBuf,
    /// `.ingest/wal/`.
    pub wal: PathBuf,
    /// `.ingest/index/`.
    pub index: PathBuf,
    /// `.ingest/state.json`: the next record number.
    pub state: PathBuf,
    /// `.ingest/stats.json`: counters since the dataset was created.
    pub stats: PathBuf,
    /// `.ingest/compact.json`: a compaction's switch in progress.
    pub intent: PathBuf,
    /// `.ingest/lock`: one ingest per dataset lane.
    pub lock: PathBuf,
    /// `_quarantine.jsonl` (lane K > 0: `_quarantine-lane-K.jsonl`).
    pub quarantine: PathBuf,
}

impl Paths {
    /// The paths of the dataset at `out` (its lane 0).
    pub fn new(out: &Path) -> Paths {
        Paths::lane(out, 0)
    }

    /// The paths of lane `lane` of the dataset at `out`.
    pub fn lane(out: &Path, lane: u16) -> Paths {
        let (s, quarantine) = match lane {
            0 => (out.join(".ingest"), out.join("_quarantine.jsonl")),
            k => (
                out.join(".ingest").join(format!("lane-{k}")),
                out.join(format!("_quarantine-lane-{k}.jsonl")),
            ),
        };
        Paths {
            out: out.to_path_buf(),
            wal: s.join("wal"),
            index: s.join("index"),
            state: s.join("state.json"),
            stats: s.join("stats.json"),
            intent: s.join("compact.json"),
            lock: s.join("lock"),
            quarantine,
            state_dir: s,
        }
    }
}
