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

use crate::{
    arrow_schema,
    atomic::{write_atomic, Durability, PathError},
    ReadError, Record,
};
use arrow_array::RecordBatch;
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

/// Converts records to one Arrow batch with the dataset schema.
pub fn to_batch(records: &[Record]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut dec = arrow_json::ReaderBuilder::new(arrow_schema())
        .with_batch_size(records.len().max(1))
        .build_decoder()?;
    dec.serialize(records)?;
    Ok(dec
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(arrow_schema())))
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
    let mut by_date: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    for r in records {
        by_date
            .entry(date_of(r.process_start))
            .or_default()
            .push(r.clone());
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
        let batch = to_batch(&recs).map_err(|source| WriteError::Arrow {
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
