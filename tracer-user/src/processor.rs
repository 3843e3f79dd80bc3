//! The processor: one thread that owns the process table and the outputs. It takes batches
//! of kernel events from the [`source`](crate::source), turns ended processes into records,
//! commits them to the spool (group commit per tick), converts closed segments into the
//! Parquet dataset and retires them once every sink has delivered them.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use tracer_common::user::Event;

use crate::{
    config::Config,
    preload::{PreloadCounters, PreloadMsg},
    privacy::Privacy,
    proctable::{Finished, ProcFs, ProcTable},
    ranks::Ranks,
    records::{self, Node, Users},
    sinks::{delivered_by_all, SinkHandle},
    spool::Spool,
    status::{spool_bytes, Counters, ProgStat, Status},
};

/// How often `status.json` is rewritten (and at shutdown).
pub(crate) const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Pending records that are written at once instead of at the next tick.
const COMMIT_RECORDS: usize = 4096;

/// Records of the open spool segment kept in memory at most: about 12 MB. A node that
/// spools more between rotations has its segment read back instead.
const HELD_MAX: usize = 8192;

/// The records of the open spool segment, as committed: converting a closed segment from
/// them at rotation saves reading back and parsing what was just written, about a third of
/// a record's conversion. Only a segment held from its first record on (`whole`) is taken
/// from memory; any other (a previous run's, one past [`HELD_MAX`]) is read from the file.
///
/// Kept as the batches they were committed in: appending a batch to one growing vector
/// reallocated and copied it (~700 bytes a record) onto fresh pages, and the page faults
/// were an eighth of the processor's CPU.
struct Held {
    segment: PathBuf,
    chunks: Vec<Vec<pyusage_record::Record>>,
    count: usize,
    whole: bool,
}

impl Held {
    fn new(segment: &Path) -> Held {
        Held {
            segment: segment.to_path_buf(),
            chunks: Vec::new(),
            count: 0,
            whole: true,
        }
    }
}

/// Messages from the event loop to the processor thread.
pub enum Msg {
    /// Kernel events, in ring-buffer order (or from the process connector).
    Events(Vec<Event>),
    /// Messages of the preload library, in the order read.
    Preload(Vec<PreloadMsg>),
    /// The preload socket's counters.
    PreloadCounters(PreloadCounters),
    /// What the event loop last read of the kernel side and of itself.
    Observed(Observed),
    /// A sampler worker answered with an inspection to retry soon.
    SamplerAnswer,
    /// Flush everything and stop.
    Shutdown,
}

/// The event loop's view of the kernel side, sent as often as `status.json` is written.
pub struct Observed {
    /// The kernel's counters.
    pub counters: Counters,
    /// Ring-buffer records that could not be decoded.
    pub undecodable: u64,
    /// Times the queue to the processor was full.
    pub queue_full: u64,
    /// Per-program BPF run statistics.
    pub programs: Vec<ProgStat>,
}

