//! The resolver's worker side: reading one site directory (the environment kind of its
//! prefix, then its [`DistIndex`], shared between paths and namespaces that reach the same
//! directory).
//!
//! Separate because it runs on the worker threads, never on the record path, which only waits
//! for its answer up to a deadline (see `cache`).
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use super::{
    cache::{Key, MAX_INDEXES},
    metadata::DistIndex,
    EnvKind,
};
use crate::untrusted::Refusals;

/// A site directory's metadata as a worker read it.
pub(super) struct CachedIndex {
    pub(super) index: Arc<DistIndex>,
    /// The prefix's kind, for a location classified `System` (a venv or conda prefix).
    pub(super) kind: EnvKind,
    pub(super) mtime: Option<SystemTime>,
    /// When it was read or last found unchanged.
    pub(super) checked: Instant,
}

/// Work for the resolver's threads: read one site directory's metadata.
pub(super) struct Job {
    pub(super) key: Key,
    /// The site directory and prefix as readable from here (through the process's root).
    pub(super) site: PathBuf,
    pub(super) prefix: Option<PathBuf>,
    pub(super) kind: EnvKind,
    pub(super) known_mtime: Option<SystemTime>,
}

/// A worker's answer to a [`Job`].
pub(super) enum Outcome {
    Read(CachedIndex),
    /// The directory's mtime had not changed.
    Unchanged,
}

/// Site directories already read, by (device, inode, mtime, conda prefix): the same directory
/// reached by another path or from another mount namespace (a shared software tree, an image
/// mounted by many containers) is read once. Bounded; starts over when full.
pub(super) type ByInode = HashMap<(u64, u64, i64, Option<PathBuf>), Arc<DistIndex>>;

/// A worker's job: the prefix's kind (for a `System` location) and the site directory's
/// distributions, unless its mtime is the one already known.
pub(super) fn read_site(job: Job, count: &Refusals, shared: &Mutex<ByInode>) -> Outcome {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&job.site).ok();
    let mtime = meta.as_ref().and_then(|m| m.modified().ok());
    if mtime.is_some() && mtime == job.known_mtime {
        return Outcome::Unchanged;
    }
    let mut kind = job.kind;
    if kind == EnvKind::System {
        if let Some(p) = &job.prefix {
            // Existence only, never through a link.
            let is = |name: &str, dir: bool| {
                std::fs::symlink_metadata(p.join(name)).is_ok_and(|m| {
                    if dir {
                        m.is_dir()
                    } else {
                        m.is_file()
                    }
                })
            };
            kind = if is("pyvenv.cfg", false) {
                EnvKind::Venv
            } else if is("conda-meta", true) {
                EnvKind::Conda
            } else {
                EnvKind::System
            };
        }
    }
    let conda = (kind == EnvKind::Conda)
        .then_some(job.prefix.as_deref())
        .flatten();
    let key = meta.map(|m| {
        (
            m.dev(),
            m.ino(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000,
            conda.map(Path::to_path_buf),
        )
    });
    let known = key
        .as_ref()
        .and_then(|k| shared.lock().ok()?.get(k).cloned());
    let index = known.unwrap_or_else(|| {
        let index = Arc::new(DistIndex::load(&job.site, conda, count));
        if let (Some(k), Ok(mut m)) = (key, shared.lock()) {
            if m.len() >= MAX_INDEXES {
                m.clear();
            }
            m.insert(k, index.clone());
        }
        index
    });
    Outcome::Read(CachedIndex {
        index,
        kind,
        mtime,
        checked: Instant::now(),
    })
}
