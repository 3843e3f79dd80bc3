//! `--from-dir`: node datasets (copied to, or written on, a shared file system) merged into
//! the central dataset through the same engine, so the same de-duplication applies: a record
//! that also came by syslog is stored once, and a merge run again adds nothing.
//!
//! A directory is a daemon's data directory (its `parquet/` dataset and the unconverted
//! `spool/` segments) or a bare dataset root. Each file is one transaction: a file that
//! cannot be read is reported and skipped, never half-merged.
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

/// Merges every file of `dirs` into `ingest`, committing after each file.
pub fn merge(ingest: &mut Ingest, dirs: &[PathBuf]) -> Result<Merged, IngestError> {
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
                if ingest.accept_record(r)? == Outcome::Accepted {
                    m.accepted += 1;
                }
            }
            ingest.commit()?;
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Options;
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
        let m = merge(&mut ing, &[d.path().join("node")]).unwrap();
        assert_eq!((m.files, m.records, m.accepted), (1, 3, 3));
        ing.finish().unwrap();
        let mut ing = Ingest::open(opts, &mut || {}).unwrap();
        let m = merge(&mut ing, &[d.path().join("node")]).unwrap();
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
}
