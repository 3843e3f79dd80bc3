//! Reading the data back: every Parquet file of the dataset plus the unconverted spool
//! segments, de-duplicated by record key (a final record replaces `running` snapshots), with
//! filters. A corrupt or unreadable file is reported (one line, with its path) and skipped; it
//! never hides the good ones.
use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pyusage_record::Record;

use crate::spool;

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

/// Records read, and one message per file that could not be read.
#[derive(Debug, Default)]
pub struct Loaded {
    /// De-duplicated records, ordered by `seq`.
    pub records: Vec<Record>,
    /// `path: reason` for each bad file.
    pub errors: Vec<String>,
}

/// Reads the records of one Parquet file.
pub fn read_parquet(path: &Path) -> Result<Vec<Record>, String> {
    let ctx = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let f = File::open(path).map_err(|e| ctx(&e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| ctx(&e))?
        .build()
        .map_err(|e| ctx(&e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| ctx(&e))?;
        let mut buf = Vec::new();
        {
            let mut w = arrow_json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow_json::writer::LineDelimited>(&mut buf);
            w.write(&batch).map_err(|e| ctx(&e))?;
            w.finish().map_err(|e| ctx(&e))?;
        }
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            out.push(serde_json::from_slice(line).map_err(|e| ctx(&e))?);
        }
    }
    Ok(out)
}

fn parquet_files(root: &Path, errors: &mut Vec<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(parts) = std::fs::read_dir(root) else {
        return out;
    };
    for part in parts.flatten() {
        let p = part.path();
        if !p.is_dir() || !part.file_name().to_string_lossy().starts_with("date=") {
            continue;
        }
        match std::fs::read_dir(&p) {
            Ok(files) => out.extend(files.flatten().map(|f| f.path()).filter(|f| {
                f.extension().is_some_and(|e| e == "parquet")
                    && !f
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })),
            Err(e) => errors.push(format!("{}: {e}", p.display())),
        }
    }
    out.sort();
    out
}

/// Loads a data directory (`<dir>/parquet` + `<dir>/spool`), or a bare dataset root.
pub fn load(dir: &Path, filter: &Filter) -> Result<Loaded, String> {
    if !dir.is_dir() {
        return Err(format!("{}: no such data directory", dir.display()));
    }
    let mut loaded = Loaded::default();
    let pq_root = if dir.join("parquet").is_dir() {
        dir.join("parquet")
    } else {
        dir.to_path_buf()
    };
    let mut best: HashMap<(String, i32, i64, String), Record> = HashMap::new();
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
        match read_parquet(&f) {
            Ok(rs) => rs.into_iter().for_each(&mut add),
            Err(e) => loaded.errors.push(e),
        }
    }
    match spool::segments(&dir.join("spool")) {
        Ok(segs) => {
            for s in segs {
                match spool::read_segment(&s) {
                    Ok(rs) => rs.into_iter().for_each(&mut add),
                    Err(e) => loaded.errors.push(e),
                }
            }
        }
        Err(e) => loaded
            .errors
            .push(format!("{}: {e}", dir.join("spool").display())),
    }
    loaded.records = best.into_values().collect();
    loaded.records.sort_by_key(|r| r.seq);
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_sink;

    fn rec(seq: u64, pkg: &str, exit: &str) -> Record {
        let mut r: Record = serde_json::from_str(
            r#"{"record_id":"x","seq":0,"source":"ebpf","host":"h","system":null,"subsystem":null,"is_compute":false,"pid":1,"ppid":0,"root_pid":1,"process_start":"2026-11-25T10:00:00.000001Z","process_end":null,"exit":"running","exit_code":null,"exit_signal":null,"executable":"/p","python_version":"3.11","main":"-c","uid":0,"username":"root","is_staff":false,"in_container":false,"container_runtime":null,"blas":null,"job_id":"7","step_id":null,"rank":3,"num_nodes":1,"qos":null,"account":null,"partition":null,"package":"","distribution":null,"version":null,"env_kind":"unknown","env_prefix":null,"first_path":"/x.py","n_files":1,"first_seen":"2026-11-25T10:00:00.000002Z"}"#,
        )
        .unwrap();
        r.seq = seq;
        r.package = pkg.into();
        r.exit = exit.into();
        r
    }

    #[test]
    fn parquet_round_trip_dedup_and_corrupt_file() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("parquet");
        let written = parquet_sink::write(
            &root,
            &[rec(1, "numpy", "running"), rec(2, "yaml", "running")],
        )
        .unwrap();
        assert_eq!(written.len(), 1);
        assert!(written[0].ends_with("date=2026-11-25/h-00000000000000000001.parquet"));
        // The final record for numpy arrives later in the spool and replaces the snapshot.
        std::fs::create_dir_all(d.path().join("spool")).unwrap();
        let fin = rec(3, "numpy", "signaled");
        std::fs::write(
            d.path().join("spool/00000000000000000003.jsonl"),
            serde_json::to_string(&fin).unwrap() + "\n",
        )
        .unwrap();
        std::fs::write(root.join("date=2026-11-25/bad.parquet"), b"PAR1 not really").unwrap();
        let l = load(d.path(), &Filter::default()).unwrap();
        assert_eq!(l.errors.len(), 1);
        assert!(l.errors[0].contains("bad.parquet"), "{:?}", l.errors);
        let got: Vec<_> = l
            .records
            .iter()
            .map(|r| (r.package.as_str(), r.exit.as_str(), r.seq))
            .collect();
        assert_eq!(got, vec![("yaml", "running", 2), ("numpy", "signaled", 3)]);
        let back = &l.records[0];
        assert_eq!(back.process_start, rec(0, "", "").process_start);
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
            .contains("no such data directory"));
    }
}
