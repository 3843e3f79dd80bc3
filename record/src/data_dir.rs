//! A daemon's data directory read back: every Parquet file of the dataset plus the
//! unconverted spool segments, de-duplicated by record key (a final record replaces `running`
//! snapshots), with filters. A corrupt or unreadable file is reported (its error, with its
//! path) and skipped; it never hides the good ones. `pyusage show` and `canary` read this way.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::{dataset, segment, ReadError, Record};

/// What to keep.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Only this package.
    pub package: Option<String>,
    /// Only this job.
    pub job: Option<String>,
    /// Only processes started at or after (µs).
    pub since: Option<i64>,
}

impl Filter {
    fn keep(&self, r: &Record) -> bool {
        self.package.as_ref().is_none_or(|p| *p == r.package)
            && self
                .job
                .as_ref()
                .is_none_or(|j| Some(j) == r.job_id.as_ref())
            && self.since.is_none_or(|s| r.process_start >= s)
    }
}

/// Records read, and the error of each file that could not be read.
#[derive(Debug, Default)]
pub struct Loaded {
    /// De-duplicated records, ordered by `seq`.
    pub records: Vec<Record>,
    /// One per bad file or directory.
    pub errors: Vec<ReadError>,
}

/// The dataset root of `dir`: `<dir>/parquet` when `dir` is a daemon's data directory, else
/// `dir` itself (a bare dataset root, e.g. a centre's merged dataset).
pub fn dataset_root(dir: &Path) -> PathBuf {
    let pq = dir.join("parquet");
    if pq.is_dir() {
        pq
    } else {
        dir.to_path_buf()
    }
}

/// Every visible Parquet file of the dataset, in date order; unreadable partitions are
/// reported in `errors`.
fn parquet_files(root: &Path, errors: &mut Vec<ReadError>) -> Vec<PathBuf> {
    let parts = match dataset::partitions(root) {
        Ok(p) => p,
        Err(e) => {
            errors.push(e);
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for part in parts {
        match part.files() {
            Ok(files) => out.extend(files),
            Err(e) => errors.push(e),
        }
    }
    out
}

/// Loads a data directory (`<dir>/parquet` + `<dir>/spool`), or a bare dataset root.
pub fn load(dir: &Path, filter: &Filter) -> Result<Loaded, ReadError> {
    if !dir.is_dir() {
        return Err(ReadError::NoDataDir {
            path: dir.to_path_buf(),
        });
    }
    let mut loaded = Loaded::default();
    let pq_root = dataset_root(dir);
    let mut best: HashMap<(String, i32, i64, String, Option<String>), Record> = HashMap::new();
    let mut add = |r: Record| {
        if !filter.keep(&r) {
            return;
        }
        match best.get(&r.key()) {
            Some(old) if !r.supersedes(old) => {}
            _ => {
                best.insert(r.key(), r);
            }
        }
    };
    for f in parquet_files(&pq_root, &mut loaded.errors) {
        match dataset::read(&f) {
            Ok(rs) => rs.into_iter().for_each(&mut add),
            Err(e) => loaded.errors.push(e),
        }
    }
    match segment::segments(&dir.join("spool")) {
        Ok(segs) => {
            for s in segs {
                match segment::read(&s) {
                    Ok(rs) => rs.into_iter().for_each(&mut add),
                    Err(e) => loaded.errors.push(e),
                }
            }
        }
        Err(e) => loaded.errors.push(e),
    }
    loaded.records = best.into_values().collect();
    loaded.records.sort_by_key(|r| r.seq);
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Exit, JobSource};

    fn rec(seq: u64, pkg: &str, exit: Exit) -> Record {
        let mut r = Record::example();
        r.host = "h".into();
        r.process_start = crate::parse_micros("2026-11-25T10:00:00.000001Z").unwrap();
        r.job_id = Some("7".into());
        r.job_source = Some(JobSource::Cgroup);
        r.rank = Some(3);
        r.seq = seq;
        r.package = pkg.into();
        r.exit = exit;
        r
    }

    #[test]
    fn parquet_round_trip_dedup_and_corrupt_file() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("parquet");
        let written = dataset::write(
            &root,
            &[
                rec(1, "numpy", Exit::Running),
                rec(2, "yaml", Exit::Running),
            ],
        )
        .unwrap();
        assert_eq!(written.len(), 1);
        assert!(written[0].ends_with("date=2026-11-25/h-00000000000000000001.parquet"));
        // The final record for numpy arrives later in the spool and replaces the snapshot.
        std::fs::create_dir_all(d.path().join("spool")).unwrap();
        let fin = rec(3, "numpy", Exit::Signaled);
        std::fs::write(
            d.path().join("spool/00000000000000000003.jsonl"),
            serde_json::to_string(&fin).unwrap() + "\n",
        )
        .unwrap();
        std::fs::write(root.join("date=2026-11-25/bad.parquet"), b"PAR1 not really").unwrap();
        let l = load(d.path(), &Filter::default()).unwrap();
        assert_eq!(l.errors.len(), 1);
        assert!(
            matches!(&l.errors[0], ReadError::Parquet { path, .. } if path.ends_with("bad.parquet")),
            "{:?}",
            l.errors
        );
        let got: Vec<_> = l
            .records
            .iter()
            .map(|r| (r.package.as_str(), r.exit, r.seq))
            .collect();
        assert_eq!(
            got,
            vec![("yaml", Exit::Running, 2), ("numpy", Exit::Signaled, 3)]
        );
        let back = &l.records[0];
        assert_eq!(back.process_start, rec(0, "", Exit::Running).process_start);
        assert_eq!((back.rank, back.job_id.as_deref()), (Some(3), Some("7")));
        let only = load(
            d.path(),
            &Filter {
                package: Some("yaml".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(only.records.len(), 1);
        assert!(load(&d.path().join("nope"), &Filter::default())
            .unwrap_err()
            .to_string()
            .ends_with("nope: no such data directory"));
    }
}
