//! The write-ahead log: what makes a transaction durable with one `fdatasync`.
//!
//! Writing a Parquet file per rsyslog transaction (a few hundred records) would fsync several
//! files per batch and leave millions of tiny files; instead each record is appended to the
//! current segment `wal/<first number, 20 digits>.wal` as a JSON line when it is accepted
//! (the messages that arrived together are written with one `write`, before any of them is
//! answered), and at the transaction's end a commit line `#` is written and the segment
//! `fdatasync`ed before rsyslog hears `OK`. A full segment is converted to Parquet in the
//! background and then deleted.
//!
//! Why each record is written (not synced) before rsyslog hears `DEFER_COMMIT`: rsyslog 8.2302
//! does not resend a transaction's deferred messages when the program dies before the commit
//! (rsyslog issue 2420, fixed in 2025), only the message it was sending. A killed ingest's
//! records are in the kernel's page cache, and recovery keeps every complete line, committed
//! or not: a resend of any of them is a duplicate, dropped by the index. Only a commit that
//! fails (rsyslog then retries the whole transaction, correctly) cuts the segment back.
//!
//! Records get consecutive numbers (the ingest's own sequence, which names the Parquet files)
//! in the order of their lines.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use pyusage_record::atomic::PathError;

/// The commit line.
const COMMIT: &[u8] = b"#\n";

/// The segment being appended to.
pub struct Wal {
    path: PathBuf,
    file: File,
    /// Lines appended and not yet written: [`Wal::flush`] writes them with one `write`, before
    /// the replies to their messages go out (a `write` per record was a tenth of the ingest
    /// thread's time, measured).
    buf: Vec<u8>,
    first: u64,
    /// Bytes committed (the file is cut back here when a commit fails).
    committed: u64,
    /// Bytes written.
    written: u64,
    /// Bytes whose writeback has been started ([`Wal::flush`]).
    started: u64,
    /// Records committed.
    records: u64,
    /// Records written since the last commit.
    pending: u64,
}

/// A segment's path from its first number.
pub fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.wal"))
}

/// The segments in `dir`, oldest first, with their first numbers.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, PathError> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(PathError::at(dir))? {
        let p = e.map_err(PathError::at(dir))?.path();
        if p.extension().is_some_and(|e| e == "wal") {
            if let Some(n) = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
            {
                v.push((n, p));
            }
        }
    }
    v.sort();
    Ok(v)
}

/// The record lines of a segment (without their newlines): every complete line, committed or
/// not (see the module's documentation); a torn last line is left out.
pub fn lines(path: &Path) -> Result<Vec<Vec<u8>>, PathError> {
    let bytes = fs::read(path).map_err(PathError::at(path))?;
    let end = bytes.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
    Ok(bytes[..end]
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty() && *l != b"#")
        .map(<[u8]>::to_vec)
        .collect())
}

impl Wal {
    /// Creates a new segment whose first record is number `first`.
    pub fn create(dir: &Path, first: u64) -> Result<Wal, PathError> {
        let path = segment_path(dir, first);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(PathError::at(&path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(PathError::at(dir))?;
        Ok(Wal {
            path,
            file,
            buf: Vec::with_capacity(1 << 20),
            first,
            committed: 0,
            written: 0,
            started: 0,
            records: 0,
            pending: 0,
        })
    }

    /// Adds one record's JSON (one line, without its newline) to the segment; it is written by
    /// the next [`Wal::flush`] or [`Wal::commit`], which must come before the message is
    /// answered.
    pub fn append(&mut self, json: &[u8]) {
        self.buf.extend_from_slice(json);
        self.buf.push(b'\n');
        self.pending += 1;
    }

    /// Bytes appended and not yet written.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Writes the lines appended so far to the segment, not synced.
    pub fn flush(&mut self) -> Result<(), PathError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.buf);
        // Counted as written even when the write failed (it may have written a part): a
        // rollback then cuts the file back to the last commit.
        self.written += self.buf.len() as u64;
        self.buf.clear();
        r.map_err(PathError::at(&self.path))?;
        self.start_writeback();
        Ok(())
    }

