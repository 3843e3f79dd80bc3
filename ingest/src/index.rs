//! The de-duplication index: which `record_id`s the dataset holds, and which processes'
//! packages have their final record there (so that a later `running` snapshot of them is
//! superseded, not stored).
//!
//! Persistent and bounded: one pair of append-only files per day of `process_start` (the
//! dataset's partition, and a resend's day is its original's), `index/<date>.ids` and
//! `index/<date>.finals`, each a run of 16-byte hashes. In memory: the days looked up most
//! recently (at most `max_days`; resends of older days load theirs on demand), plus what was
//! accepted but is not yet in the files (the WAL's content). A record id that is a UUID (the
//! daemon's UUIDv7) is its own 128 bits; any other string is hashed with FNV-1a 128, which is
//! stable across builds (std's hasher is not promised to be).
use std::{
    collections::{HashMap, HashSet},
    fs::{self, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use pyusage_record::{atomic::PathError, Exit, Record};

/// A day: days since the Unix epoch (UTC) of `process_start`.
pub type Day = i32;

/// Hashes of ids and keys are uniformly distributed already (UUID bits, FNV): a set of them
/// needs no SipHash, only the two halves folded and spread.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fold(u64);

impl std::hash::Hasher for Fold {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = ((v >> 64) as u64 ^ v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A set of 128-bit hashes.
pub type Set = HashSet<u128, std::hash::BuildHasherDefault<Fold>>;

/// The day of a µs timestamp.
pub fn day_of(us: i64) -> Day {
    us.div_euclid(86_400_000_000) as Day
}

/// `YYYY-MM-DD` of a day.
pub fn date_of(day: Day) -> String {
    chrono::DateTime::from_timestamp(day as i64 * 86_400, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// The day of `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<Day> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(day_of(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros()))
}

/// FNV-1a, 128 bits.
fn fnv128(parts: &[&[u8]]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for p in parts {
        for &b in *p {
            h ^= b as u128;
            h = h.wrapping_mul(PRIME);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// The 128 bits of a UUID written `8-4-4-4-12`, else `None`.
fn uuid_bits(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if [8, 13, 18, 23].contains(&i) {
            continue;
        }
        v = v << 4 | (c as char).to_digit(16)? as u128;
    }
    Some(v)
}

/// The hash a `record_id` is stored as.
pub fn id_hash(record_id: &str) -> u128 {
    uuid_bits(record_id).unwrap_or_else(|| fnv128(&[b"id", record_id.as_bytes()]))
}

/// The hash of a record's process-and-package identity ([`Record::key`]).
pub fn key_hash(host: &str, pid: i32, process_start: i64, package: &str, record_id: &str) -> u128 {
    let id: &[u8] = if pid == 0 { record_id.as_bytes() } else { b"" };
    fn_key(host, pid, process_start, package, id)
}

fn fn_key(host: &str, pid: i32, start: i64, package: &str, id: &[u8]) -> u128 {
    fnv128(&[
        b"key",
        host.as_bytes(),
        &pid.to_le_bytes(),
        &start.to_le_bytes(),
        package.as_bytes(),
        id,
    ])
}

/// What the index needs of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Day of `process_start`.
    pub day: Day,
    /// [`id_hash`].
    pub id: u128,
    /// [`key_hash`].
    pub key: u128,
    /// Not a `running` snapshot.
    pub is_final: bool,
}

impl Entry {
    /// The entry of a record.
    pub fn of(r: &Record) -> Entry {
        Entry {
            day: day_of(r.process_start),
            id: id_hash(&r.record_id),
            key: key_hash(&r.host, r.pid, r.process_start, &r.package, &r.record_id),
            is_final: r.exit != Exit::Running,
        }
    }
}

/// Which files of a day.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Record ids.
    Ids,
    /// Keys of final records.
    Finals,
}

/// A day's file of one kind.
pub fn day_file(dir: &Path, day: Day, kind: Kind) -> PathBuf {
    let ext = match kind {
        Kind::Ids => "ids",
        Kind::Finals => "finals",
    };
    dir.join(format!("{}.{ext}", date_of(day)))
}

/// Reads a day's file; a missing file is empty, and a torn last entry (a crash while
/// appending; the WAL still holds it) is left out.
pub fn read_set(path: &Path) -> Result<Set, PathError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(PathError::at(path)(e)),
    };
    Ok(bytes
        .chunks_exact(16)
        .map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")))
        .collect())
}

/// Appends hashes to a day's file and makes them durable.
pub fn append(path: &Path, hashes: &[u128]) -> Result<(), PathError> {
    if hashes.is_empty() {
        return Ok(());
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(PathError::at(path))?;
    // A torn entry left by a crash would shift every later one: cut it first.
    let len = f.metadata().map_err(PathError::at(path))?.len();
    if len % 16 != 0 {
        f.set_len(len - len % 16).map_err(PathError::at(path))?;
    }
    let mut buf = Vec::with_capacity(hashes.len() * 16);
    for h in hashes {
        buf.extend_from_slice(&h.to_le_bytes());
    }
    f.write_all(&buf).map_err(PathError::at(path))?;
    f.sync_data().map_err(PathError::at(path))
}

struct DaySets {
    ids: Set,
    finals: Set,
    used: u64,
}

/// The in-memory side of the index (the ingest thread's).
pub struct Index {
    dir: PathBuf,
    max_entries: usize,
    entries: usize,
    days: HashMap<Day, DaySets>,
    tick: u64,
    /// Accepted, not yet in the day files.
    pending_ids: Set,
    pending_finals: Set,
}

/// What the index says of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: store it.
    New,
    /// Its `record_id` is already stored (a resend).
    Duplicate,
    /// A `running` snapshot of a process whose final record is already stored.
    Superseded,
}

impl Index {
    /// The index kept in `dir` (created if absent), holding days in memory up to about
    /// `max_entries` hashes (~40 bytes each), the least recently used dropped first.
    pub fn open(dir: &Path, max_entries: usize) -> Result<Index, PathError> {
        fs::create_dir_all(dir).map_err(PathError::at(dir))?;
        Ok(Index {
            dir: dir.to_path_buf(),
            max_entries,
            entries: 0,
            days: HashMap::new(),
            tick: 0,
            pending_ids: Set::default(),
            pending_finals: Set::default(),
        })
    }

    /// The directory of the day files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn day(&mut self, day: Day) -> Result<&DaySets, PathError> {
        self.tick += 1;
        if !self.days.contains_key(&day) {
            let sets = DaySets {
                ids: read_set(&day_file(&self.dir, day, Kind::Ids))?,
                finals: read_set(&day_file(&self.dir, day, Kind::Finals))?,
                used: 0,
            };
            let size = sets.ids.len() + sets.finals.len();
            while !self.days.is_empty() && self.entries + size > self.max_entries {
                let oldest = self
                    .days
                    .iter()
                    .min_by_key(|(_, d)| d.used)
                    .map(|(k, _)| *k)
                    .expect("not empty");
                let d = self.days.remove(&oldest).expect("present");
                self.entries -= d.ids.len() + d.finals.len();
            }
            self.entries += size;
            self.days.insert(day, sets);
        }
        let d = self.days.get_mut(&day).expect("inserted");
        d.used = self.tick;
        Ok(d)
    }

    /// Looks `e` up, also among `staged` (the open transaction's entries).
    pub fn check(&mut self, e: &Entry, staged: &Staged) -> Result<Verdict, PathError> {
        if self.pending_ids.contains(&e.id) || staged.ids.contains(&e.id) {
            return Ok(Verdict::Duplicate);
        }
        let fin_pending = self.pending_finals.contains(&e.key) || staged.finals.contains(&e.key);
        let d = self.day(e.day)?;
        if d.ids.contains(&e.id) {
            return Ok(Verdict::Duplicate);
        }
        if !e.is_final && (fin_pending || d.finals.contains(&e.key)) {
            return Ok(Verdict::Superseded);
        }
        Ok(Verdict::New)
    }

    /// A committed transaction's entries: pending until their segment is flushed.
    pub fn commit(&mut self, staged: &Staged) {
        self.pending_ids.extend(&staged.ids);
        self.pending_finals.extend(&staged.finals);
    }

    /// A flushed segment's entries are in the day files now.
    pub fn persisted(&mut self, entries: &[Entry]) {
        for e in entries {
            self.pending_ids.remove(&e.id);
            if e.is_final {
                self.pending_finals.remove(&e.key);
            }
            if let Some(d) = self.days.get_mut(&e.day) {
                self.entries += d.ids.insert(e.id) as usize;
                if e.is_final {
                    self.entries += d.finals.insert(e.key) as usize;
                }
            }
        }
    }

    /// Days held in memory.
    pub fn days_in_memory(&self) -> usize {
        self.days.len()
    }
}

/// The open transaction's entries.
#[derive(Debug, Default)]
pub struct Staged {
    /// Record ids.
    pub ids: Set,
    /// Keys of final records.
    pub finals: Set,
}

impl Staged {
    /// Adds an accepted record's entry.
    pub fn add(&mut self, e: &Entry) {
        self.ids.insert(e.id);
        if e.is_final {
            self.finals.insert(e.key);
        }
    }

    /// Empties it.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.finals.clear();
    }
}

/// Appends a flushed segment's entries to the day files (durably).
pub fn persist(dir: &Path, entries: &[Entry]) -> Result<(), PathError> {
    let mut by_day: HashMap<Day, (Vec<u128>, Vec<u128>)> = HashMap::new();
    for e in entries {
        let d = by_day.entry(e.day).or_default();
        d.0.push(e.id);
        if e.is_final {
            d.1.push(e.key);
        }
    }
    for (day, (ids, finals)) in by_day {
        append(&day_file(dir, day, Kind::Ids), &ids)?;
        append(&day_file(dir, day, Kind::Finals), &finals)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_their_bits_other_ids_hash_stably() {
        assert_eq!(
            id_hash("0190a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5b"),
            0x0190a2b3c4d57e6f8a9b0c1d2e3f4a5b
        );
        assert_ne!(id_hash("a"), id_hash("b"));
        // Pinned: the files outlive the binary.
        assert_eq!(id_hash("customs-1"), id_hash("customs-1"));
        assert_eq!(fnv128(&[b"x"]), 0x0880955b50ab1be95aa0733055c4c358);
        assert_ne!(key_hash("h", 1, 2, "ab", ""), key_hash("h", 1, 2, "a", "b"));
        assert_eq!(date_of(parse_date("2026-11-25").unwrap()), "2026-11-25");
        assert_eq!(day_of(-1), -1);
    }

    #[test]
    fn duplicates_superseded_snapshots_persistence_and_eviction() {
        let d = tempfile::tempdir().unwrap();
        let mut ix = Index::open(d.path(), 1).unwrap();
        let mut r = Record::example();
        let running = Entry::of(&r);
        r.record_id = "other".into();
        r.exit = Exit::Exited;
        let fin = Entry::of(&r);
        assert_eq!(running.key, fin.key);
        let mut st = Staged::default();
        assert_eq!(ix.check(&fin, &st).unwrap(), Verdict::New);
        st.add(&fin);
        assert_eq!(ix.check(&fin, &st).unwrap(), Verdict::Duplicate);
        assert_eq!(ix.check(&running, &st).unwrap(), Verdict::Superseded);
        ix.commit(&st);
        st.clear();
        persist(d.path(), &[fin]).unwrap();
        ix.persisted(&[fin]);
        // Another day evicts this one (max 1 day); a fresh index reads it back from disk.
        let mut other = fin;
        other.day += 3;
        other.id = 9;
        assert_eq!(ix.check(&other, &st).unwrap(), Verdict::New);
        assert_eq!(ix.days_in_memory(), 1);
        assert_eq!(ix.check(&fin, &st).unwrap(), Verdict::Duplicate);
        let mut again = Index::open(d.path(), 4).unwrap();
        assert_eq!(again.check(&fin, &st).unwrap(), Verdict::Duplicate);
        assert_eq!(again.check(&running, &st).unwrap(), Verdict::Superseded);
        // A torn entry is cut before the next append.
        let f = day_file(d.path(), fin.day, Kind::Ids);
        let mut b = fs::read(&f).unwrap();
        b.extend_from_slice(&[1, 2, 3]);
        fs::write(&f, &b).unwrap();
        assert_eq!(read_set(&f).unwrap().len(), 1);
        append(&f, &[5]).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().len(), 32);
        assert!(read_set(&f).unwrap().contains(&5));
    }
}
