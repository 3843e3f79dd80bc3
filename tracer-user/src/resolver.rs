//! Module file path → top-level package, distribution, version, environment kind and prefix.
//!
//! Classification of a path is pure string work ([`classify`](fn@classify)); only the
//! distribution lookup reads files (`*.dist-info/RECORD`, `top_level.txt`, `*.egg-info`,
//! `conda-meta/*.json`, `pyvenv.cfg`), once per site directory, cached and re-read when the
//! directory's mtime changes (checked at most once a second). Paths of processes in another
//! mount namespace are read through `/proc/<pid>/root`.
//!
//! Those files are the users': they are read on worker threads, with a deadline for the
//! record path, bounded, never through links or into special files, and used for a process
//! only if its user could have read them ([`untrusted`](crate::untrusted)).
//!
//! The stages, one private submodule each: `classify` (the path's text) → `metadata` (a site
//! directory's distributions, [`DistIndex`]), read on worker threads by `site` → `cache` (the
//! [`Resolver`]: per-namespace cache, deadline, answers).
use std::path::{Path, PathBuf};

mod cache;
mod classify;
mod metadata;
mod site;

pub use cache::{Resolver, DEADLINE};
pub use classify::{blas_kind, classify, classify_unplaced, python_version_of};
#[cfg(test)]
pub(crate) use metadata::{read_headers, record_top};
pub use metadata::{DistIndex, Found};

/// The environment kinds are the record's vocabulary (one definition, in the record crate).
pub use pyusage_record::EnvKind;

/// What an opened file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// A module file of a top-level package.
    Module(Location),
    /// A BLAS/LAPACK library (`mkl`, `openblas`, …).
    Blas(&'static str),
    /// A module file outside every layout known from its path alone (a `sys.path` entry added
    /// at run time, a `.pth` or editable install, a plugin directory, a container's `/opt/app`):
    /// placed by [`classify_unplaced`] from the process's own package structure.
    Unplaced,
    /// Not a module of any package (shared libraries, the main script, data).
    Ignore,
}

/// A module file's package and the directory it was imported from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Top-level import name.
    pub package: String,
    /// The `sys.path` entry it lives in (site-packages, a PYTHONPATH dir, the stdlib dir).
    pub site_dir: PathBuf,
    /// How the site directory was classified from the path alone (refined by [`Resolver`]).
    pub kind: EnvKind,
    /// The environment root derived from the path.
    pub prefix: Option<PathBuf>,
}

/// What the resolver knows about the process that opened a file.
#[derive(Debug, Clone, Default)]
pub struct ProcessView {
    /// Directories on the process's `PYTHONPATH`.
    pub pythonpath: Vec<PathBuf>,
    /// The main script (its directory is `sys.path[0]`).
    pub script: Option<PathBuf>,
    /// `PYTHONPYCACHEPREFIX` or `-X pycache_prefix=`: bytecode of `/D/S.py` is
    /// `<prefix>/D/S.<tag>.pyc`.
    pub pycache_prefix: Option<PathBuf>,
}

/// Fully resolved package of one module file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Top-level import name.
    pub package: String,
    /// Distribution name (`PyYAML`).
    pub distribution: Option<String>,
    /// Distribution version.
    pub version: Option<String>,
    /// Environment kind.
    pub env_kind: EnvKind,
    /// Environment root.
    pub env_prefix: Option<String>,
}

/// Where a process's files are read from, and the cache namespace they belong to.
#[derive(Debug, Clone)]
pub struct Root {
    /// The process's `/` as seen from here: `/`, or a directory descriptor of its root taken
    /// while it was alive (`/proc/self/fd/<n>`: readable after it exits), or `/proc/<pid>/root`.
    pub dir: PathBuf,
    /// Its mount namespace (0: the daemon's): caches are per namespace, never per descriptor
    /// or pid, which are reused.
    pub ns: u32,
}

impl Root {
    /// The daemon's own file system.
    pub fn host() -> Root {
        Root {
            dir: PathBuf::from("/"),
            ns: 0,
        }
    }

    fn read_path(&self, p: &Path) -> PathBuf {
        if self.dir == Path::new("/") {
            p.to_path_buf()
        } else {
            self.dir.join(p.strip_prefix("/").unwrap_or(p))
        }
    }
}

pub use crate::imports::path_from_bytes;

#[cfg(test)]
mod tests;