/// The processor: owns the process table and the outputs.
pub struct Processor {
    cfg: Config,
    node: Node,
    users: Users,
    table: ProcTable,
    spool: Spool,
    status: Status,
    pending: Vec<pyusage_record::Record>,
    held: Held,
    last_rotate: Instant,
    last_flush: Instant,
    last_status: Instant,
    error_reported: bool,
    /// Segments already in Parquet, with their last `seq`, waiting for sinks to deliver them.
    converted: BTreeMap<PathBuf, u64>,
    /// The sinks' offsets (for retention) and status.
    sinks: Vec<SinkHandle>,
    ranks: Ranks,
    privacy: Privacy,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Processor {
    /// A processor for `cfg`, writing to `spool`, keeping `sinks`' offsets for retention.
    pub fn new(
        cfg: Config,
        node: Node,
        table: ProcTable,
        spool: Spool,
        sinks: Vec<SinkHandle>,
        privacy: Privacy,
    ) -> Processor {
        Processor {
            users: Users::new(cfg.staff_group.clone()),
            ranks: Ranks::new(cfg.ranks, Duration::from_secs(cfg.rank_window_secs)),
            table,
            node,
            held: Held::new(spool.current()),
            spool,
            status: Status {
                pid: std::process::id(),
                ..Default::default()
            },
            pending: Vec::new(),
            last_rotate: Instant::now(),
            last_flush: Instant::now(),
            last_status: Instant::now(),
            error_reported: false,
            converted: BTreeMap::new(),
            sinks,
            privacy,
            cfg,
        }
    }

    /// Says in `status.json` which collectors capture imports. With the preload socket, a
    /// process ended by its exit waits a moment for its atexit report (see `proctable::atexit`).
    pub fn set_collectors(&mut self, ebpf: bool, preload: bool) {
        self.table
            .set_exit_grace(preload.then_some(crate::proctable::EXIT_GRACE));
        self.status.collectors = [(ebpf, "ebpf"), (preload, "preload")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| (*n).to_owned())
            .collect();
    }

    /// Adds a process that was running before the daemon started.
    pub fn seed(&mut self, s: crate::seed::Seeded) {
        self.table.seed(s, &ProcFs);
    }

    fn add(&mut self, f: Finished) {
        let mut recs = records::build(&f, &self.node, &mut self.users);
        if self.privacy.is_active() {
            recs.iter_mut().for_each(|r| self.privacy.apply(r));
        }
        let recs = self.ranks.apply(recs, Instant::now());
        self.pending.extend(recs);
    }

    /// Makes pending records durable; on error keeps them for the next attempt and reports
    /// the condition once.
    fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.spool.append(&mut self.pending) {
            Ok(()) => {
                self.status.records_spooled += self.pending.len() as u64;
                if self.held.whole && self.held.count + self.pending.len() <= HELD_MAX {
                    self.held.count += self.pending.len();
                    // The next batch is likely about as large as this one.
                    let next = Vec::with_capacity(self.pending.len());
                    self.held
                        .chunks
                        .push(std::mem::replace(&mut self.pending, next));
                } else {
                    self.held.whole = false;
                    self.held.chunks = Vec::new();
                    self.pending.clear();
                }
                if self.error_reported {
                    tracing::info!("spool writable again");
                    self.error_reported = false;
                }
            }
            Err(e) => {
                self.status.spool_errors += 1;
                if !self.error_reported {
                    tracing::error!(
                        "spool write failed, keeping records in memory and retrying: {e}"
                    );
                    self.error_reported = true;
                }
            }
        }
    }

    /// Closes the spool segment, converts every closed one into the dataset and retires
    /// what every sink has delivered (also at start, for what a previous run left).
    pub fn rotate(&mut self) {
        let segs = match self.spool.rotate() {
            Ok(s) => s,
            Err(e) => return tracing::error!("spool rotation: {e}"),
        };
        // The held segment was closed if a new one is open now.
        let mut closed = None;
        if self.held.segment != self.spool.current() {
            let held = std::mem::replace(&mut self.held, Held::new(self.spool.current()));
            closed = held.whole.then_some(held);
        }
        let root = self.cfg.data_dir.join("parquet");
        for seg in segs {
            if self.converted.contains_key(&seg) {
                continue;
            }
            let chunks = match closed.take_if(|h| h.segment == seg) {
                Some(h) => h.chunks,
                None => match pyusage_record::segment::read(&seg) {
                    Ok(r) => vec![r],
                    Err(e) => {
                        tracing::error!("cannot convert spool segment, leaving it in place: {e}");
                        continue;
                    }
                },
            };
            match pyusage_record::dataset::write_all(&root, chunks.iter().flatten()) {
                Ok(_) => {
                    let last = chunks.iter().flatten().map(|r| r.seq).max().unwrap_or(0);
                    self.converted.insert(seg, last);
                }
                Err(e) => tracing::error!("writing Parquet, segment kept: {e}"),
            }
        }
        self.last_rotate = Instant::now();
        self.retire();
    }

