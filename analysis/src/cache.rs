//! `--cache DIR`: the [`State`] of each `date=` partition kept between runs, so that a daily
//! re-run reads only the partitions that are new or changed and merges the rest.
//!
//! An entry is `DIR/<config>/date=YYYY-MM-DD.state` (a [`file`] state). `<config>` is a hash
//! of what decides which rows a state holds — the dataset's canonical path, `--filter`,
//! `--hosts` and the state's format — so one cache directory serves several reports. An
//! entry is used only if the partition's files are exactly those it was built from (each
//! file's name, size and mtime, stamped *before* the files are read, so a file that changes
//! during a run is read again by the next). Anything else — a file added (a new host's),
//! changed or removed, an entry of another version, a corrupt or foreign entry — is a miss:
//! the partition is read and its entry rewritten. A cache can therefore be deleted, shared
//! by concurrent runs (entries are replaced atomically) or lost without changing a report:
//! the merged state, and so the report, is the same as a cold run's.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use pyusage_record::atomic::Durability;
use rayon::prelude::*;

use crate::{
    cpu::Cpu,
    model::Names,
    scan::{self, ScanError, Selection},
    state::{
        file::{self, FileStamp, Meta, StateFileError},
        State,
    },
};

/// A cache failure that cannot be treated as a miss.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache directory cannot be created or written.
    #[error("cache {}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A partition's files cannot be listed or stat'ed.
    #[error("{}", path.display())]
    Stat {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing an entry.
    #[error(transparent)]
    Write(#[from] StateFileError),
    /// Reading the partition.
    #[error(transparent)]
    Scan(#[from] ScanError),
}

/// What the cache did in one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Partitions whose entry was used.
    pub hits: u64,
    /// Partitions read (no entry, or a stale one).
    pub misses: u64,
    /// Of the misses, entries that existed but were stale or unreadable.
    pub stale: u64,
    /// Entries of partitions no longer in the dataset, removed.
    pub pruned: u64,
}

/// The entry directory of one configuration under `dir`.
pub fn config_dir(dir: &Path, sel: &Selection) -> PathBuf {
    let root = std::fs::canonicalize(&sel.root).unwrap_or_else(|_| sel.root.clone());
    let key = format!(
        "{}\0{}\0{}\0{}",
        root.display(),
        sel.filter
            .as_ref()
            .map(|f| f.to_string())
            .unwrap_or_default(),
        sel.hosts.as_ref().map(|h| h.as_str()).unwrap_or(""),
        String::from_utf8_lossy(file::MAGIC),
    );
    dir.join(format!("{:016x}", fnv1a(key.as_bytes())))
}

/// FNV-1a, 64-bit: a stable name for a configuration (std's hashers are randomly seeded or
/// may change between releases; a directory name must not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The stamps of a partition's files, sorted by name.
pub fn stamps(files: &[PathBuf]) -> Result<Vec<FileStamp>, CacheError> {
    let mut v = files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).map_err(|source| CacheError::Stat {
                path: f.clone(),
                source,
            })?;
            Ok(FileStamp {
                name: f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                size: m.size(),
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            })
        })
        .collect::<Result<Vec<_>, CacheError>>()?;
    v.sort();
    Ok(v)
}

/// The meta every state of this selection carries; `dates` and `files` are filled per use.
pub fn meta_of(sel: &Selection) -> Meta {
    Meta {
        dataset: sel.root.display().to_string(),
        filter: sel
            .filter
            .as_ref()
            .map(|f| f.to_string())
            .unwrap_or_default(),
        hosts: sel.hosts.as_ref().map(|h| h.as_str().to_owned()),
        dates: Vec::new(),
        files: Vec::new(),
    }
}

/// Folds every partition of `parts` into one state, through the cache when `cache` is given:
/// entries used where valid, partitions read (and their entries written) otherwise.
/// `progress` is called once per partition.
pub fn fold(
    sel: &Selection,
    parts: &[(String, Vec<PathBuf>)],
    cache: Option<&Path>,
    names: &Names,
    progress: &(dyn Fn() + Sync),
) -> Result<(State, CacheStats), CacheError> {
    let dir = cache.map(|d| config_dir(d, sel));
    if let Some(d) = &dir {
        std::fs::create_dir_all(d).map_err(|source| CacheError::Dir {
            dir: d.clone(),
            source,
        })?;
    }
    let base = meta_of(sel);
    let cpu = Cpu::default();
    let (hits, misses, stale) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    parts.par_iter().try_for_each(|(date, files)| {
        let Some(dir) = &dir else {
            cpu.merge(State::of(&scan::read_partition(sel, files, names)?));
            progress();
            return Ok::<_, CacheError>(());
        };
        let meta = Meta {
            dates: vec![date.clone()],
            files: stamps(files)?,
            ..base.clone()
        };
        let entry = dir.join(format!("date={date}.state"));
        match entry.exists().then(|| file::load(&entry, names)) {
            Some(Ok((state, m))) if m == meta => {
                hits.fetch_add(1, Ordering::Relaxed);
                cpu.merge(state);
            }
            other => {
                if other.is_some() {
                    stale.fetch_add(1, Ordering::Relaxed);
                }
                misses.fetch_add(1, Ordering::Relaxed);
                let state = State::of(&scan::read_partition(sel, files, names)?);
                file::save(&entry, &state, names, &meta, Durability::BestEffort)?;
                cpu.merge(state);
            }
        }
        progress();
        Ok(())
    })?;
    let pruned = match &dir {
        Some(d) => prune(d, sel, parts),
        None => 0,
    };
    let stats = CacheStats {
        hits: hits.into_inner(),
        misses: misses.into_inner(),
        stale: stale.into_inner(),
        pruned,
    };
    Ok((cpu.into_state(), stats))
}

/// Removes the entries of partitions inside the selection's dates that the dataset no longer
/// has (they would never be used again); entries outside `--from/--to` are kept.
fn prune(dir: &Path, sel: &Selection, parts: &[(String, Vec<PathBuf>)]) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut pruned = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(date) = name
            .to_str()
            .and_then(|n| n.strip_prefix("date="))
            .and_then(|n| n.strip_suffix(".state"))
        else {
            continue;
        };
        let inside = sel.from.as_deref().is_none_or(|f| date >= f)
            && sel.to.as_deref().is_none_or(|t| date <= t);
        if inside
            && parts.binary_search_by(|p| p.0.as_str().cmp(date)).is_err()
            && std::fs::remove_file(e.path()).is_ok()
        {
            pruned += 1;
        }
    }
    pruned
}

#[cfg(test)]
mod tests {
    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of the FNV reference (draft-eastlake-fnv).
        assert_eq!(super::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
