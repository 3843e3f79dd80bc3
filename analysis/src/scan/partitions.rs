//! Which files to read: the `date=` partitions of the dataset inside `--from/--to`, each with
//! its Parquet files, found by listing directories only (no file is opened here).
use std::path::{Path, PathBuf};

use super::ScanError;
use crate::filter::Filter;

/// What to read: where, which dates, which rows.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Dataset root (`date=YYYY-MM-DD/*.parquet`).
    pub root: PathBuf,
    /// First date, inclusive.
    pub from: Option<String>,
    /// Last date, inclusive.
    pub to: Option<String>,
    /// `--filter`; `None` applies the paper's defaults (staff excluded everywhere, compute
    /// nodes only for job-based tables).
    pub filter: Option<Filter>,
}

/// The partitions to read, each with its files, in date order.
pub fn partitions(sel: &Selection) -> Result<Vec<(String, Vec<PathBuf>)>, ScanError> {
    let mut out = Vec::new();
    for part in list(&sel.root)? {
        let name = part.file_name().unwrap_or_default().to_string_lossy();
        let Some(date) = name.strip_prefix("date=") else {
            continue;
        };
        if sel.from.as_deref().is_some_and(|f| date < f)
            || sel.to.as_deref().is_some_and(|t| date > t)
        {
            continue;
        }
        let mut files: Vec<PathBuf> = list(&part)?
            .into_iter()
            .filter(|f| {
                let hidden = f
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                f.extension().is_some_and(|e| e == "parquet") && !hidden
            })
            .collect();
        files.sort();
        out.push((date.to_owned(), files));
    }
    out.sort();
    Ok(out)
}

/// The entries of a directory.
fn list(dir: &Path) -> Result<Vec<PathBuf>, ScanError> {
    let err = |source| ScanError::List {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir)
        .map_err(err)?
        .map(|e| e.map(|e| e.path()).map_err(err))
        .collect()
}
