//! `pyusage daemon`: wires the stages together. Attach ([`loader`]), drain the ring buffer
//! on the event loop ([`source`]), process events on a thread of their own
//! ([`processor`](crate::processor): process table → resolver → records → spool → Parquet),
//! and run each of the [`sinks`](crate::sinks) on its own thread. SIGTERM/SIGINT drain the ring buffer, write `running` records for live processes,
//! convert the spool, let the sinks deliver for a few seconds, write the status and exit 0.
use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{self, SyncSender},
        Arc,
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use pyusage_record::atomic::PathError;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    cnproc::ProcConnector,
    config::{short_hostname, Config},
    loader::{self, CounterReader, LoadError},
    preload::{Listener, PreloadError},
    privacy::{Privacy, PrivacyError},
    privileges::PrivilegeError,
    processor::{Msg, Observed, Processor},
    proctable::ProcTable,
    records::Node,
    sinks::{
        syslog::{SyslogError, SyslogSink},
        Sink, SinkHandle,
    },
    source::{self, Source},
    spool::{Spool, SpoolError},
};

/// How long the sinks may go on delivering after the spool is complete at shutdown.
const SINK_DRAIN: Duration = Duration::from_secs(5);
/// How long the ring buffer is drained at shutdown.
const RING_DRAIN: Duration = Duration::from_secs(5);
/// How often the event loop reads the kernel's counters for the status: as often as the
/// status is written. Each reading is two dozen `bpf` calls and a wake-up of the processor;
/// every 500 ms, they were most of an idle daemon's CPU (1.4 ms a second, both threads).
const OBSERVE_EVERY: Duration = crate::processor::STATUS_EVERY;

