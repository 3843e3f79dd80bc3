//! Lanes: several ingests writing one dataset, each node's records in exactly one of them.
//!
//! The collector's rsyslog picks a node's lane with `hash64mod($hostname, N)`
//! (packaging/rsyslog/pyusage-central-lanes.conf). This is the same function, computed here so
//! that a lane can check that what reaches it belongs to it (a lane count that differs between
//! rsyslog's configuration and ingest's, or an rsyslog whose hash differs, would put copies of a
//! node's records in two lanes, where neither index sees the other's: counted as `misrouted`),
//! and so that `--from-dir` puts a node's files into the lane its messages reach.
//!
//! rsyslog's `fmhash` module, as Debian builds it (without xxhash), hashes with a modified
//! Bernstein hash (`h = 33 * h ^ c` from 5381 over the string's `char`s, signed on x86-64, plus
//! the seed, 0) and takes it modulo N as an unsigned 64-bit number. `$hostname` is the HOSTNAME
//! field of the node's messages, which the daemon writes from the record's `host`: printable
//! ASCII with anything else as `_`, at most 255 characters, `-` when empty.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use pyusage_record::atomic::PathError;
use serde::{Deserialize, Serialize};

/// How many lanes write the dataset, and which one this ingest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    /// This ingest's lane, below `count`.
    pub index: u16,
    /// The dataset's lanes (1: one ingest writes it).
    pub count: u16,
}

impl Default for Lane {
    fn default() -> Lane {
        Lane { index: 0, count: 1 }
    }
}

impl Lane {
    /// Whether `host`'s records belong to this lane.
    pub fn owns(&self, host: &str) -> bool {
        self.count <= 1 || lane_of(host, self.count) == self.index
    }
}

/// The lane of `host`'s records among `count` lanes: rsyslog's `hash64mod($hostname, count)`
/// for the HOSTNAME the daemon writes for `host`.
pub fn lane_of(host: &str, count: u16) -> u16 {
    if count <= 1 {
        return 0;
    }
    let mut name = host
        .chars()
        .take(255)
        .map(|c| if c.is_ascii_graphic() { c as u8 } else { b'_' })
        .peekable();
    let h = if name.peek().is_none() {
        fmhash64(b"-".iter().copied())
    } else {
        fmhash64(name)
    };
    (h % u64::from(count)) as u16
}

/// The most lanes a dataset may have (each a process with its own lock and writer thread;
/// a `--from-dir` merge opens them all).
pub const MAX_LANES: u16 = 64;

/// `DATASET/.ingest/lanes.json`: the dataset's lane count, fixed by the first lane that opens
/// a new dataset with more than one (a dataset without it has one). A node's earlier records
/// are in its lane's index only, so a lane count that changed would let a resend, or a
/// `--from-dir` merge, store them again in the node's new lane.
pub fn count_file(out: &Path) -> PathBuf {
    out.join(".ingest").join("lanes.json")
}

#[derive(Serialize, Deserialize)]
struct CountFile {
    lanes: u16,
}

/// The dataset's recorded lane count (`None`: none recorded, one lane).
pub fn recorded(out: &Path) -> Result<Option<u16>, PathError> {
    let path = count_file(out);
    match fs::read(&path) {
        Ok(b) => match serde_json::from_slice::<CountFile>(&b) {
            Ok(f) if (1..=MAX_LANES).contains(&f.lanes) => Ok(Some(f.lanes)),
            Ok(f) => Err(PathError {
                path,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} lanes: not 1 to {MAX_LANES}", f.lanes),
                ),
            }),
            Err(e) => Err(PathError {
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PathError::at(&path)(e)),
    }
}

/// Records `count` as the dataset's lane count unless one is recorded already; returns the
/// recorded count (this one, or the one a lane opening at the same time recorded first).
pub fn record(out: &Path, count: u16) -> Result<u16, PathError> {
    use std::io::Write;
    let path = count_file(out);
    let dir = path.parent().expect("in .ingest");
    let body = serde_json::to_vec(&CountFile { lanes: count }).expect("serialises");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(PathError::at(dir))?;
    tmp.write_all(&body)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(PathError::at(tmp.path()))?;
    // Linked under the name only if it is free: of lanes opening at once, the first one's
    // count stays, whole.
    match tmp.persist_noclobber(&path) {
        Ok(_) => {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(PathError::at(dir))?;
            Ok(count)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            Ok(recorded(out)?.unwrap_or(count))
        }
        Err(e) => Err(PathError::at(&path)(e.error)),
    }
}

/// Whether lane state exists (`.ingest/lane-K/`): a dataset written by several lanes.
pub fn has_lane_state(out: &Path) -> bool {
    fs::read_dir(out.join(".ingest")).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("lane-"))
    })
}

/// Whether the dataset at `out` holds records already, written as one lane: a partition, a
/// converted segment's state, or a write-ahead log with contents.
pub fn has_records(out: &Path) -> Result<bool, PathError> {
    let partition = match fs::read_dir(out) {
        Ok(rd) => rd
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("date=")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(PathError::at(out)(e)),
    };
    let state = out.join(".ingest");
    let wal = crate::wal::segments(&state.join("wal")).unwrap_or_default();
    let logged = wal
        .iter()
        .any(|(_, p)| fs::metadata(p).is_ok_and(|m| m.len() > 0));
    Ok(partition || state.join("state.json").exists() || logged)
}

/// rsyslog fmhash's `hash64` without xxhash (`djb_hash`, seed 0).
fn fmhash64(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(5381u64, |h, b| {
        // C's `char` is signed on x86-64: a byte above 0x7f is sign-extended.
        h.wrapping_mul(33) ^ (b as i8 as i64 as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by rsyslog 8.2302 (Debian 12) for `hash64($hostname)`, `hash64($msg)`
    /// and `hash64mod($hostname, 7)`, as signed numbers.
    #[test]
    fn the_same_hash_as_rsyslogs_fmhash() {
        for (s, h) in [
            ("ingest-lanes-a", -7145564213296608461i64),
            ("nid001234", 249794749857602082),
            ("login01.perlmutter.nersc.gov", -7253914639813022790),
            ("a", 177604),
            ("é-ü", 210571762397),
            ("", 5381),
        ] {
            assert_eq!(fmhash64(s.bytes()) as i64, h, "{s}");
        }
        for (host, lane) in [
            ("ingest-lanes-a", 4),
            ("nid001234", 0),
            ("login01.perlmutter.nersc.gov", 2),
        ] {
            assert_eq!(lane_of(host, 7), lane, "{host}");
        }
        // The two hosts of the e2e test, as rsyslog routed them.
        assert_eq!(lane_of("ingest-lanes-a", 2), 1);
        assert_eq!(lane_of("ingest-lanes-b", 2), 0);
    }

    #[test]
    fn the_hostname_the_daemon_writes_is_hashed() {
        assert_eq!(lane_of("nid 1é", 1000), lane_of("nid_1_", 1000));
        assert_eq!(lane_of("", 1000), lane_of("-", 1000));
        let long = "n".repeat(300);
        assert_eq!(lane_of(&long, 1000), lane_of(&long[..255], 1000));
        assert_eq!(lane_of("anything", 1), 0);
        let lane = Lane { index: 1, count: 2 };
        assert!(lane.owns("ingest-lanes-a") && !lane.owns("ingest-lanes-b"));
        assert!(Lane::default().owns("ingest-lanes-b"));
    }
}
