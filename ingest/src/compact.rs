//! Compaction: a partition's small files merged into large ones, so that a day of 10,000
//! hosts stays a few files, not tens of thousands (readers open every file's footer).
//!
//! Merging copies the inputs' large row groups as they are encoded, byte for byte (decoding
//! and encoding every record again took as much CPU as writing it the first time, and a record
//! is merged again each time its partition gathers more small files), and leaves out
//! `running` snapshots whose final record the index knows (the record crate's "final beats
//! running", applied once, here, instead of by every reader): a row group with a `running` row
//! has its key columns read, and one with a superseded snapshot is decoded, filtered and
//! encoded anew. Small row groups (a segment cut by time at a low rate) are decoded and
//! encoded anew together, so that a merged file does not keep them small for good. Memory
//! stays at about one row group. The output takes the first input's name. The
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

use std::sync::Arc;

use arrow_array::{
    cast::AsArray,
    types::{Int32Type, TimestampMicrosecondType},
    Array, BooleanArray, RecordBatch,
};
use arrow_schema::ArrowError;
use bytes::Bytes;
use parquet::{
    arrow::{
        add_encoded_arrow_schema_to_metadata,
        arrow_reader::{
            ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
            ParquetRecordBatchReaderBuilder,
        },
        ArrowSchemaConverter, ArrowWriter, ProjectionMask,
    },
    column::writer::ColumnCloseResult,
    file::{
        metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader},
        reader::ChunkReader,
        writer::SerializedFileWriter,
    },
};
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
    /// A row group of at least this many rows is copied as it is encoded; smaller ones are
    /// encoded anew together.
    pub copy_min_rows: usize,
}