    /// Deletes converted segments every sink has delivered; past the spool bound, the oldest
    /// converted ones even if undelivered (they are safe in Parquet; the sink counts them).
    fn retire(&mut self) {
        let delivered = delivered_by_all(&self.sinks);
        let mut bytes = spool_bytes(self.spool.dir());
        let done: Vec<(PathBuf, u64)> = self
            .converted
            .iter()
            .map(|(p, l)| (p.clone(), *l))
            .collect();
        for (seg, last) in done {
            let over = bytes > self.cfg.spool_max_bytes;
            if last > delivered && !over {
                continue;
            }
            if last > delivered {
                self.status.spool_bound_hits += 1;
                tracing::error!(
                    "spool over its bound: retiring {} before every sink delivered it",
                    seg.display()
                );
            }
            let size = std::fs::metadata(&seg).map(|m| m.len()).unwrap_or(0);
            match self.spool.retire(&seg) {
                Ok(()) => {
                    self.converted.remove(&seg);
                    bytes = bytes.saturating_sub(size);
                }
                Err(e) => tracing::error!("retiring spool segment: {e}"),
            }
        }
    }

    /// Rewrites `status.json` (best effort: a failure is logged, the daemon goes on).
    pub fn write_status(&mut self) {
        self.status.live_processes = self.table.len();
        self.status.fidelity = self.table.fidelity();
        self.status.metadata = self.table.refusals();
        self.status.sample_hz = self.table.sample_hz();
        self.status.sampler = self.table.sampler_counts();
        self.status.next_seq = self.spool.next_seq();
        self.status.spool_bytes = spool_bytes(self.spool.dir());
        self.status.sinks = self
            .sinks
            .iter()
            .map(|s| {
                (
                    s.name.to_owned(),
                    s.status.lock().expect("status lock").clone(),
                )
            })
            .collect();
        if let Err(e) = self.status.write(&self.cfg.data_dir) {
            tracing::warn!("status: {e}");
        }
    }

    fn tick(&mut self) {
        let now = now_us();
        if self.last_flush.elapsed() >= Duration::from_secs(self.cfg.flush_secs) {
            // Processes whose exit event was lost (ring buffer full) are ended here, when found
            // gone at two flushes in a row; checked once per flush interval, not per tick:
            // one stat per live process.
            let dead = self
                .table
                .reap(|pid| Path::new(&format!("/proc/{pid}")).exists(), now);
            for f in dead {
                self.add(f);
            }
            let older = now - (self.cfg.flush_secs as i64) * 1_000_000;
            for f in self.table.running(older) {
                self.add(with_live_cpu(f));
            }
            self.last_flush = Instant::now();
        }
        self.table.verify(now_us(), &ProcFs);
        self.table.sampler_upkeep();
        let expired = self.ranks.expire(Some(Instant::now()));
        self.pending.extend(expired);
        self.status.rank_duplicates = self.ranks.duplicates;
        self.commit();
        if !self.converted.is_empty() {
            self.retire();
        }
        if self.last_rotate.elapsed() >= Duration::from_secs(self.cfg.rotate_secs)
            || self.spool.segment_bytes() >= self.cfg.rotate_bytes
        {
            self.rotate();
        }
        // Every 2 s: rewriting it on every tick cost a measurable share of the daemon's CPU.
        if self.last_status.elapsed() >= STATUS_EVERY {
            self.write_status();
            self.last_status = Instant::now();
        }
    }

