//! The durable spool: append-only JSON lines, the source of truth. Every record is written
//! and `fsync`ed here before any other output sees it; this is also where `seq` (gap-free per
//! host) and `record_id` (UUIDv7) are assigned, so they are assigned exactly once.
//!
//! Layout: `<data>/spool/<first seq, 20 digits>.jsonl` segments. The daemon appends to the
//! newest; a closed segment is converted into Parquet and then deleted. `<data>/spool/seq` keeps
//! the high-water mark so `seq` never goes back after every segment has been converted.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use pyusage_record::{
    atomic::{write_bytes_atomic, Durability, PathError},
    segment, Record,
};
use thiserror::Error;

/// Spool errors carry the file.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// I/O on a spool file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Replacing the high-water mark.
    #[error(transparent)]
    File(#[from] PathError),
    /// Listing or reading back segments.
    #[error(transparent)]
    Read(#[from] pyusage_record::ReadError),
    /// A record could not be serialised (should not happen).
    #[error("serialising a record: {0}")]
    Json(#[from] serde_json::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The writer side of the spool.
pub struct Spool {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    bytes: u64,
    next_seq: u64,
    buf: Vec<u8>,
    ids: RecordIds,
}

/// UUIDv7 record ids without a system call each: a 48-bit millisecond timestamp, then a random
/// base drawn once per spool plus a counter in its low 56 bits (RFC 9562 §6.2, monotonic
/// random). Unique within a run by the counter, across runs and hosts by the base.
struct RecordIds {
    base: [u8; 10],
    counter: u64,
}

impl RecordIds {
    fn new() -> RecordIds {
        let mut base = [0u8; 10];
        // The random part of one system-drawn UUIDv7 (74 random bits).
        base.copy_from_slice(&uuid::Uuid::now_v7().as_bytes()[6..]);
        RecordIds { base, counter: 0 }
    }

    fn next(&mut self) -> String {
        self.counter += 1;
        let mut b = self.base;
        let low = u64::from_be_bytes([0, b[3], b[4], b[5], b[6], b[7], b[8], b[9]])
            .wrapping_add(self.counter)
            & ((1 << 56) - 1);
        b[3..10].copy_from_slice(&low.to_be_bytes()[1..]);
        let ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        uuid::Builder::from_unix_timestamp_millis(ms, &b)
            .into_uuid()
            .to_string()
    }
}

fn last_seq(path: &Path) -> Option<u64> {
    segment::read(path).ok()?.last().map(|r| r.seq)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spool {
    /// Opens the spool under `data/spool`, recovering the next `seq`, and starts a new segment.
    pub fn open(data: &Path) -> Result<Spool, SpoolError> {
        let dir = data.join("spool");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let hw_path = dir.join("seq");
        let hw = fs::read_to_string(&hw_path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let segs = segment::segments(&dir)?;
        let mut max = hw;
        for s in segs.iter().rev() {
            if let Some(q) = last_seq(s) {
                max = max.max(q);
                break;
            }
        }
        let next_seq = max + 1;
        let (file, path) = Self::new_segment(&dir, next_seq)?;
        Ok(Spool {
            dir,
            file,
            path,
            bytes: 0,
            next_seq,
            buf: Vec::new(),
            ids: RecordIds::new(),
        })
    }

    fn new_segment(dir: &Path, first: u64) -> Result<(File, PathBuf), SpoolError> {
        let path = dir.join(format!("{first:020}.jsonl"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok((file, path))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment records are appended to.
    pub fn current(&self) -> &Path {
        &self.path
    }

    /// Bytes in the current segment.
    pub fn segment_bytes(&self) -> u64 {
        self.bytes
    }

    /// The next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Assigns `seq` and `record_id` to each record and makes the batch durable (one `write`
    /// and one `fdatasync` per batch). On error nothing of the batch counts as written and the
    /// sequence numbers are not consumed.
    pub fn append(&mut self, records: &mut [Record]) -> Result<(), SpoolError> {
        if records.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        let mut seq = self.next_seq;
        for r in records.iter_mut() {
            r.seq = seq;
            r.record_id = self.ids.next();
            seq += 1;
        }
        pyusage_record::lines::write(records, &mut self.buf)?;
        let res = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = res {
            // Drop a partial line so the segment stays parseable; the records are retried.
            let _ = self.file.set_len(self.bytes);
            return Err(io_err(&self.path)(e));
        }
        self.bytes += self.buf.len() as u64;
        self.next_seq = seq;
        Ok(())
    }

    /// Closes the current segment (if it has records) and starts a new one; returns every
    /// closed segment, oldest first, for conversion.
    pub fn rotate(&mut self) -> Result<Vec<PathBuf>, SpoolError> {
        if self.bytes > 0 {
            let (file, path) = Self::new_segment(&self.dir, self.next_seq)?;
            self.file = file;
            self.path = path;
            self.bytes = 0;
            fsync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        let current = self.path.clone();
        Ok(segment::segments(&self.dir)?
            .into_iter()
            .filter(|p| *p != current)
            .collect())
    }

    /// Records that `seq` values below `next_seq` are in durable outputs, then deletes a
    /// converted segment.
    pub fn retire(&self, segment: &Path) -> Result<(), SpoolError> {
        write_bytes_atomic(
            &self.dir.join("seq"),
            format!("{}\n", self.next_seq - 1).as_bytes(),
            Durability::Durable,
        )?;
        fs::remove_file(segment).map_err(io_err(segment))?;
        fsync_dir(&self.dir).map_err(io_err(&self.dir))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rec(pkg: &str) -> Record {
        let mut r = Record::example();
        r.package = pkg.into();
        r.seq = 0;
        r.record_id = String::new();
        r
    }

    #[test]
    fn seq_is_gap_free_across_restarts_and_conversion() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path()).unwrap();
        let mut batch = vec![rec("a"), rec("b")];
        s.append(&mut batch).unwrap();
        assert_eq!((batch[0].seq, batch[1].seq), (1, 2));
        assert_ne!(batch[0].record_id, batch[1].record_id);
        drop(s);
        // Restart: continues after the last durable record.
        let mut s = Spool::open(d.path()).unwrap();
        let mut b2 = vec![rec("c")];
        s.append(&mut b2).unwrap();
        assert_eq!(b2[0].seq, 3);
        let closed = s.rotate().unwrap();
        assert_eq!(closed.len(), 2);
        for c in &closed {
            s.retire(c).unwrap();
        }
        drop(s);
        let s = Spool::open(d.path()).unwrap();
        assert_eq!(s.next_seq(), 4, "high-water mark survives conversion");
    }
}

/// A sink's cursor over the spool: yields records with `seq` greater than a committed offset,
/// following segments as the writer rotates and the processor retires them.
pub struct Reader {
    dir: PathBuf,
    after: u64,
    seg: Option<PathBuf>,
    pos: u64,
    /// Records the cursor had to skip because their segment was retired before delivery.
    pub skipped: u64,
}

impl Reader {
    /// A cursor after `after`.
    pub fn new(dir: &Path, after: u64) -> Reader {
        Reader {
            dir: dir.to_path_buf(),
            after,
            seg: None,
            pos: 0,
            skipped: 0,
        }
    }

    /// Goes back to just after `after` (a resend after a delivery error).
    pub fn rewind(&mut self, after: u64) {
        *self = Reader {
            skipped: self.skipped,
            ..Reader::new(&self.dir, after)
        };
    }

    fn locate(&mut self) -> io::Result<bool> {
        let segs = segment::segments(&self.dir).map_err(io::Error::other)?;
        let want = self.after + 1;
        let pick = segs
            .iter()
            .rev()
            .find(|s| segment::first_seq(s).is_some_and(|f| f <= want))
            .or_else(|| segs.first());
        match pick {
            Some(p) => {
                if let Some(f) = segment::first_seq(p) {
                    if f > want {
                        // Records [want, f) were retired undelivered (spool bound).
                        self.skipped += f - want;
                        self.after = f - 1;
                    }
                }
                self.seg = Some(p.clone());
                self.pos = 0;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Up to `max` records after the cursor; empty when none are durable yet.
    pub fn next_batch(&mut self, max: usize) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        for _ in 0..64 {
            if self.seg.as_ref().is_none_or(|s| !s.exists()) && !self.locate()? {
                return Ok(out);
            }
            let seg = self.seg.clone().expect("located");
            // Read only what follows the cursor: segments grow to tens of MiB.
            let mut data = Vec::new();
            match File::open(&seg) {
                Ok(mut f) => {
                    use std::io::{Read, Seek, SeekFrom};
                    f.seek(SeekFrom::Start(self.pos))?;
                    f.read_to_end(&mut data)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.seg = None;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let base = self.pos as usize;
            let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let mut at = 0;
            for line in data[..complete].split_inclusive(|&b| b == b'\n') {
                if out.len() >= max {
                    break;
                }
                at += line.len();
                let line = &line[..line.len() - 1];
                if line.is_empty() {
                    continue;
                }
                if let Ok(r) = serde_json::from_slice::<Record>(line) {
                    if r.seq > self.after {
                        self.after = r.seq;
                        out.push(r);
                    }
                }
            }
            self.pos = (base + at) as u64;
            if out.len() >= max {
                return Ok(out);
            }
            // At the end of this segment: move on if a newer one exists (this one is closed).
            let newer = segment::segments(&self.dir)
                .map_err(io::Error::other)?
                .into_iter()
                .find(|s| segment::first_seq(s) > segment::first_seq(&seg));
            match newer {
                Some(n) if at == complete => {
                    self.seg = Some(n);
                    self.pos = 0;
                }
                _ => return Ok(out),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod reader_tests {
    use super::{tests::rec, *};

    #[test]
    fn reader_follows_rotation_rewinds_and_counts_retired_records() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path()).unwrap();
        let mut b: Vec<Record> = (0..5).map(|_| rec("a")).collect();
        s.append(&mut b).unwrap();
        let mut rd = Reader::new(s.dir(), 0);
        let got: Vec<u64> = rd.next_batch(3).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(got, vec![1, 2, 3]);
        let closed = s.rotate().unwrap();
        let mut b: Vec<Record> = (0..2).map(|_| rec("b")).collect();
        s.append(&mut b).unwrap();
        let got: Vec<u64> = rd.next_batch(10).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(got, vec![4, 5, 6, 7]);
        assert!(rd.next_batch(10).unwrap().is_empty());
        rd.rewind(5);
        let got: Vec<u64> = rd.next_batch(10).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(got, vec![6, 7]);
        // The first segment is retired before a new reader delivered it: skipped, counted.
        s.retire(&closed[0]).unwrap();
        let mut late = Reader::new(s.dir(), 2);
        let got: Vec<u64> = late.next_batch(10).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(got, vec![6, 7]);
        assert_eq!(late.skipped, 3);
    }
}

#[cfg(test)]
mod id_tests {
    use super::RecordIds;

    #[test]
    fn record_ids_are_distinct_version_7() {
        let mut ids = RecordIds::new();
        let v: Vec<String> = (0..10_000).map(|_| ids.next()).collect();
        let set: std::collections::HashSet<&String> = v.iter().collect();
        assert_eq!(set.len(), v.len());
        for id in &v[..10] {
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 7, "{id}");
        }
        assert_ne!(RecordIds::new().next()[14..], ids.next()[14..]);
    }
}
