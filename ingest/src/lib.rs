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
//!   same engine.
//!
//! State lives in `DATASET/.ingest/` (hidden: readers of the dataset skip it), the quarantine
//! in `DATASET/_quarantine.jsonl` (the Hive convention: readers skip `_` files).
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

pub mod block;
pub mod compact;
pub mod engine;
pub mod index;
pub mod merge;
pub mod parse;
pub mod protocol;
pub mod quarantine;
pub mod view;
pub mod wal;
pub mod writer;

pub use engine::{Ingest, IngestError, Options, Outcome, Stats};

/// Where everything lives under a dataset root.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The dataset root (`--out`).
    pub out: PathBuf,
    /// `.ingest/`.
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
    /// `.ingest/lock`: one ingest per dataset.
    pub lock: PathBuf,
    /// `_quarantine.jsonl`.
    pub quarantine: PathBuf,
}

impl Paths {
    /// The paths of the dataset at `out`.
    pub fn new(out: &Path) -> Paths {
        let s = out.join(".ingest");
        Paths {
            out: out.to_path_buf(),
            wal: s.join("wal"),
            index: s.join("index"),
            state: s.join("state.json"),
            stats: s.join("stats.json"),
            intent: s.join("compact.json"),
            lock: s.join("lock"),
            quarantine: out.join("_quarantine.jsonl"),
            state_dir: s,
        }
    }
}
