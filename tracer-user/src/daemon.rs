//! `pyusage daemon`: attach, drain the ring buffer on the event loop, and process events on a
//! dedicated thread (process table → resolver → records → spool → Parquet). SIGTERM/SIGINT
//! drain the ring buffer, write `running` records for live processes, convert the spool and
//! exit 0.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};
use tracer_common::user::Event;

use crate::{
    config::{short_hostname, Config},
    loader::{self, Counters, ProgStat},
    proctable::{Finished, ProcFs, ProcTable},
    ranks::Ranks,
    records::{self, Node, Users},
    sinks::{
        syslog::{SinkStatus, SyslogSink},
        Offset,
    },
    source,
    spool::Spool,
};

/// How often `status.json` is rewritten (and at shutdown).
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Pending records that are written at once instead of at the next tick.
const COMMIT_RECORDS: usize = 4096;

/// Messages from the event loop to the processor thread.
pub enum Msg {
    /// Kernel events, in ring-buffer order.
    Events(Vec<Event>),
    /// Fresh kernel counters, undecodable records, times the queue was full, program
    /// statistics.
    Counters(Counters, u64, u64, Vec<ProgStat>),
    /// Flush everything and stop.
    Shutdown,
}

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
    /// The syslog sink, when configured.
    pub syslog: Option<SinkStatus>,
    /// Rank records folded into another rank's (`--ranks first|per-node`).
    pub rank_duplicates: u64,
    /// Module opens seen and not recorded, by reason (reads, compilation, …).
    #[serde(default)]
    pub fidelity: crate::proctable::Fidelity,
}

