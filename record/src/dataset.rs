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

use crate::{arrow_schema, Record};
use arrow_array::RecordBatch;
use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::properties::WriterProperties,
};
use thiserror::Error;

/// Errors name the file.
#[derive(Debug, Error)]
pub enum SinkError {
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
pub fn write(root: &Path, records: &[Record]) -> Result<Vec<PathBuf>, SinkError> {
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
        fs::create_dir_all(&dir).map_err(|source| SinkError::Io {
            path: dir.clone(),
            source,
        })?;
        let first = recs.iter().map(|r| r.seq).min().unwrap_or(0);
        let name = format!("{}-{first:020}.parquet", recs[0].host);
        let path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let batch = to_batch(&recs).map_err(|source| SinkError::Arrow {
            path: path.clone(),
            source,
        })?;
        let file = File::create(&tmp).map_err(|source| SinkError::Io {
            path: tmp.clone(),
            source,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .set_dictionary_enabled(true)
            .build();
        let pq = |source| SinkError::Parquet {
            path: tmp.clone(),
            source,
        };
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(pq)?;
        w.write(&batch).map_err(pq)?;
        let file = w.into_inner().map_err(pq)?;
        file.sync_all().map_err(|source| SinkError::Io {
            path: tmp.clone(),
            source,
        })?;
        fs::rename(&tmp, &path).map_err(|source| SinkError::Io {
            path: path.clone(),
            source,
        })?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| SinkError::Io {
                path: dir.clone(),
                source,
            })?;
        written.push(path);
    }
    Ok(written)
}
