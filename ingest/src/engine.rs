//! The ingest engine: messages in, transactions committed, segments handed to the writer.
//!
//! A transaction is what rsyslog confirms at once: its records are checked against the index
//! (which admits the new ones, so that a copy later in the same transaction is a duplicate)
//! and staged; [`Ingest::commit`] writes the quarantined messages, then the records to the WAL
//! with one `fdatasync`. A commit that fails rolls the whole transaction back, the index's
//! admissions included (rsyslog resends all of it, which must not then be mistaken for
//! duplicates). Counters move at commit for the same reason.
use std::{
    fs::{self, File},
    path::Path,
    time::{Duration, Instant},
};

use nix::fcntl::{Flock, FlockArg};
use pyusage_record::{
    atomic::{write_bytes_atomic, Durability, PathError},
    error_line, Record,
};
use serde::{Deserialize, Serialize};

use crate::{
    compact::{self, CompactOptions},
    index::{Entry, Index, Verdict},
    lanes::{self, Lane, LaneHash},
    parse::{self, Decoded, Malformed},
    quarantine::Quarantine,
    view::View,
    wal::{self, CommitError, Wal},
    writer::{self, BlockPool, Sealed, WriteError, Writer},
    Paths,
};

/// Settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The dataset root.
    pub out: std::path::PathBuf,
    /// First part of the Parquet file names (`<name>-<first number>.parquet`).
    pub name: String,
    /// This instance's lane of the dataset, and how many there are (see the crate's docs and
    /// [`crate::lanes`]): lane 0 of 1 when one ingest writes it.
    pub lane: Lane,
    /// Records per WAL segment (and so at most per Parquet file before compaction).
    pub flush_records: usize,
    /// A segment with records is converted after this long even if not full.
    pub flush_after: Duration,
    /// Index hashes held in memory (~40 bytes each); days beyond are read back when needed.
    pub index_entries: usize,
    /// Compaction.
    pub compact: CompactOptions,
    /// How long to wait for another ingest holding the dataset's lock.
    pub lock_wait: Duration,
}

impl Options {
    /// The first part of this lane's Parquet file names: `name`, and `name-lK` in lane K > 0
    /// (so that each lane compacts only its own files).
    pub fn file_name(&self) -> String {
        match self.lane.index {
            0 => self.name.clone(),
            k => format!("{}-l{k}", self.name),
        }
    }

    /// Defaults for a dataset at `out`.
    pub fn new(out: &Path) -> Options {
        Options {
            out: out.to_path_buf(),
            name: "ingest".into(),
            lane: Lane::default(),
            flush_records: 100_000,
            flush_after: Duration::from_secs(30),
            index_entries: 20_000_000,
            compact: CompactOptions::default(),
            lock_wait: Duration::from_secs(120),
        }
    }
}

