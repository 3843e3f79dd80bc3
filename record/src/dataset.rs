//! The Parquet dataset: records → the Hive-partitioned layout
//! `<root>/date=YYYY-MM-DD/<host>-<first seq>.parquet` (zstd, dictionary-encoded strings).
//!
//! A file is written as `.<name>.tmp`, fsynced and renamed into place, so readers never see a
//! partial file; its name is derived from its content (host + first seq), so converting the
//! same segment again after a crash replaces the file with an identical one.
use std::{
    collections::BTreeMap,
    fs::{self, File},
    path::{Path, PathBuf},
};

use std::sync::Arc;

use crate::{
    arrow_schema,
    atomic::{write_atomic, Durability, PathError},
    caller_struct, ReadError, Record,
};
use arrow_array::{
    builder::{ListBuilder, StringBuilder, StructBuilder, UInt64Builder},
    ArrayRef, BooleanArray, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array, UInt64Array,
};
use arrow_schema::{ArrowError, DataType, Field};
use parquet::{
    arrow::{arrow_reader::ParquetRecordBatchReaderBuilder, ArrowWriter},
    basic::{Compression, ZstdLevel},
    file::properties::WriterProperties,
};
use thiserror::Error;

/// Writing the dataset failed; every error names the file.
#[derive(Debug, Error)]
pub enum WriteError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Arrow conversion.
    #[error("{path}: {source}")]
    Arrow {
        /// File.
        path: PathBuf,
        /// Cause.
        source: arrow_schema::ArrowError,
    },
    /// Writing or replacing the file.
    #[error(transparent)]
    File(#[from] PathError),
    /// Parquet encoding.
    #[error("{path}: {source}")]
    Parquet {
        /// File.
        path: PathBuf,
        /// Cause.
        source: parquet::errors::ParquetError,
    },
}

/// Converts records to one Arrow batch with the dataset schema ([`batch_of`]).
pub fn to_batch(records: &[Record]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    batch_of(&records.iter().collect::<Vec<_>>())
}

/// The records as one Arrow batch of the dataset schema ([`arrow_schema`]), built column by
/// column from the fields: the one mapping from a [`Record`] to a row, equal to what Arrow's
/// JSON decoder makes of the record's JSON form (a test checks, odd values included). Several
/// times cheaper than that decoder: no JSON is written or parsed again. Callers with many
/// records pass them a few thousand at a time, so that each column's pass over the records
/// stays in cache.
pub fn batch_of(rs: &[&Record]) -> Result<RecordBatch, ArrowError> {
    let schema = arrow_schema();
    let cols = schema
        .fields()
        .iter()
        .map(|f| column(f.name(), rs))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, cols)
}

