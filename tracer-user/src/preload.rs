//! The preload socket: where the `LD_PRELOAD` library's messages enter the daemon.
//!
//! `pyusage daemon --preload-socket PATH` listens on an `AF_UNIX` `SOCK_SEQPACKET` socket that
//! every user may connect to (mode 0666: the library runs in every user's processes). Each
//! Python process the library is loaded in connects once, sends a
//! [`Hello`](tracer_common::preload::MessageKind::Hello) (program, command line, environment:
//! what an eBPF exec event carries) and then one message per module body run or extension
//! module loaded. This thread turns them into [`PreloadMsg`]s for the processor, where the
//! process table treats them like the kernel's events.
//!
//! # Trust
//!
//! Anything on the node can connect and write anything, so:
//! - **Who sent a message** is what the kernel says with *that* datagram (`SCM_CREDENTIALS`,
//!   from `SO_PASSCRED`): pid, uid and gid, never a claim in the payload. A fork child writing
//!   on its parent's connection is reported with its own pid. A datagram without credentials
//!   is dropped.
//! - **Atexit reports** ([`MessageKind::Atexit`]: the `sitecustomize` hook's list of the
//!   modules a process holds at exit) come on a connection of their own, without a `Hello`, and
//!   are taken on any connection: they claim nothing but packages of the sending pid, which the
//!   process table gives only to a process of the sender's uid.
//! - **What it says** is decoded by [`tracer_common::preload::decode`], which checks every
//!   field; a malformed datagram is counted and dropped, the connection kept (its next message
//!   may be fine). A connection whose first message is not a `Hello` has its messages dropped.
//! - **How much** a user may send is bounded per uid: a token bucket ([`Limits`]) and a number
//!   of connections. A uid over its rate has its connections left unread until the bucket
//!   refills: its own senders then find their queues full and drop (the library counts that and
//!   never blocks), while every other user's connections are read as before. So one user's
//!   flood cannot delay or drop another's imports, and costs the daemon little.
//!
//! # Order against the process connector
//!
//! In preload-only mode (no eBPF) exits, forks and execs come from the kernel's process
//! connector ([`crate::cnproc`]), read by this same thread. A process's messages are all sent
//! before it exits, but the two sockets are read one after the other; so after reading
//! connector events this thread reads every connection that is ready once more before it hands
//! the events on, and messages always reach the processor before the exit that follows them.
use std::{
    collections::HashMap,
    io::IoSliceMut,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::SyncSender,
        Arc,
    },
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::{
        epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags},
        socket::{
            self, sockopt, AddressFamily, Backlog, ControlMessageOwned, MsgFlags, SockFlag,
            SockType, UnixAddr,
        },
    },
};
use serde::{Deserialize, Serialize};
use tracer_common::{
    preload::{
        decode, AtexitModules, MessageKind, OpenRecord, FLAG_ARGS_TRUNCATED, FLAG_PATH_TRUNCATED,
        MAX_MESSAGE,
    },
    user::Event,
};

use crate::{
    cnproc::{monotonic_to_boot_ns, ProcConnector, ProcEvent},
    processor::Msg,
};

/// The socket the library connects to unless its configuration file names another.
pub const DEFAULT_SOCKET: &str = "/run/pyusage/preload.sock";

/// One message of the library, with who sent it as the kernel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreloadMsg {
    /// Sender's process (thread-group) id, from `SCM_CREDENTIALS`.
    pub pid: u32,
    /// Sender's real uid, from `SCM_CREDENTIALS`.
    pub uid: u32,
    /// Sender's real gid, from `SCM_CREDENTIALS`.
    pub gid: u32,
    /// The pid that sent the connection's `Hello`: a message from another pid on the same
    /// connection comes from a fork child of it.
    pub conn_pid: u32,
    /// The connection (unique for the daemon's life): a process takes messages only on the
    /// connection of its own `Hello`, or its fork parent's.
    pub conn: u64,
    /// Boot-clock ns when the daemon read the message: the library never buffers, so the
    /// event happened at most this late (the clock of the eBPF events).
    pub ktime_ns: u64,
    /// What it reports.
    pub body: Body,
}

