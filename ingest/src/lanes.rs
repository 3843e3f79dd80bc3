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
//! the seed, 0) and takes it modulo N as an unsigned 64-bit number; built with
//! `--enable-fmhash-xxhash` it uses XXH64 with seed 0 instead (`--lane-hash xxh64`).
//! `$hostname` is the HOSTNAME field of the node's messages, which the daemon writes from the
//! record's `host`: printable ASCII with anything else as `_`, at most 255 characters, `-` when
//! empty.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use pyusage_record::atomic::PathError;
use serde::{Deserialize, Serialize};

/// Which hash rsyslog's fmhash was built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaneHash {
    /// Its own (`djb_hash`): rsyslog's default build, Debian's.
    #[default]
    Djb,
    /// XXH64, seed 0: an rsyslog configured with `--enable-fmhash-xxhash` (its `fmhash.so`
    /// links libxxhash).
    Xxh64,
}

impl LaneHash {
    /// The name `--lane-hash` and `lanes.json` use.
    pub fn name(self) -> &'static str {
        match self {
            LaneHash::Djb => "djb",
            LaneHash::Xxh64 => "xxh64",
        }
    }
}

/// How many lanes write the dataset, which one this ingest is, and how rsyslog routes nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    /// This ingest's lane, below `count`.
    pub index: u16,
    /// The dataset's lanes (1: one ingest writes it).
    pub count: u16,
    /// rsyslog's hash.
    pub hash: LaneHash,
}

impl Default for Lane {
    fn default() -> Lane {
        Lane {
            index: 0,
            count: 1,
            hash: LaneHash::Djb,
        }
    }
}

impl Lane {
    /// Whether `host`'s records belong to this lane.
    pub fn owns(&self, host: &str) -> bool {
        self.route(host) == self.index
    }

    /// The lane of `host`'s records among the dataset's: rsyslog's
    /// `hash64mod($hostname, count)` for the HOSTNAME the daemon writes for `host`.
    pub fn route(&self, host: &str) -> u16 {
        lane_of(host, self.count, self.hash)
    }
}

/// The lane of `host`'s records among `count` lanes routed by `hash` (see [`Lane::route`]).
pub fn lane_of(host: &str, count: u16, hash: LaneHash) -> u16 {
    if count <= 1 {
        return 0;
    }
    // On the stack: a lane checks every record it accepts.
    let mut buf = [0u8; 255];
    let mut len = 0;
    for c in host.chars().take(buf.len()) {
        buf[len] = if c.is_ascii_graphic() { c as u8 } else { b'_' };
        len += 1;
    }
    let name: &[u8] = if len == 0 { b"-" } else { &buf[..len] };
    let h = match hash {
        LaneHash::Djb => fmhash64(name.iter().copied()),
        LaneHash::Xxh64 => twox_hash::XxHash64::oneshot(0, name),
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

/// What `lanes.json` records: the lane count and rsyslog's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The lane count.
    pub lanes: u16,
    /// rsyslog's hash.
    #[serde(default)]
    pub hash: LaneHash,
}

/// The dataset's recorded lanes (`None`: none recorded, one lane).
pub fn recorded(out: &Path) -> Result<Option<Layout>, PathError> {
    let path = count_file(out);
    match fs::read(&path) {
        Ok(b) => match serde_json::from_slice::<Layout>(&b) {
            Ok(f) if (1..=MAX_LANES).contains(&f.lanes) => Ok(Some(f)),
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

/// Records `layout` as the dataset's unless one is recorded already; returns the recorded one
/// (this one, or the one a lane opening at the same time recorded first).
pub fn record(out: &Path, layout: Layout) -> Result<Layout, PathError> {
    use std::io::Write;
    let path = count_file(out);
    let dir = path.parent().expect("in .ingest");
    let body = serde_json::to_vec(&layout).expect("serialises");
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
            Ok(layout)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            Ok(recorded(out)?.unwrap_or(layout))
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
            assert_eq!(lane_of(host, 7, LaneHash::Djb), lane, "{host}");
        }
        // The two hosts of the e2e test, as rsyslog routed them.
        assert_eq!(lane_of("ingest-lanes-a", 2, LaneHash::Djb), 1);
        assert_eq!(lane_of("ingest-lanes-b", 2, LaneHash::Djb), 0);
    }

    /// XXH64 of "*" (one byte, 42) with seed 0 is 0x0a9edecebeb03ae4 (xxHash's C
    /// implementation): 4 modulo 7, 36 modulo 64.
    #[test]
    fn xxh64_routing_for_an_rsyslog_built_with_xxhash() {
        assert_eq!(lane_of("*", 7, LaneHash::Xxh64), 4);
        assert_eq!(lane_of("*", 64, LaneHash::Xxh64), 36);
        assert_eq!(
            lane_of("*", 7, LaneHash::Djb),
            (((5381u64 * 33) ^ 42) % 7) as u16
        );
        let json = serde_json::to_string(&Layout {
            lanes: 2,
            hash: LaneHash::Xxh64,
        })
        .unwrap();
        assert_eq!(json, r#"{"lanes":2,"hash":"xxh64"}"#);
        let old: Layout = serde_json::from_str(r#"{"lanes":3}"#).unwrap();
        assert_eq!(old.hash, LaneHash::Djb);
    }

    #[test]
    fn the_hostname_the_daemon_writes_is_hashed() {
        for h in [LaneHash::Djb, LaneHash::Xxh64] {
            assert_eq!(lane_of("nid 1é", 1000, h), lane_of("nid_1_", 1000, h));
            assert_eq!(lane_of("", 1000, h), lane_of("-", 1000, h));
            let long = "n".repeat(300);
            assert_eq!(lane_of(&long, 1000, h), lane_of(&long[..255], 1000, h));
            assert_eq!(lane_of("anything", 1, h), 0);
        }
        let lane = Lane {
            index: 1,
            count: 2,
            hash: LaneHash::Djb,
        };
        assert!(lane.owns("ingest-lanes-a") && !lane.owns("ingest-lanes-b"));
        assert!(Lane::default().owns("ingest-lanes-b"));
    }
}
