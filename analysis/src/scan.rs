//! Stage 1: the Parquet dataset → integer [`Chunk`]s, one per `date=` partition.
//!
//! Only the columns the analyses (and the filter) need are read (projection); partitions
//! outside `--from/--to` are skipped without opening their files (pruning). String columns
//! are read as Arrow dictionaries, and each dictionary value is mapped to a *global* id once
//! per batch: dictionary codes differ between files and row groups, and mixing them up is a
//! classic source of wrong distinct counts. Rows the filter rejects are dropped here, so later
//! stages only see kept rows. The ids and rows themselves are the [`crate::model`]'s.
//!
//! Here: reading the files of each partition in parallel. [`partitions`] finds them;
//! `decode` turns each Arrow batch into rows.
use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use arrow_schema::{ArrowError, DataType, Field, Schema};
use parquet::{
    arrow::{
        arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder},
        ProjectionMask,
    },
    errors::ParquetError,
};
use pyusage_record::columns as c;
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::model::{Chunk, Names};

mod decode;
mod partitions;

pub use decode::DecodeError;
use decode::{decode, ProcessKey};
pub use partitions::{partitions, HostGlob, Selection};

/// Errors name the file or directory; the cause is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The dataset's partitions could not be listed.
    #[error(transparent)]
    Dataset(#[from] pyusage_record::ReadError),
    /// A file could not be opened.
    #[error("{path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a Parquet file, or one whose metadata or schema cannot be read.
    #[error("{path}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ParquetError,
    },
    /// A batch of rows could not be read (a corrupt page, say).
    #[error("{path}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ArrowError,
    },
    /// The file's columns are not those of the record schema.
    #[error("{path}")]
    Columns {
        /// The file.
        path: PathBuf,
        /// Which column, and what is wrong with it.
        source: DecodeError,
    },
}

/// Reads the partitions `parts` (from [`partitions`]) in parallel and hands each chunk, with
/// its partition's date, to `sink` (from the worker threads); `progress` is called once per
/// partition done.
pub fn scan(
    sel: &Selection,
    parts: &[(String, Vec<PathBuf>)],
    names: &Names,
    sink: &(dyn Fn(&str, Chunk) + Sync),
    progress: &(dyn Fn() + Sync),
) -> Result<(), ScanError> {
    parts.par_iter().try_for_each(|(date, files)| {
        sink(date, read_partition(sel, files, names)?);
        progress();
        Ok(())
    })
}

/// The kept rows of one partition's files.
pub fn read_partition(
    sel: &Selection,
    files: &[PathBuf],
    names: &Names,
) -> Result<Chunk, ScanError> {
    let mut chunk = Chunk::default();
    let mut procs = FxHashMap::default();
    for f in files {
        read_file(f, sel, names, &mut chunk, &mut procs)?;
    }
    chunk.processes = procs.len() as u32;
    Ok(chunk)
}

/// The columns the analysis reads (the filter's are added to them).
const COLUMNS: &[&str] = &[
    c::PACKAGE,
    c::USERNAME,
    c::UID,
    c::JOB_ID,
    c::HOST,
    c::PID,
    c::PROCESS_START,
    c::NUM_NODES,
    c::IS_STAFF,
    c::IS_COMPUTE,
    c::VERSION,
    c::ENV_KIND,
    c::BLAS,
    c::EXIT,
];

/// Columns read when a file has them (older datasets do not).
const OPTIONAL: &[&str] = &[c::CPU_USER_US, c::CPU_SYS_US];

/// The CPU sampler's columns: read when a file has them, used when it has all.
const SAMPLED: [&str; 6] = [
    c::CPU_SAMPLING,
    c::CPU_SAMPLE_HZ,
    c::CPU_SAMPLES_TOTAL,
    c::CPU_SAMPLES_SELF,
    c::CPU_SAMPLES_INCLUSIVE,
    c::CPU_SAMPLES_CALLERS,
];

/// Appends the kept rows of one file to `chunk`.
fn read_file(
    f: &Path,
    sel: &Selection,
    names: &Names,
    chunk: &mut Chunk,
    procs: &mut FxHashMap<ProcessKey, u32>,
) -> Result<(), ScanError> {
    let path = || f.to_path_buf();
    let parquet = |source| ScanError::Parquet {
        path: path(),
        source,
    };
    let open = || {
        File::open(f).map_err(|source| ScanError::Open {
            path: path(),
            source,
        })
    };
    // Ask for string columns as dictionaries (codes + a small values array per batch).
    let plain = ParquetRecordBatchReaderBuilder::try_new(open()?).map_err(parquet)?;
    let hint = Schema::new_with_metadata(
        plain
            .schema()
            .fields()
            .iter()
            .map(|fl| match fl.data_type() {
                DataType::Utf8 => Arc::new(Field::new(
                    fl.name(),
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    fl.is_nullable(),
                )),
                _ => fl.clone(),
            })
            .collect::<Vec<_>>(),
        plain.schema().metadata().clone(),
    );
    drop(plain);
    let b = ParquetRecordBatchReaderBuilder::try_new_with_options(
        open()?,
        ArrowReaderOptions::new().with_schema(Arc::new(hint)),
    )
    .map_err(parquet)?;
    let mut cols: Vec<&str> = COLUMNS.to_vec();
    if let Some(fl) = &sel.filter {
        cols.extend(fl.fields());
    }
    let columns = |source| ScanError::Columns {
        path: path(),
        source,
    };
    for c in &cols {
        if b.schema().field_with_name(c).is_err() {
            return Err(columns(DecodeError::MissingColumn(c.to_string())));
        }
    }
    cols.extend(
        OPTIONAL
            .iter()
            .chain(&SAMPLED)
            .filter(|c| b.schema().field_with_name(c).is_ok()),
    );
    let mask = ProjectionMask::columns(b.parquet_schema(), cols.iter().copied());
    let reader = b
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(parquet)?;
    for batch in reader {
        let batch = batch.map_err(|source| ScanError::Arrow {
            path: path(),
            source,
        })?;
        decode(&batch, sel, names, chunk, procs).map_err(columns)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_scanned_column_is_a_column() {
        assert_eq!(
            pyusage_record::columns::all_known(super::COLUMNS.iter().copied()),
            Ok(())
        );
        let optional = super::OPTIONAL.iter().chain(&super::SAMPLED).copied();
        assert_eq!(pyusage_record::columns::all_known(optional), Ok(()));
    }
}