/// What a message reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A Python process started: the program as executed, its command line and environment
    /// (NUL-separated), as the library read them at load.
    Hello {
        /// `AT_EXECFN`.
        program: Vec<u8>,
        /// argv.
        args: Vec<u8>,
        /// Environment.
        env: Vec<u8>,
    },
    /// A module file was imported: the source file whose module body ran, or the extension
    /// module's shared object that was loaded. Always absolute.
    Module(Vec<u8>),
    /// An interpreter without audit hooks (CPython 2.7–3.7) opened, or failed to open, a
    /// module-like file: judged by the same rules as the kernel's opens.
    Open {
        /// The thread.
        tid: u32,
        /// The descriptor, or `-errno`.
        ret: i32,
        /// Directory a relative path is relative to (`AT_FDCWD` = -100).
        dfd: i32,
        /// Opened for writing.
        write: bool,
        /// As passed, possibly relative.
        path: Vec<u8>,
    },
    /// The `sitecustomize` atexit hook listed the top-level modules in `sys.modules`: each
    /// package with its file as sent (an absolute path, `<built-in>`, `<frozen>` or empty; see
    /// [`tracer_common::preload::ModuleFile`]).
    Atexit(Vec<(String, Vec<u8>)>),
}

/// What the socket saw, for `status.json` (`preload`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreloadCounters {
    /// Connections accepted.
    pub connections: u64,
    /// Connections refused: the uid (or everyone) had too many open.
    pub refused: u64,
    /// Messages read.
    pub messages: u64,
    /// Atexit reports taken (one per datagram; a malformed one is counted in `malformed`).
    pub atexit: u64,
    /// Datagrams that did not decode, were cut by the receive buffer, or named a relative
    /// path.
    pub malformed: u64,
    /// Datagrams without the kernel's credentials (or from a process outside the daemon's pid
    /// namespace).
    pub no_credentials: u64,
    /// Messages on a connection that had sent no `Hello`.
    pub no_hello: u64,
    /// `Hello`s after the first of a connection.
    pub extra_hello: u64,
    /// `Hello`s over their uid's budget (`hello_rate`): those processes go unrecorded.
    pub hello_limited: u64,
    /// Failed accepts (out of descriptors): the listener paused for a moment each time.
    pub accept_errors: u64,
    /// Paths the library had to cut (longer than `PATH_MAX`: no real file), and atexit reports
    /// whose sender cut its module list (it should have split it): dropped.
    pub truncated: u64,
    /// Times a uid went over its rate and its connections were left unread for a while.
    pub paused: u64,
    /// Events the process connector lost (its socket buffer overflowed).
    pub cnproc_overruns: u64,
}

