//! The kernel's process-events connector (netlink `NETLINK_CONNECTOR`, group `CN_IDX_PROC`):
//! forks, execs and exits of every process on the node, for the daemon's preload-only mode,
//! where eBPF cannot be loaded and nothing else tells it when processes start and end. The
//! events are those the eBPF ring buffer gives: thread-group level, with the exit's
//! `task->exit_code` in wait-status encoding (`(code << 8) | signal`, see
//! [`crate::proctable::Ending::from_exit_code`]), so a finished process's ending is recorded
//! the same way in both modes.
//!
//! Subscribing needs `CAP_NET_ADMIN` before Linux 6.6 (both to bind to the multicast group and
//! for `PROC_CN_MCAST_LISTEN`); the daemon subscribes before it drops its privileges, and the
//! open socket keeps receiving afterwards. The kernel only honours requests from a process in
//! the initial user and PID namespaces, and ignores the others without a word, so
//! [`ProcConnector::open`] waits for the kernel's acknowledgement instead of trusting the send.
//!
//! Delivery is lossy: the kernel drops events when the socket's receive buffer is full and
//! reports it as `ENOBUFS` on the next read. The buffer is made large (beyond
//! `net.core.rmem_max` with `CAP_NET_ADMIN`, another reason to open before dropping
//! privileges), and each such report is counted in [`ProcConnector::overruns`] so that lost
//! events show in the status counters.
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

/// `struct nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32.
const NLMSG_HDRLEN: usize = 16;
/// `nlmsg_type` of a message to skip.
const NLMSG_NOOP: u16 = 1;
/// `nlmsg_type` the connector gives every message it sends (and expects in requests).
const NLMSG_DONE: u16 = 3;
/// `struct cn_msg` before its data: id {idx u32, val u32}, seq u32, ack u32, len u16, flags u16.
const CN_MSG_LEN: usize = 20;
/// `CN_IDX_PROC` (`linux/connector.h`): the process events' index and multicast group.
const CN_IDX_PROC: u32 = 0x1;
/// `CN_VAL_PROC` (`linux/connector.h`).
const CN_VAL_PROC: u32 = 0x1;
/// `enum proc_cn_mcast_op` (`linux/cn_proc.h`).
const PROC_CN_MCAST_LISTEN: u32 = 1;
/// `enum proc_cn_mcast_op`.
const PROC_CN_MCAST_IGNORE: u32 = 2;
/// `proc_event.what` of an acknowledgement.
const PROC_EVENT_NONE: u32 = 0x0000_0000;
/// `proc_event.what` of a fork (or clone, threads included).
const PROC_EVENT_FORK: u32 = 0x0000_0001;
/// `proc_event.what` of an exec.
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
/// `proc_event.what` of an exit (of any thread).
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// `struct proc_event` before `event_data`: what u32, cpu u32, timestamp_ns u64 (at 8).
const PROC_EVENT_HDR: usize = 16;
/// Receive buffer asked for. The kernel doubles it and charges each datagram its skb's true
/// size, about 830 bytes for an event: about 10,000 events (measured on 6.18).
const RCVBUF_BYTES: libc::c_int = 4 << 20;
/// One datagram: the connector sends one message per datagram, at most
/// `CONNECTOR_MAX_MSG_SIZE` (16 KiB) of data; process events are 76 bytes.
const RECV_BYTES: usize = 32 << 10;
/// How long [`ProcConnector::open`] waits for the acknowledgement. The kernel handles the
/// request synchronously inside `sendto`, so the acknowledgement is normally queued before
/// the send returns; this only bounds the failure case.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// One process event, thread-group level only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    /// A new process (not a thread): `child` (its tgid) forked from `parent` (a tgid).
    Fork {
        /// Thread-group id of the forking process.
        parent: u32,
        /// Thread-group id of the new process.
        child: u32,
        /// `CLOCK_MONOTONIC` ns (see [`monotonic_to_boot_ns`]).
        ts_ns: u64,
    },
    /// `tgid` executed a new program.
    Exec {
        /// Thread-group id of the process.
        tgid: u32,
        /// `CLOCK_MONOTONIC` ns.
        ts_ns: u64,
    },
    /// A thread-group leader exited (as the whole process does; a leader leaving by
    /// `pthread_exit` while other threads run is reported then).
    Exit {
        /// Thread-group id of the process.
        tgid: u32,
        /// The kernel's `task->exit_code`, wait-status encoding: `(code << 8) | signal`
        /// (`0x80` added when a core was dumped).
        exit_code: u32,
        /// `CLOCK_MONOTONIC` ns.
        ts_ns: u64,
    },
}