fn spool_bytes(dir: &Path) -> u64 {
    pyusage_record::segment::segments(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Boot-clock → wall-clock offset in µs.
fn boot_to_wall_us() -> i64 {
    let real =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME).expect("realtime clock");
    let boot =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).expect("boottime clock");
    let us = |t: nix::sys::time::TimeSpec| t.tv_sec() * 1_000_000 + t.tv_nsec() / 1000;
    us(real) - us(boot)
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The host's mount namespace: PID 1's (or the kernel threads'), not the daemon's own (a
/// service manager's `PrivateTmp=`/`ProtectSystem=` gives the daemon a namespace of its own,
/// which would mark every process `in_container`).
fn host_mnt_ns() -> u32 {
    // PID 1's, else kthreadd's (kernel threads live in the initial namespaces; PID 1 may
    // refuse to be inspected, as a VM's init does), else the daemon's own.
    ["/proc/1/ns/mnt", "/proc/2/ns/mnt", "/proc/self/ns/mnt"]
        .iter()
        .find_map(|p| {
            let l = std::fs::read_link(p).ok()?;
            l.to_str()?
                .strip_prefix("mnt:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Tells a service manager and scripts that the daemon is attached and writing.
fn signal_ready(ready_file: Option<&Path>) -> anyhow::Result<()> {
    if let Some(sock) = std::env::var_os("NOTIFY_SOCKET") {
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let s = UnixDatagram::unbound()?;
        let b = sock.as_encoded_bytes();
        let addr = if let Some(name) = b.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        } else {
            SocketAddr::from_pathname(PathBuf::from(&sock))?
        };
        s.send_to_addr(b"READY=1\n", &addr)
            .context("sd_notify READY=1")?;
    }
    if let Some(p) = ready_file {
        // The directory may be writable by others (`/tmp`, `/run/user`): a predictable
        // temporary name would let them plant a symbolic link that root then writes through.
        // A random name created with O_EXCL, renamed over the target (replacing, never
        // following, whatever is there).
        use std::io::Write;
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".pyusage-ready")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        writeln!(tmp, "{}", std::process::id())
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        tmp.persist(p)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// The processor: owns the process table and the outputs.
struct Processor {
    cfg: Config,
    node: Node,
    users: Users,
    table: ProcTable,
    spool: Spool,
    status: Status,
    pending: Vec<pyusage_record::Record>,
    last_rotate: Instant,
    last_flush: Instant,
    last_status: Instant,
    error_reported: bool,
    /// Segments already in Parquet, with their last `seq`, waiting for sinks to deliver them.
    converted: BTreeMap<PathBuf, u64>,
    /// The syslog sink's committed offset and status, when configured.
    sink: Option<(Arc<Offset>, Arc<Mutex<SinkStatus>>)>,
    ranks: Ranks,
    privacy: crate::privacy::Privacy,
}

impl Processor {
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
                self.pending.clear();
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

    fn rotate(&mut self) {
        let segs = match self.spool.rotate() {
            Ok(s) => s,
            Err(e) => return tracing::error!("spool rotation: {e}"),
        };
        let root = self.cfg.data_dir.join("parquet");
        for seg in segs {
            if self.converted.contains_key(&seg) {
                continue;
            }
            let recs = match pyusage_record::segment::read(&seg) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("cannot convert spool segment, leaving it in place: {e}");
                    continue;
                }
            };
            match pyusage_record::dataset::write(&root, &recs) {
                Ok(_) => {
                    let last = recs.iter().map(|r| r.seq).max().unwrap_or(0);
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
        let delivered = self.sink.as_ref().map(|(o, _)| o.get()).unwrap_or(u64::MAX);
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
                    "spool over its bound: retiring {} before syslog delivered it",
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

    fn write_status(&mut self) {
        self.status.live_processes = self.table.len();
        self.status.fidelity = self.table.fidelity();
        self.status.metadata = self.table.refusals();
        self.status.next_seq = self.spool.next_seq();
        self.status.spool_bytes = spool_bytes(self.spool.dir());
        self.status.syslog = self
            .sink
            .as_ref()
            .map(|(_, s)| s.lock().expect("status lock").clone());
        let p = self.cfg.data_dir.join("status.json");
        let tmp = self.cfg.data_dir.join(".status.json.tmp");
        if let Ok(j) = serde_json::to_vec_pretty(&self.status) {
            if std::fs::write(&tmp, j).is_ok() {
                let _ = std::fs::rename(&tmp, &p);
            }
        }
    }

    fn tick(&mut self) {
        let now = now_us();
        if self.last_flush.elapsed() >= Duration::from_secs(self.cfg.flush_secs) {
            // Processes whose exit event was lost (ring buffer full) are ended here; checked
            // once per flush interval, not per tick: one stat per live process.
            let dead = self
                .table
                .reap(|pid| Path::new(&format!("/proc/{pid}")).exists(), now);
            for f in dead {
                self.add(f);
            }
            let older = now - (self.cfg.flush_secs as i64) * 1_000_000;
            for f in self.table.running(older) {
                self.add(f);
            }
            self.last_flush = Instant::now();
        }
        self.table.verify(now_us(), &ProcFs);
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

    fn run(mut self, rx: Receiver<Msg>) {
        let facts = ProcFs;
        let tick = Duration::from_millis(500);
        let mut next_tick = Instant::now() + tick;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(timeout) {
                Ok(Msg::Events(evs)) => {
                    self.handle(evs, &facts);
                    // Batch everything already queued into one durable write.
                    while let Ok(m) = rx.try_recv() {
                        match m {
                            Msg::Events(evs) => self.handle(evs, &facts),
                            Msg::Counters(c, bad, full, p) => self.set_counters(c, bad, full, p),
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
                Ok(Msg::Counters(c, bad, full, p)) => self.set_counters(c, bad, full, p),
                Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => return self.shutdown(),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + tick;
            }
        }
    }

    fn handle(&mut self, evs: Vec<Event>, facts: &ProcFs) {
        for ev in evs {
            if let Some(f) = self.table.handle(ev, facts) {
                self.add(f);
            }
        }
        self.table.verify(now_us(), facts);
    }

    fn set_counters(&mut self, c: Counters, bad: u64, queue_full: u64, programs: Vec<ProgStat>) {
        self.status.counters = c;
        self.status.undecodable = bad;
        self.status.queue_full = queue_full;
        self.status.programs = programs;
    }

    fn shutdown(mut self) {
        for f in self.table.drain() {
            self.add(f);
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
        self.write_status();
    }
}

/// Gives the data directory and everything in it (not following links) to the daemon's user.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", dir.display()))?;
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            chown_tree(&e.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(e.path(), Some(uid), Some(gid))
                .with_context(|| format!("chown {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(cfg: Config, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    // Data files 0640, directories 0750: records name users and their jobs.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o750))
            .with_context(|| format!("chmod 0750 {}", cfg.data_dir.display()))?;
    }
    let spool = Spool::open(&cfg.data_dir)?;
    // The daemon's own user (`user`), which owns its data once it stops being root.
    let daemon_user = match cfg.user.as_deref() {
        None | Some("root") => None,
        Some(name) => {
            let u = nix::unistd::User::from_name(name)
                .with_context(|| format!("looking up user {name:?}"))?
                .with_context(|| format!("user {name:?} (config `user`) does not exist"))?;
            chown_tree(&cfg.data_dir, u.uid.as_raw(), u.gid.as_raw())?;
            Some((u.uid.as_raw(), u.gid.as_raw()))
        }
    };
    let stop_sink = Arc::new(AtomicBool::new(false));
    let sink = match &cfg.syslog.target {
        Some(_) => {
            let offset = Arc::new(
                Offset::load(&cfg.data_dir, "syslog").context("loading the syslog sink offset")?,
            );
            let s = SyslogSink::new(
                cfg.syslog.clone(),
                spool.dir().to_path_buf(),
                offset.clone(),
                stop_sink.clone(),
            )
            .map_err(anyhow::Error::msg)?;
            Some((s, offset))
        }
        None => None,
    };
    let node = Node {
        host: cfg.host.clone().unwrap_or_else(short_hostname),
        system: cfg.system.clone(),
        subsystem: cfg.subsystem.clone(),
        is_compute: cfg.is_compute,
        staff_group: cfg.staff_group.clone(),
    };
    let mut processor = Processor {
        users: Users::new(cfg.staff_group.clone()),
        table: ProcTable::new(boot_to_wall_us(), host_mnt_ns()),
        node,
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
        ranks: Ranks::new(cfg.ranks, Duration::from_secs(cfg.rank_window_secs)),
        privacy: crate::privacy::Privacy::new(&cfg.privacy).context("the [privacy] settings")?,
        sink: sink.as_ref().map(|(s, o)| (o.clone(), s.status())),
        cfg: cfg.clone(),
    };
    let sink_status = sink.as_ref().map(|(s, _)| s.status());
    let status_path = cfg.data_dir.join("status.json");

    // Segments left by a previous run (crash or kill) go to Parquet first.
    processor.rotate();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let tracer = loader::attach(
            &cfg.tracefs,
            std::process::id(),
            loader::MapSizes {
                procs: cfg.kernel_procs,
                ring_bytes: cfg.kernel_ring_mib << 20,
            },
        )
            .context("attaching the eBPF tracer (needs root or CAP_BPF+CAP_PERFMON)")?;
        let loader::Tracer {
            mut ebpf,
            events,
            counters,
            epoch,
        } = tracer;
        // Attached: drop every privilege but what reading users' files and /proc needs, and
        // become the daemon's user, before any other thread exists (capabilities are per
        // thread, and a user switch must be followed by every thread).
        crate::privileges::drop_after_attach(daemon_user)
            .context("dropping privileges after attaching")?;
        // Python processes already running: tracked from now on, with what /proc shows of
        // their imports so far.
        let seeded = crate::seed::scan(std::process::id());
        loader::track_python(&mut ebpf, seeded.iter().map(|s| s.info.tgid))
            .context("tracking already-running Python processes")?;
        if !seeded.is_empty() {
            tracing::info!(processes = seeded.len(), "seeded running Python processes from /proc");
        }
        for s in seeded {
            processor.table.seed(s, &ProcFs);
        }
        let tracer_view = loader::CounterReader::new(counters);
        // SAFETY: the ring buffer owns its map fd for as long as it lives and `as_raw_fd`
        // always returns that fd; the AsyncFd owns the ring buffer.
        let mut fd = unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the ring buffer fd: {e}"))?;
        let (tx, rx) = mpsc::sync_channel(source::QUEUE_BATCHES);
        // Capabilities are per thread: drop them before any other thread exists, so every
        // thread the daemon runs inherits the reduced set.
        let sink_thread = sink
            .map(|(s, _)| {
                std::thread::Builder::new()
                    .name("syslog-sink".into())
                    .spawn(move || s.run(Duration::from_secs(5)))
            })
            .transpose()?;
        // A status exists before anyone is told the daemon is ready.
        processor.write_status();
        let worker = std::thread::Builder::new()
            .name("processor".into())
            .spawn(move || processor.run(rx))?;
        signal_ready(ready_file.as_deref())?;
        tracing::info!(data_dir = %cfg.data_dir.display(), "attached; recording Python imports");

        let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
        let mut every = tokio::time::interval(Duration::from_millis(500));
        let mut drain_tick = tokio::time::interval(source::DRAIN_EVERY);
        let mut src = source::Source::new(epoch);
        loop {
            let blocked = src.blocked();
            tokio::select! {
                // Not while a batch waits for room: the fd stays readable, and the ring is
                // left to fill (the kernel counts what it drops).
                r = src.drain_when_ready(&mut fd, &tx), if !blocked => { r.context("ring buffer")?; }
                _ = drain_tick.tick() => { src.drain(fd.get_mut(), &tx); }
                _ = every.tick() => {
                    // Dropped when the queue is full; the next one follows in 500 ms.
                    let _ = tx.try_send(Msg::Counters(tracer_view.read(), src.undecodable, src.queue_full, loader::program_stats(&ebpf)));
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        // Events already in the ring buffer belong to this run (the processor is still
        // taking batches, so waiting for room ends).
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let n = src.drain(fd.get_mut(), &tx);
            if src.blocked() {
                std::thread::sleep(Duration::from_millis(10));
            } else if n == 0 {
                break;
            }
        }
        let _ = tx.send(Msg::Counters(tracer_view.read(), src.undecodable, src.queue_full, loader::program_stats(&ebpf)));
        let _ = tx.send(Msg::Shutdown);
        drop(ebpf);
        worker.join().map_err(|_| anyhow::anyhow!("processor thread panicked"))?;
        // The spool is complete: let the sink deliver what it can, briefly, then stop.
        stop_sink.store(true, Ordering::Release);
        if let Some(t) = sink_thread {
            t.join().map_err(|_| anyhow::anyhow!("syslog sink thread panicked"))?;
            // The processor wrote its last status before the sink's final delivery.
            if let (Some(ss), Ok(text)) = (sink_status, std::fs::read_to_string(&status_path)) {
                if let Ok(mut st) = serde_json::from_str::<Status>(&text) {
                    st.syslog = Some(ss.lock().expect("status lock").clone());
                    let tmp = status_path.with_extension("json.tmp");
                    if std::fs::write(&tmp, serde_json::to_vec_pretty(&st)?).is_ok() {
                        let _ = std::fs::rename(&tmp, &status_path);
                    }
                }
            }
        }
        tracing::info!("stopped");
        Ok(())
    })
}