/// Bounds per uid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Messages per second a uid may send on average (default 50,000: a node full of MPI
    /// ranks starting at once sends some thousands each).
    pub rate: u32,
    /// Messages a uid may send at once above the rate (default 500,000).
    pub burst: u32,
    /// Connections one uid may hold open (default 4,096).
    pub connections_per_uid: u32,
    /// Connections in all (default 32,768; at most the daemon's descriptor limit less 512).
    pub connections: u32,
    /// Python processes a uid may start per second on average (`Hello`s; default 2,000)…
    pub hello_rate: u32,
    /// …and at once (default 20,000: every rank of a full node starting together, many times).
    pub hello_burst: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            rate: 50_000,
            burst: 500_000,
            connections_per_uid: 4096,
            connections: 32_768,
            hello_rate: 2_000,
            hello_burst: 20_000,
        }
    }
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PreloadError {
    /// The socket's directory.
    #[error("creating {}", .0.display())]
    Dir(PathBuf, #[source] std::io::Error),
    /// The socket could not be made world-connectable.
    #[error("chmod 0666 {}", .0.display())]
    Chmod(PathBuf, #[source] std::io::Error),
    /// A file that is not a socket is in the way.
    #[error("{} exists and is not a socket; not removing it", .0.display())]
    NotSocket(PathBuf),
    /// A socket call.
    #[error("{what} {}", path.display())]
    Socket {
        /// Which call.
        what: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// The process connector (preload-only mode).
    #[error("the kernel's process connector (needs CAP_NET_ADMIN)")]
    Connector(#[source] crate::cnproc::CnProcError),
}

/// One connection.
struct Conn {
    fd: OwnedFd,
    /// uid at connect (`SO_PEERCRED`): whose budget reading it spends.
    uid: u32,
    /// Pid of its `Hello`, 0 before one.
    hello_pid: u32,
    /// Left unread until this instant (its uid was over its rate).
    paused_until: Option<Instant>,
}

/// A uid's budget.
struct Budget {
    messages: Bucket,
    connections: u32,
}

/// Epoll keys of the two non-connection descriptors.
const KEY_LISTENER: u64 = u64::MAX;
const KEY_CNPROC: u64 = u64::MAX - 1;
/// What the listener hands on, in the order it was read.
enum Out {
    Preload(PreloadMsg),
    Event(Event),
}

/// Hands `out` to the processor in order, each run of one kind as one batch; false when the
/// processor has gone.
fn flush(tx: &SyncSender<Msg>, out: &mut Vec<Out>) -> bool {
    let (mut msgs, mut events) = (Vec::new(), Vec::new());
    for item in out.drain(..) {
        match item {
            Out::Preload(m) => {
                if !events.is_empty() && tx.send(Msg::Events(std::mem::take(&mut events))).is_err()
                {
                    return false;
                }
                msgs.push(m);
            }
            Out::Event(e) => {
                if !msgs.is_empty() && tx.send(Msg::Preload(std::mem::take(&mut msgs))).is_err() {
                    return false;
                }
                events.push(e);
            }
        }
    }
    (msgs.is_empty() || tx.send(Msg::Preload(msgs)).is_ok())
        && (events.is_empty() || tx.send(Msg::Events(events)).is_ok())
}

/// Shortest time between two wake-ups of the listener. A connection's queue holds some 200
/// messages; a Python start sends them at a few thousand per second at most.
const MIN_GAP: Duration = Duration::from_millis(2);
/// How long what was read may wait before it goes to the processor…
const FLUSH_AFTER: Duration = Duration::from_millis(20);
/// …or how much of it.
const FLUSH_AT: usize = 2048;
/// Pids watched in the process connector's events before the dead ones are dropped.
const WATCHED_MAX: usize = 65_536;

/// Messages read from one connection before moving on to the next ready one.
const PER_TURN: usize = 64;
/// How long a uid over its rate goes unread at least.
const PAUSE: Duration = Duration::from_millis(100);

/// The listening socket and everything read from it.
pub struct Listener {
    path: PathBuf,
    listener: OwnedFd,
    epoll: Epoll,
    conns: HashMap<u64, Conn>,
    budgets: HashMap<u32, Budget>,
    next_key: u64,
    limits: Limits,
    counters: PreloadCounters,
    cnproc: Option<ProcConnector>,
    buf: Vec<u8>,
    /// The listener is out of the epoll set until then (accept failed: out of descriptors).
    listener_paused_until: Option<Instant>,
    last_accept_log: Option<Instant>,
    /// Each uid's budget of `Hello`s (a new process each, with `/proc` reads).
    hellos: HashMap<u32, Bucket>,
    /// Processes the library reported, and their fork children: the process connector's
    /// events about them go to the table, the rest are dropped here.
    watched: std::collections::HashSet<u32>,
}

/// A token bucket.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: u32) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token at `rate` per second up to `burst`; false when there is none.
    fn take(&mut self, rate: u32, burst: u32) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * f64::from(rate))
            .min(f64::from(burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Listener {
    /// Binds `path` (its directory created 0755 if missing; a stale socket replaced, any other
    /// file refused), world-connectable, with credentials passed on every message. With
    /// `cnproc`, the thread also reads the kernel's process connector (preload-only mode).
    pub fn bind(
        path: &Path,
        limits: Limits,
        cnproc: Option<ProcConnector>,
    ) -> Result<Listener, PreloadError> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.exists()) {
            std::fs::create_dir_all(dir)
                .and_then(|()| {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                })
                .map_err(|e| PreloadError::Dir(dir.to_owned(), e))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                let _ = std::fs::remove_file(path);
            }
            Ok(_) => return Err(PreloadError::NotSocket(path.to_owned())),
            Err(_) => {}
        }
        let err = |what| {
            move |source| PreloadError::Socket {
                what,
                path: path.to_owned(),
                source,
            }
        };
        let listener = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(err("creating"))?;
        let addr = UnixAddr::new(path).map_err(err("addressing"))?;
        socket::bind(listener.as_raw_fd(), &addr).map_err(err("binding"))?;
        // Every user's processes connect (the library runs in all of them).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| PreloadError::Chmod(path.to_owned(), e))?;
        socket::setsockopt(&listener, sockopt::PassCred, &true).map_err(err("SO_PASSCRED on"))?;
        // As deep as the system allows (`somaxconn`): a full backlog makes the library's
        // connect fail, and that process goes unobserved.
        let backlog = Backlog::MAXCONN;
        socket::listen(&listener, backlog).map_err(err("listening on"))?;
        let mut limits = limits;
        // Every connection is a descriptor: as many as the hard limit allows, and never more
        // connections than descriptors (accepts failing for want of one would stop everyone's).
        let nofile = raise_nofile();
        limits.connections = limits.connections.min(nofile.saturating_sub(512).max(64));
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(err("epoll for"))?;
        epoll
            .add(
                &listener,
                EpollEvent::new(EpollFlags::EPOLLIN, KEY_LISTENER),
            )
            .map_err(err("epoll for"))?;
        if let Some(c) = &cnproc {
            epoll
                .add(c.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, KEY_CNPROC))
                .map_err(err("epoll for"))?;
        }
        Ok(Listener {
            path: path.to_owned(),
            listener,
            epoll,
            conns: HashMap::new(),
            budgets: HashMap::new(),
            next_key: 0,
            limits,
            counters: PreloadCounters::default(),
            cnproc,
            buf: vec![0; MAX_MESSAGE + 1],
            listener_paused_until: None,
            last_accept_log: None,
            hellos: HashMap::new(),
            watched: std::collections::HashSet::new(),
        })
    }

    /// Reads until `stop`, sending batches to the processor; then removes the socket file.
    ///
    /// What is read is held for up to [`FLUSH_AFTER`] (or [`FLUSH_AT`] items) and handed on in
    /// the order it was read, messages and connector events interleaved as they came: a
    /// Python start sends hundreds of messages, and a batch per wake-up cost the daemon a
    /// context switch each (most of its CPU).
    pub fn run(mut self, tx: SyncSender<Msg>, stop: Arc<AtomicBool>) {
        let mut msgs = Vec::new();
        let mut proc_events = Vec::new();
        let mut out: Vec<Out> = Vec::new();
        let mut held_since: Option<Instant> = None;
        let mut last_wake = Instant::now();
        let mut ready = vec![EpollEvent::empty(); 256];
        let mut last_counters = PreloadCounters::default();
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let due = held_since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER);
            if stopping || due || out.len() >= FLUSH_AT {
                if !flush(&tx, &mut out) {
                    break;
                }
                held_since = None;
                if self.counters != last_counters {
                    last_counters = self.counters;
                    let _ = tx.try_send(Msg::PreloadCounters(self.counters));
                }
            }
            if stopping {
                break;
            }
            let timeout = match held_since {
                Some(t) => FLUSH_AFTER.saturating_sub(t.elapsed()).as_millis().max(1) as u16,
                None if self.listener_paused_until.is_some()
                    || self.conns.values().any(|c| c.paused_until.is_some()) =>
                {
                    50
                }
                None => 200,
            };
            // At most one wake-up per MIN_GAP: between two, what arrives waits in the sockets'
            // queues and is read in one go (a wake-up per message or per process event was
            // most of this thread's CPU).
            let gap = last_wake.elapsed();
            if gap < MIN_GAP {
                std::thread::sleep(MIN_GAP - gap);
            }
            let n = match self.epoll.wait(&mut ready, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    tracing::error!("preload socket: epoll: {e}; stopping the preload listener");
                    break;
                }
            };
            last_wake = Instant::now();
            let mut connector_ready = false;
            for ev in &ready[..n] {
                match ev.data() {
                    KEY_LISTENER => self.accept(),
                    KEY_CNPROC => connector_ready = true,
                    key => self.read_conn(key, &mut msgs),
                }
            }
            if connector_ready {
                if let Some(c) = &mut self.cnproc {
                    if let Err(e) = c.read(&mut proc_events) {
                        tracing::warn!("process connector: {e}");
                    }
                    self.counters.cnproc_overruns = c.overruns;
                }
                // Everything a process sent before the events just read is queued by now:
                // read it first, so that no exit overtakes its process's messages.
                self.read_ready_again(&mut msgs);
            }
            for m in &msgs {
                self.watched.insert(m.pid);
            }
            out.extend(msgs.drain(..).map(Out::Preload));
            for e in proc_events.drain(..) {
                if let Some(e) = self.watched_event(e) {
                    out.push(Out::Event(e));
                }
            }
            if !out.is_empty() && held_since.is_none() {
                held_since = Some(Instant::now());
            }
            self.unpause();
        }
        let _ = flush(&tx, &mut out);
        let _ = tx.send(Msg::PreloadCounters(self.counters));
        let _ = std::fs::remove_file(&self.path);
    }

    /// A connector event as the process table wants it, if it is about a process the library
    /// reported (or a fork child of one): the connector reports every process on the node,
    /// and the table has nothing to do with the others.
    fn watched_event(&mut self, e: ProcEvent) -> Option<Event> {
        let keep = match e {
            ProcEvent::Fork { parent, child, .. } => {
                let watched = self.watched.contains(&parent);
                if watched {
                    self.watched.insert(child);
                }
                watched
            }
            ProcEvent::Exec { tgid, .. } => self.watched.contains(&tgid),
            ProcEvent::Exit { tgid, .. } => self.watched.remove(&tgid),
        };
        if self.watched.len() > WATCHED_MAX {
            // Exits the connector lost leave pids behind: keep the live ones.
            self.watched
                .retain(|p| Path::new(&format!("/proc/{p}")).exists());
        }
        keep.then(|| to_event(e)).flatten()
    }

    /// Reads every connection that is ready now, without waiting (bounded: a connection that
    /// stays ready is read [`PER_TURN`] messages at a time, a few turns). Connections still in
    /// the backlog are accepted first: the atexit hook connects, sends and exits at once, and
    /// its report must not be read after its exit.
    fn read_ready_again(&mut self, msgs: &mut Vec<PreloadMsg>) {
        if self.listener_paused_until.is_none() {
            self.accept();
        }
        let mut ready = vec![EpollEvent::empty(); 256];
        for _ in 0..4 {
            let n = match self.epoll.wait(&mut ready, 0u16) {
                Ok(n) => n,
                Err(_) => return,
            };
            let keys: Vec<u64> = ready[..n]
                .iter()
                .map(|e| e.data())
                .filter(|k| *k < KEY_CNPROC)
                .collect();
            if keys.is_empty() {
                return;
            }
            for k in keys {
                self.read_conn(k, msgs);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let fd = match socket::accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(fd) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    // EMFILE and the like: the connection stays in the backlog. The listener
                    // leaves the set for a while (it would be ready again at once), and the
                    // condition is logged once a minute at most.
                    self.counters.accept_errors += 1;
                    let now = Instant::now();
                    if self
                        .last_accept_log
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
                    {
                        tracing::warn!("preload socket: accept: {e} (pausing accepts)");
                        self.last_accept_log = Some(now);
                    }
                    let _ = self.epoll.delete(&self.listener);
                    self.listener_paused_until = Some(now + PAUSE);
                    return;
                }
            };
            let Ok(cred) = socket::getsockopt(&fd, sockopt::PeerCredentials) else {
                self.counters.refused += 1;
                continue;
            };
            let uid = cred.uid();
            let total = self.conns.len() as u32;
            let limits = self.limits;
            let budget = self.budget(uid);
            if budget.connections >= limits.connections_per_uid || total >= limits.connections {
                self.counters.refused += 1;
                continue;
            }
            budget.connections += 1;
            // Credentials with every datagram (a fork child writes on its parent's socket).
            let _ = socket::setsockopt(&fd, sockopt::PassCred, &true);
            let key = self.next_key;
            self.next_key += 1;
            if self
                .epoll
                .add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, key))
                .is_err()
            {
                self.budget(uid).connections -= 1;
                self.counters.refused += 1;
                continue;
            }
            self.counters.connections += 1;
            self.conns.insert(
                key,
                Conn {
                    fd,
                    uid,
                    hello_pid: 0,
                    paused_until: None,
                },
            );
        }
    }

    fn budget(&mut self, uid: u32) -> &mut Budget {
        let burst = self.limits.burst;
        self.budgets.entry(uid).or_insert_with(|| Budget {
            messages: Bucket::full(burst),
            connections: 0,
        })
    }

    /// Takes one message from `uid`'s budget; false when it is spent.
    fn spend(&mut self, uid: u32) -> bool {
        let (rate, burst) = (self.limits.rate, self.limits.burst);
        self.budget(uid).messages.take(rate, burst)
    }

    fn close(&mut self, key: u64) {
        if let Some(c) = self.conns.remove(&key) {
            let _ = self.epoll.delete(&c.fd);
            let uid = c.uid;
            let b = self.budget(uid);
            b.connections = b.connections.saturating_sub(1);
            if b.connections == 0 && b.messages.tokens >= f64::from(self.limits.burst) {
                self.budgets.remove(&uid);
            }
        }
    }

    /// Re-arms connections whose pause is over.
    fn unpause(&mut self) {
        let now = Instant::now();
        for (&key, c) in self.conns.iter_mut() {
            if c.paused_until.is_some_and(|t| t <= now) {
                c.paused_until = None;
                let _ = self
                    .epoll
                    .add(&c.fd, EpollEvent::new(EpollFlags::EPOLLIN, key));
            }
        }
        if self.listener_paused_until.is_some_and(|t| t <= now) {
            self.listener_paused_until = None;
            let _ = self.epoll.add(
                &self.listener,
                EpollEvent::new(EpollFlags::EPOLLIN, KEY_LISTENER),
            );
        }
    }

    fn pause(&mut self, key: u64) {
        let (rate, burst) = (self.limits.rate.max(1), self.limits.burst);
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        // Until the bucket holds a tenth of the burst again, at least PAUSE.
        let refill = Duration::from_secs_f64(f64::from(burst / 10) / f64::from(rate));
        c.paused_until = Some(Instant::now() + refill.max(PAUSE));
        // Out of the set, not only masked: epoll reports a hang-up whatever the mask, and a
        // paused connection whose peer closed would wake the loop without end.
        let _ = self.epoll.delete(&c.fd);
        self.counters.paused += 1;
    }

    /// Reads up to [`PER_TURN`] messages of one connection.
    fn read_conn(&mut self, key: u64, msgs: &mut Vec<PreloadMsg>) {
        for _ in 0..PER_TURN {
            let Some(c) = self.conns.get(&key) else {
                return;
            };
            if c.paused_until.is_some() {
                return;
            }
            let uid = c.uid;
            if !self.spend(uid) {
                self.pause(key);
                return;
            }
            match self.recv(key) {
                Recv::Message(m) => msgs.push(m),
                Recv::Dropped => {}
                Recv::Empty => return,
                Recv::Closed => return self.close(key),
            }
        }
    }

    fn recv(&mut self, key: u64) -> Recv {
        let Some(c) = self.conns.get_mut(&key) else {
            return Recv::Closed;
        };
        let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
        let mut iov = [IoSliceMut::new(&mut self.buf)];
        let r = socket::recvmsg::<()>(
            c.fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let (len, truncated, creds) = match r {
            Ok(m) => {
                let creds = m.cmsgs().ok().and_then(|mut it| {
                    it.find_map(|c| match c {
                        ControlMessageOwned::ScmCredentials(u) => Some(u),
                        _ => None,
                    })
                });
                let truncated = m
                    .flags
                    .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                (m.bytes, truncated, creds)
            }
            Err(Errno::EAGAIN | Errno::EINTR) => return Recv::Empty,
            Err(_) => return Recv::Closed,
        };
        if len == 0 && creds.is_none() {
            return Recv::Closed;
        }
        self.counters.messages += 1;
        if truncated {
            self.counters.malformed += 1;
            return Recv::Dropped;
        }
        let Some(cred) = creds.filter(|u| u.pid() > 0) else {
            self.counters.no_credentials += 1;
            return Recv::Dropped;
        };
        let (pid, uid, gid) = (cred.pid() as u32, cred.uid(), cred.gid());
        let Ok(m) = decode(&self.buf[..len]) else {
            self.counters.malformed += 1;
            return Recv::Dropped;
        };
        let body = match m.kind {
            MessageKind::Hello => {
                // The library sends one, at load (its socket does not survive an exec, and a
                // fork does not run the constructor again): any other is not its.
                if c.hello_pid != 0 {
                    self.counters.extra_hello += 1;
                    return Recv::Dropped;
                }
                let (rate, burst) = (self.limits.hello_rate, self.limits.hello_burst);
                let bucket = self
                    .hellos
                    .entry(uid)
                    .or_insert_with(|| Bucket::full(burst));
                if !bucket.take(rate, burst) {
                    // The connection stays without a Hello: its messages are dropped too.
                    self.counters.hello_limited += 1;
                    return Recv::Dropped;
                }
                c.hello_pid = pid;
                Body::Hello {
                    program: m.path.to_vec(),
                    args: m.args.to_vec(),
                    env: m.env.to_vec(),
                }
            }
            // An attempt, before the finder ran: whether it imported anything shows in the
            // messages that follow (module body run, extension loaded).
            MessageKind::Import => return Recv::Dropped,
            MessageKind::Open => {
                let rec = OpenRecord::from_bytes(m.args);
                match rec {
                    _ if c.hello_pid == 0 => {
                        self.counters.no_hello += 1;
                        return Recv::Dropped;
                    }
                    _ if m.truncated(FLAG_PATH_TRUNCATED) => {
                        self.counters.truncated += 1;
                        return Recv::Dropped;
                    }
                    None => {
                        self.counters.malformed += 1;
                        return Recv::Dropped;
                    }
                    Some(r) => Body::Open {
                        tid: r.tid,
                        ret: r.ret,
                        dfd: r.dfd,
                        write: r.oflags & (libc::O_WRONLY | libc::O_RDWR) != 0,
                        path: m.path.to_vec(),
                    },
                }
            }
            MessageKind::Exec | MessageKind::ExtensionImport => {
                if c.hello_pid == 0 {
                    self.counters.no_hello += 1;
                    return Recv::Dropped;
                }
                if m.truncated(FLAG_PATH_TRUNCATED) {
                    self.counters.truncated += 1;
                    return Recv::Dropped;
                }
                if !m.path.starts_with(b"/") {
                    self.counters.malformed += 1;
                    return Recv::Dropped;
                }
                Body::Module(m.path.to_vec())
            }
            // On any connection, Hello or not: the hook's is a connection of its own.
            MessageKind::Atexit => {
                if m.truncated(FLAG_ARGS_TRUNCATED) {
                    self.counters.truncated += 1;
                    return Recv::Dropped;
                }
                let Ok(modules) = AtexitModules::parse(m.args) else {
                    // `decode` checked the pairs already.
                    self.counters.malformed += 1;
                    return Recv::Dropped;
                };
                self.counters.atexit += 1;
                Body::Atexit(
                    modules
                        .map(|p| (p.package.to_owned(), p.file.as_bytes().to_vec()))
                        .collect(),
                )
            }
        };
        Recv::Message(PreloadMsg {
            pid,
            uid,
            gid,
            conn_pid: c.hello_pid,
            conn: key,
            ktime_ns: crate::clock::boot_ns(),
            body,
        })
    }
}