impl Default for CompactOptions {
    fn default() -> CompactOptions {
        CompactOptions {
            min_files: 8,
            target_bytes: 256 << 20,
            // A segment of the default `flush_records` (102,400) is copied. Measured on synth
            // records: 8 such files copied take 1.3 % more bytes than one file encoded anew.
            copy_min_rows: 65_536,
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

/// Compacts the partition of `day` if it has at least `min_files` small files of this
/// ingest's own (named `<prefix>-<number>…`; another lane's, or files a user put there, are
/// left alone: their records are not in this lane's index).
pub fn compact_day(
    paths: &Paths,
    prefix: &str,
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
        if !is_own(&name, prefix) {
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
        done.superseded += merge(paths, &dir, &g, &finals, opts.copy_min_rows)?;
        done.outputs += 1;
        done.inputs += g.len() as u64;
    }
    Ok(done)
}

/// Whether `file` is one of the Parquet files named `<prefix>-<number>…` (the writer's and
/// compaction's names): `ingest-00…1.c2.parquet` is `ingest`'s, `ingest-l1-00…1.parquet` is
/// not.
fn is_own(file: &str, prefix: &str) -> bool {
    !file.starts_with('.')
        && file.ends_with(".parquet")
        && file
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// Merges `inputs` (names in `dir`) into a new file named after the first ([`output_name`]);
/// returns the snapshots left out.
fn merge(
    paths: &Paths,
    dir: &Path,
    inputs: &[String],
    finals: &index::Set,
    copy_min_rows: usize,
) -> Result<u64, CompactError> {
    let output = output_name(&inputs[0]);
    let tmp = tmp_of(dir, &output);
    let result = (|| {
        let file = File::create(&tmp).map_err(PathError::at(&tmp))?;
        let pq_out = |source| CompactError::Parquet {
            path: tmp.clone(),
            source,
        };
        // What `ArrowWriter` would write: the schema, the settings and the Arrow schema.
        let schema = arrow_schema();
        let descr = ArrowSchemaConverter::new()
            .convert(&schema)
            .map_err(pq_out)?;
        let mut props = properties();
        add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        let mut w = SerializedFileWriter::new(file, descr.root_schema_ptr(), Arc::new(props))
            .map_err(pq_out)?;
        // Rows encoded anew, in memory until copied out like the others (before the next
        // copied row group, so that the records keep their order).
        let mut anew: Option<ArrowWriter<Vec<u8>>> = None;
        let mut superseded = 0;
        for name in inputs {
            let path = dir.join(name);
            let pq = |source| CompactError::Parquet {
                path: path.clone(),
                source,
            };
            let arrow = |source| CompactError::Arrow {
                path: path.clone(),
                source,
            };
            let f = File::open(&path).map_err(PathError::at(&path))?;
            let meta = ParquetMetaDataReader::new()
                .with_page_index_policy(PageIndexPolicy::Optional)
                .parse_and_finish(&f)
                .map_err(pq)?;
            if meta.file_metadata().schema_descr().root_schema() != descr.root_schema() {
                return Err(arrow(ArrowError::SchemaError(
                    "not the dataset's schema".into(),
                )));
            }
            let meta = Arc::new(meta);
            for rg in 0..meta.num_row_groups() {
                let keep = kept(&f, &meta, rg, finals).map_err(pq)?;
                if keep.is_none() && meta.row_group(rg).num_rows() as usize >= copy_min_rows {
                    copy_anew(&mut w, anew.take()).map_err(pq_out)?;
                    copy_row_group(&mut w, &f, &meta, rg).map_err(pq_out)?;
                    continue;
                }
                superseded += keep.as_ref().map_or(0, |k| k.false_count() as u64);
                let aw = match &mut anew {
                    Some(aw) => aw,
                    None => anew.insert(
                        ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties()))
                            .map_err(pq_out)?,
                    ),
                };
                let mut at = 0;
                for batch in read(&f, &meta, rg, ProjectionMask::all()).map_err(pq)? {
                    let batch = batch.map_err(arrow)?;
                    let n = batch.num_rows();
                    let batch = match &keep {
                        Some(k) => {
                            arrow_select::filter::filter_record_batch(&batch, &k.slice(at, n))
                                .map_err(arrow)?
                        }
                        None => batch,
                    };
                    at += n;
                    aw.write(&batch).map_err(pq_out)?;
                }
                // A full row group is copied out at once: memory stays at one.
                if !aw.flushed_row_groups().is_empty() {
                    copy_anew(&mut w, anew.take()).map_err(pq_out)?;
                }
            }
        }
        copy_anew(&mut w, anew.take()).map_err(pq_out)?;
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

/// Copies the row groups of rows encoded anew into `w`.
fn copy_anew(
    w: &mut SerializedFileWriter<File>,
    anew: Option<ArrowWriter<Vec<u8>>>,
) -> Result<(), parquet::errors::ParquetError> {
    let Some(aw) = anew else { return Ok(()) };
    let buf = Bytes::from(aw.into_inner()?);
    let m = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(&buf)?;
    for g in 0..m.num_row_groups() {
        copy_row_group(w, &buf, &m, g)?;
    }
    Ok(())
}

/// Copies row group `rg` of a file, as it is encoded, into `w`.
fn copy_row_group<R: ChunkReader>(
    w: &mut SerializedFileWriter<File>,
    input: &R,
    meta: &ParquetMetaData,
    rg: usize,
) -> Result<(), parquet::errors::ParquetError> {
    let g = meta.row_group(rg);
    let pages = meta.page_index();
    let mut out = w.next_row_group()?;
    for (c, column) in g.columns().iter().enumerate() {
        out.append_column(
            input,
            ColumnCloseResult {
                bytes_written: column.compressed_size() as u64,
                rows_written: g.num_rows() as u64,
                metadata: column.clone(),
                bloom_filter: None,
                column_index: pages.and_then(|p| p.column_index(rg, c)).cloned(),
                offset_index: pages.and_then(|p| p.offset_index(rg, c)).cloned(),
            },
        )?;
    }
    out.close()?;
    Ok(())
}

/// The batches of row group `rg`, the columns of `mask`.
fn read(
    f: &File,
    meta: &Arc<ParquetMetaData>,
    rg: usize,
    mask: ProjectionMask,
) -> Result<ParquetRecordBatchReader, parquet::errors::ParquetError> {
    let m = ArrowReaderMetadata::try_new(meta.clone(), ArrowReaderOptions::new())?;
    ParquetRecordBatchReaderBuilder::new_with_metadata(f.try_clone()?, m)
        .with_row_groups(vec![rg])
        .with_projection(mask)
        .with_batch_size(16 * 1024)
        .build()
}

/// Which rows of row group `rg` to keep, if it has a superseded `running` snapshot (`None`:
/// all of them). Only the `exit` column is read, and the key columns where it has `running`.
fn kept(
    f: &File,
    meta: &Arc<ParquetMetaData>,
    rg: usize,
    finals: &index::Set,
) -> Result<Option<BooleanArray>, parquet::errors::ParquetError> {
    if finals.is_empty() {
        return Ok(None);
    }
    let descr = meta.file_metadata().schema_descr();
    let col = |names: &[&str]| ProjectionMask::columns(descr, names.iter().copied());
    let mut running = false;
    for b in read(f, meta, rg, col(&[columns::EXIT]))? {
        let b = b?;
        let exit = b.column(0).as_string::<i32>();
        running |= (0..b.num_rows()).any(|i| exit.is_valid(i) && exit.value(i) == RUNNING);
    }
    if !running {
        return Ok(None);
    }
    let keys = col(&[
        columns::EXIT,
        columns::HOST,
        columns::PID,
        columns::PROCESS_START,
        columns::PACKAGE,
        columns::RECORD_ID,
    ]);
    let mut keep = Vec::new();
    for b in read(f, meta, rg, keys)? {
        keep.extend(superseded(&b?, finals)?.iter().map(|s| Some(!s)));
    }
    let keep = BooleanArray::from(keep);
    Ok((keep.false_count() > 0).then_some(keep))
}

const RUNNING: &str = pyusage_record::Exit::Running.as_str();

/// Which rows are `running` snapshots whose (process, package) has a final record.
fn superseded(
    batch: &RecordBatch,
    finals: &index::Set,
) -> Result<Vec<bool>, parquet::errors::ParquetError> {
    let col = |n: &str| {
        batch
            .column_by_name(n)
            .ok_or_else(|| parquet::errors::ParquetError::General(format!("no column {n}")))
    };
    let exit = col(columns::EXIT)?.as_string::<i32>();
    let host = col(columns::HOST)?.as_string::<i32>();
    let package = col(columns::PACKAGE)?.as_string::<i32>();
    let id = col(columns::RECORD_ID)?.as_string::<i32>();
    let pid = col(columns::PID)?.as_primitive::<Int32Type>();
    let start = col(columns::PROCESS_START)?.as_primitive::<TimestampMicrosecondType>();
    Ok((0..batch.num_rows())
        .map(|i| {
            exit.is_valid(i)
                && exit.value(i) == RUNNING
                && finals.contains(&index::key_hash(
                    host.value(i),
                    pid.value(i),
                    start.value(i),
                    package.value(i),
                    id.value(i),
                ))
        })
        .collect())
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
    fn large_row_groups_are_copied_small_ones_and_superseded_snapshots_encoded_anew() {
        let rec = |id: &str, pid: i32, exit: Exit| {
            let mut r = Record::example();
            r.record_id = id.into();
            r.pid = pid;
            r.exit = exit;
            r
        };
        // Segments of 2, 3, 2 and 2: a superseded snapshot beside one that is not, then
        // finals.
        let segments = [
            vec![
                rec("snap", 1, Exit::Running),
                rec("alive", 2, Exit::Running),
            ],
            vec![
                rec("fin", 1, Exit::Exited),
                rec("other", 3, Exit::Signaled),
                rec("o2", 4, Exit::Exited),
            ],
            vec![rec("o3", 5, Exit::Exited), rec("o4", 6, Exit::Exited)],
            vec![rec("o5", 7, Exit::Exited), rec("o6", 8, Exit::Exited)],
        ];
        // Rows per row group of the merged file, by the least rows a copied one has.
        for (copy_min_rows, groups) in [(2, vec![1, 3, 2, 2]), (3, vec![1, 3, 4]), (100, vec![8])] {
            let d = tempfile::tempdir().unwrap();
            let out = d.path().join("ds");
            let mut opts = Options::new(&out);
            opts.compact.copy_min_rows = copy_min_rows;
            // A run per segment: one file each.
            for seg in &segments {
                let mut ing = Ingest::open(opts.clone(), &mut || {}).unwrap();
                for r in seg {
                    ing.accept_record(r).unwrap();
                }
                ing.commit().unwrap();
                ing.finish().unwrap();
            }
            let part = dataset::partitions(&out).unwrap().remove(0);
            assert_eq!(part.files().unwrap().len(), 4);
            let mut ing = Ingest::open(opts, &mut || {}).unwrap();
            let c = ing.compact_all().unwrap();
            assert_eq!((c.outputs, c.inputs, c.superseded), (1, 4, 1));
            ing.finish().unwrap();
            let files = part.files().unwrap();
            assert_eq!(files.len(), 1);
            let got = dataset::read(&files[0]).unwrap();
            let want: Vec<Record> = segments.iter().flatten().skip(1).cloned().collect();
            assert_eq!(got, want, "in order, the snapshot left out");
            let f = File::open(&files[0]).unwrap();
            let meta = ParquetMetaDataReader::new().parse_and_finish(&f).unwrap();
            let rows: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
            assert_eq!(rows, groups, "copy_min_rows {copy_min_rows}");
        }
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
    fn two_lanes_write_one_dataset_at_once_and_compact_only_their_own_files() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("ds");
        let lane = |index| Options {
            flush_records: 1,
            lane: crate::Lane {
                index,
                count: 2,
                ..crate::Lane::default()
            },
            ..Options::new(&out)
        };
        // Both open at once: each lane has its own lock, WAL and index.
        let mut ings = [0, 1].map(|k| Ingest::open(lane(k), &mut || {}).unwrap());
        // rsyslog's hash64mod(host, 2) (lanes.rs): lane 0's node, lane 1's node.
        let hosts = ["ingest-lanes-b", "ingest-lanes-a"];
        for (k, ing) in ings.iter_mut().enumerate() {
            for i in 0..3 {
                let mut r = Record::example();
                r.host = hosts[k].into();
                r.record_id = format!("lane{k}-{i}");
                ing.accept_record(&r).unwrap();
                ing.commit().unwrap();
            }
        }
        for ing in ings {
            assert_eq!(ing.finish().unwrap().misrouted, 0);
        }
        let part = dataset::partitions(&out).unwrap().remove(0);
        let names = |part: &dataset::Partition| -> Vec<String> {
            let mut v: Vec<String> = part
                .files()
                .unwrap()
                .iter()
                .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&part).len(), 6, "{:?}", names(&part));
        assert!(out.join(".ingest/lane-1/state.json").exists());
        let mut ing = Ingest::open(lane(0), &mut || {}).unwrap();
        assert_eq!(ing.compact_all().unwrap().inputs, 3, "lane 0's own three");
        ing.finish().unwrap();
        let after = names(&part);
        assert_eq!(after.len(), 4, "{after:?}");
        assert_eq!(
            after.iter().filter(|n| n.starts_with("ingest-l1-")).count(),
            3,
            "lane 1's files untouched: {after:?}"
        );
        let mut ing = Ingest::open(lane(1), &mut || {}).unwrap();
        // A copy resent to its lane is a duplicate there.
        let mut again = Record::example();
        again.host = hosts[1].into();
        again.record_id = "lane1-0".into();
        ing.accept_record(&again).unwrap();
        ing.commit().unwrap();
        assert_eq!(ing.compact_all().unwrap().inputs, 3);
        let st = ing.finish().unwrap();
        assert_eq!(st.duplicates, 1, "{st:?}");
        let after = names(&part);
        assert_eq!(after.len(), 2, "{after:?}");
        assert!(after[0].starts_with("ingest-0") && after[1].starts_with("ingest-l1-0"));
        let mut ids: Vec<String> = part
            .files()
            .unwrap()
            .iter()
            .flat_map(|f| dataset::read(f).unwrap())
            .map(|r| r.record_id)
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            ["lane0-0", "lane0-1", "lane0-2", "lane1-0", "lane1-1", "lane1-2"]
        );
    }

    #[test]
    fn own_files_are_the_prefix_then_a_number() {
        assert!(is_own("ingest-00000000000000000001.parquet", "ingest"));
        assert!(is_own("ingest-00000000000000000001.c2.parquet", "ingest"));
        assert!(!is_own("ingest-l1-00000000000000000001.parquet", "ingest"));
        assert!(is_own(
            "ingest-l1-00000000000000000001.parquet",
            "ingest-l1"
        ));
        assert!(!is_own(
            ".ingest-00000000000000000001.c1.parquet.tmp",
            "ingest"
        ));
        assert!(!is_own("node-00000000000000000001.parquet", "ingest"));
        assert!(!is_own("ingest-00000000000000000001.json", "ingest"));
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
