//! rsyslog's `omprog` interface, with `confirmMessages="on"` (and, for throughput,
//! `useTransactions="on"`): one message per line on stdin, one status line per message on
//! stdout (rsyslog's `plugins/external/INTERFACE.md`).
//!
//! - At start: `OK` once the dataset is open and recovered (dots while waiting for another
//!   ingest's lock: omprog's keep-alive).
//! - `BEGIN TRANSACTION` → `OK`; each message → `DEFER_COMMIT` once it is written to the WAL
//!   (not synced); `COMMIT TRANSACTION` → `OK` only after the transaction is durable, else an
//!   error line, and rsyslog retries the whole transaction later (its messages stay in
//!   rsyslog's queue). Messages are never refused one by one: rsyslog 8.2302 does not retry a
//!   transaction's earlier `DEFER_COMMIT` messages when a later one fails (rsyslog issue 2420),
//!   only a failed commit; for the same reason a message that cannot even be written ends the
//!   program (the written ones are recovered at the next start; see `wal`). A malformed
//!   message is quarantined and confirmed with the rest.
//! - Without transactions: each message → `OK` after its own commit (an fsync per message).
//! - Replies wait while more whole lines are already buffered (a sender that does not wait
//!   for each reply, as in a benchmark or a replay): the lines are processed, their records
//!   written to the WAL with one `write`, then the replies sent with one more. rsyslog, which
//!   waits for each reply, gets each one at once.
use std::{
    io::{self, BufRead, Write},
    os::fd::AsFd,
    time::Duration,
};

use pyusage_record::error_line;

use crate::engine::{Ingest, IngestError, Options, Stats};

/// The transaction marks (omprog's `beginTransactionMark`, `commitTransactionMark`).
#[derive(Debug, Clone)]
pub struct Marks {
    /// Begin.
    pub begin: Vec<u8>,
    /// Commit.
    pub commit: Vec<u8>,
}

impl Default for Marks {
    fn default() -> Marks {
        Marks {
            begin: b"BEGIN TRANSACTION".to_vec(),
            commit: b"COMMIT TRANSACTION".to_vec(),
        }
    }
}

/// What the input gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A line ([`Input::line`]).
    Line,
    /// Nothing for the idle period.
    Idle,
    /// End of input: rsyslog is stopping the program.
    Eof,
}

/// Where lines come from.
pub trait Input {
    /// Reads the next line, or says the input was idle for `idle`, or ended.
    fn next(&mut self, idle: Duration) -> io::Result<Event>;

    /// The line the last [`Input::next`] returned, without its newline.
    fn line(&self) -> &[u8];

    /// Whether a whole line has arrived already, so that `next` returns it without waiting:
    /// replies are then held back and sent with the next ones (see [`serve`]).
    fn line_ready(&mut self) -> bool {
        false
    }
}

/// A file descriptor (stdin), polled so that an idle input still lets due segments be
/// converted; read into a large buffer, whose lines are handed out where they lie (no copy of
/// each line out of a reader's buffer).
pub struct Polled<R: io::Read> {
    r: R,
    buf: Vec<u8>,
    /// The buffered bytes not yet handed out: `buf[start..end]`.
    start: usize,
    end: usize,
    /// The last line handed out.
    line: std::ops::Range<usize>,
    eof: bool,
}

impl<R: io::Read + AsFd> Polled<R> {
    /// Wraps `r`.
    pub fn new(r: R) -> Polled<R> {
        Polled {
            r,
            buf: vec![0; 1 << 20],
            start: 0,
            end: 0,
            line: 0..0,
            eof: false,
        }
    }

    /// Reads more after what is buffered (moved to the front first, the buffer doubled when a
    /// line fills it); false at end of input.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.r.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<R: io::Read + AsFd> Input for Polled<R> {
    fn next(&mut self, idle: Duration) -> io::Result<Event> {
        if self.start == self.end && !self.eof {
            let mut fds = [nix::poll::PollFd::new(
                self.r.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = idle.as_millis().min(u16::MAX as u128) as u16;
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
                Ok(0) => return Ok(Event::Idle),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                self.line = self.start..self.start + i;
                self.start += i + 1;
                return Ok(Event::Line);
            }
            if self.eof || !self.fill()? {
                self.eof = true;
                if self.start == self.end {
                    return Ok(Event::Eof);
                }
                // A last line without its newline.
                self.line = self.start..self.end;
                self.start = self.end;
                return Ok(Event::Line);
            }
        }
    }

    fn line(&self) -> &[u8] {
        &self.buf[self.line.clone()]
    }

    fn line_ready(&mut self) -> bool {
        memchr::memchr(b'\n', &self.buf[self.start..self.end]).is_some()
    }
}

/// Any buffered reader, never idle (tests, files).
pub struct Plain<R>(pub R, pub Vec<u8>);

impl<R: BufRead> Plain<R> {
    /// Wraps `r`.
    pub fn new(r: R) -> Plain<R> {
        Plain(r, Vec::new())
    }
}

impl<R: BufRead> Input for Plain<R> {
    fn next(&mut self, _idle: Duration) -> io::Result<Event> {
        self.1.clear();
        if self.0.read_until(b'\n', &mut self.1)? == 0 {
            return Ok(Event::Eof);
        }
        if self.1.last() == Some(&b'\n') {
            self.1.pop();
        }
        Ok(Event::Line)
    }

