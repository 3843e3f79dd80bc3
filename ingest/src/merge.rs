//! `--from-dir`: node datasets (copied to, or written on, a shared file system) merged into
//! the central dataset through the same engine, so the same de-duplication applies: a record
//! that also came by syslog is stored once, and a merge run again adds nothing.
//!
//! A directory is a daemon's data directory (its `parquet/` dataset and the unconverted
//! `spool/` segments) or a bare dataset root. Each file is one transaction per lane: a file
//! that cannot be read is reported and skipped, never half-merged. Into a dataset of several
//! lanes each record goes to its host's lane ([`crate::lanes`]), the lane its messages reach,
//! so that a resend by syslog later is a duplicate there, unless another lane has it already (a
//! node's records that reached another lane, counted `misrouted` there), where it stays. A
//! failure between two lanes' commits leaves part of a file merged: merging it again adds the
//! rest.
use std::path::{Path, PathBuf};

use pyusage_record::{data_dir, dataset, segment, ReadError, Record};

use crate::engine::{Ingest, IngestError, Outcome};

/// What a merge did.
#[derive(Debug, Default)]
pub struct Merged {
    /// Files read.
    pub files: usize,
    /// Records read.
    pub records: u64,
    /// Records stored (new).
    pub accepted: u64,
    /// Records already stored in another lane than their host's (a node whose messages
    /// reached another lane), left there.
    pub in_other_lane: u64,
    /// Files that could not be read, with the error.
    pub errors: Vec<ReadError>,
}

/// The record files of a node directory: Parquet files in date order, then spool segments.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let root = data_dir::dataset_root(dir);
    let mut out = Vec::new();
    if root.is_dir() {
        for p in dataset::partitions(&root)? {
            out.extend(p.files()?);
        }
    } else {
        return Err(ReadError::NoDataDir {
            path: dir.to_path_buf(),
        });
    }
    out.extend(segment::segments(&dir.join("spool"))?);
    Ok(out)
}