/// Why the connector could not be opened or read.
#[derive(Debug, Error)]
pub enum CnProcError {
    /// `socket(AF_NETLINK, …, NETLINK_CONNECTOR)` failed (no connector in this kernel?).
    #[error("creating the NETLINK_CONNECTOR socket: {0}")]
    Socket(#[source] io::Error),
    /// Binding to the process events' multicast group failed (`EPERM`: no `CAP_NET_ADMIN`).
    #[error(
        "binding to the process events connector group: {0} (needs CAP_NET_ADMIN before Linux 6.6)"
    )]
    Bind(#[source] io::Error),
    /// Sending the subscription, or waiting for its acknowledgement, failed.
    #[error("subscribing to process events: {0}")]
    Subscribe(#[source] io::Error),
    /// The kernel acknowledged the subscription with an error (`EPERM`: no `CAP_NET_ADMIN`).
    #[error("the kernel refused the process events subscription: {0}")]
    Refused(#[source] io::Error),
    /// No acknowledgement came: the kernel ignores subscriptions from outside the initial
    /// user and PID namespaces (a container without the host's PID namespace).
    #[error(
        "the kernel did not acknowledge the process events subscription within {0:?} \
         (not in the initial user and PID namespaces?)"
    )]
    NoAck(Duration),
    /// Reading the socket failed.
    #[error("reading process events: {0}")]
    Read(#[source] io::Error),
}

/// What [`decode`] found in one datagram.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Events appended.
    pub events: usize,
    /// Messages that could not be decoded (bad lengths, not from the process connector). A
    /// bad netlink header ends the walk, so the rest of that datagram counts as one.
    pub undecodable: u64,
}

/// A subscription to the process events connector. Non-blocking: poll its descriptor
/// ([`AsRawFd`]) for readability, then [`read`](ProcConnector::read).
pub struct ProcConnector {
    fd: OwnedFd,
    /// One datagram.
    buf: Vec<u8>,
    /// Events read while waiting for the subscription's acknowledgement, given by the next
    /// [`read`](ProcConnector::read).
    pending: Vec<ProcEvent>,
    /// Times the kernel reported dropped events (`ENOBUFS`: the receive buffer was full). Each
    /// report may stand for any number of lost events.
    pub overruns: u64,
    /// Messages that could not be decoded (see [`Decoded::undecodable`]), plus datagrams
    /// longer than the read buffer.
    pub undecodable: u64,
}

