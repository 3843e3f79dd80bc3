//! Compaction: a partition's small files merged into large ones, so that a day of 10,000
//! hosts stays a few files, not tens of thousands (readers open every file's footer).
//!
//! Merging streams batches (memory stays at one batch) and leaves out `running` snapshots
//! whose final record the index knows (the record crate's "final beats running", applied
//! once, here, instead of by every reader). The output takes the first input's name. The
//! switch is crash-safe through an intent file: the merged file is written to a hidden
//! temporary and fsynced, then `compact.json` names the inputs, then the temporary is renamed
//! to a new name and the inputs are deleted, then the intent goes. On start, an intent whose
//! temporary still exists was not switched (the temporary is removed); one whose temporary is
//! gone was (its remaining inputs are removed).
//!
//! A file's name is never reused: the output is the first input's name with a generation
//! (`X.parquet` → `X.c1.parquet` → `X.c2.parquet`), sorting next to it. Renaming over an input
//! instead let a concurrent reader (DuckDB, Spark) that had listed and sized the old file read
//! the new one's bytes under the old size and fail on "invalid data"; now a reader sees the
//! old files (or, once deleted, "no such file", which a reader retries) or the new one. A
//! reader listing the partition between the rename and the deletions can see a record twice;
//! pyusage's readers de-duplicate by record key anyway.
use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use arrow_array::{
    cast::AsArray,
    types::{Int32Type, TimestampMicrosecondType},
    Array, BooleanArray, RecordBatch,
};
use parquet::arrow::{arrow_reader::ParquetRecordBatchReaderBuilder, ArrowWriter};
use pyusage_record::{
    arrow_schema,
    atomic::{write_bytes_atomic, Durability, PathError},
    columns,
};
use serde::{Deserialize, Serialize};

use crate::{
    index::{self, date_of, Day, Kind},
    writer::properties,
    Paths,
};

/// When and how much to merge.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Merge once a partition has this many small files.
    pub min_files: usize,
    /// A file is small below half of this; a merged file stays under it (compressed bytes).
    pub target_bytes: u64,
}

impl Default for CompactOptions {
    fn default() -> CompactOptions {
        CompactOptions {
            min_files: 8,
            target_bytes: 256 << 20,
        }
    }
}

/// Compaction failed; each error names the file.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// I/O.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Reading or writing Parquet.
    #[error("{}: {source}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: parquet::errors::ParquetError,
    },
    /// A file whose columns are not the dataset's schema.
    #[error("{}: {source}", path.display())]
    Arrow {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: arrow_schema::ArrowError,
    },
}

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Files written.
    pub outputs: u64,
    /// Files merged away (inputs).
    pub inputs: u64,
    /// `running` snapshots left out.
    pub superseded: u64,
}

/// The switch in progress (`compact.json`).
#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    dir: PathBuf,
    output: String,
    inputs: Vec<String>,
}

/// The merged file's name: the first input's with the next generation (`.cN`).
fn output_name(first: &str) -> String {
    let stem = first.strip_suffix(".parquet").unwrap_or(first);
    let (base, generation) = match stem.rsplit_once(".c") {
        Some((b, g)) if !g.is_empty() && g.bytes().all(|c| c.is_ascii_digit()) => {
            (b, g.parse::<u64>().unwrap_or(0))
        }
        _ => (stem, 0),
    };
    format!("{base}.c{}.parquet", generation + 1)
}

fn tmp_of(dir: &Path, output: &str) -> PathBuf {
    dir.join(format!(".{output}.tmp"))
}

/// Finishes or undoes a switch a crash interrupted.
pub fn recover(paths: &Paths) -> Result<(), PathError> {
    let Ok(bytes) = fs::read(&paths.intent) else {
        return Ok(());
    };
    if let Ok(i) = serde_json::from_slice::<Intent>(&bytes) {
        let tmp = tmp_of(&i.dir, &i.output);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(PathError::at(&tmp))?;
        } else {
            for f in i.inputs.iter().filter(|f| **f != i.output) {
                let p = i.dir.join(f);
                match fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(PathError::at(&p)(e))
                    }
                    _ => {}
                }
            }
            sync_dir(&i.dir)?;
        }
    }
    fs::remove_file(&paths.intent).map_err(PathError::at(&paths.intent))
}

fn sync_dir(dir: &Path) -> Result<(), PathError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(PathError::at(dir))
}

