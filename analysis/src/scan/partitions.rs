//! Which files to read: the `date=` partitions of the dataset inside `--from/--to`, each with
//! its Parquet files, found by listing directories only (no file is opened here).
use std::path::PathBuf;

use pyusage_record::dataset;

use super::ScanError;
use crate::filter::Filter;

/// What to read: where, which dates, which hosts, which rows.
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
    /// `--hosts`: only rows of hosts matching this glob (a shard of a sharded run).
    pub hosts: Option<HostGlob>,
}

/// A host-name glob (`nid00[0-3]*`), matched against the `host` column.
#[derive(Debug, Clone)]
pub struct HostGlob {
    text: String,
    matcher: globset::GlobMatcher,
}

impl HostGlob {
    /// Parses a glob (`*`, `?`, `[…]`, `{a,b}`).
    pub fn new(text: &str) -> Result<HostGlob, globset::Error> {
        Ok(HostGlob {
            text: text.to_owned(),
            matcher: globset::GlobBuilder::new(text)
                .literal_separator(false)
                .build()?
                .compile_matcher(),
        })
    }

    /// Whether `host` matches.
    pub fn is_match(&self, host: &str) -> bool {
        self.matcher.is_match(host)
    }

    /// The glob as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The partitions to read, each with its files, in date order (the dataset layout's walk is
/// the record crate's).
pub fn partitions(sel: &Selection) -> Result<Vec<(String, Vec<PathBuf>)>, ScanError> {
    let mut out = Vec::new();
    for part in dataset::partitions(&sel.root)? {
        let date = part.date.as_str();
        if sel.from.as_deref().is_some_and(|f| date < f)
            || sel.to.as_deref().is_some_and(|t| date > t)
        {
            continue;
        }
        let files = part.files()?;
        out.push((part.date, files));
    }
    Ok(out)
}