impl ProcConnector {
    /// Opens a `NETLINK_CONNECTOR` socket (non-blocking, close-on-exec), bound to the
    /// `CN_IDX_PROC` group with a 4 MiB receive buffer, and subscribes to process events.
    ///
    /// Subscribing sends `PROC_CN_MCAST_LISTEN` twice. First as the plain `u32` operation,
    /// which every kernel understands, and waits for its acknowledgement (which also proves
    /// this process is in the namespaces the kernel listens to). Then as Linux 6.6's
    /// `struct proc_input { mcast_op, event_type }` with fork, exec and exit only, so the
    /// kernel does not send the uid, gid, sid, ptrace, comm and coredump events the daemon
    /// would discard. The kernel tells the two forms apart by `cn_msg.len`; older kernels
    /// silently drop a message of a length they do not know (no error, no acknowledgement), and
    /// 6.6+ acknowledges it but its new filter then keeps that acknowledgement (a
    /// `PROC_EVENT_NONE`) from this very socket, so the filter cannot be confirmed either way:
    /// sending the plain form first gives a working subscription everywhere, and the filter is
    /// only an optimisation.
    /// Needs `CAP_NET_ADMIN` before Linux 6.6.
    pub fn open() -> Result<ProcConnector, CnProcError> {
        // SAFETY: socket(2) with integer arguments only; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_CONNECTOR,
            )
        };
        if raw < 0 {
            return Err(CnProcError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a descriptor just returned by socket(2) that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_rcvbuf(&fd);
        // nl_pid 0: the kernel assigns this socket a unique port id.
        let addr = sockaddr_nl(0, CN_IDX_PROC);
        // SAFETY: `addr` is a valid `sockaddr_nl` that outlives the call; the length is its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(CnProcError::Bind(io::Error::last_os_error()));
        }
        // From here on, dropping `conn` unsubscribes.
        let mut conn = ProcConnector {
            fd,
            buf: vec![0; RECV_BYTES],
            pending: Vec::new(),
            overruns: 0,
            undecodable: 0,
        };
        let nonce = nonce();
        conn.send_op(&PROC_CN_MCAST_LISTEN.to_ne_bytes(), nonce)
            .map_err(CnProcError::Subscribe)?;
        conn.wait_ack(nonce)?;
        let mut filter = [0u8; 8];
        filter[..4].copy_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
        filter[4..]
            .copy_from_slice(&(PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_EXIT).to_ne_bytes());
        if let Err(e) = conn.send_op(&filter, nonce.wrapping_add(2)) {
            tracing::debug!(error = %e, "process events filter not sent; receiving all kinds");
        }
        Ok(conn)
    }

    /// Reads everything queued without blocking, appending decoded events to `out`; returns
    /// how many were appended. `ENOBUFS` (the kernel dropped events because the receive buffer
    /// was full) counts an overrun and reading goes on; `EAGAIN` ends the read. Datagrams that
    /// are not from the kernel (source port id not 0) are ignored.
    pub fn read(&mut self, out: &mut Vec<ProcEvent>) -> Result<usize, CnProcError> {
        let mut n = self.pending.len();
        out.append(&mut self.pending);
        while let Some(len) = self.recv().map_err(CnProcError::Read)? {
            let d = decode(&self.buf[..len], out);
            n += d.events;
            self.undecodable += d.undecodable;
        }
        Ok(n)
    }

    /// Receives one datagram from the kernel into `buf`: its length there, or `None` when the
    /// queue is empty. Counts overruns and over-long datagrams; skips foreign ones.
    fn recv(&mut self) -> io::Result<Option<usize>> {
        loop {
            let mut addr = sockaddr_nl(0, 0);
            let mut addr_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `buf` is valid for writes of its length; `addr`/`addr_len` are a valid
            // `sockaddr_nl` and its size, all outliving the call. MSG_TRUNC makes the return
            // value the datagram's real length, which may exceed what was written.
            let r = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast::<libc::c_void>(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                    (&mut addr as *mut libc::sockaddr_nl).cast::<libc::sockaddr>(),
                    &mut addr_len,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(None),
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        self.overruns += 1;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            let from_kernel = addr_len as usize >= size_of::<libc::sockaddr_nl>()
                && addr.nl_family == libc::AF_NETLINK as libc::sa_family_t
                && addr.nl_pid == 0;
            if !from_kernel {
                continue;
            }
            let len = r as usize;
            if len > self.buf.len() {
                self.undecodable += 1;
                return Ok(Some(self.buf.len()));
            }
            return Ok(Some(len));
        }
    }

    /// Sends one `PROC_CN` control message with `data` as the cn_msg payload and `ack` as its
    /// `cn_msg.ack` (the kernel acknowledges with `ack + 1`).
    fn send_op(&self, data: &[u8], ack: u32) -> io::Result<()> {
        let len = NLMSG_HDRLEN + CN_MSG_LEN + data.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes()); // nlmsg_len
        msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes()); // nlmsg_type
        msg.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
        msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
        msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes()); // id.idx
        msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes()); // id.val
        msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&ack.to_ne_bytes()); // ack
        msg.extend_from_slice(&(data.len() as u16).to_ne_bytes()); // len
        msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
        msg.extend_from_slice(data);
        let kernel = sockaddr_nl(0, 0);
        // SAFETY: `msg` is valid for reads of its length and `kernel` is a valid
        // `sockaddr_nl`, both outliving the call.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast::<libc::c_void>(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the acknowledgement of the request sent with `nonce`, keeping the events read
    /// meanwhile for the next [`read`](ProcConnector::read).
    fn wait_ack(&mut self, nonce: u32) -> Result<(), CnProcError> {
        let want = nonce.wrapping_add(1);
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            while let Some(len) = self.recv().map_err(CnProcError::Subscribe)? {
                let mut ack = None;
                let (pending, undecodable) = (&mut self.pending, &mut self.undecodable);
                walk(&self.buf[..len], |m| match m {
                    Message::Event(e) => pending.push(e),
                    Message::Ack { ack: a, err } if a == want => ack = Some(err),
                    Message::Undecodable => *undecodable += 1,
                    Message::Ack { .. } | Message::Ignored => {}
                });
                match ack {
                    Some(0) => return Ok(()),
                    Some(err) => {
                        return Err(CnProcError::Refused(io::Error::from_raw_os_error(
                            err as i32,
                        )))
                    }
                    None => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if self.overruns > 0 {
                    // The buffer overflowed while waiting, so the acknowledgement may have
                    // been dropped with the rest; events are evidently flowing.
                    tracing::warn!("no acknowledgement of the process events subscription (receive buffer overflowed); going on");
                    return Ok(());
                }
                return Err(CnProcError::NoAck(ACK_TIMEOUT));
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, 1000) as libc::c_int;
            // SAFETY: one valid `pollfd` that outlives the call.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(CnProcError::Subscribe(e));
                }
            }
        }
    }
}