    fn line(&self) -> &[u8] {
        &self.1
    }

    fn line_ready(&mut self) -> bool {
        self.0
            .fill_buf()
            .is_ok_and(|b| memchr::memchr(b'\n', b).is_some())
    }
}

/// The protocol failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Opening the dataset (reported to rsyslog as a failed start).
    #[error("opening the dataset: {0}")]
    Open(#[source] IngestError),
    /// A commit left the engine in a state it cannot go on from; the next start recovers.
    #[error(transparent)]
    Fatal(IngestError),
    /// Reading stdin or writing stdout.
    #[error("talking to rsyslog: {0}")]
    Io(#[from] io::Error),
}

fn reply(out: &mut dyn Write, s: &[u8]) -> io::Result<()> {
    out.write_all(s)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Replies held back while more lines were waiting: written with one `write` once the input
/// has no whole line left, after the WAL has the records they answer.
#[derive(Default)]
struct Replies(Vec<u8>);

impl Replies {
    fn push(&mut self, s: &[u8]) {
        self.0.extend_from_slice(s);
        self.0.push(b'\n');
    }

    /// Writes the accepted records to the WAL, then the replies.
    fn send(&mut self, ingest: &mut Ingest, out: &mut dyn Write) -> Result<(), ProtocolError> {
        if self.0.is_empty() {
            return Ok(());
        }
        ingest.flush().map_err(ProtocolError::Fatal)?;
        out.write_all(&self.0)?;
        out.flush()?;
        self.0.clear();
        Ok(())
    }
}

/// An error as one status line (anything but `OK` tells rsyslog to retry).
fn error_reply(e: &IngestError) -> Vec<u8> {
    format!("ERROR {}", error_line(e).replace(['\n', '\r'], " ")).into_bytes()
}

/// Runs the protocol until the input ends; returns the dataset's counters.
pub fn serve(
    opts: Options,
    marks: &Marks,
    input: &mut dyn Input,
    out: &mut dyn Write,
) -> Result<Stats, ProtocolError> {
    let idle = opts
        .flush_after
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut keepalive = || {
        let _ = out.write_all(b".").and_then(|()| out.flush());
    };
    let mut ingest = match Ingest::open(opts, &mut keepalive) {
        Ok(i) => i,
        Err(e) => {
            let _ = reply(out, &error_reply(&e));
            return Err(ProtocolError::Open(e));
        }
    };
    reply(out, b"OK")?;
    let mut replies = Replies::default();
    let mut in_txn = false;
    // An index read that failed inside the transaction: its commit must fail.
    let mut failed: Option<IngestError> = None;
    loop {
        // Nothing more to read without waiting: the held replies go out first (rsyslog waits
        // for them before it sends more).
        if !input.line_ready() {
            replies.send(&mut ingest, out)?;
        }
        let event = input.next(idle)?;
        let line = input.line();
        match event {
            Event::Eof => break,
            Event::Idle => {
                if let Err(e) = ingest.tick() {
                    tracing::warn!("ingest: {}", error_line(&e));
                }
            }
            Event::Line if line == marks.begin => {
                // A transaction left open (no COMMIT came): its messages were answered, so
                // they are kept.
                if in_txn && failed.is_none() {
                    if let Err(e) = ingest.commit() {
                        tracing::warn!("ingest: {}", error_line(&e));
                    }
                }
                if failed.take().is_some() {
                    ingest.abort().map_err(ProtocolError::Fatal)?;
                }
                in_txn = true;
                replies.push(b"OK");
            }
            Event::Line if line == marks.commit => {
                in_txn = false;
                let r = match failed.take() {
                    Some(e) => ingest.abort().and(Err(e)),
                    None => ingest.commit(),
                };
                settle(r, &mut replies, out)?;
            }
            Event::Line if in_txn => {
                // Written to the WAL before the reply goes out: see `wal`'s documentation.
                if failed.is_none() {
                    match ingest.accept(line) {
                        Ok(_) => {}
                        Err(e) if e.recoverable() => failed = Some(e),
                        Err(e) => return Err(ProtocolError::Fatal(e)),
                    }
                }
                replies.push(b"DEFER_COMMIT");
            }
            Event::Line => {
                let r = match ingest.accept(line) {
                    Ok(_) => ingest.commit(),
                    Err(e) if e.recoverable() => ingest.abort().and(Err(e)),
                    Err(e) => return Err(ProtocolError::Fatal(e)),
                };
                settle(r, &mut replies, out)?;
            }
        }
    }
    replies.send(&mut ingest, out)?;
    ingest.finish().map_err(ProtocolError::Fatal)
}

/// Replies to a commit: `OK`, or an error line (and stops when the engine cannot go on).
fn settle(
    r: Result<(), IngestError>,
    replies: &mut Replies,
    out: &mut dyn Write,
) -> Result<(), ProtocolError> {
    match r {
        Ok(()) => {
            replies.push(b"OK");
            Ok(())
        }
        Err(e) => {
            replies.push(&error_reply(&e));
            tracing::error!("ingest: {}", error_line(&e));
            if e.recoverable() || matches!(e, IngestError::Path(_)) {
                Ok(())
            } else {
                // The error line still goes out (with the replies before it; the WAL has
                // whatever its failed commit wrote).
                let _ = out.write_all(&replies.0).and_then(|()| out.flush());
                Err(ProtocolError::Fatal(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyusage_record::{Exit, Record};

    fn msg(r: &Record) -> String {
        format!(
            "<134>1 2026-11-25T10:00:00.000002Z {} pyusage {} IMPORT - {}\n",
            r.host,
            r.pid,
            serde_json::to_string(r).unwrap()
        )
    }

    fn rec(i: u64) -> Record {
        let mut r = Record::example();
        r.record_id = format!("id-{i}");
        r.seq = i;
        r.pid = 100 + i as i32;
        r.exit = Exit::Exited;
        r
    }

    fn run(opts: &Options, input: &str) -> (String, Stats) {
        let mut out = Vec::new();
        let st = serve(
            opts.clone(),
            &Marks::default(),
            &mut Plain::new(input.as_bytes()),
            &mut out,
        )
        .unwrap();
        (String::from_utf8(out).unwrap(), st)
    }

    #[test]
    fn transactions_are_confirmed_and_resends_dropped_across_restarts() {
        let d = tempfile::tempdir().unwrap();
        let opts = Options::new(&d.path().join("ds"));
        let mut input = String::from("BEGIN TRANSACTION\n");
        input += &msg(&rec(1));
        input += &msg(&rec(2));
        input += "garbage\n";
        input += &msg(&rec(1));
        input += "COMMIT TRANSACTION\n";
        let (out, st) = run(&opts, &input);
        assert_eq!(
            out,
            "OK\nOK\nDEFER_COMMIT\nDEFER_COMMIT\nDEFER_COMMIT\nDEFER_COMMIT\nOK\n"
        );
        assert_eq!((st.accepted, st.duplicates, st.quarantined), (2, 1, 1));
        // A restart and a resend of the same transaction, plus one new record, unbatched.
        let (out, st) = run(&opts, &(input.clone() + &msg(&rec(3))));
        assert!(out.ends_with("COMMIT\nOK\nOK\n"), "{out}");
        assert_eq!((st.accepted, st.duplicates, st.quarantined), (3, 4, 2));
        let l = pyusage_record::data_dir::load(
            &d.path().join("ds"),
            &pyusage_record::data_dir::Filter::default(),
        )
        .unwrap();
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        let mut ids: Vec<_> = l.records.iter().map(|r| r.record_id.clone()).collect();
        ids.sort();
        assert_eq!(ids, ["id-1", "id-2", "id-3"]);
        let q = std::fs::read_to_string(d.path().join("ds/_quarantine.jsonl")).unwrap();
        assert_eq!(q.lines().count(), 2);
        assert!(q.contains("no <PRI>") && q.contains("garbage"), "{q}");
    }

    #[test]
    fn an_unconfirmed_transaction_is_kept_and_its_resend_dropped() {
        // rsyslog 8.2302 does not resend deferred messages after the program ended: what
        // was answered DEFER_COMMIT is kept.
        let d = tempfile::tempdir().unwrap();
        let opts = Options::new(&d.path().join("ds"));
        let input = format!("BEGIN TRANSACTION\n{}", msg(&rec(1)));
        let (out, st) = run(&opts, &input);
        assert_eq!(out, "OK\nOK\nDEFER_COMMIT\n");
        assert_eq!(st.accepted, 1);
        let (_, st) = run(&opts, &format!("{input}COMMIT TRANSACTION\n"));
        assert_eq!((st.accepted, st.duplicates), (1, 1));
    }

    #[test]
    fn a_killed_ingest_keeps_what_it_answered() {
        // The WAL as a SIGKILL leaves it: answered lines without a commit line.
        let d = tempfile::tempdir().unwrap();
        let opts = Options::new(&d.path().join("ds"));
        run(&opts, "");
        let wal = d.path().join("ds/.ingest/wal");
        let line = |i| serde_json::to_string(&rec(i)).unwrap();
        std::fs::write(
            wal.join(format!("{:020}.wal", 1)),
            format!("{}\n#\n{}\n{{\"torn", line(1), line(2)),
        )
        .unwrap();
        let (_, st) = run(&opts, &msg(&rec(2)));
        assert_eq!((st.recovered, st.accepted, st.duplicates), (2, 0, 1));
        let l = pyusage_record::data_dir::load(
            &d.path().join("ds"),
            &pyusage_record::data_dir::Filter::default(),
        )
        .unwrap();
        assert_eq!(l.records.len(), 2);
    }
}
