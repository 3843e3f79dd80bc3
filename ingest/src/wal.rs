//! The write-ahead log: what makes a transaction durable with one `fdatasync`.
//!
//! Writing a Parquet file per rsyslog transaction (a few hundred records) would fsync several
//! files per batch and leave millions of tiny files; instead each transaction's records are
//! appended to the current segment `wal/<first number, 20 digits>.wal` as JSON lines, followed
//! by a commit line `#`, and the segment is `fdatasync`ed before rsyslog hears `OK`. A full
//! segment is converted to Parquet in the background and then deleted.
//!
//! Records get consecutive numbers (the ingest's own sequence, which names the Parquet files)
//! in the order of their lines. On recovery only lines up to the last commit line count: the
//! rest belongs to a transaction rsyslog was never told was committed, and will resend.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use pyusage_record::atomic::PathError;

/// The commit line.
const COMMIT: &[u8] = b"#\n";

/// The segment being appended to.
pub struct Wal {
    path: PathBuf,
    file: File,
    first: u64,
    /// Bytes committed (the file is cut back here when a commit fails).
    committed: u64,
    /// Records committed.
    records: u64,
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

/// The committed record lines of a segment (without their newlines).
pub fn committed_lines(path: &Path) -> Result<Vec<Vec<u8>>, PathError> {
    let f = File::open(path).map_err(PathError::at(path))?;
    let mut out = Vec::new();
    let mut open = Vec::new();
    for line in BufReader::new(f).split(b'\n') {
        let line = line.map_err(PathError::at(path))?;
        if line == b"#" {
            out.append(&mut open);
        } else if !line.is_empty() {
            open.push(line);
        }
    }
    Ok(out)
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
            first,
            committed: 0,
            records: 0,
        })
    }

    /// Appends a transaction's record lines (each ending in a newline; `records` of them)
    /// and a commit line, and makes them durable. On failure the segment is cut back to its
    /// last commit (the sender will resend the transaction); if even that fails the error
    /// says so and the caller must stop.
    pub fn commit(&mut self, lines: &[u8], records: u64) -> Result<(), CommitError> {
        if records == 0 {
            return Ok(());
        }
        let r = self
            .file
            .write_all(lines)
            .and_then(|()| self.file.write_all(COMMIT))
            .and_then(|()| self.file.sync_data());
        match r {
            Ok(()) => {
                self.committed += (lines.len() + COMMIT.len()) as u64;
                self.records += records;
                Ok(())
            }
            Err(e) => {
                let source = PathError::at(&self.path)(e);
                match self.file.set_len(self.committed) {
                    Ok(()) => Err(CommitError::RolledBack(source)),
                    Err(e) => Err(CommitError::Stuck {
                        source,
                        cut: PathError::at(&self.path)(e),
                    }),
                }
            }
        }
    }

    /// Number the next committed record will get.
    pub fn next_number(&self) -> u64 {
        self.first + self.records
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
    fn only_committed_lines_survive() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Wal::create(d.path(), 5).unwrap();
        w.commit(b"{\"a\":1}\n{\"a\":2}\n", 2).unwrap();
        assert_eq!(w.next_number(), 7);
        w.commit(b"{\"a\":4}\n", 1).unwrap();
        // A crash mid-transaction: lines without a commit line after them.
        let mut f = OpenOptions::new().append(true).open(w.path()).unwrap();
        f.write_all(b"{\"a\":5}\n{\"a\":").unwrap();
        let lines = committed_lines(w.path()).unwrap();
        assert_eq!(
            lines,
            vec![
                b"{\"a\":1}".to_vec(),
                b"{\"a\":2}".to_vec(),
                b"{\"a\":4}".to_vec()
            ]
        );
        assert_eq!(w.records(), 3);
        assert_eq!(
            segments(d.path()).unwrap(),
            vec![(5, w.path().to_path_buf())]
        );
    }
}