impl AsRawFd for ProcConnector {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::os::fd::AsFd for ProcConnector {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for ProcConnector {
    /// Unsubscribes (`PROC_CN_MCAST_IGNORE`), best effort: kernels before 6.6 count listeners
    /// globally and keep generating events while the count is above zero, even after the
    /// socket is closed. Without `CAP_NET_ADMIN` any more, those kernels refuse it; nothing
    /// more can be done then.
    fn drop(&mut self) {
        let _ = self.send_op(&PROC_CN_MCAST_IGNORE.to_ne_bytes(), nonce());
    }
}

/// Pure decoder of one netlink datagram from the process events connector: walks its netlink
/// messages (several are allowed, each at `NLMSG_ALIGN`), appending fork (of processes, not
/// threads), exec and exit (of thread-group leaders) events to `out`. Acknowledgements and the
/// other kinds of process events are skipped. Never panics.
pub fn decode(buf: &[u8], out: &mut Vec<ProcEvent>) -> Decoded {
    let mut d = Decoded::default();
    walk(buf, |m| match m {
        Message::Event(e) => {
            out.push(e);
            d.events += 1;
        }
        Message::Undecodable => d.undecodable += 1,
        Message::Ack { .. } | Message::Ignored => {}
    });
    d
}

/// Converts a connector timestamp (`CLOCK_MONOTONIC` ns, the kernel's `ktime_get_ns`) to
/// `CLOCK_BOOTTIME` ns, the clock of `bpf_ktime_get_boot_ns` that the process table uses, by
/// adding their difference sampled now. The two differ only by the time spent suspended, so
/// the result is exact unless the machine was suspended between the event and this call. If
/// a clock cannot be read (it cannot on Linux), `ts_ns` is returned unchanged.
pub fn monotonic_to_boot_ns(ts_ns: u64) -> u64 {
    ts_ns.saturating_add(boot_offset_ns())
}

/// `CLOCK_BOOTTIME - CLOCK_MONOTONIC` now, the boot clock read between two monotonic reads.
fn boot_offset_ns() -> u64 {
    use nix::time::ClockId;
    let now = crate::clock::ns;
    let (Some(m1), Some(boot), Some(m2)) = (
        now(ClockId::CLOCK_MONOTONIC),
        now(ClockId::CLOCK_BOOTTIME),
        now(ClockId::CLOCK_MONOTONIC),
    ) else {
        return 0;
    };
    boot.saturating_sub(m1 + m2.saturating_sub(m1) / 2)
}

/// One netlink message of a datagram.
enum Message {
    /// A process event the daemon uses.
    Event(ProcEvent),
    /// `PROC_EVENT_NONE`: the acknowledgement of a request whose `cn_msg.ack` was `ack - 1`.
    Ack { ack: u32, err: u32 },
    /// Well-formed, but nothing the daemon uses (another kind, a thread).
    Ignored,
    /// Malformed or not from the process connector.
    Undecodable,
}

/// Walks the netlink messages of `buf`, calling `f` with each.
fn walk(buf: &[u8], mut f: impl FnMut(Message)) {
    let mut rest = buf;
    while !rest.is_empty() {
        let (Some(len), Some(kind)) = (u32_at(rest, 0), u16_at(rest, 4)) else {
            f(Message::Undecodable);
            return;
        };
        let len = len as usize;
        let Some(payload) = rest.get(NLMSG_HDRLEN..len) else {
            // Shorter than its header, or longer than what is left: the next one cannot be
            // found either.
            f(Message::Undecodable);
            return;
        };
        match kind {
            NLMSG_NOOP => {}
            NLMSG_DONE => f(message(payload)),
            _ => f(Message::Undecodable),
        }
        // NLMSG_ALIGN: the next message starts at a multiple of 4 (`len <= rest.len()`, so
        // this cannot overflow).
        let next = (len + 3) & !3;
        rest = rest.get(next..).unwrap_or(&[]);
    }
}

/// Decodes one netlink message's payload: a `cn_msg` carrying a `proc_event`.
fn message(p: &[u8]) -> Message {
    let (Some(idx), Some(val), Some(ack), Some(len)) =
        (u32_at(p, 0), u32_at(p, 4), u32_at(p, 12), u16_at(p, 16))
    else {
        return Message::Undecodable;
    };
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC) {
        return Message::Undecodable;
    }
    let Some(ev) = p.get(CN_MSG_LEN..CN_MSG_LEN + len as usize) else {
        return Message::Undecodable;
    };
    let (Some(what), Some(ts_ns), Some(data)) =
        (u32_at(ev, 0), u64_at(ev, 8), ev.get(PROC_EVENT_HDR..))
    else {
        return Message::Undecodable;
    };
    // Only the fields each kind has had since Linux 2.6.15 are read: the union's size (and so
    // `cn_msg.len`) grew since (exit's parent_pid/parent_tgid in 4.18).
    match what {
        PROC_EVENT_NONE => match u32_at(data, 0) {
            Some(err) => Message::Ack { ack, err },
            None => Message::Undecodable,
        },
        PROC_EVENT_FORK => {
            // parent_pid, parent_tgid, child_pid, child_tgid
            let (Some(parent), Some(child_pid), Some(child)) =
                (u32_at(data, 4), u32_at(data, 8), u32_at(data, 12))
            else {
                return Message::Undecodable;
            };
            if child_pid != child {
                return Message::Ignored; // a new thread
            }
            Message::Event(ProcEvent::Fork {
                parent,
                child,
                ts_ns,
            })
        }
        PROC_EVENT_EXEC => {
            // process_pid, process_tgid (after de_thread the exec'ing thread is the leader)
            let Some(tgid) = u32_at(data, 4) else {
                return Message::Undecodable;
            };
            Message::Event(ProcEvent::Exec { tgid, ts_ns })
        }
        PROC_EVENT_EXIT => {
            // process_pid, process_tgid, exit_code, exit_signal[, parent_pid, parent_tgid]
            let (Some(pid), Some(tgid), Some(exit_code)) =
                (u32_at(data, 0), u32_at(data, 4), u32_at(data, 8))
            else {
                return Message::Undecodable;
            };
            if pid != tgid {
                return Message::Ignored; // a thread other than the leader
            }
            Message::Event(ProcEvent::Exit {
                tgid,
                exit_code,
                ts_ns,
            })
        }
        _ => Message::Ignored,
    }
}

/// The native-endian `u16` at `off`, if `b` holds it.
fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// The native-endian `u32` at `off`, if `b` holds it.
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The native-endian `u64` at `off`, if `b` holds it.
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A `sockaddr_nl` (its padding field is private in `libc`).
fn sockaddr_nl(pid: u32, groups: u32) -> libc::sockaddr_nl {
    // SAFETY: `sockaddr_nl` is plain integers, for which all zeroes is a valid value.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a.nl_pid = pid;
    a.nl_groups = groups;
    a
}

/// Asks for a [`RCVBUF_BYTES`] receive buffer: `SO_RCVBUFFORCE` ignores `net.core.rmem_max`
/// but needs `CAP_NET_ADMIN`; `SO_RCVBUF` is capped by it. Best effort: a smaller buffer only
/// means overruns come sooner.
fn set_rcvbuf(fd: &OwnedFd) {
    let set = |opt| {
        let v: libc::c_int = RCVBUF_BYTES;
        // SAFETY: `v` is a valid `c_int` that outlives the call; the length is its size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast::<libc::c_void>(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    if let Err(force) = set(libc::SO_RCVBUFFORCE) {
        if let Err(plain) = set(libc::SO_RCVBUF) {
            tracing::debug!(%force, %plain, "process events receive buffer left at its default");
        }
    }
}

/// A `cn_msg.ack` for a request, told apart from other subscribers' (acknowledgements go to
/// the whole multicast group).
fn nonce() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(4, Ordering::Relaxed);
    (std::process::id() << 12) ^ n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink message as the kernel sends it: nlmsghdr + cn_msg + proc_event with
    /// `data` as event_data (padded to the 6.x union size).
    fn msg(what: u32, ts: u64, data: &[u32]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&what.to_ne_bytes());
        ev.extend_from_slice(&1u32.to_ne_bytes()); // cpu
        ev.extend_from_slice(&ts.to_ne_bytes());
        for d in data {
            ev.extend_from_slice(&d.to_ne_bytes());
        }
        ev.resize(ev.len().max(40), 0);
        raw(CN_IDX_PROC, &ev)
    }

    /// nlmsghdr + cn_msg(idx) + `ev`.
    fn raw(idx: u32, ev: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + CN_MSG_LEN + ev.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&idx.to_ne_bytes());
        m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(ev);
        m
    }

    fn decoded(buf: &[u8]) -> (Vec<ProcEvent>, Decoded) {
        let mut out = Vec::new();
        let d = decode(buf, &mut out);
        assert_eq!(d.events, out.len());
        (out, d)
    }

    #[test]
    fn cnproc_layout_matches_the_kernel() {
        // sizeof(struct nlmsghdr), sizeof(struct cn_msg), offsetof(proc_event, event_data)
        assert_eq!(NLMSG_HDRLEN, size_of::<libc::nlmsghdr>());
        assert_eq!(CN_MSG_LEN, 20);
        assert_eq!(PROC_EVENT_HDR, 16);
        // A fork as 6.x sends it: 16 + 20 + 40 bytes, NLMSG_ALIGNed already.
        assert_eq!(msg(PROC_EVENT_FORK, 0, &[1, 1, 2, 2]).len(), 76);
    }

    #[test]
    fn cnproc_fork_of_process_and_of_thread() {
        let (ev, d) = decoded(&msg(PROC_EVENT_FORK, 99, &[10, 10, 11, 11]));
        assert_eq!(
            ev,
            [ProcEvent::Fork {
                parent: 10,
                child: 11,
                ts_ns: 99
            }]
        );
        assert_eq!(d.undecodable, 0);
        // A thread created by a thread of 10: child_pid != child_tgid.
        let (ev, d) = decoded(&msg(PROC_EVENT_FORK, 99, &[12, 10, 13, 10]));
        assert!(ev.is_empty());
        assert_eq!(d.undecodable, 0);
        // A process forked by a non-leader thread: reported with the parent's tgid.
        let (ev, _) = decoded(&msg(PROC_EVENT_FORK, 5, &[12, 10, 14, 14]));
        assert_eq!(
            ev,
            [ProcEvent::Fork {
                parent: 10,
                child: 14,
                ts_ns: 5
            }]
        );
    }

    #[test]
    fn cnproc_exec() {
        let (ev, _) = decoded(&msg(PROC_EVENT_EXEC, 1234, &[42, 42]));
        assert_eq!(
            ev,
            [ProcEvent::Exec {
                tgid: 42,
                ts_ns: 1234
            }]
        );
    }

    #[test]
    fn cnproc_exit_with_code_and_signal() {
        // exit(3): exit_code 3 << 8, exit_signal SIGCHLD; 6.x adds parent_pid/parent_tgid.
        let (ev, _) = decoded(&msg(PROC_EVENT_EXIT, 7, &[50, 50, 3 << 8, 17, 1, 1]));
        assert_eq!(
            ev,
            [ProcEvent::Exit {
                tgid: 50,
                exit_code: 3 << 8,
                ts_ns: 7
            }]
        );
        // Killed by SIGKILL.
        let (ev, _) = decoded(&msg(PROC_EVENT_EXIT, 8, &[51, 51, 9, 17]));
        assert_eq!(
            ev,
            [ProcEvent::Exit {
                tgid: 51,
                exit_code: 9,
                ts_ns: 8
            }]
        );
        // A non-leader thread exiting.
        let (ev, d) = decoded(&msg(PROC_EVENT_EXIT, 9, &[52, 51, 0, 0]));
        assert!(ev.is_empty());
        assert_eq!(d.undecodable, 0);
        // An old kernel's shorter union (no parent fields, no comm): still decoded.
        let mut ev_bytes = Vec::new();
        for v in [PROC_EVENT_EXIT, 0] {
            ev_bytes.extend_from_slice(&v.to_ne_bytes());
        }
        ev_bytes.extend_from_slice(&3u64.to_ne_bytes());
        for v in [60u32, 60, 0x100] {
            ev_bytes.extend_from_slice(&v.to_ne_bytes());
        }
        let (ev, _) = decoded(&raw(CN_IDX_PROC, &ev_bytes));
        assert_eq!(
            ev,
            [ProcEvent::Exit {
                tgid: 60,
                exit_code: 0x100,
                ts_ns: 3
            }]
        );
    }

    #[test]
    fn cnproc_two_messages_in_one_datagram() {
        let mut buf = msg(PROC_EVENT_EXEC, 1, &[5, 5]);
        // An exit with an unaligned length (a 41-byte event), then its padding.
        let mut odd = msg(PROC_EVENT_EXIT, 3, &[7, 7, 0, 17]);
        odd.push(0xff);
        let len = odd.len() as u32;
        odd[..4].copy_from_slice(&len.to_ne_bytes());
        odd[NLMSG_HDRLEN + 16..NLMSG_HDRLEN + 18].copy_from_slice(&41u16.to_ne_bytes());
        odd.resize((odd.len() + 3) & !3, 0);
        buf.extend(odd);
        buf.extend(msg(PROC_EVENT_FORK, 2, &[5, 5, 6, 6]));
        let (ev, d) = decoded(&buf);
        assert_eq!(
            ev,
            [
                ProcEvent::Exec { tgid: 5, ts_ns: 1 },
                ProcEvent::Exit {
                    tgid: 7,
                    exit_code: 0,
                    ts_ns: 3
                },
                ProcEvent::Fork {
                    parent: 5,
                    child: 6,
                    ts_ns: 2
                },
            ]
        );
        assert_eq!(d.undecodable, 0);
    }

    #[test]
    fn cnproc_skips_acks_other_kinds_and_counts_garbage() {
        let mut buf = msg(PROC_EVENT_NONE, 0, &[0]); // an acknowledgement
        buf.extend(msg(0x200, 0, &[5, 5])); // PROC_EVENT_COMM
        buf.extend(msg(0x4, 0, &[5, 5, 0, 0])); // PROC_EVENT_UID
        let (ev, d) = decoded(&buf);
        assert!(ev.is_empty());
        assert_eq!(d.undecodable, 0);
        // Another connector's index.
        let (ev, d) = decoded(&raw(CN_IDX_PROC + 1, &[0; 40]));
        assert!(ev.is_empty());
        assert_eq!(d.undecodable, 1);
        // A fork whose cn_msg.len leaves out the child fields.
        let mut short = msg(PROC_EVENT_FORK, 0, &[1, 1, 2, 2]);
        short[NLMSG_HDRLEN + 16..NLMSG_HDRLEN + 18].copy_from_slice(&20u16.to_ne_bytes());
        assert_eq!(decoded(&short).1.undecodable, 1);
        // cn_msg.len beyond the message.
        let mut long = msg(PROC_EVENT_EXEC, 0, &[1, 1]);
        long[NLMSG_HDRLEN + 16..NLMSG_HDRLEN + 18].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(decoded(&long).1.undecodable, 1);
        // An nlmsg_len beyond the datagram, after a good message: the good one is kept.
        let mut buf = msg(PROC_EVENT_EXEC, 0, &[1, 1]);
        let mut bad = msg(PROC_EVENT_EXEC, 0, &[2, 2]);
        bad[..4].copy_from_slice(&1000u32.to_ne_bytes());
        buf.extend(bad);
        let (ev, d) = decoded(&buf);
        assert_eq!(ev, [ProcEvent::Exec { tgid: 1, ts_ns: 0 }]);
        assert_eq!(d.undecodable, 1);
        // An NLMSG_ERROR, and a NOOP (skipped).
        let mut err = msg(PROC_EVENT_EXEC, 0, &[1, 1]);
        err[4..6].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(decoded(&err).1.undecodable, 1);
        let mut noop = msg(PROC_EVENT_EXEC, 0, &[1, 1]);
        noop[4..6].copy_from_slice(&NLMSG_NOOP.to_ne_bytes());
        assert_eq!(decoded(&noop), (vec![], Decoded::default()));
        // Empty, and shorter than a header.
        assert_eq!(decoded(&[]).1, Decoded::default());
        assert_eq!(decoded(&[1, 2, 3]).1.undecodable, 1);
    }

    #[test]
    fn cnproc_acks_carry_the_request_ack_plus_one() {
        let mut m = msg(PROC_EVENT_NONE, 0, &[1]); // err = EPERM
        m[NLMSG_HDRLEN + 12..NLMSG_HDRLEN + 16].copy_from_slice(&41u32.to_ne_bytes());
        let mut acks = Vec::new();
        walk(&m, |x| {
            if let Message::Ack { ack, err } = x {
                acks.push((ack, err));
            }
        });
        assert_eq!(acks, [(41, 1)]);
    }

    #[test]
    fn cnproc_decode_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut good = msg(PROC_EVENT_FORK, 1, &[1, 1, 2, 2]);
        good.extend(msg(PROC_EVENT_EXIT, 2, &[2, 2, 0, 17]));
        let mut out = Vec::new();
        for _ in 0..50_000 {
            let buf: Vec<u8> = if next() % 2 == 0 {
                // Random bytes, with lengths around the sizes that matter.
                let len = (next() % 200) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                // A valid datagram, mutated and maybe truncated.
                let mut b = good.clone();
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() % b.len() as u64) as usize;
                    b[i] = next() as u8;
                }
                b.truncate((next() % (b.len() as u64 + 1)) as usize);
                b
            };
            out.clear();
            let d = decode(&buf, &mut out);
            assert_eq!(d.events, out.len());
            assert!(out.len() <= buf.len() / (NLMSG_HDRLEN + CN_MSG_LEN + PROC_EVENT_HDR));
        }
    }

    #[test]
    fn cnproc_boot_clock_is_monotonic_plus_suspend() {
        use nix::time::{clock_gettime, ClockId};
        let ns = |c| {
            let t = clock_gettime(c).expect("clock_gettime");
            t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
        };
        let mono = ns(ClockId::CLOCK_MONOTONIC);
        let boot = monotonic_to_boot_ns(mono);
        let boot_after = ns(ClockId::CLOCK_BOOTTIME);
        assert!(boot >= mono);
        // Converted before the boot clock was read, so not after it, and not long before.
        assert!(boot <= boot_after, "{boot} > {boot_after}");
        assert!(boot_after - boot < 1_000_000_000, "{boot} vs {boot_after}");
    }

    /// Needs the connector: root before Linux 6.6, and the initial user and PID namespaces (CI
    /// runs the tests as root on the host). Fails, not skips, without it.
    #[test]
    fn cnproc_root_sees_fork_exec_exit_of_children() {
        use std::process::Command;
        let mut conn = ProcConnector::open()
            .expect("opening the process events connector (run the tests as root)");

        let mut exit3 = Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .expect("sh");
        let exit3_pid = exit3.id();
        assert_eq!(exit3.wait().expect("wait sh").code(), Some(3));

        let mut sleep = Command::new("sleep").arg("30").spawn().expect("sleep");
        let sleep_pid = sleep.id();
        sleep.kill().expect("SIGKILL sleep");
        sleep.wait().expect("wait sleep");

        let mut forker = Command::new("sh")
            .args(["-c", "/bin/true & wait"])
            .spawn()
            .expect("sh forking");
        let forker_pid = forker.id();
        assert!(forker.wait().expect("wait forking sh").success());

        let spawned = [exit3_pid, sleep_pid, forker_pid];
        let mut events = Vec::new();
        let mut ours = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut exited3, mut killed, mut exec, mut fork) = (false, false, false, false);
        while !(exited3 && killed && exec && fork) && Instant::now() < deadline {
            let mut pfd = libc::pollfd {
                fd: conn.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid `pollfd` that outlives the call.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            events.clear();
            conn.read(&mut events).expect("read");
            for e in &events {
                match *e {
                    ProcEvent::Exit {
                        tgid, exit_code, ..
                    } if tgid == exit3_pid => {
                        exited3 |= exit_code == 3 << 8;
                        ours.push(*e);
                    }
                    ProcEvent::Exit {
                        tgid, exit_code, ..
                    } if tgid == sleep_pid => {
                        killed |= exit_code & 0x7f == libc::SIGKILL as u32;
                        ours.push(*e);
                    }
                    ProcEvent::Exec { tgid, .. } if spawned.contains(&tgid) => {
                        exec = true;
                        ours.push(*e);
                    }
                    ProcEvent::Fork { parent, .. } if spawned.contains(&parent) => {
                        fork |= parent == forker_pid;
                        ours.push(*e);
                    }
                    _ => {}
                }
            }
        }
        let seen = format!(
            "pids {spawned:?}; their events {ours:?}; overruns {}, undecodable {}",
            conn.overruns, conn.undecodable
        );
        assert!(exited3, "no Exit with 3 << 8 for `sh -c 'exit 3'`: {seen}");
        assert!(killed, "no Exit by SIGKILL for sleep: {seen}");
        assert!(exec, "no Exec of a spawned process: {seen}");
        assert!(fork, "no Fork by the forking sh: {seen}");
        assert_eq!(conn.undecodable, 0, "{seen}");
    }
}
