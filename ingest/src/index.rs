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

use pyusage_record::{atomic::PathError, Exit};

use crate::view::View;

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

/// The hash of a record's process-and-package identity ([`pyusage_record::Record::key`]).
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
    pub fn of(r: &View) -> Entry {
        Entry {
            day: day_of(r.process_start),
            id: id_hash(r.record_id),
            key: key_hash(r.host, r.pid, r.process_start, r.package, r.record_id),
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
    /// Entries admitted and not yet in the day files (staged or committed): a day holding any
    /// stays in memory, since its files lack them.
    unpersisted: usize,
}

/// An admitted entry, undone if its transaction is not committed.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    day: Day,
    id: u128,
    /// The key, when it was new to the day's finals.
    new_final: Option<u128>,
}

/// The in-memory side of the index (the ingest thread's).
///
/// An admitted record's hashes go into its day's sets at once (one probe of each set per
/// record), so that a later message of the same transaction, a resend of a committed one,
/// and one of an earlier segment still being converted are all found there; the day is kept
/// in memory until the writer has appended them to its files ([`Index::persisted`]). A
/// transaction that is not committed takes its entries back out ([`Index::rollback`]).
pub struct Index {
    dir: PathBuf,
    max_entries: usize,
    entries: usize,
    days: HashMap<Day, DaySets>,
    tick: u64,
    /// Admitted since the last commit.
    txn: Vec<Admitted>,
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
            txn: Vec::new(),
        })
    }

    /// The directory of the day files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn day(&mut self, day: Day) -> Result<&mut DaySets, PathError> {
        self.tick += 1;
        if !self.days.contains_key(&day) {
            let sets = DaySets {
                ids: read_set(&day_file(&self.dir, day, Kind::Ids))?,
                finals: read_set(&day_file(&self.dir, day, Kind::Finals))?,
                used: 0,
                unpersisted: 0,
            };
            let size = sets.ids.len() + sets.finals.len();
            // Days with entries not yet in their files stay (the limit is exceeded meanwhile).
            while self.entries + size > self.max_entries {
                let Some(oldest) = self
                    .days
                    .iter()
                    .filter(|(_, d)| d.unpersisted == 0)
                    .min_by_key(|(_, d)| d.used)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                let d = self.days.remove(&oldest).expect("present");
                self.entries -= d.ids.len() + d.finals.len();
            }
            self.entries += size;
            self.days.insert(day, sets);
        }
        let tick = self.tick;
        let d = self.days.get_mut(&day).expect("inserted");
        d.used = tick;
        Ok(d)
    }

    /// Looks `e` up and, when it is new, admits it: later lookups see it, the open
    /// transaction's included. Until [`Index::commit`], [`Index::rollback`] takes it back.
    pub fn admit(&mut self, e: &Entry) -> Result<Verdict, PathError> {
        let d = self.day(e.day)?;
        if !d.ids.insert(e.id) {
            return Ok(Verdict::Duplicate);
        }
        let new_final = if e.is_final {
            d.finals.insert(e.key).then_some(e.key)
        } else if d.finals.contains(&e.key) {
            d.ids.remove(&e.id);
            return Ok(Verdict::Superseded);
        } else {
            None
        };
        d.unpersisted += 1;
        self.entries += 1 + new_final.is_some() as usize;
        self.txn.push(Admitted {
            day: e.day,
            id: e.id,
            new_final,
        });
        Ok(Verdict::New)
    }

    /// Whether `e`'s `record_id` is stored or admitted (nothing is admitted).
    pub fn has(&mut self, e: &Entry) -> Result<bool, PathError> {
        Ok(self.day(e.day)?.ids.contains(&e.id))
    }

    /// The open transaction's entries are committed: they stay until their segment is
    /// converted ([`Index::persisted`]).
    pub fn commit(&mut self) {
        self.txn.clear();
    }

    /// The open transaction's entries are taken back out (it was not committed).
    pub fn rollback(&mut self) {
        for a in self.txn.drain(..) {
            // Its day has an unpersisted entry (this one): still in memory.
            if let Some(d) = self.days.get_mut(&a.day) {
                d.ids.remove(&a.id);
                if let Some(k) = a.new_final {
                    d.finals.remove(&k);
                }
                d.unpersisted -= 1;
                self.entries -= 1 + a.new_final.is_some() as usize;
            }
        }
    }

    /// A converted segment's entries are in the day files now: their days may be dropped
    /// from memory again.
    pub fn persisted(&mut self, entries: &[Entry]) {
        let mut run: Option<(Day, usize)> = None;
        let settle = |days: &mut HashMap<Day, DaySets>, (day, n): (Day, usize)| {
            if let Some(d) = days.get_mut(&day) {
                d.unpersisted = d.unpersisted.saturating_sub(n);
            }
        };
        for e in entries {
            match &mut run {
                Some((day, n)) if *day == e.day => *n += 1,
                _ => {
                    if let Some(r) = run.take() {
                        settle(&mut self.days, r);
                    }
                    run = Some((e.day, 1));
                }
            }
        }
        if let Some(r) = run {
            settle(&mut self.days, r);
        }
    }

    /// Days held in memory.
    pub fn days_in_memory(&self) -> usize {
        self.days.len()
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
        let mut r = pyusage_record::Record::example();
        let running = Entry::of(&View::of(&r));
        r.record_id = "other".into();
        r.exit = Exit::Exited;
        let fin = Entry::of(&View::of(&r));
        assert_eq!(running.key, fin.key);
        assert_eq!(ix.admit(&fin).unwrap(), Verdict::New);
        assert_eq!(ix.admit(&fin).unwrap(), Verdict::Duplicate);
        assert_eq!(ix.admit(&running).unwrap(), Verdict::Superseded);
        ix.commit();
        // A day with entries not in its files yet stays in memory past the limit.
        let mut other = fin;
        other.day += 3;
        other.id = 9;
        assert_eq!(ix.admit(&other).unwrap(), Verdict::New);
        assert_eq!(ix.days_in_memory(), 2);
        // Taken back: not there any more, and its day may go.
        ix.rollback();
        persist(d.path(), &[fin]).unwrap();
        ix.persisted(&[fin]);
        assert_eq!(ix.admit(&fin).unwrap(), Verdict::Duplicate);
        // Another day evicts this one (max 1 day); it is read back from disk.
        let mut third = fin;
        third.day += 5;
        third.id = 10;
        assert_eq!(ix.admit(&third).unwrap(), Verdict::New);
        ix.rollback();
        assert_eq!(ix.days_in_memory(), 1);
        assert_eq!(ix.admit(&fin).unwrap(), Verdict::Duplicate);
        assert_eq!(ix.admit(&running).unwrap(), Verdict::Superseded);
        assert_eq!(ix.admit(&other).unwrap(), Verdict::New, "rolled back");
        let mut again = Index::open(d.path(), 4).unwrap();
        assert_eq!(again.admit(&fin).unwrap(), Verdict::Duplicate);
        assert_eq!(again.admit(&running).unwrap(), Verdict::Superseded);
        // A final record of a new key, rolled back: its key is gone with it, a key that was
        // there stays.
        let mut fin2 = fin;
        fin2.id = 11;
        assert_eq!(again.admit(&fin2).unwrap(), Verdict::New);
        let mut fin3 = fin;
        fin3.id = 12;
        fin3.key = 13;
        assert_eq!(again.admit(&fin3).unwrap(), Verdict::New);
        again.rollback();
        let mut run3 = running;
        run3.id = 14;
        run3.key = 13;
        assert_eq!(again.admit(&run3).unwrap(), Verdict::New);
        assert_eq!(again.admit(&running).unwrap(), Verdict::Superseded);
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