/// One column of the dataset schema.
fn column(name: &str, rs: &[&Record]) -> Result<ArrayRef, ArrowError> {
    use crate::columns as c;
    fn text<'a>(rs: &[&'a Record], f: impl Fn(&'a Record) -> Option<&'a str>) -> ArrayRef {
        Arc::new(rs.iter().map(|r| f(r)).collect::<StringArray>())
    }
    fn time(rs: &[&Record], f: impl Fn(&Record) -> Option<i64>) -> ArrayRef {
        Arc::new(
            rs.iter()
                .map(|r| f(r))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("+00:00"),
        )
    }
    fn i32s(rs: &[&Record], f: impl Fn(&Record) -> Option<i32>) -> ArrayRef {
        Arc::new(rs.iter().map(|r| f(r)).collect::<Int32Array>())
    }
    fn u32s(rs: &[&Record], f: impl Fn(&Record) -> Option<u32>) -> ArrayRef {
        Arc::new(rs.iter().map(|r| f(r)).collect::<UInt32Array>())
    }
    fn u64s(rs: &[&Record], f: impl Fn(&Record) -> Option<u64>) -> ArrayRef {
        Arc::new(rs.iter().map(|r| f(r)).collect::<UInt64Array>())
    }
    fn bools(rs: &[&Record], f: impl Fn(&Record) -> bool) -> ArrayRef {
        Arc::new(rs.iter().map(|r| Some(f(r))).collect::<BooleanArray>())
    }
    Ok(match name {
        c::RECORD_ID => text(rs, |r| Some(&r.record_id)),
        c::SEQ => Arc::new(rs.iter().map(|r| r.seq).collect::<UInt64Array>()),
        c::SOURCE => text(rs, |r| Some(r.source.as_str())),
        c::SOURCES => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for r in rs {
                for s in &r.sources {
                    b.values().append_value(s.as_str());
                }
                b.append(true);
            }
            Arc::new(b.finish())
        }
        c::HOST => text(rs, |r| Some(&r.host)),
        c::SYSTEM => text(rs, |r| r.system.as_deref()),
        c::SUBSYSTEM => text(rs, |r| r.subsystem.as_deref()),
        c::IS_COMPUTE => bools(rs, |r| r.is_compute),
        c::PID => i32s(rs, |r| Some(r.pid)),
        c::PPID => i32s(rs, |r| Some(r.ppid)),
        c::ROOT_PID => i32s(rs, |r| Some(r.root_pid)),
        c::PROCESS_START => time(rs, |r| Some(r.process_start)),
        c::PROCESS_END => time(rs, |r| r.process_end),
        c::EXIT => text(rs, |r| Some(r.exit.as_str())),
        c::EXIT_CODE => i32s(rs, |r| r.exit_code),
        c::EXIT_SIGNAL => text(rs, |r| r.exit_signal.as_deref()),
        c::EXECUTABLE => text(rs, |r| Some(&r.executable)),
        c::PYTHON_VERSION => text(rs, |r| r.python_version.as_deref()),
        c::MAIN => text(rs, |r| r.main.as_deref()),
        c::UID => u32s(rs, |r| Some(r.uid)),
        c::USERNAME => text(rs, |r| r.username.as_deref()),
        c::IS_STAFF => bools(rs, |r| r.is_staff),
        c::IN_CONTAINER => bools(rs, |r| r.in_container),
        c::CONTAINER_RUNTIME => text(rs, |r| r.container_runtime.as_deref()),
        c::BLAS => text(rs, |r| r.blas.as_deref()),
        c::JOB_ID => text(rs, |r| r.job_id.as_deref()),
        c::STEP_ID => text(rs, |r| r.step_id.as_deref()),
        c::JOB_SOURCE => text(rs, |r| r.job_source.map(|j| j.as_str())),
        c::RANK => i32s(rs, |r| r.rank),
        c::N_RANKS => u32s(rs, |r| r.n_ranks),
        c::NUM_NODES => u32s(rs, |r| Some(r.num_nodes)),
        c::QOS => text(rs, |r| r.qos.as_deref()),
        c::ACCOUNT => text(rs, |r| r.account.as_deref()),
        c::PARTITION => text(rs, |r| r.partition.as_deref()),
        c::PACKAGE => text(rs, |r| Some(&r.package)),
        c::DISTRIBUTION => text(rs, |r| r.distribution.as_deref()),
        c::VERSION => text(rs, |r| r.version.as_deref()),
        c::ENV_KIND => text(rs, |r| Some(r.env_kind.as_str())),
        c::ENV_PREFIX => text(rs, |r| r.env_prefix.as_deref()),
        c::FIRST_PATH => text(rs, |r| Some(&r.first_path)),
        c::N_FILES => u32s(rs, |r| Some(r.n_files)),
        c::FIRST_SEEN => time(rs, |r| Some(r.first_seen)),
        c::CPU_USER_US => u64s(rs, |r| r.cpu_user_us),
        c::CPU_SYS_US => u64s(rs, |r| r.cpu_sys_us),
        c::CPU_SAMPLING => text(rs, |r| r.cpu_sampling.as_deref()),
        c::CPU_SAMPLE_HZ => u32s(rs, |r| r.cpu_sample_hz),
        c::CPU_SAMPLES_TOTAL => u64s(rs, |r| r.cpu_samples_total),
        c::CPU_SAMPLES_SELF => u64s(rs, |r| r.cpu_samples_self),
        c::CPU_SAMPLES_INCLUSIVE => u64s(rs, |r| r.cpu_samples_inclusive),
        c::CPU_SAMPLES_CALLERS => callers(rs),
        other => {
            return Err(ArrowError::SchemaError(format!(
                "the record has no column {other}"
            )))
        }
    })
}