/// Merges every file of `dirs` into `lanes` (the dataset's lanes, opened in lane order: one
/// for a dataset of one lane), committing after each file.
pub fn merge(lanes: &mut [Ingest], dirs: &[PathBuf]) -> Result<Merged, IngestError> {
    // How rsyslog routes the dataset's nodes (every lane has the same count and hash).
    let route = lanes.first().map(Ingest::lane).unwrap_or_default();
    assert_eq!(
        usize::from(route.count),
        lanes.len(),
        "every lane, in order"
    );
    let mut m = Merged::default();
    for dir in dirs {
        let list = match files(dir) {
            Ok(l) => l,
            Err(e) => {
                m.errors.push(e);
                continue;
            }
        };
        for f in list {
            let recs: Result<Vec<Record>, ReadError> =
                if f.extension().is_some_and(|e| e == "parquet") {
                    dataset::read(&f)
                } else {
                    segment::read(&f)
                };
            let recs = match recs {
                Ok(r) => r,
                Err(e) => {
                    m.errors.push(e);
                    continue;
                }
            };
            m.files += 1;
            for r in &recs {
                m.records += 1;
                let own = usize::from(route.route(&r.host));
                let mut elsewhere = false;
                for (i, lane) in lanes.iter_mut().enumerate() {
                    if i != own && lane.has(r)? {
                        elsewhere = true;
                        break;
                    }
                }
                if elsewhere {
                    m.in_other_lane += 1;
                } else if lanes[own].accept_record(r)? == Outcome::Accepted {
                    m.accepted += 1;
                }
            }
            for lane in lanes.iter_mut() {
                lane.commit()?;
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{IngestError, Options};
    use pyusage_record::Exit;

    #[test]
    fn node_datasets_merge_once_and_finals_beat_snapshots() {
        let d = tempfile::tempdir().unwrap();
        let node = d.path().join("node/parquet");
        let mk = |seq: u64, exit: Exit, pkg: &str| {
            let mut r = Record::example();
            r.record_id = format!("n1-{seq}");
            r.seq = seq;
            r.exit = exit;
            r.package = pkg.into();
            r
        };
        // A final record already stored, then a node dataset with its earlier snapshot.
        dataset::write(
            &node,
            &[
                mk(1, Exit::Running, "yaml"),
                mk(2, Exit::Exited, "yaml"),
                mk(3, Exit::Running, "numpy"),
            ],
        )
        .unwrap();
        let out = d.path().join("central");
        let mut opts = Options::new(&out);
        opts.flush_records = 1;
        let mut ing = Ingest::open(opts.clone(), &mut || {}).unwrap();
        let m = merge(std::slice::from_mut(&mut ing), &[d.path().join("node")]).unwrap();
        assert_eq!((m.files, m.records, m.accepted), (1, 3, 3));
        ing.finish().unwrap();
        let mut ing = Ingest::open(opts, &mut || {}).unwrap();
        let m = merge(std::slice::from_mut(&mut ing), &[d.path().join("node")]).unwrap();
        assert_eq!(m.accepted, 0, "merged again: nothing new");
        let c = ing.compact_all().unwrap();
        let st = ing.finish().unwrap();
        assert_eq!(st.duplicates, 3);
        // The yaml snapshot arrived with its final record in one file: both stored; the
        // compaction of a single file does nothing, so it stays until readers de-duplicate.
        assert_eq!(c.outputs, 0);
        let l = data_dir::load(&out, &data_dir::Filter::default()).unwrap();
        assert_eq!(l.records.len(), 2);
    }

    /// Lane `index` of `count` of the dataset at `out`.
    fn open_lane(out: &Path, index: u16, count: u16) -> Result<Ingest, IngestError> {
        let lane = crate::Lane {
            index,
            count,
            ..crate::Lane::default()
        };
        Ingest::open(
            Options {
                lane,
                ..Options::new(out)
            },
            &mut || {},
        )
    }

    /// Whether opening lane 0 of `count` of `out` is refused for the recorded count `recorded`.
    fn refused(out: &Path, count: u16, recorded: u16) -> bool {
        matches!(
            open_lane(out, 0, count),
            Err(IngestError::LaneCount { recorded: r, asked, .. }) if r == recorded && asked == count
        )
    }

    #[test]
    fn into_two_lanes_each_node_to_the_lane_its_messages_reach() {
        let d = tempfile::tempdir().unwrap();
        // rsyslog's hash64mod(host, 2): a → lane 1, b → lane 0 (see lanes.rs).
        let (a, b) = ("ingest-lanes-a", "ingest-lanes-b");
        let rec = |host: &str, i: u32| {
            let mut r = Record::example();
            r.host = host.into();
            r.record_id = format!("{host}-{i}");
            r
        };
        let node: Vec<Record> = (0..3).flat_map(|i| [rec(a, i), rec(b, i)]).collect();
        dataset::write(&d.path().join("node/parquet"), &node).unwrap();
        let out = d.path().join("central");
        let open = |index| open_lane(&out, index, 2).unwrap();
        let mut lanes = vec![open(0), open(1)];
        let m = merge(&mut lanes, &[d.path().join("node")]).unwrap();
        assert_eq!(m.accepted, 6);
        let st: Vec<_> = lanes.into_iter().map(|l| l.finish().unwrap()).collect();
        assert_eq!((st[0].accepted, st[1].accepted), (3, 3));
        assert_eq!((st[0].misrouted, st[1].misrouted), (0, 0));
        let hosts_in = |prefix: &str| -> Vec<String> {
            let mut h: Vec<String> = dataset::partitions(&out)
                .unwrap()
                .iter()
                .flat_map(|p| p.files().unwrap())
                .filter(|f| f.file_name().unwrap().to_string_lossy().starts_with(prefix))
                .flat_map(|f| dataset::read(&f).unwrap())
                .map(|r| r.host)
                .collect();
            h.dedup();
            h
        };
        assert_eq!(hosts_in("ingest-0"), [b]);
        assert_eq!(hosts_in("ingest-l1-"), [a]);
        // The same records by syslog later: duplicates in their lane; a's record reaching
        // lane 0 (a misconfigured collector) is stored there and counted.
        let mut l1 = open(1);
        assert_eq!(l1.accept_record(&rec(a, 0)).unwrap(), Outcome::Duplicate);
        l1.commit().unwrap();
        l1.finish().unwrap();
        let mut l0 = open(0);
        assert_eq!(l0.accept_record(&rec(a, 0)).unwrap(), Outcome::Accepted);
        // One of a's records that only lane 0 has: a merge leaves it there.
        l0.accept_record(&rec(a, 9)).unwrap();
        l0.commit().unwrap();
        assert_eq!(l0.finish().unwrap().misrouted, 2);
        dataset::write(&d.path().join("late/parquet"), &[rec(a, 9)]).unwrap();
        let mut lanes = vec![open(0), open(1)];
        let m = merge(&mut lanes, &[d.path().join("late")]).unwrap();
        assert_eq!((m.accepted, m.in_other_lane), (0, 1));
        for l in lanes {
            l.finish().unwrap();
        }
        // The lane count is the dataset's: another is refused, before anything is locked.
        assert!(refused(&out, 3, 2) && refused(&out, 1, 2));
        // And so is another hash.
        let xxh = crate::Lane {
            index: 0,
            count: 2,
            hash: crate::lanes::LaneHash::Xxh64,
        };
        let e = Ingest::open(
            Options {
                lane: xxh,
                ..Options::new(&out)
            },
            &mut || {},
        );
        assert!(matches!(
            e,
            Err(IngestError::LaneHash {
                recorded: "djb",
                asked: "xxh64",
                ..
            })
        ));
    }

    #[test]
    fn a_dataset_written_by_one_ingest_is_not_split_into_lanes() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("central");
        let mut ing = Ingest::open(Options::new(&out), &mut || {}).unwrap();
        ing.accept_record(&Record::example()).unwrap();
        ing.commit().unwrap();
        // Killed before converting anything: the records are in the WAL only.
        drop(ing);
        assert!(refused(&out, 2, 1));
        assert!(crate::lanes::recorded(&out).unwrap().is_none());
        // A new dataset takes any count, fixed by its first lane.
        let fresh = d.path().join("fresh");
        open_lane(&fresh, 1, 2).unwrap().finish().unwrap();
        assert_eq!(
            crate::lanes::recorded(&fresh).unwrap().map(|l| l.lanes),
            Some(2)
        );
        // Its count lost: refused, whatever count is asked, until it is written back.
        let count = crate::lanes::count_file(&fresh);
        std::fs::remove_file(&count).unwrap();
        for asked in [1, 2] {
            let e = open_lane(&fresh, 0, asked);
            assert!(
                matches!(e, Err(IngestError::LanesUnrecorded { .. })),
                "{asked}"
            );
        }
        for bad in [&b"{\"lanes\":0}"[..], b"{\"lanes\":65}", b"2"] {
            std::fs::write(&count, bad).unwrap();
            assert!(crate::lanes::recorded(&fresh).is_err());
        }
        std::fs::write(&count, b"{\"lanes\":2}").unwrap();
        open_lane(&fresh, 0, 2).unwrap().finish().unwrap();
    }
}