/// Compacts the partition of `day` if it has at least `min_files` small files.
pub fn compact_day(
    paths: &Paths,
    day: Day,
    opts: &CompactOptions,
) -> Result<Compacted, CompactError> {
    let dir = paths.out.join(format!("date={}", date_of(day)));
    let mut small: Vec<(String, u64)> = Vec::new();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Compacted::default()),
        Err(e) => return Err(PathError::at(&dir)(e).into()),
    };
    for e in rd {
        let e = e.map_err(PathError::at(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".parquet") {
            continue;
        }
        let len = e.metadata().map_err(PathError::at(&e.path()))?.len();
        if len < opts.target_bytes / 2 {
            small.push((name, len));
        }
    }
    small.sort();
    let mut done = Compacted::default();
    if small.len() < opts.min_files.max(2) {
        return Ok(done);
    }
    let finals = index::read_set(&index::day_file(&paths.index, day, Kind::Finals))?;
    // Greedy groups in name (= arrival) order, each under the target size.
    let mut groups: Vec<Vec<String>> = vec![Vec::new()];
    let mut size = 0;
    for (name, len) in small {
        if size + len > opts.target_bytes && !groups.last().expect("one").is_empty() {
            groups.push(Vec::new());
            size = 0;
        }
        size += len;
        groups.last_mut().expect("one").push(name);
    }
    for g in groups.into_iter().filter(|g| g.len() >= 2) {
        done.superseded += merge(paths, &dir, &g, &finals)?;
        done.outputs += 1;
        done.inputs += g.len() as u64;
    }
    Ok(done)
}

/// Merges `inputs` (names in `dir`) into a new file named after the first ([`output_name`]);
/// returns the snapshots left out.
fn merge(
    paths: &Paths,
    dir: &Path,
    inputs: &[String],
    finals: &index::Set,
) -> Result<u64, CompactError> {
    let output = output_name(&inputs[0]);
    let tmp = tmp_of(dir, &output);
    let result = (|| {
        let file = File::create(&tmp).map_err(PathError::at(&tmp))?;
        let pq_out = |source| CompactError::Parquet {
            path: tmp.clone(),
            source,
        };
        let mut w =
            ArrowWriter::try_new(file, arrow_schema(), Some(properties())).map_err(pq_out)?;
        let mut superseded = 0;
        for name in inputs {
            let path = dir.join(name);
            let pq = |source| CompactError::Parquet {
                path: path.clone(),
                source,
            };
            let f = File::open(&path).map_err(PathError::at(&path))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(f)
                .map_err(pq)?
                .with_batch_size(16 * 1024)
                .build()
                .map_err(pq)?;
            for batch in reader {
                let arrow = |source| CompactError::Arrow {
                    path: path.clone(),
                    source,
                };
                let batch = batch.map_err(arrow)?;
                let (batch, dropped) = drop_superseded(batch, finals).map_err(arrow)?;
                superseded += dropped;
                w.write(&batch).map_err(pq_out)?;
            }
        }
        let file = w.into_inner().map_err(pq_out)?;
        file.sync_all().map_err(PathError::at(&tmp))?;
        Ok(superseded)
    })();
    let superseded = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let intent = Intent {
        dir: dir.to_path_buf(),
        output: output.clone(),
        inputs: inputs.to_vec(),
    };
    write_bytes_atomic(
        &paths.intent,
        &serde_json::to_vec(&intent).expect("serialises"),
        Durability::Durable,
    )?;
    let out = dir.join(&output);
    fs::rename(&tmp, &out).map_err(PathError::at(&out))?;
    sync_dir(dir)?;
    recover(paths)?;
    Ok(superseded)
}