/// Why the daemon could not start, or stopped with an error. The cause is the error's
/// source, for the binary to print as a chain.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The data directory could not be made or given to the daemon's user.
    #[error("the data directory")]
    DataDir(#[source] PathError),
    /// The spool could not be opened.
    #[error("opening the spool")]
    Spool(#[from] SpoolError),
    /// The configured `user` could not be looked up.
    #[error("looking up user {name:?} (config `user`)")]
    UserLookup {
        /// The name.
        name: String,
        /// Cause.
        source: nix::Error,
    },
    /// The configured `user` does not exist.
    #[error("user {0:?} (config `user`) does not exist")]
    NoSuchUser(String),
    /// The syslog sink could not be built.
    #[error("the syslog sink")]
    Syslog(#[from] SyslogError),
    /// The `[privacy]` settings are unusable.
    #[error("the [privacy] settings")]
    Privacy(#[from] PrivacyError),
    /// The eBPF programs could not be loaded or attached.
    #[error("attaching the eBPF tracer (needs root or CAP_BPF+CAP_PERFMON)")]
    Attach(#[source] LoadError),
    /// Already-running interpreters could not be entered in the kernel's table.
    #[error("tracking already-running Python processes")]
    Track(#[source] LoadError),
    /// Privileges could not be dropped after attaching.
    #[error("dropping privileges after attaching")]
    Privileges(#[from] PrivilegeError),
    /// The ready file could not be written.
    #[error("writing the ready file")]
    Ready(#[from] PathError),
    /// `NOTIFY_SOCKET` could not be told.
    #[error("sd_notify READY=1")]
    Notify {
        /// Cause.
        source: std::io::Error,
    },
    /// The preload socket or the process connector could not be set up.
    #[error("the preload socket")]
    Preload(#[from] PreloadError),
    /// The runtime, a thread, a signal handler or the ring buffer's descriptor.
    #[error("{what}")]
    Io {
        /// What failed.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// A thread of the daemon panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |source| DaemonError::Io { what, source }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(cfg: Config, ready_file: Option<PathBuf>) -> Result<(), DaemonError> {
    prepare_data_dir(&cfg.data_dir)?;
    let spool = Spool::open(&cfg.data_dir)?;
    let stop_sinks = Arc::new(AtomicBool::new(false));
    let sinks = build_sinks(&cfg, spool.dir(), &stop_sinks)?;
    let node = Node {
        host: cfg.host.clone().unwrap_or_else(short_hostname),
        system: cfg.system.clone(),
        subsystem: cfg.subsystem.clone(),
        is_compute: cfg.is_compute,
        staff_group: cfg.staff_group.clone(),
    };
    let mut processor = Processor::new(
        cfg.clone(),
        node,
        ProcTable::new(boot_to_wall_us(), host_mnt_ns()),
        spool,
        sinks.iter().map(|s| SinkHandle::of(s.as_ref())).collect(),
        Privacy::new(&cfg.privacy)?,
    );
    // Segments left by a previous run (crash or kill) go to Parquet first.
    processor.rotate();
    // Last, once everything made as root is there (the sinks' offsets directory, the Parquet
    // files just written): the data directory becomes the daemon user's.
    let daemon_user = daemon_user(&cfg)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting the event loop"))?
        .block_on(serve(
            cfg,
            ready_file,
            daemon_user,
            processor,
            sinks,
            stop_sinks,
        ))
}

/// Data files 0640, directories 0750: records name users and their jobs.
fn prepare_data_dir(dir: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)))
        .map_err(|e| DaemonError::DataDir(PathError::at(dir)(e)))
}

/// The daemon's own user (`user`), which owns its data once it stops being root.
fn daemon_user(cfg: &Config) -> Result<Option<(u32, u32)>, DaemonError> {
    let name = match cfg.user.as_deref() {
        None | Some("root") => return Ok(None),
        Some(name) => name,
    };
    let u = nix::unistd::User::from_name(name)
        .map_err(|source| DaemonError::UserLookup {
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| DaemonError::NoSuchUser(name.to_owned()))?;
    chown_tree(&cfg.data_dir, u.uid.as_raw(), u.gid.as_raw()).map_err(DaemonError::DataDir)?;
    Ok(Some((u.uid.as_raw(), u.gid.as_raw())))
}

/// The configured sinks; each is told to stop through `stop`.
fn build_sinks(
    cfg: &Config,
    spool_dir: &Path,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<Box<dyn Sink>>, DaemonError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if cfg.syslog.target.is_some() {
        sinks.push(Box::new(SyslogSink::new(
            cfg.syslog.clone(),
            &cfg.data_dir,
            spool_dir.to_path_buf(),
            stop.clone(),
        )?));
    }
    Ok(sinks)
}

/// Attaches, starts the processor and the sinks, runs the event loop until a signal, then
/// shuts every stage down in order.
async fn serve(
    cfg: Config,
    ready_file: Option<PathBuf>,
    daemon_user: Option<(u32, u32)>,
    mut processor: Processor,
    sinks: Vec<Box<dyn Sink>>,
    stop_sinks: Arc<AtomicBool>,
) -> Result<(), DaemonError> {
    let (mut tracer, listener) = attach(&cfg, daemon_user, &mut processor)?;
    let (tx, rx) = mpsc::sync_channel(source::QUEUE_BATCHES);
    if let Some(t) = tracer.as_mut().filter(|t| t.sample_hz > 0) {
        let to_processor = tx.clone();
        let wake: crate::sampler::Wake = Arc::new(move || {
            // Full: the processor has batches to take, and takes the answers with them.
            let _ = to_processor.try_send(Msg::SamplerAnswer);
        });
        let sampler = crate::sampler::Sampler::new(t.pyprocs.take(), t.sample_hz, Some(wake));
        processor.set_sampler(sampler);
    }
    let sink_threads = sinks
        .into_iter()
        .map(|s| {
            std::thread::Builder::new()
                .name(format!("{}-sink", s.name()))
                .spawn(move || s.run(SINK_DRAIN))
                .map_err(io("starting a sink thread"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    processor.set_collectors(tracer.is_some(), listener.is_some());
    processor.write_status();
    let worker = std::thread::Builder::new()
        .name("processor".into())
        .spawn(move || processor.run(rx))
        .map_err(io("starting the processor thread"))?;
    let stop_preload = Arc::new(AtomicBool::new(false));
    let preload_thread = listener
        .map(|l| {
            let (tx, stop) = (tx.clone(), stop_preload.clone());
            std::thread::Builder::new()
                .name("preload".into())
                .spawn(move || l.run(tx, stop))
                .map_err(io("starting the preload thread"))
        })
        .transpose()?;
    // Whatever ends the run, the processor is told to stop, and spools what it holds (the
    // sampler's workers hold a sender too, so it would not see the channel close).
    let run = match signal_ready(ready_file.as_deref()) {
        Err(e) => Err(e),
        Ok(()) => match tracer {
            Some(tracer) => {
                tracing::info!(data_dir = %cfg.data_dir.display(), "attached; recording Python imports");
                run_ebpf(tracer, &tx).await
            }
            None => {
                tracing::info!(data_dir = %cfg.data_dir.display(), "preload-only mode; recording Python imports");
                wait_for_signal().await
            }
        },
    };
    stop_preload.store(true, Ordering::Release);
    if let Some(t) = preload_thread {
        t.join().map_err(|_| DaemonError::Panicked("preload"))?;
    }
    let _ = tx.send(Msg::Shutdown);
    let mut processor = worker
        .join()
        .map_err(|_| DaemonError::Panicked("processor"))?;
    stop_sinks.store(true, Ordering::Release);
    for t in sink_threads {
        t.join().map_err(|_| DaemonError::Panicked("sink"))?;
    }
    processor.write_status();
    run?;
    tracing::info!("stopped");
    Ok(())
}

/// Reads the ring buffer until a signal, then drains what is left of it.
async fn run_ebpf(tracer: loader::Tracer, tx: &SyncSender<Msg>) -> Result<(), DaemonError> {
    let loader::Tracer {
        ebpf,
        events,
        counters,
        epoch,
        ..
    } = tracer;
    let kernel = CounterReader::new(counters);
    // SAFETY: `events` (the ring buffer map) owns its descriptor and lives as long as `fd`.
    let mut fd = unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
        .map_err(|e| io("registering the ring buffer's descriptor")(e.into()))?;
    let mut src = Source::new(epoch);
    let observe = |src: &Source| {
        Msg::Observed(Observed {
            counters: kernel.read(),
            undecodable: src.undecodable,
            queue_full: src.queue_full,
            programs: loader::program_stats(&ebpf),
        })
    };
    event_loop(&mut src, &mut fd, tx, observe).await?;
    drain_at_exit(&mut src, fd.get_mut(), tx);
    let _ = tx.send(observe(&src));
    drop(ebpf);
    Ok(())
}

/// Waits for SIGTERM or SIGINT (preload-only mode: the preload thread does the reading).
async fn wait_for_signal() -> Result<(), DaemonError> {
    let signal =
        |kind| tokio::signal::unix::signal(kind).map_err(io("installing a signal handler"));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Attaches what captures imports, with the privileges that needs, then drops them: the eBPF
/// tracer (unless `ebpf = false`), and the preload socket when configured. Without eBPF, by
/// choice or because attaching failed while a preload socket is set (said in one log line),
/// the process connector supplies forks, execs and exits.
fn attach(
    cfg: &Config,
    daemon_user: Option<(u32, u32)>,
    processor: &mut Processor,
) -> Result<(Option<loader::Tracer>, Option<Listener>), DaemonError> {
    let tracer = if cfg.ebpf {
        match loader::attach(
            &cfg.tracefs,
            std::process::id(),
            loader::MapSizes {
                procs: cfg.kernel_procs,
                ring_bytes: cfg.kernel_ring_mib << 20,
            },
            cfg.sample_hz,
        ) {
            Ok(t) => Some(t),
            Err(e) if cfg.preload_socket.is_some() => {
                tracing::error!(
                    "cannot attach the eBPF tracer ({}); running in preload-only mode",
                    pyusage_record::error_line(&e)
                );
                None
            }
            Err(e) => return Err(DaemonError::Attach(e)),
        }
    } else {
        None
    };
    let listener = match &cfg.preload_socket {
        Some(path) => {
            let connector = match tracer {
                Some(_) => None,
                None => Some(ProcConnector::open().map_err(PreloadError::Connector)?),
            };
            Some(Listener::bind(path, cfg.preload_limits, connector)?)
        }
        None => None,
    };
    crate::privileges::drop_after_attach(daemon_user)?;
    let Some(mut tracer) = tracer else {
        return Ok((None, listener));
    };
    let seeded = crate::seed::scan(std::process::id());
    loader::track_python(&mut tracer.ebpf, seeded.iter().map(|s| s.info.tgid))
        .map_err(DaemonError::Track)?;
    if !seeded.is_empty() {
        tracing::info!(
            processes = seeded.len(),
            "seeded running Python processes from /proc"
        );
    }
    seeded.into_iter().for_each(|s| processor.seed(s));
    Ok((Some(tracer), listener))
}

async fn event_loop(
    src: &mut Source,
    fd: &mut AsyncFd<RingBuf<MapData>>,
    tx: &SyncSender<Msg>,
    observe: impl Fn(&Source) -> Msg,
) -> Result<(), DaemonError> {
    let signal =
        |kind| tokio::signal::unix::signal(kind).map_err(io("installing a signal handler"));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut every = tokio::time::interval(OBSERVE_EVERY);
    // Timed drains: every 200 ms while events come, less often while none do.
    let drain_tick = tokio::time::sleep(source::DRAIN_EVERY);
    tokio::pin!(drain_tick);
    let mut idle = 0;
    loop {
        let blocked = src.blocked();
        tokio::select! {
            // Not while a batch waits for room: the fd stays readable, and the ring is
            // left to fill (the kernel counts what it drops).
            r = src.drain_when_ready(fd, tx), if !blocked => {
                r.map_err(io("reading the ring buffer"))?;
                // A new Python process woke it: its opens follow without a wake-up.
                idle = 0;
                let next = tokio::time::Instant::now() + source::DRAIN_EVERY;
                let next = next.min(drain_tick.deadline());
                drain_tick.as_mut().reset(next);
            }
            _ = &mut drain_tick => {
                let n = src.drain(fd.get_mut(), tx);
                let wait = source::next_drain(n, src.blocked(), &mut idle);
                drain_tick.as_mut().reset(tokio::time::Instant::now() + wait);
            }
            _ = every.tick() => {
                // Dropped when the queue is full; the next one follows.
                let _ = tx.try_send(observe(src));
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

/// Events already in the ring buffer belong to this run (the processor is still taking
/// batches, so waiting for room ends).
fn drain_at_exit(src: &mut Source, ring: &mut RingBuf<MapData>, tx: &SyncSender<Msg>) {
    let until = Instant::now() + RING_DRAIN;
    while Instant::now() < until {
        let n = src.drain(ring, tx);
        if src.blocked() {
            std::thread::sleep(Duration::from_millis(10));
        } else if n == 0 {
            break;
        }
    }
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
fn signal_ready(ready_file: Option<&Path>) -> Result<(), DaemonError> {
    if let Some(sock) = std::env::var_os("NOTIFY_SOCKET") {
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let fail = |source| DaemonError::Notify { source };
        let s = UnixDatagram::unbound().map_err(fail)?;
        let b = sock.as_encoded_bytes();
        let addr = if let Some(name) = b.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name).map_err(fail)?
        } else {
            SocketAddr::from_pathname(PathBuf::from(&sock)).map_err(fail)?
        };
        s.send_to_addr(b"READY=1\n", &addr).map_err(fail)?;
    }
    if let Some(p) = ready_file {
        // Not `write_atomic`: that names its temporary file predictably.
        // The directory may be writable by others (`/tmp`, `/run/user`): a predictable
        // temporary name would let them plant a symbolic link that root then writes through.
        // A random name created with O_EXCL, renamed over the target (replacing, never
        // following, whatever is there).
        use std::io::Write;
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let fail = PathError::at(p);
        let mut tmp = tempfile::Builder::new()
            .prefix(".pyusage-ready")
            .tempfile_in(dir)
            .map_err(PathError::at(dir))?;
        writeln!(tmp, "{}", std::process::id()).map_err(PathError::at(tmp.path()))?;
        tmp.persist(p).map_err(|e| fail(e.error))?;
    }
    Ok(())
}

/// Gives the data directory and everything in it (not following links) to the daemon's user.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), PathError> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(PathError::at(dir))?;
    for e in std::fs::read_dir(dir).map_err(PathError::at(dir))? {
        let e = e.map_err(PathError::at(dir))?;
        let path = e.path();
        if e.file_type().map_err(PathError::at(&path))?.is_dir() {
            chown_tree(&path, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(PathError::at(&path))?;
        }
    }
    Ok(())
}