/// What one `recvmsg` gave.
enum Recv {
    Message(PreloadMsg),
    Dropped,
    Empty,
    Closed,
}

/// Raises the soft limit of open descriptors to the hard one; returns the soft limit now.
fn raise_nofile() -> u32 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: a valid rlimit; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            r.rlim_cur = r.rlim_max;
        }
    }
    u32::try_from(r.rlim_cur).unwrap_or(u32::MAX)
}

/// A connector event as the event the eBPF tracer would have sent. Every exec is reported as
/// one of another program: the process table keeps a Python process whose `Hello` came after
/// the exec (see `proctable::preload`).
fn to_event(e: ProcEvent) -> Option<Event> {
    Some(match e {
        ProcEvent::Fork {
            parent,
            child,
            ts_ns,
        } => Event::Fork {
            parent,
            child,
            ktime_ns: monotonic_to_boot_ns(ts_ns),
        },
        ProcEvent::Exec { tgid, ts_ns } => Event::ExecOther {
            tgid,
            ktime_ns: monotonic_to_boot_ns(ts_ns),
        },
        ProcEvent::Exit {
            tgid,
            exit_code,
            ts_ns,
        } => Event::Exit {
            tgid,
            exit_code,
            // The proc connector's exit message carries no CPU time, and by the time it is
            // read the process may be reaped: preload-only records have none.
            cpu: None,
            ktime_ns: monotonic_to_boot_ns(ts_ns),
        },
    })
}