    /// Runs until [`Msg::Shutdown`] or until the event loop goes away, then ends every live
    /// process with a `running` record, commits and converts the spool, and hands itself
    /// back for the last status (written once the sinks have stopped).
    pub fn run(mut self, rx: Receiver<Msg>) -> Processor {
        let facts = ProcFs;
        let tick = Duration::from_millis(500);
        let mut next_tick = Instant::now() + tick;
        loop {
            let sampler_due = self.table.sampler_due();
            let wake = match sampler_due {
                Some(due) => due.min(next_tick),
                None => next_tick,
            };
            let timeout = wake.saturating_duration_since(Instant::now());
            let msg = rx.recv_timeout(timeout);
            if matches!(msg, Ok(Msg::Events(_) | Msg::Preload(_))) {
                // Work after a quiet spell: the tick is due within its usual period again.
                next_tick = next_tick.min(Instant::now() + tick);
            }
            match msg {
                Ok(Msg::Events(evs)) => {
                    self.handle(evs, &facts);
                    // Batch everything already queued into one durable write.
                    while let Ok(m) = rx.try_recv() {
                        match m {
                            Msg::Events(evs) => self.handle(evs, &facts),
                            Msg::Preload(ms) => self.handle_preload(ms, &facts),
                            Msg::PreloadCounters(c) => self.status.preload = Some(c),
                            Msg::Observed(o) => self.observed(o),
                            Msg::SamplerAnswer => self.table.sampler_upkeep(),
                            Msg::Shutdown => return self.shutdown(),
                        }
                    }
                    // Group commit: the tick makes records durable every 500 ms, so a
                    // stream of short processes costs one `fdatasync` per tick, not one
                    // each (it was a tenth of the daemon's CPU); a large batch goes at once.
                    if self.pending.len() >= COMMIT_RECORDS {
                        self.commit();
                    }
                }
                Ok(Msg::Preload(ms)) => {
                    self.handle_preload(ms, &facts);
                    if self.pending.len() >= COMMIT_RECORDS {
                        self.commit();
                    }
                }
                Ok(Msg::PreloadCounters(c)) => self.status.preload = Some(c),
                Ok(Msg::Observed(o)) => self.observed(o),
                Ok(Msg::SamplerAnswer) => self.table.sampler_upkeep(),
                Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => return self.shutdown(),
                Err(RecvTimeoutError::Timeout) => {
                    if sampler_due.is_some_and(|d| d <= Instant::now()) {
                        self.table.sampler_upkeep();
                    }
                }
            }
            for f in self.table.closed(Instant::now()) {
                self.add(f);
            }
            if Instant::now() >= next_tick {
                self.tick();
                // With nothing live, held or pending, the tick has only the status to write
                // and the spool to rotate: it comes as often as the status is written.
                let quiet =
                    self.table.is_quiet() && self.pending.is_empty() && self.ranks.is_empty();
                next_tick = Instant::now() + if quiet { STATUS_EVERY } else { tick };
            }
        }
    }

    fn handle(&mut self, evs: Vec<Event>, facts: &ProcFs) {
        // The sampler's answers that came since the last batch (the processor does not wake
        // for them): before the events, which may end their processes.
        self.table.sampler_upkeep();
        for ev in evs {
            if let Some(f) = self.table.handle(ev, facts) {
                self.add(f);
            }
        }
        self.table.verify(now_us(), facts);
        self.table.sampler_upkeep();
    }

    /// Turns the CPU sampler on.
    pub fn set_sampler(&mut self, s: crate::sampler::Sampler) {
        self.table.set_sampler(s);
    }

    fn handle_preload(&mut self, ms: Vec<PreloadMsg>, facts: &ProcFs) {
        for m in ms {
            if let Some(f) = self.table.preload(m, facts) {
                self.add(f);
            }
        }
    }

    fn observed(&mut self, o: Observed) {
        self.status.counters = o.counters;
        self.status.undecodable = o.undecodable;
        self.status.queue_full = o.queue_full;
        self.status.programs = o.programs;
    }

    fn shutdown(mut self) -> Processor {
        for f in self.table.drain() {
            self.add(with_live_cpu(f));
        }
        let held = self.ranks.expire(None);
        self.pending.extend(held);
        self.status.rank_duplicates = self.ranks.duplicates;
        self.commit();
        if !self.pending.is_empty() {
            tracing::error!(
                "{} records could not be spooled at shutdown",
                self.pending.len()
            );
        }
        self.rotate();
        self
    }
}

/// A `running` snapshot with the process's CPU time so far from `/proc` (an ended process
/// keeps the time its exit carried). The pid was alive at this flush's reap just before; one
/// reused since then would lend its time, a window of microseconds.
fn with_live_cpu(mut f: Finished) -> Finished {
    if f.ending == crate::proctable::Ending::Running {
        f.cpu = crate::cputime::CpuTime::of_live(f.process.pid);
    }
    f
}