/// Ingest failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Making the state directories, or reading state.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Another ingest holds the dataset.
    #[error("{}: another pyusage ingest holds this dataset", path.display())]
    Locked {
        /// The lock file.
        path: std::path::PathBuf,
    },
    /// Taking the lock failed.
    #[error("{}: locking: {source}", path.display())]
    Lock {
        /// The lock file.
        path: std::path::PathBuf,
        /// Cause.
        source: nix::errno::Errno,
    },
    /// The lane count asked differs from the one the dataset was written with.
    #[error(
        "{}: written by {recorded} lane(s), asked to run with --lanes {asked}: a dataset's \
         lane count is fixed when it is created (a node's records are in its lane's index \
         only, so another count would store resends again); write other lanes into a new \
         dataset",
        path.display()
    )]
    LaneCount {
        /// The dataset.
        path: std::path::PathBuf,
        /// Its lane count.
        recorded: u16,
        /// The one asked.
        asked: u16,
    },
    /// The lane hash asked differs from the one the dataset's lanes were routed by.
    #[error(
        "{}: its lanes route nodes by rsyslog's {recorded} hash, asked to run with \
         --lane-hash {asked}: every lane of a dataset must use its hash",
        path.display()
    )]
    LaneHash {
        /// The dataset.
        path: std::path::PathBuf,
        /// Its hash.
        recorded: &'static str,
        /// The one asked.
        asked: &'static str,
    },
    /// Lane state without the lane count.
    #[error(
        "{}: missing, but the dataset has lane state (.ingest/lane-K/): write it back as \
         {{\"lanes\":N}} with the --lanes its lanes ran with",
        path.display()
    )]
    LanesUnrecorded {
        /// `.ingest/lanes.json`.
        path: std::path::PathBuf,
    },
    /// Converting a WAL segment left by the last run.
    #[error("recovering the WAL: {0}")]
    Recover(#[source] WriteError),
    /// Finishing a compaction left by the last run.
    #[error("recovering a compaction: {0}")]
    RecoverCompaction(#[source] PathError),
    /// A transaction could not be made durable; it was rolled back (resend it).
    #[error("commit failed, transaction rolled back: {0}")]
    Commit(#[source] CommitError),
    /// Quarantined messages could not be synced; the transaction was rolled back.
    #[error("commit failed syncing the quarantine, transaction rolled back: {0}")]
    Quarantine(#[source] PathError),
    /// A record or a quarantine line could not be written as it arrived: the engine stops
    /// (the sender retries that message; what was written is recovered at the next start).
    #[error("writing an arriving message: {0}")]
    Append(#[source] PathError),
    /// Compacting on request.
    #[error("compacting: {0}")]
    Compact(#[source] compact::CompactError),
}

impl IngestError {
    /// Whether the engine can go on (the transaction is gone, the state is consistent).
    pub fn recoverable(&self) -> bool {
        matches!(
            self,
            IngestError::Commit(CommitError::RolledBack(_))
                | IngestError::Quarantine(_)
                | IngestError::Path(_)
        )
    }
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Staged for the dataset.
    Accepted,
    /// Its `record_id` was already there.
    Duplicate,
    /// A `running` snapshot whose final record is already there.
    Superseded,
    /// Malformed: staged for the quarantine.
    Quarantined(Malformed),
}

/// Counters, since the dataset was created (`.ingest/stats.json`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Stats {
    /// Records stored.
    pub accepted: u64,
    /// Resent records dropped.
    pub duplicates: u64,
    /// `running` snapshots dropped on arrival (their final record was there).
    pub superseded: u64,
    /// Malformed messages quarantined.
    pub quarantined: u64,
    /// Stored records whose sender had cut long fields (`_truncated`).
    pub truncated: u64,
    /// Records of a node whose host routes to another lane (stored: a copy may then be in
    /// that lane too; the lane counts of rsyslog's configuration and ingest's differ).
    pub misrouted: u64,
    /// Records found in the WAL at a start (a killed run's; counted by it as accepted only if
    /// it saved its counters after them) and converted.
    pub recovered: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Commits that failed and were rolled back.
    pub commit_errors: u64,
    /// Parquet files written from the WAL.
    pub files: u64,
    /// Compactions, files merged away by them, snapshots they left out.
    pub compactions: u64,
    /// See `compactions`.
    pub compacted_files: u64,
    /// See `compactions`.
    pub superseded_compacted: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.accepted += o.accepted;
        self.duplicates += o.duplicates;
        self.superseded += o.superseded;
        self.quarantined += o.quarantined;
        self.truncated += o.truncated;
        self.misrouted += o.misrouted;
        self.recovered += o.recovered;
        self.commits += o.commits;
        self.commit_errors += o.commit_errors;
        self.files += o.files;
        self.compactions += o.compactions;
        self.compacted_files += o.compacted_files;
        self.superseded_compacted += o.superseded_compacted;
    }
}

/// The open transaction.
#[derive(Default)]
struct Txn {
    /// The current segment's records and next number before the transaction's first record:
    /// accepted records go into the segment at once (their JSON into the WAL) and are cut
    /// back out if the transaction is not committed.
    start: Option<(usize, u64)>,
    /// A quarantine line's buffer.
    quarantine: Vec<u8>,
    /// Quarantine lines were written in this transaction.
    quarantined: bool,
    stats: Stats,
}

impl Txn {
    fn clear(&mut self) {
        self.start = None;
        self.quarantine.clear();
        self.quarantined = false;
        self.stats = Stats::default();
    }
}

/// The engine over one dataset (holding its lock).
pub struct Ingest {
    opts: Options,
    paths: Paths,
    _lock: Flock<File>,
    index: Index,
    quarantine: Quarantine,
    wal: Wal,
    current: Sealed,
    /// Blocks of records reused from converted segments.
    pool: BlockPool,
    started: Instant,
    txn: Txn,
    /// A record of another lane was logged once (then only counted).
    warned_misrouted: bool,
    writer: Option<Writer>,
    /// Segments handed to the writer and not yet converted.
    in_flight: usize,
    base: Stats,
    run: Stats,
}

/// Checks `asked`'s lane count and hash against the dataset's, recording them when the dataset
/// is new.
fn settle_lanes(out: &Path, asked: Lane) -> Result<(), IngestError> {
    let refuse = |recorded| IngestError::LaneCount {
        path: out.to_path_buf(),
        recorded,
        asked: asked.count,
    };
    let hash = |recorded: LaneHash| IngestError::LaneHash {
        path: out.to_path_buf(),
        recorded: recorded.name(),
        asked: asked.hash.name(),
    };
    let want = lanes::Layout {
        lanes: asked.count,
        hash: asked.hash,
    };
    match lanes::recorded(out)? {
        Some(l) if l.lanes != asked.count => Err(refuse(l.lanes)),
        Some(l) if l.hash != asked.hash => Err(hash(l.hash)),
        Some(_) => Ok(()),
        // Lanes ran here, but their count is gone: which index holds a node is unknown.
        None if lanes::has_lane_state(out) => Err(IngestError::LanesUnrecorded {
            path: lanes::count_file(out),
        }),
        None if asked.count <= 1 => Ok(()),
        None if lanes::has_records(out)? => Err(refuse(1)),
        None => {
            let dir = out.join(".ingest");
            fs::create_dir_all(&dir).map_err(PathError::at(&dir))?;
            match lanes::record(out, want)? {
                l if l == want => Ok(()),
                l if l.lanes != want.lanes => Err(refuse(l.lanes)),
                l => Err(hash(l.hash)),
            }
        }
    }
}

impl Ingest {
    /// The lane this ingest writes.
    pub fn lane(&self) -> Lane {
        self.opts.lane
    }

    /// Whether a record with `r`'s `record_id` is stored (or staged) in this lane.
    pub fn has(&mut self, r: &Record) -> Result<bool, IngestError> {
        Ok(self.index.has(&Entry::of(&View::of(r)))?)
    }

    /// Opens the dataset at `opts.out` (created if absent): takes its lock (calling `waiting`
    /// about once a second while another ingest holds it, for omprog's keep-alive), finishes
    /// what a crash left (a compaction's switch, WAL segments not yet in Parquet), and starts
    /// a new WAL segment.
    pub fn open(opts: Options, waiting: &mut dyn FnMut()) -> Result<Ingest, IngestError> {
        settle_lanes(&opts.out, opts.lane)?;
        let paths = Paths::lane(&opts.out, opts.lane.index);
        let name = opts.file_name();
        for d in [&paths.out, &paths.state_dir, &paths.wal, &paths.index] {
            fs::create_dir_all(d).map_err(PathError::at(d))?;
        }
        let lock = lock(&paths.lock, opts.lock_wait, waiting)?;
        compact::recover(&paths).map_err(IngestError::RecoverCompaction)?;
        let mut next = writer::saved_next(&paths)?.unwrap_or(1);
        let mut recovered = 0;
        for (first, path) in wal::segments(&paths.wal)? {
            let s = Sealed::from_wal(&path, first).map_err(IngestError::Recover)?;
            if s.rows() > 0 {
                tracing::info!(
                    "ingest: converting {} records left in {}",
                    s.rows(),
                    path.display()
                );
            }
            next = next.max(s.next).max(first);
            if s.rows() == 0 {
                fs::remove_file(&path).map_err(PathError::at(&path))?;
                continue;
            }
            writer::write_sealed(&paths, &name, &s).map_err(IngestError::Recover)?;
            recovered += s.rows() as u64;
        }
        let base = fs::read(&paths.stats)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let wal = Wal::create(&paths.wal, next)?;
        let writer = Writer::start(paths.clone(), name, opts.compact.clone());
        Ok(Ingest {
            index: Index::open(&paths.index, opts.index_entries)?,
            quarantine: Quarantine::new(&paths.quarantine),
            current: Sealed {
                wal: wal.path().to_path_buf(),
                next,
                ..Sealed::default()
            },
            pool: BlockPool::default(),
            wal,
            started: Instant::now(),
            txn: Txn::default(),
            warned_misrouted: false,
            writer: Some(writer),
            in_flight: 0,
            base,
            run: Stats {
                recovered,
                ..Stats::default()
            },
            _lock: lock,
            opts,
            paths,
        })
    }

    /// Parses, validates and checks one message and stages it in the open transaction.
    /// An `Err` is an index file that could not be read (the message is not staged).
    pub fn accept(&mut self, line: &[u8]) -> Result<Outcome, IngestError> {
        match parse::parse(line) {
            Ok(p) => {
                if p.truncated {
                    self.txn.stats.truncated += 1;
                }
                let owned;
                let v = match &p.record {
                    Decoded::View(v) => v,
                    Decoded::Record(r) => {
                        owned = View::of(r);
                        &owned
                    }
                };
                self.stage(v, &p.json)
            }
            Err(why) => self.reject(line, why),
        }
    }

    /// Stages a record read from a node's dataset (validated like a message).
    pub fn accept_record(&mut self, r: &Record) -> Result<Outcome, IngestError> {
        let json = serde_json::to_vec(r).expect("records serialise");
        let v = View::of(r);
        match parse::validate(&v) {
            Ok(()) => self.stage(&v, &json),
            Err(why) => self.reject(&json, why),
        }
    }

    /// Quarantines a message: written at once, synced with the commit.
    fn reject(&mut self, message: &[u8], why: Malformed) -> Result<Outcome, IngestError> {
        self.txn.quarantine.clear();
        Quarantine::line(&mut self.txn.quarantine, message, &why.to_string());
        self.quarantine
            .append(&self.txn.quarantine)
            .map_err(IngestError::Append)?;
        self.txn.quarantined = true;
        self.txn.stats.quarantined += 1;
        Ok(Outcome::Quarantined(why))
    }

    fn stage(&mut self, v: &View, json: &[u8]) -> Result<Outcome, IngestError> {
        let e = Entry::of(v);
        match self.index.admit(&e)? {
            Verdict::Duplicate => {
                self.txn.stats.duplicates += 1;
                Ok(Outcome::Duplicate)
            }
            Verdict::Superseded => {
                self.txn.stats.superseded += 1;
                Ok(Outcome::Superseded)
            }
            Verdict::New => {
                if !self.opts.lane.owns(v.host) {
                    self.txn.stats.misrouted += 1;
                    if !self.warned_misrouted {
                        self.warned_misrouted = true;
                        tracing::warn!(
                            "ingest: lane {} of {} received records of host {:?}, whose lane is \
                             {}: check that rsyslog's hash64mod and --lanes agree, and \
                             --lane-hash (xxh64 if rsyslog's fmhash.so links libxxhash; counted \
                             as misrouted)",
                            self.opts.lane.index,
                            self.opts.lane.count,
                            v.host,
                            self.opts.lane.route(v.host)
                        );
                    }
                }
                if self.txn.start.is_none() {
                    self.txn.start = Some((self.current.rows(), self.current.next));
                }
                // Numbered in the order of its WAL line.
                let n = self.wal.next_number() + self.wal.pending();
                self.current.push(e, n, v);
                self.wal.append(json);
                self.txn.stats.accepted += 1;
                // A large transaction (a node's file through `--from-dir`) is written as it
                // goes rather than held.
                if self.wal.buffered() >= 4 << 20 {
                    self.flush()?;
                }
                Ok(Outcome::Accepted)
            }
        }
    }

    /// Writes the records accepted so far to the WAL (not synced): to be called before the
    /// messages are answered, so that one `write` covers all the messages of a read.
    pub fn flush(&mut self) -> Result<(), IngestError> {
        self.wal.flush().map_err(IngestError::Append)
    }

    /// Drops the open transaction (a failure inside it means its commit must fail): its
    /// records are cut from the WAL, and the sender is to retry all of it.
    pub fn abort(&mut self) -> Result<(), IngestError> {
        self.drop_txn();
        self.wal.rollback().map_err(IngestError::Append)
    }

    /// Takes the open transaction's records back out of the segment and the index.
    fn drop_txn(&mut self) {
        if let Some((rows, next)) = self.txn.start {
            self.current.truncate(rows, next);
        }
        self.txn.clear();
        self.index.rollback();
    }

    /// Makes the open transaction durable: quarantine lines, then the records with one
    /// `fdatasync`. On error the transaction is rolled back.
    pub fn commit(&mut self) -> Result<(), IngestError> {
        let r = self.commit_inner();
        if r.is_err() {
            self.run.commit_errors += 1;
            self.drop_txn();
        }
        r
    }

    fn commit_inner(&mut self) -> Result<(), IngestError> {
        self.absorb_converted();
        if self.txn.start.is_none() && !self.txn.quarantined {
            self.run.add(&self.txn.stats);
            self.txn.clear();
            return self.maybe_rotate(false);
        }
        if let Err(e) = self.quarantine.sync() {
            self.wal.rollback().map_err(IngestError::Append)?;
            return Err(IngestError::Quarantine(e));
        }
        self.wal.commit().map_err(IngestError::Commit)?;
        self.index.commit();
        self.txn.stats.commits = 1;
        self.run.add(&self.txn.stats);
        self.txn.clear();
        self.maybe_rotate(false)
    }

    /// Converts the current segment if it is due by time (call when idle).
    pub fn tick(&mut self) -> Result<(), IngestError> {
        self.absorb_converted();
        self.maybe_rotate(false)
    }

    fn maybe_rotate(&mut self, force: bool) -> Result<(), IngestError> {
        // Not while a transaction is open: its records are in this segment, uncommitted, and
        // its commit goes to this segment's WAL.
        if self.txn.start.is_some() {
            return Ok(());
        }
        let rows = self.current.rows();
        let due = rows >= self.opts.flush_records
            || (rows > 0 && self.started.elapsed() >= self.opts.flush_after)
            || (rows > 0 && force);
        if !due {
            return Ok(());
        }
        // Back-pressure only when far behind: a busy writer (one segment converting, one
        // queued) normally just means a bigger next segment.
        if self.in_flight >= 2 && !force && rows < 4 * self.opts.flush_records {
            return Ok(());
        }
        // The new segment first: if it cannot be made, go on appending to this one.
        let wal = match Wal::create(&self.paths.wal, self.wal.next_number()) {
            Ok(w) => w,
            Err(e) if !force => {
                tracing::warn!("ingest: starting a new WAL segment: {}", error_line(&e));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let next = Sealed {
            wal: wal.path().to_path_buf(),
            next: wal.first(),
            pool: self.pool.clone(),
            ..Sealed::default()
        };
        let sealed = std::mem::replace(&mut self.current, next);
        self.writer.as_ref().expect("running").send(sealed);
        self.in_flight += 1;
        self.wal = wal;
        self.started = Instant::now();
        self.save_stats();
        Ok(())
    }

    fn absorb_converted(&mut self) {
        if let Some(w) = &self.writer {
            for entries in w.converted() {
                self.index.persisted(&entries);
                self.in_flight -= 1;
            }
        }
    }

    /// Counters: the dataset's so far, this run's included.
    pub fn stats(&self) -> Stats {
        let mut s = self.base.clone();
        s.add(&self.run);
        if let Some(w) = &self.writer {
            let g = w.stats.lock().expect("stats");
            s.files += g.files;
            s.compactions += g.compactions;
            s.compacted_files += g.compacted_files;
            s.superseded_compacted += g.superseded_dropped;
        }
        s
    }

    fn save_stats(&self) {
        let s = self.stats();
        if let Err(e) = write_bytes_atomic(
            &self.paths.stats,
            &serde_json::to_vec_pretty(&s).expect("serialises"),
            Durability::BestEffort,
        ) {
            tracing::warn!("ingest: {}", error_line(&e));
        }
    }

    /// Compacts every partition now (at least two small files each).
    pub fn compact_all(&mut self) -> Result<compact::Compacted, IngestError> {
        let mut opts = self.opts.compact.clone();
        opts.min_files = 2;
        let name = self.opts.file_name();
        let mut total = compact::Compacted::default();
        let parts = pyusage_record::dataset::partitions(&self.paths.out).map_err(|e| {
            IngestError::Path(PathError {
                path: self.paths.out.clone(),
                source: std::io::Error::other(e.to_string()),
            })
        })?;
        for p in parts {
            let Some(day) = crate::index::parse_date(&p.date) else {
                continue;
            };
            let c = compact::compact_day(&self.paths, &name, day, &opts)
                .map_err(IngestError::Compact)?;
            total.outputs += c.outputs;
            total.inputs += c.inputs;
            total.superseded += c.superseded;
        }
        self.run.compactions += total.outputs;
        self.run.compacted_files += total.inputs;
        self.run.superseded_compacted += total.superseded;
        Ok(total)
    }

    /// Ends: commits an open transaction (its messages were answered `DEFER_COMMIT`, which
    /// rsyslog 8.2302 may not send again), converts everything committed to Parquet (what
    /// fails stays in the WAL for the next start) and saves the counters.
    pub fn finish(mut self) -> Result<Stats, IngestError> {
        if let Err(e) = self.commit() {
            tracing::warn!("ingest: committing at the end: {}", error_line(&e));
        }
        let r = self.maybe_rotate(true);
        if let Some(w) = self.writer.take() {
            let stats = w.stats.clone();
            for entries in w.finish() {
                self.index.persisted(&entries);
            }
            let g = stats.lock().expect("stats");
            self.run.files += g.files;
            self.run.compactions += g.compactions;
            self.run.compacted_files += g.compacted_files;
            self.run.superseded_compacted += g.superseded_dropped;
        }
        // An empty last segment is not worth keeping.
        if self.current.rows() == 0 {
            let _ = fs::remove_file(self.wal.path());
        }
        self.save_stats();
        r?;
        Ok(self.stats())
    }
}

/// Takes the dataset's lock, waiting up to `wait`.
fn lock(
    path: &Path,
    wait: Duration,
    waiting: &mut dyn FnMut(),
) -> Result<Flock<File>, IngestError> {
    let deadline = Instant::now() + wait;
    loop {
        let f = File::create(path).map_err(PathError::at(path))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                waiting();
                std::thread::sleep(Duration::from_secs(1));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(IngestError::Locked {
                    path: path.to_path_buf(),
                })
            }
            Err((_, source)) => {
                return Err(IngestError::Lock {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyusage_record::{data_dir, Exit};

    fn msg(id: &str, day: i64) -> Vec<u8> {
        let mut r = Record::example();
        r.record_id = id.into();
        // A process of its own (readers keep one record per process and package).
        r.pid = id.bytes().map(i32::from).sum();
        r.exit = Exit::Exited;
        r.process_start += day * 86_400_000_000;
        format!(
            "<134>1 - h pyusage 1 IMPORT - {}",
            serde_json::to_string(&r).unwrap()
        )
        .into_bytes()
    }

    fn ids(out: &Path) -> Vec<String> {
        let l = data_dir::load(out, &data_dir::Filter::default()).unwrap();
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        let mut ids: Vec<_> = l.records.into_iter().map(|r| r.record_id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn an_aborted_transaction_leaves_nothing_and_its_resend_is_new() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("ds");
        let mut ing = Ingest::open(Options::new(&out), &mut || {}).unwrap();
        assert_eq!(ing.accept(&msg("a", 0)).unwrap(), Outcome::Accepted);
        assert_eq!(ing.accept(&msg("b", 1)).unwrap(), Outcome::Accepted);
        ing.commit().unwrap();
        // Into an existing day's chunk and a new day's; then taken back.
        assert_eq!(ing.accept(&msg("c", 0)).unwrap(), Outcome::Accepted);
        assert_eq!(ing.accept(&msg("d", 2)).unwrap(), Outcome::Accepted);
        assert_eq!(ing.accept(&msg("c", 0)).unwrap(), Outcome::Duplicate);
        ing.flush().unwrap();
        ing.abort().unwrap();
        assert_eq!(ing.accept(&msg("c", 0)).unwrap(), Outcome::Accepted);
        assert_eq!(ing.accept(&msg("a", 0)).unwrap(), Outcome::Duplicate);
        ing.commit().unwrap();
        let st = ing.finish().unwrap();
        assert_eq!((st.accepted, st.duplicates, st.commits), (3, 1, 2));
        assert_eq!(ids(&out), ["a", "b", "c"]);
        // The records are numbered in the order of their WAL lines, the cut ones not counted.
        let next = writer::saved_next(&Paths::new(&out)).unwrap();
        assert_eq!(next, Some(4));
    }

    #[test]
    fn an_idle_tick_inside_a_transaction_leaves_its_segment_alone() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("ds");
        let opts = Options {
            flush_after: Duration::ZERO,
            ..Options::new(&out)
        };
        let mut ing = Ingest::open(opts, &mut || {}).unwrap();
        ing.accept(&msg("a", 0)).unwrap();
        ing.commit().unwrap();
        ing.accept(&msg("b", 0)).unwrap();
        ing.flush().unwrap();
        ing.tick().unwrap();
        // Still the segment that holds the record's line, which the commit makes durable.
        let wal = std::fs::read_to_string(ing.wal.path()).unwrap();
        assert!(wal.contains("\"record_id\":\"b\""), "{wal}");
        ing.commit().unwrap();
        ing.finish().unwrap();
        assert_eq!(ids(&out), ["a", "b"]);
    }
}