#[cfg(test)]
mod tests {
    //! The listener on a real socket (no root needed): credentials, one Hello per connection,
    //! malformed datagrams, the per-uid budgets.
    use std::{os::unix::net::UnixDatagram, sync::mpsc, time::Duration};

    use tracer_common::preload::{encode, Message, MessageKind};

    use super::*;

    fn message(kind: MessageKind, path: &[u8]) -> Vec<u8> {
        let m = Message {
            path,
            ..Message::new(kind)
        };
        let mut buf = vec![0; MAX_MESSAGE];
        let n = encode(&m, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    /// A client: a SEQPACKET socket connected to `path` (std has no SEQPACKET type; a datagram
    /// socket of the right type is made by hand and used through its descriptor).
    fn client(path: &Path) -> UnixDatagram {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        socket::connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
        UnixDatagram::from(fd)
    }

    struct Running {
        collector: Option<std::thread::JoinHandle<(Vec<PreloadMsg>, PreloadCounters)>>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl Running {
        fn start(limits: Limits) -> Running {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p.sock");
            let l = Listener::bind(&path, limits, None).unwrap();
            let (tx, rx) = mpsc::sync_channel(64);
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            let thread = Some(std::thread::spawn(move || l.run(tx, s)));
            // The processor's part: take everything as it comes (the channel is bounded).
            let collector = Some(std::thread::spawn(move || {
                let (mut msgs, mut counters) = (Vec::new(), PreloadCounters::default());
                for m in rx {
                    match m {
                        Msg::Preload(ms) => msgs.extend(ms),
                        Msg::PreloadCounters(c) => counters = c,
                        _ => {}
                    }
                }
                (msgs, counters)
            }));
            Running {
                collector,
                stop,
                thread,
                _dir: dir,
                path,
            }
        }

        /// Stops the listener; everything it sent, and its last counters.
        fn stop(mut self) -> (Vec<PreloadMsg>, PreloadCounters) {
            std::thread::sleep(Duration::from_millis(300));
            self.stop.store(true, Ordering::Release);
            self.thread.take().unwrap().join().unwrap();
            self.collector.take().unwrap().join().unwrap()
        }
    }

    #[test]
    fn messages_carry_the_kernels_credentials_and_one_hello_per_connection() {
        let r = Running::start(Limits::default());
        let c = client(&r.path);
        c.send(&message(MessageKind::Exec, b"/x/before_hello.py"))
            .unwrap();
        c.send(&message(MessageKind::Hello, b"/usr/bin/python3"))
            .unwrap();
        c.send(&message(MessageKind::Hello, b"/usr/bin/python3"))
            .unwrap();
        c.send(b"garbage").unwrap();
        c.send(&message(MessageKind::Exec, b"relative.py")).unwrap();
        c.send(&message(MessageKind::Exec, b"/x/json/__init__.py"))
            .unwrap();
        let (msgs, counters) = r.stop();
        let me = std::process::id();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs.iter().all(|m| m.pid == me && m.conn_pid == me));
        // SAFETY: getuid has no preconditions.
        assert!(msgs.iter().all(|m| m.uid == unsafe { libc::getuid() }));
        assert!(matches!(msgs[0].body, Body::Hello { .. }));
        assert_eq!(msgs[1].body, Body::Module(b"/x/json/__init__.py".to_vec()));
        assert_eq!(
            (counters.no_hello, counters.extra_hello, counters.malformed),
            (1, 1, 2)
        );
    }

    /// An atexit report as the Python hook builds it (`struct.pack('<BBBBHHHH', 1, 6, flags,
    /// 0, 0, 0, len(args), 0) + args`).
    fn python_atexit(flags: u8, args: &[u8]) -> Vec<u8> {
        let mut d = vec![1u8, 6, flags, 0, 0, 0, 0, 0];
        d.extend((args.len() as u16).to_le_bytes());
        d.extend([0, 0]);
        d.extend_from_slice(args);
        d
    }

    #[test]
    fn atexit_reports_need_no_hello_and_carry_the_kernels_credentials() {
        let r = Running::start(Limits::default());
        // The hook's own connection: no Hello, the report at once, then gone.
        let hook = client(&r.path);
        let args = b"json\0/usr/lib/python3.11/json/__init__.py\0sys\0<built-in>\0";
        hook.send(&python_atexit(0, args)).unwrap();
        // A pair cut in half, and a list the sender cut: counted, dropped.
        hook.send(&python_atexit(0, b"json\0/x/json.py\0sys\0"))
            .unwrap();
        hook.send(&python_atexit(FLAG_ARGS_TRUNCATED, b"sys\0<built-in>\0"))
            .unwrap();
        drop(hook);
        // On the library's connection, after its Hello, a report is taken too.
        let lib = client(&r.path);
        lib.send(&message(MessageKind::Hello, b"/usr/bin/python3"))
            .unwrap();
        lib.send(&python_atexit(0, b"os\0/usr/lib/python3.11/os.py\0"))
            .unwrap();
        let (msgs, counters) = r.stop();
        let reports: Vec<&PreloadMsg> = msgs
            .iter()
            .filter(|m| matches!(m.body, Body::Atexit(_)))
            .collect();
        assert_eq!(reports.len(), 2, "{msgs:?}");
        let me = std::process::id();
        // SAFETY: getuid and getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert!(reports
            .iter()
            .all(|m| (m.pid, m.uid, m.gid) == (me, uid, gid)));
        assert_eq!(reports[0].conn_pid, 0, "no Hello on the hook's connection");
        assert_eq!(
            reports[0].body,
            Body::Atexit(vec![
                (
                    "json".into(),
                    b"/usr/lib/python3.11/json/__init__.py".to_vec()
                ),
                ("sys".into(), b"<built-in>".to_vec()),
            ])
        );
        assert_eq!(
            (
                counters.atexit,
                counters.malformed,
                counters.truncated,
                counters.no_hello
            ),
            (2, 1, 1, 0)
        );
    }

    #[test]
    fn a_uid_over_its_rate_is_paused_and_its_hellos_bounded() {
        let limits = Limits {
            rate: 10,
            burst: 100,
            hello_rate: 1,
            hello_burst: 2,
            ..Limits::default()
        };
        let r = Running::start(limits);
        let conns: Vec<_> = (0..4).map(|_| client(&r.path)).collect();
        for c in &conns {
            c.send(&message(MessageKind::Hello, b"/usr/bin/python3"))
                .unwrap();
        }
        // Far more than the burst on one connection; the socket queue takes what it can.
        let module = message(MessageKind::Exec, b"/x/m.py");
        conns[0].set_nonblocking(true).unwrap();
        for _ in 0..400 {
            let _ = conns[0].send(&module);
        }
        // The peer of a paused connection hangs up: the listener must not spin on it.
        drop(conns);
        let (msgs, counters) = r.stop();
        let hellos = msgs
            .iter()
            .filter(|m| matches!(m.body, Body::Hello { .. }))
            .count();
        // Two at once, and one more for each second the test took at most.
        assert!(hellos <= 3, "the Hello budget: {hellos}");
        assert_eq!(counters.hello_limited, 4 - hellos as u64);
        assert!(counters.paused >= 1, "{counters:?}");
        assert!(msgs.len() < 150, "the message budget: {}", msgs.len());
    }
}