/// Leaves out the `running` rows whose (process, package) has a final record.
fn drop_superseded(
    batch: RecordBatch,
    finals: &index::Set,
) -> Result<(RecordBatch, u64), arrow_schema::ArrowError> {
    if finals.is_empty() {
        return Ok((batch, 0));
    }
    let col = |n: &str| {
        batch
            .column_by_name(n)
            .ok_or_else(|| arrow_schema::ArrowError::SchemaError(format!("no column {n}")))
    };
    let exit = col(columns::EXIT)?.as_string::<i32>();
    let host = col(columns::HOST)?.as_string::<i32>();
    let package = col(columns::PACKAGE)?.as_string::<i32>();
    let id = col(columns::RECORD_ID)?.as_string::<i32>();
    let pid = col(columns::PID)?.as_primitive::<Int32Type>();
    let start = col(columns::PROCESS_START)?.as_primitive::<TimestampMicrosecondType>();
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let superseded = exit.is_valid(i)
                && exit.value(i) == "running"
                && finals.contains(&index::key_hash(
                    host.value(i),
                    pid.value(i),
                    start.value(i),
                    package.value(i),
                    id.value(i),
                ));
            Some(!superseded)
        })
        .collect();
    let dropped = keep.false_count() as u64;
    if dropped == 0 {
        return Ok((batch, 0));
    }
    Ok((
        arrow_select::filter::filter_record_batch(&batch, &keep)?,
        dropped,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Ingest, Options};
    use pyusage_record::{data_dir, dataset, Exit, Record};

    #[test]
    fn small_files_merge_into_one_without_superseded_snapshots() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("ds");
        let mut opts = Options::new(&out);
        opts.flush_records = 1;
        let mut ing = Ingest::open(opts.clone(), &mut || {}).unwrap();
        let mut snap = Record::example();
        snap.record_id = "snap".into();
        let mut fin = snap.clone();
        fin.record_id = "fin".into();
        fin.seq += 1;
        fin.exit = Exit::Exited;
        let mut other = fin.clone();
        other.record_id = "other".into();
        other.package = "numpy".into();
        for r in [&snap, &fin, &other] {
            ing.accept_record(r).unwrap();
            ing.commit().unwrap();
        }
        ing.finish().unwrap();
        let part = dataset::partitions(&out).unwrap().remove(0);
        assert_eq!(part.files().unwrap().len(), 3, "one file per segment");
        let mut ing = Ingest::open(opts, &mut || {}).unwrap();
        let c = ing.compact_all().unwrap();
        assert_eq!(
            c,
            Compacted {
                outputs: 1,
                inputs: 3,
                superseded: 1
            }
        );
        ing.finish().unwrap();
        let files = part.files().unwrap();
        assert_eq!(files.len(), 1);
        assert!(files[0].ends_with("ingest-00000000000000000001.c1.parquet"));
        let mut ids: Vec<_> = dataset::read(&files[0])
            .unwrap()
            .into_iter()
            .map(|r| r.record_id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["fin", "other"]);
        assert!(data_dir::load(&out, &data_dir::Filter::default())
            .unwrap()
            .errors
            .is_empty());
    }

    #[test]
    fn an_interrupted_switch_is_undone_or_finished() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path());
        fs::create_dir_all(&paths.state_dir).unwrap();
        let dir = d.path().join("date=2026-11-25");
        fs::create_dir_all(&dir).unwrap();
        for f in ["a.parquet", "b.parquet", ".a.c1.parquet.tmp"] {
            fs::write(dir.join(f), f).unwrap();
        }
        let intent = Intent {
            dir: dir.clone(),
            output: "a.c1.parquet".into(),
            inputs: vec!["a.parquet".into(), "b.parquet".into()],
        };
        fs::write(&paths.intent, serde_json::to_vec(&intent).unwrap()).unwrap();
        // Not switched yet (the temporary exists): the inputs stay, the temporary goes.
        recover(&paths).unwrap();
        assert!(dir.join("a.parquet").exists() && dir.join("b.parquet").exists());
        assert!(!dir.join(".a.c1.parquet.tmp").exists());
        assert!(!paths.intent.exists());
        // Switched (the temporary renamed): the inputs go, the output stays.
        fs::write(dir.join("a.c1.parquet"), "merged").unwrap();
        fs::write(&paths.intent, serde_json::to_vec(&intent).unwrap()).unwrap();
        recover(&paths).unwrap();
        assert!(dir.join("a.c1.parquet").exists());
        assert!(!dir.join("a.parquet").exists() && !dir.join("b.parquet").exists());
    }

    #[test]
    fn a_merged_file_never_takes_an_existing_name() {
        assert_eq!(output_name("h-0001.parquet"), "h-0001.c1.parquet");
        assert_eq!(output_name("h-0001.c1.parquet"), "h-0001.c2.parquet");
        assert_eq!(output_name("h-0001.c19.parquet"), "h-0001.c20.parquet");
        assert_eq!(output_name("a.cx.parquet"), "a.cx.c1.parquet");
        // Sorts next to its first input, so greedy groups keep arrival order.
        assert!(output_name("h-0001.parquet").as_str() < "h-0002.parquet");
    }
}
