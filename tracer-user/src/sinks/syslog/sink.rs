//! The syslog sink thread: reads the spool after its committed offset, sends, commits.
//!
//! Delivery is at-least-once. A unix datagram or UDP send that succeeds is committed at once
//! (the datagram is in the receiver's queue, or UDP gives no better); a TCP send is committed
//! only after the connection stayed healthy for `TCP_CONFIRM` (bytes in our socket buffer when
//! the collector dies are lost otherwise), and any error rewinds to the committed offset and
//! resends. Each failing condition is logged once, with backoff up to 30 s between attempts.
use std::{
    collections::VecDeque,
    io::Write,
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use pyusage_record::atomic::PathError;

use super::{format::format_message, frame_tcp, SyslogConfig, Target, TargetError};
use crate::{
    sinks::{Offset, Sink, SinkStatus},
    spool::Reader,
};

/// How long a TCP connection must stay healthy before what was sent on it counts as delivered.
const TCP_CONFIRM: Duration = Duration::from_millis(1500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    /// `syslog.target` is not set.
    #[error("syslog.target is not set")]
    NoTarget,
    /// `syslog.target` is malformed.
    #[error("syslog.target: {0}")]
    Target(#[from] TargetError),
    /// The committed offset could not be read or its directory made.
    #[error("the syslog sink's offset: {0}")]
    Offset(#[from] PathError),
}

enum Conn {
    Unix(UnixDatagram),
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Conn {
    fn open(t: &Target) -> std::io::Result<Conn> {
        Ok(match t {
            Target::Unix(p) => {
                let s = UnixDatagram::unbound()?;
                s.connect(p)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Conn::Unix(s)
            }
            Target::Udp(a) => {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.connect(a)?;
                Conn::Udp(s)
            }
            Target::Tcp(a) => {
                let addr = a
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| std::io::Error::other(format!("{a}: no address")))?;
                let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                s.set_nodelay(true)?;
                Conn::Tcp(s)
            }
        })
    }

    fn send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.send(msg).map(drop),
            Conn::Udp(s) => s.send(msg).map(drop),
            Conn::Tcp(s) => s.write_all(&frame_tcp(msg)),
        }
    }

    /// For TCP: whether the peer has closed or reset the connection.
    fn broken(&self) -> bool {
        let Conn::Tcp(s) = self else { return false };
        let mut b = [0u8; 1];
        if s.set_nonblocking(true).is_err() {
            return true;
        }
        let r = s.peek(&mut b);
        let _ = s.set_nonblocking(false);
        match r {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

/// The sink, run on its own thread.
pub struct SyslogSink {
    target: Target,
    cfg: SyslogConfig,
    spool_dir: PathBuf,
    offset: Arc<Offset>,
    status: Arc<Mutex<SinkStatus>>,
    stop: Arc<AtomicBool>,
}

impl SyslogSink {
    /// A sink for `cfg` (whose target must be set and valid), delivering from the spool of
    /// the data directory `data` at the offset it committed there last.
    pub fn new(
        cfg: SyslogConfig,
        data: &Path,
        spool_dir: PathBuf,
        stop: Arc<AtomicBool>,
    ) -> Result<SyslogSink, SyslogError> {
        let offset = Arc::new(Offset::load(data, "syslog")?);
        let t = cfg.target.clone().ok_or(SyslogError::NoTarget)?;
        let target = Target::parse(&t)?;
        let status = Arc::new(Mutex::new(SinkStatus {
            target: t,
            delivered_seq: offset.get(),
            ..Default::default()
        }));
        Ok(SyslogSink {
            target,
            cfg,
            spool_dir,
            offset,
            status,
            stop,
        })
    }

    fn fail(&self, what: &str, e: &dyn std::fmt::Display) {
        let msg = format!("{what}: {e}");
        let mut st = self.status.lock().expect("status lock");
        st.errors += 1;
        st.connected = false;
        if st.last_error.as_deref() != Some(&msg) {
            tracing::error!(target = %st.target, "syslog sink: {msg}; retrying with backoff, records stay in the spool");
            st.last_error = Some(msg);
        }
    }

    fn commit(&self, seq: u64) {
        if seq <= self.offset.get() {
            return;
        }
        if let Err(e) = self.offset.commit(seq) {
            return self.fail("committing the offset", &e);
        }
        let mut st = self.status.lock().expect("status lock");
        st.delivered_seq = seq;
        st.last_delivery = Some(chrono::Utc::now().timestamp_micros());
        if st.last_error.take().is_some() {
            tracing::info!(target = %st.target, "syslog sink delivering again");
        }
    }

    /// Sleeps up to `d`, waking early once a stop was requested, so a backoff of up to 30 s
    /// never delays the daemon's shutdown.
    fn nap(&self, d: Duration) {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
            if self.stop.load(Ordering::Acquire) {
                // Shutting down: at most one more short pause per retry.
                std::thread::sleep(left.min(Duration::from_millis(100)));
                return;
            }
        }
    }

    /// Runs until `stop` is set; on stop, keeps trying to deliver what is spooled for up to
    /// `drain` before returning.
    fn deliver(self, drain: Duration) {
        let mut reader = Reader::new(&self.spool_dir, self.offset.get());
        let mut conn: Option<Conn> = None;
        let mut backoff = Duration::from_millis(100);
        let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
        let mut stop_at: Option<Instant> = None;
        let mut bucket = (Instant::now(), 0u32);
        loop {
            if stop_at.is_none() && self.stop.load(Ordering::Acquire) {
                stop_at = Some(Instant::now() + drain);
            }
            if stop_at.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            // Commit what is confirmed.
            if let Some(c) = &conn {
                let broken = c.broken();
                if broken {
                    self.fail(
                        "connection closed by the collector",
                        &std::io::Error::other("peer closed"),
                    );
                    conn = None;
                    pending.clear();
                    reader.rewind(self.offset.get());
                    continue;
                }
                let mut last = None;
                while let Some(&(seq, at)) = pending.front() {
                    if at.elapsed() < TCP_CONFIRM && stop_at.is_none() {
                        break;
                    }
                    last = Some(seq);
                    pending.pop_front();
                }
                if let Some(s) = last {
                    self.commit(s);
                }
            }
            let batch = match reader.next_batch(2048) {
                Ok(b) => b,
                Err(e) => {
                    self.fail("reading the spool", &e);
                    self.nap(backoff);
                    continue;
                }
            };
            {
                let mut st = self.status.lock().expect("status lock");
                st.dropped = reader.skipped;
            }
            if batch.is_empty() {
                if stop_at.is_some() && pending.is_empty() {
                    break;
                }
                self.nap(Duration::from_millis(100));
                continue;
            }
            if conn.is_none() {
                match Conn::open(&self.target) {
                    Ok(c) => {
                        conn = Some(c);
                        backoff = Duration::from_millis(100);
                        self.status.lock().expect("status lock").connected = true;
                    }
                    Err(e) => {
                        self.fail("connecting", &e);
                        reader.rewind(self.offset.get());
                        self.nap(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let c = conn.as_mut().expect("connected");
            let mut failed = false;
            for r in &batch {
                if self.cfg.rate_limit > 0 {
                    if bucket.0.elapsed() >= Duration::from_secs(1) {
                        bucket = (Instant::now(), 0);
                    }
                    if bucket.1 >= self.cfg.rate_limit {
                        self.status.lock().expect("status lock").deferred += 1;
                        std::thread::sleep(
                            Duration::from_secs(1).saturating_sub(bucket.0.elapsed()),
                        );
                        bucket = (Instant::now(), 0);
                    }
                    bucket.1 += 1;
                }
                let msg = format_message(r, self.cfg.facility, self.cfg.max_message_bytes);
                if let Err(e) = c.send(&msg) {
                    self.fail("sending", &e);
                    failed = true;
                    break;
                }
                pending.push_back((r.seq, Instant::now()));
            }
            if failed {
                conn = None;
                pending.clear();
                reader.rewind(self.offset.get());
                self.nap(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            if !matches!(self.target, Target::Tcp(_)) {
                if let Some(&(s, _)) = pending.back() {
                    self.commit(s);
                }
                pending.clear();
            }
        }
        // Whatever was sent on a still-healthy connection counts at shutdown.
        if let (Some(c), Some(&(s, _))) = (&conn, pending.back()) {
            if !c.broken() {
                self.commit(s);
            }
        }
    }
}

impl Sink for SyslogSink {
    fn name(&self) -> &'static str {
        "syslog"
    }

    fn offset(&self) -> Arc<Offset> {
        self.offset.clone()
    }

    fn status(&self) -> Arc<Mutex<SinkStatus>> {
        self.status.clone()
    }

    fn run(self: Box<Self>, drain: Duration) {
        self.deliver(drain)
    }
}