    /// Starts the writeback of what was written since the last call, once it is a few MiB,
    /// without waiting for it: the commit's `fdatasync` then finds most of the transaction
    /// on its way to the disk instead of writing all of it while ingest waits (the commits'
    /// `fdatasync` were a quarter of the ingest thread's time in the stdin benchmark).
    /// Durability still comes from the commit's `fdatasync` alone; an error here is left to
    /// it.
    fn start_writeback(&mut self) {
        const EVERY: u64 = 1 << 20;
        if self.written < self.started + EVERY {
            return;
        }
        use std::os::fd::AsRawFd;
        // SAFETY: a valid descriptor and range; the call only schedules writeback.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.started as libc::off64_t,
                (self.written - self.started) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.started = self.written;
    }

    /// Writes a commit line and makes the segment durable. On failure the segment is cut back
    /// to its last commit (the sender retries the whole transaction); if even that fails the
    /// error says so and the caller must stop.
    pub fn commit(&mut self) -> Result<(), CommitError> {
        if self.pending == 0 {
            return Ok(());
        }
        self.buf.extend_from_slice(COMMIT);
        let r = self
            .flush()
            .map_err(|e| e.source)
            .and_then(|()| self.file.sync_data());
        match r {
            Ok(()) => {
                self.committed = self.written;
                self.records += self.pending;
                self.pending = 0;
                Ok(())
            }
            Err(e) => {
                let source = PathError::at(&self.path)(e);
                match self.rollback() {
                    Ok(()) => Err(CommitError::RolledBack(source)),
                    Err(cut) => Err(CommitError::Stuck { source, cut }),
                }
            }
        }
    }

    /// Cuts the segment back to its last commit (a transaction that is not to be kept).
    pub fn rollback(&mut self) -> Result<(), PathError> {
        self.pending = 0;
        self.buf.clear();
        if self.written == self.committed {
            return Ok(());
        }
        self.file
            .set_len(self.committed)
            .map_err(PathError::at(&self.path))?;
        // Appending writes at the end of the file: O_APPEND is not set, so seek back.
        use std::io::Seek;
        self.file
            .seek(io::SeekFrom::Start(self.committed))
            .map_err(PathError::at(&self.path))?;
        self.written = self.committed;
        self.started = self.started.min(self.committed);
        Ok(())
    }

    /// Number the next committed record will get.
    pub fn next_number(&self) -> u64 {
        self.first + self.records
    }

    /// Records appended since the last commit.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Committed records.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// First number.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// Path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A commit that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Nothing of the transaction remains; the segment is as it was.
    #[error("{0}")]
    RolledBack(#[source] PathError),
    /// The segment could not be cut back either: its tail is uncommitted, and recovery
    /// (which reads up to the last commit line) must deal with it.
    #[error("{source}; cutting the log back failed too: {cut}")]
    Stuck {
        /// The write's error.
        #[source]
        source: PathError,
        /// The truncation's error.
        cut: PathError,
    },
}

impl CommitError {
    /// The underlying I/O error.
    pub fn io(&self) -> &io::Error {
        match self {
            CommitError::RolledBack(e) | CommitError::Stuck { source: e, .. } => &e.source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_lines_survive_and_a_failed_transaction_is_cut_back() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Wal::create(d.path(), 5).unwrap();
        w.append(b"{\"a\":1}");
        w.append(b"{\"a\":2}");
        w.commit().unwrap();
        assert_eq!(w.next_number(), 7);
        // Rolled back after its writeback was started (more than a few MiB written).
        let big = format!("{{\"a\":3,\"pad\":\"{}\"}}", "x".repeat(1 << 20));
        for _ in 0..3 {
            w.append(big.as_bytes());
            w.flush().unwrap();
        }
        assert!(w.started > w.committed);
        w.rollback().unwrap();
        assert_eq!(w.started, w.committed);
        w.append(b"{\"a\":4}");
        w.commit().unwrap();
        // A crash mid-transaction: a complete line without a commit, and a torn one.
        let mut f = OpenOptions::new().append(true).open(w.path()).unwrap();
        f.write_all(b"{\"a\":5}\n{\"a\":").unwrap();
        let got = lines(w.path()).unwrap();
        let want: Vec<Vec<u8>> = [1, 2, 4, 5]
            .iter()
            .map(|i| format!("{{\"a\":{i}}}").into_bytes())
            .collect();
        assert_eq!(got, want);
        assert_eq!(w.records(), 3);
        assert_eq!(
            segments(d.path()).unwrap(),
            vec![(5, w.path().to_path_buf())]
        );
    }
}
