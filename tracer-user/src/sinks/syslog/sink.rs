//! The syslog sink thread: reads the spool after its committed offset, sends, commits.
//!
//! Delivery is at-least-once. A unix datagram or UDP send that succeeds is committed at once
//! (the datagram is in the receiver's queue, or UDP gives no better); a TCP send is committed
//! only after the connection stayed healthy for `TCP_CONFIRM` (bytes in our socket buffer when
//! the collector dies are lost otherwise), and any error rewinds to the committed offset and
//! resends. Each failing condition is logged once, with backoff up to 30 s between attempts.
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use pyusage_record::{atomic::PathError, Record};

use super::{conn::Conn, format::format_message, SyslogConfig, Target, TargetError};
use crate::{
    sinks::{Offset, Sink, SinkStatus},
    spool::Reader,
};

/// How long a TCP connection must stay healthy before what was sent on it counts as delivered.
const TCP_CONFIRM: Duration = Duration::from_millis(1500);
/// The longest wait between attempts: a collector that is back is found within it.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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

    /// A failure of the connection: counted, reported once, and the sink is disconnected.
    fn fail(&self, what: &str, e: &dyn std::fmt::Display) {
        self.status.lock().expect("status lock").connected = false;
        self.error(what, e);
    }

    /// A failure that leaves the connection as it is (committing the offset): counted and
    /// reported once.
    fn error(&self, what: &str, e: &dyn std::fmt::Display) {
        let msg = format!("{what}: {e}");
        let mut st = self.status.lock().expect("status lock");
        st.errors += 1;
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
            return self.error("committing the offset", &e);
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

    /// Waits out a rate limit of `cfg.rate_limit` messages a second (0: none), counting each
    /// wait as deferred; `bucket` is (start of the current second, messages sent in it).
    fn throttle(&self, bucket: &mut (Instant, u32)) {
        if self.cfg.rate_limit > 0 {
            if bucket.0.elapsed() >= Duration::from_secs(1) {
                *bucket = (Instant::now(), 0);
            }
            if bucket.1 >= self.cfg.rate_limit {
                self.status.lock().expect("status lock").deferred += 1;
                std::thread::sleep(Duration::from_secs(1).saturating_sub(bucket.0.elapsed()));
                *bucket = (Instant::now(), 0);
            }
            bucket.1 += 1;
        }
    }

    /// Runs until `stop` is set; on stop, keeps trying to deliver what is spooled for up to
    /// `drain` before returning.
    fn deliver(self, drain: Duration) {
        let mut d = Delivery::new(&self);
        loop {
            if d.stop_at.is_none() && self.stop.load(Ordering::Acquire) {
                d.stop_at = Some(Instant::now() + drain);
            }
            if d.stop_at.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            if !d.confirm() {
                continue;
            }
            let Some(batch) = d.read_batch() else {
                continue;
            };
            if batch.is_empty() {
                if d.stop_at.is_some() && d.pending.is_empty() {
                    break;
                }
                self.nap(Duration::from_millis(100));
                continue;
            }
            if !d.connect() {
                continue;
            }
            if !d.send(&batch) {
                d.drop_conn();
                d.back_off();
                continue;
            }
            if !matches!(self.target, Target::Tcp(_)) {
                d.commit_sent();
            }
        }
        d.finish();
    }
}

/// The delivery loop's state, so each of its steps is a method.
struct Delivery<'a> {
    sink: &'a SyslogSink,
    reader: Reader,
    conn: Option<Conn>,
    /// The wait before the next attempt after a failure (doubling up to `MAX_BACKOFF`).
    backoff: Duration,
    /// Sent and not yet committed: (sequence, when sent).
    pending: VecDeque<(u64, Instant)>,
    /// Once a stop was requested: when to give up draining.
    stop_at: Option<Instant>,
    /// The rate limit's (start of the current second, messages sent in it).
    bucket: (Instant, u32),
}