/// `cpu_samples_callers`: `List<Struct<package, samples>>`, an empty list (not null) for a
/// record without callers.
fn callers(rs: &[&Record]) -> ArrayRef {
    let DataType::Struct(fields) = caller_struct() else {
        unreachable!("caller_struct is a struct")
    };
    let n = rs.iter().map(|r| r.cpu_samples_callers.len()).sum();
    let mut b = ListBuilder::new(StructBuilder::from_fields(fields, n))
        .with_field(Arc::new(Field::new("item", caller_struct(), true)));
    for r in rs {
        let items = b.values();
        for c in &r.cpu_samples_callers {
            items
                .field_builder::<StringBuilder>(0)
                .expect("package is Utf8")
                .append_value(&c.package);
            items
                .field_builder::<UInt64Builder>(1)
                .expect("samples is UInt64")
                .append_value(c.samples);
            items.append(true);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// UTC date of a µs timestamp.
fn date_of(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// Writes `records` into the dataset under `root`, one file per date partition. Returns the
/// files written.
pub fn write(root: &Path, records: &[Record]) -> Result<Vec<PathBuf>, WriteError> {
    write_all(root, records)
}

/// [`write`] for records held in several places (the daemon keeps a segment's records in the
/// chunks it committed them in): grouped by date by reference, never copied.
pub fn write_all<'a>(
    root: &Path,
    records: impl IntoIterator<Item = &'a Record>,
) -> Result<Vec<PathBuf>, WriteError> {
    let mut by_date: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_date.entry(date_of(r.process_start)).or_default().push(r);
    }
    let mut written = Vec::new();
    for (date, recs) in by_date {
        let dir = root.join(format!("date={date}"));
        fs::create_dir_all(&dir).map_err(|source| WriteError::Io {
            path: dir.clone(),
            source,
        })?;
        let first = recs.iter().map(|r| r.seq).min().unwrap_or(0);
        let name = format!("{}-{first:020}.parquet", recs[0].host);
        let path = dir.join(&name);
        let batch = batch_of(&recs).map_err(|source| WriteError::Arrow {
            path: path.clone(),
            source,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .set_dictionary_enabled(true)
            .build();
        let pq = |source| WriteError::Parquet {
            path: path.clone(),
            source,
        };
        // Durable: the spool segment is deleted once this returns.
        write_atomic(&path, Durability::Durable, |file| {
            let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(pq)?;
            w.write(&batch).map_err(pq)?;
            w.into_inner().map_err(pq)
        })?;
        written.push(path);
    }
    Ok(written)
}

/// One `date=YYYY-MM-DD` partition of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Partition {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// The partition's directory.
    pub dir: PathBuf,
}

impl Partition {
    /// The partition's Parquet files, sorted; hidden ones (`.<name>.tmp` being written) are
    /// not part of the dataset.
    pub fn files(&self) -> Result<Vec<PathBuf>, ReadError> {
        let io = |source| ReadError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut files = Vec::new();
        for f in fs::read_dir(&self.dir).map_err(io)? {
            let f = f.map_err(io)?.path();
            let hidden = f
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
            if f.extension().is_some_and(|e| e == "parquet") && !hidden {
                files.push(f);
            }
        }
        files.sort();
        Ok(files)
    }
}

/// The partitions of the dataset under `root`, in date order (the Hive layout every reader
/// walks: `pyusage show`, the analysis's scan, DuckDB and polars alike).
pub fn partitions(root: &Path) -> Result<Vec<Partition>, ReadError> {
    let io = |source| ReadError::Io {
        path: root.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for part in fs::read_dir(root).map_err(io)? {
        let part = part.map_err(io)?;
        let name = part.file_name();
        let Some(date) = name.to_str().and_then(|n| n.strip_prefix("date=")) else {
            continue;
        };
        if part.file_type().map_err(io)?.is_dir() {
            out.push(Partition {
                date: date.to_owned(),
                dir: part.path(),
            });
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the records of one Parquet file of the dataset.
pub fn read(path: &Path) -> Result<Vec<Record>, ReadError> {
    let parquet = |source| ReadError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let arrow = |source| ReadError::Arrow {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(parquet)?
        .build()
        .map_err(parquet)?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow)?;
        // Through the JSON form: the one mapping between a row and a `Record` (serde's).
        let mut buf = Vec::new();
        {
            let mut w = arrow_json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow_json::writer::LineDelimited>(&mut buf);
            w.write(&batch).map_err(arrow)?;
            w.finish().map_err(arrow)?;
        }
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            out.push(
                serde_json::from_slice(line).map_err(|source| ReadError::Row {
                    path: path.to_path_buf(),
                    source,
                })?,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the dataset's batches were built by before [`batch_of`]: the records' JSON lines
    /// through Arrow's JSON decoder.
    fn via_json(records: &[Record]) -> RecordBatch {
        let mut lines = Vec::new();
        for r in records {
            serde_json::to_writer(&mut lines, r).unwrap();
            lines.push(b'\n');
        }
        let mut dec = arrow_json::ReaderBuilder::new(arrow_schema())
            .with_batch_size(records.len())
            .build_decoder()
            .unwrap();
        assert_eq!(dec.decode(&lines).unwrap(), lines.len());
        dec.flush().unwrap().unwrap()
    }

    #[test]
    fn direct_batches_equal_the_json_decoders() {
        let recs = Record::odd_examples();
        let direct = to_batch(&recs).unwrap();
        assert_eq!(direct.num_rows(), recs.len());
        assert_eq!(direct, via_json(&recs));
        // Serde's path into Arrow (no JSON text) agrees too.
        let mut dec = arrow_json::ReaderBuilder::new(arrow_schema())
            .build_decoder()
            .unwrap();
        dec.serialize(&recs).unwrap();
        assert_eq!(direct, dec.flush().unwrap().unwrap());
        // And the rows read back from a written file are the records.
        let d = tempfile::tempdir().unwrap();
        let mut back = Vec::new();
        for f in write(d.path(), &recs).unwrap() {
            back.extend(read(&f).unwrap());
        }
        back.sort_by(|a, b| a.record_id.cmp(&b.record_id));
        let mut want = recs;
        want.sort_by(|a, b| a.record_id.cmp(&b.record_id));
        assert_eq!(back, want);
        assert_eq!(batch_of(&[]).unwrap().num_rows(), 0);
    }
}