impl<'a> Delivery<'a> {
    /// Starts at the sink's committed offset, not connected.
    fn new(sink: &'a SyslogSink) -> Delivery<'a> {
        Delivery {
            sink,
            reader: Reader::new(&sink.spool_dir, sink.offset.get()),
            conn: None,
            backoff: Duration::from_millis(100),
            pending: VecDeque::new(),
            stop_at: None,
            bucket: (Instant::now(), 0),
        }
    }

    /// The confirm step: commits what the connection confirmed (on TCP, what was sent
    /// `TCP_CONFIRM` ago, or everything once stopping). False when the collector closed the
    /// connection: it is dropped and delivery resumes from the committed offset.
    fn confirm(&mut self) -> bool {
        if let Some(c) = &self.conn {
            let broken = c.broken();
            if broken {
                self.sink.fail(
                    "connection closed by the collector",
                    &std::io::Error::other("peer closed"),
                );
                self.drop_conn();
                return false;
            }
            let mut last = None;
            while let Some(&(seq, at)) = self.pending.front() {
                if at.elapsed() < TCP_CONFIRM && self.stop_at.is_none() {
                    break;
                }
                last = Some(seq);
                self.pending.pop_front();
            }
            if let Some(s) = last {
                self.sink.commit(s);
            }
        }
        true
    }

    /// The read step: the next batch from the spool (its skipped count published). `None`
    /// after a read error, logged and waited out.
    fn read_batch(&mut self) -> Option<Vec<Record>> {
        let batch = match self.reader.next_batch(2048) {
            Ok(b) => b,
            Err(e) => {
                self.sink.fail("reading the spool", &e);
                self.sink.nap(self.backoff);
                return None;
            }
        };
        {
            let mut st = self.sink.status.lock().expect("status lock");
            st.dropped = self.reader.skipped;
        }
        Some(batch)
    }

    /// The connect step, when not connected. False when it failed: logged, delivery resumes
    /// from the committed offset after the backoff.
    fn connect(&mut self) -> bool {
        if self.conn.is_none() {
            match Conn::open(&self.sink.target) {
                Ok(c) => {
                    self.conn = Some(c);
                    self.backoff = Duration::from_millis(100);
                    self.sink.status.lock().expect("status lock").connected = true;
                }
                Err(e) => {
                    self.sink.fail("connecting", &e);
                    self.reader.rewind(self.sink.offset.get());
                    self.back_off();
                    return false;
                }
            }
        }
        true
    }

    /// The send step: each record of `batch`, within the rate limit, pending once sent. False
    /// when a send failed (logged).
    fn send(&mut self, batch: &[Record]) -> bool {
        let c = self.conn.as_mut().expect("connected");
        for r in batch {
            self.sink.throttle(&mut self.bucket);
            let msg = format_message(r, self.sink.cfg.facility, self.sink.cfg.max_message_bytes);
            if let Err(e) = c.send(&msg) {
                self.sink.fail("sending", &e);
                return false;
            }
            self.pending.push_back((r.seq, Instant::now()));
        }
        true
    }

    /// For a datagram target, what was sent is delivered: committed at once.
    fn commit_sent(&mut self) {
        if let Some(&(s, _)) = self.pending.back() {
            self.sink.commit(s);
        }
        self.pending.clear();
    }

    /// Drops the connection and what was sent on it unconfirmed: delivery resumes from the
    /// committed offset (at least once).
    fn drop_conn(&mut self) {
        self.conn = None;
        self.pending.clear();
        self.reader.rewind(self.sink.offset.get());
    }

    /// Waits the backoff, and doubles it for the next failure (up to `MAX_BACKOFF`).
    fn back_off(&mut self) {
        self.sink.nap(self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// At shutdown: whatever was sent on a still-healthy connection counts.
    fn finish(self) {
        if let (Some(c), Some(&(s, _))) = (&self.conn, self.pending.back()) {
            if !c.broken() {
                self.sink.commit(s);
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
