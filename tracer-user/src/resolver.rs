//! Module file path → top-level package, distribution, version, environment kind and prefix.
//!
//! Classification of a path is pure string work ([`classify`]); only the distribution lookup
//! reads files (`*.dist-info/RECORD`, `top_level.txt`, `*.egg-info`, `conda-meta/*.json`,
//! `pyvenv.cfg`), once per site directory, cached and re-read when the directory's mtime
//! changes (checked at most once a second). Paths of processes in another mount namespace
//! are read through `/proc/<pid>/root`.
//!
//! Those files are the users': they are read on worker threads, with a deadline for the
//! record path, bounded, never through links or into special files, and used for a process
//! only if its user could have read them ([`untrusted`]).
use std::{
    collections::HashMap,
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use crate::{
    untrusted::{self, Creds, FileMode, Refusals},
    workers::Workers,
};

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

fn comps(path: &Path) -> Vec<&OsStr> {
    path.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// `foo.cpython-311-x86_64-linux-gnu.so` → `foo`; `foo.py` → `foo`; `foo` → `foo`.
fn module_stem(name: &[u8]) -> &[u8] {
    let end = name.iter().position(|&c| c == b'.').unwrap_or(name.len());
    &name[..end]
}

fn is_module_suffix(name: &[u8]) -> bool {
    name.ends_with(b".py") || name.ends_with(b".pyc") || name.ends_with(b".so")
}

/// The BLAS family of a shared library's file name, if it is one.
pub fn blas_kind(name: &[u8]) -> Option<&'static str> {
    // Called for every module file: most are not `lib*.so*`, and need no allocation.
    if name.len() < 3 || !name[..3].eq_ignore_ascii_case(b"lib") {
        return None;
    }
    let n = String::from_utf8_lossy(name).to_ascii_lowercase();
    if !n.starts_with("lib") || !n.contains(".so") {
        return None;
    }
    Some(
        if n.starts_with("libmkl_rt") || n.starts_with("libmkl_core") {
            "mkl"
        } else if n.contains("openblas") {
            "openblas"
        } else if n.starts_with("libblis") {
            "blis"
        } else if n.starts_with("libflexiblas") {
            "flexiblas"
        } else if n.starts_with("libblas.so") || n.starts_with("libcblas.so") {
            "reference"
        } else if n.starts_with("libatlas")
            || n.starts_with("libsatlas")
            || n.starts_with("libtatlas")
        {
            "atlas"
        } else if n.starts_with("libsci_") {
            "libsci"
        } else {
            return None;
        },
    )
}

/// `pythonX.Y` (not `python3` alone).
fn is_versioned_python_dir(c: &[u8]) -> bool {
    c.strip_prefix(b"python")
        .map(|v| v.contains(&b'.') && v.iter().all(|b| b.is_ascii_digit() || *b == b'.'))
        .unwrap_or(false)
}

/// The Python version (`3.11`) a path is under, if any (`…/lib/python3.11/…`).
pub fn python_version_of(path: &Path) -> Option<String> {
    let c = comps(path);
    c.windows(2).find_map(|w| {
        let (lib, py) = (w[0].as_bytes(), w[1].as_bytes());
        (lib.starts_with(b"lib") && is_versioned_python_dir(py))
            .then(|| String::from_utf8_lossy(&py[6..]).into_owned())
    })
}

/// Top-level package from the components after a `sys.path` entry.
fn top_level(rest: &[&OsStr]) -> Option<String> {
    let first = rest.first()?.as_bytes();
    let last = rest.last()?.as_bytes();
    if !is_module_suffix(last) {
        return None;
    }
    let name: &[u8] = if rest.len() == 1 {
        module_stem(first)
    } else if first == b"__pycache__" {
        if rest.len() != 2 {
            return None;
        }
        module_stem(rest[1].as_bytes())
    } else {
        for bad in [&b".libs"[..], b".dist-info", b".egg-info", b".data"] {
            if first.ends_with(bad) {
                return None;
            }
        }
        first
    };
    // Import names need not be identifiers (`_sysconfigdata__x86_64-linux-gnu`), but never
    // contain a dot.
    if name.is_empty() || name.contains(&b'.') {
        return None;
    }
    Some(String::from_utf8_lossy(name).into_owned())
}

/// Classifies a path from its text alone (no I/O).
pub fn classify(path: &Path, view: &ProcessView) -> Class {
    let c = comps(path);
    let Some(name) = c.last().map(|s| s.as_bytes()) else {
        return Class::Ignore;
    };
    if let Some(b) = blas_kind(name) {
        return Class::Blas(b);
    }
    if crate::imports::is_archive(name) {
        return Class::Unplaced;
    }
    if !is_module_suffix(name) {
        return Class::Ignore;
    }
    // site-packages / dist-packages (the last one: a venv inside a system tree).
    if let Some(i) = c
        .iter()
        .rposition(|s| s.as_bytes() == b"site-packages" || s.as_bytes() == b"dist-packages")
    {
        let site_dir: PathBuf = std::iter::once(OsStr::new("/"))
            .chain(c[..=i].iter().copied())
            .collect();
        let Some(package) = top_level(&c[i + 1..]) else {
            return Class::Ignore;
        };
        // prefix: strip `lib/pythonX.Y` or `lib/python3` (Debian) and an optional `local`.
        let mut j = i;
        if j >= 2
            && c[j - 2].as_bytes().starts_with(b"lib")
            && c[j - 1].as_bytes().starts_with(b"python")
        {
            j -= 2;
        }
        let prefix: PathBuf = std::iter::once(OsStr::new("/"))
            .chain(c[..j].iter().copied())
            .collect();
        let user = j >= 1 && c[j - 1].as_bytes() == b".local";
        return Class::Module(Location {
            package,
            site_dir,
            kind: if user { EnvKind::User } else { EnvKind::System },
            prefix: Some(prefix),
        });
    }
    // The standard library: …/lib/pythonX.Y/<mod> or …/lib/pythonX.Y/lib-dynload/<ext>.
    if let Some(i) = c.windows(2).position(|w| {
        w[0].as_bytes().starts_with(b"lib") && is_versioned_python_dir(w[1].as_bytes())
    }) {
        let mut rest = &c[i + 2..];
        if rest.first().map(|s| s.as_bytes()) == Some(b"lib-dynload") {
            rest = &rest[1..];
        }
        if let Some(package) = top_level(rest) {
            let site_dir: PathBuf = std::iter::once(OsStr::new("/"))
                .chain(c[..i + 2].iter().copied())
                .collect();
            let prefix: PathBuf = std::iter::once(OsStr::new("/"))
                .chain(c[..i].iter().copied())
                .collect();
            return Class::Module(Location {
                package,
                site_dir,
                kind: EnvKind::Stdlib,
                prefix: Some(prefix),
            });
        }
        return Class::Ignore;
    }
    if view.script.as_deref() == Some(path) {
        return Class::Ignore;
    }
    let script_dir = view.script.as_deref().and_then(Path::parent);

    for (dir, kind) in view
        .pythonpath
        .iter()
        .map(|d| (d.as_path(), EnvKind::PythonPath))
        .chain(script_dir.map(|d| (d, EnvKind::Unknown)))
    {
        if let Ok(rel) = path.strip_prefix(dir) {
            let rest = comps(rel);
            if let Some(package) = top_level(&rest) {
                return Class::Module(Location {
                    package,
                    site_dir: dir.to_path_buf(),
                    kind,
                    prefix: Some(dir.to_path_buf()),
                });
            }
        }
    }
    Class::Unplaced
}

/// Places a module file outside every known layout by the package structure the process itself
/// imported: the top-level package is the outermost directory of an unbroken chain of
/// directories whose `__init__` it imported (`init_dirs`), and the directory above it is the
/// `sys.path` entry. A module whose own directory is not such a package is top-level itself.
/// Archives are named by their file name. A shared object counts when its name carries an
/// extension module's tag (`*.cpython-*.so`, `*.abi3.so`, `*.pypy*.so`, CPython 2's
/// `*module.so`) or when `is_extension` (the caller's look at its ELF symbols) says it is one.
pub fn classify_unplaced(
    path: &Path,
    init_dirs: &std::collections::HashSet<PathBuf>,
    is_extension: impl FnOnce(&Path, &str) -> bool,
) -> Class {
    let Some(name) = path.file_name().map(OsStr::as_bytes) else {
        return Class::Ignore;
    };
    let Some(mut dir) = path.parent() else {
        return Class::Ignore;
    };
    if crate::imports::is_archive(name) {
        return Class::Module(Location {
            package: String::from_utf8_lossy(name).into_owned(),
            site_dir: dir.to_path_buf(),
            kind: EnvKind::Unknown,
            prefix: Some(dir.to_path_buf()),
        });
    }
    if name.ends_with(b".so") {
        let s = String::from_utf8_lossy(name);
        let tagged = s.contains(".cpython-")
            || s.contains(".abi3.")
            || s.contains(".pypy")
            || s.ends_with("module.so");
        let stem = String::from_utf8_lossy(module_stem(name)).into_owned();
        if !tagged && !is_extension(path, &stem) {
            return Class::Ignore;
        }
    } else if !is_module_suffix(name) {
        return Class::Ignore;
    }
    if dir.file_name().map(OsStr::as_bytes) == Some(b"__pycache__") {
        match dir.parent() {
            Some(d) => dir = d,
            None => return Class::Ignore,
        }
    }
    let stem = module_stem(name);
    let (mut top, package_dir) = if stem == b"__init__" || init_dirs.contains(dir) {
        (dir.to_path_buf(), true)
    } else {
        (dir.join(OsStr::from_bytes(stem)), false)
    };
    if package_dir {
        while let Some(parent) = top.parent() {
            if !init_dirs.contains(parent) {
                break;
            }
            top = parent.to_path_buf();
        }
    }
    let (Some(package), Some(site_dir)) = (top.file_name(), top.parent()) else {
        return Class::Ignore;
    };
    let package = package.as_bytes();
    if package.is_empty() || package.contains(&b'.') {
        return Class::Ignore;
    }
    Class::Module(Location {
        package: String::from_utf8_lossy(package).into_owned(),
        site_dir: site_dir.to_path_buf(),
        kind: EnvKind::Unknown,
        prefix: Some(site_dir.to_path_buf()),
    })
}

/// Distributions installed in one site directory.
#[derive(Debug, Default)]
pub struct DistIndex {
    /// (name, version) of each distribution, with the mode of the file (or directory) they
    /// were read from, checked against the reading process's credentials.
    dists: Vec<(String, Option<String>, FileMode)>,
    /// The site directory's own mode (listing it is what found the distributions).
    site_mode: FileMode,
    /// Top-level name → distributions that install files under it.
    by_top: HashMap<String, Vec<usize>>,
    /// (top-level, second component) → distribution, to split namespace packages.
    by_sub: HashMap<(String, String), usize>,
    /// Top-level names a distribution declares in `top_level.txt` though its files live
    /// elsewhere: editable installs (`pip install -e`), whose RECORD lists only a `.pth` or an
    /// `__editable__` finder.
    declared: HashMap<String, usize>,
}

fn normalize(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Bytes read of one metadata file at most (headers come first; RECORD lists of the largest
/// distributions are a few hundred KiB).
const MAX_FILE: usize = 4 << 20;
/// Entries looked at per directory scan at most.
const MAX_ENTRIES: usize = 20_000;

pub(crate) fn read_headers(
    path: &Path,
    count: &Refusals,
) -> (Option<String>, Option<String>, Option<FileMode>) {
    let Some((text, mode)) = untrusted::read_text(path, 64 << 10, count) else {
        return (None, None, None);
    };
    let (mut name, mut version) = (None, None);
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Name:") {
            name = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("Version:") {
            version = Some(v.trim().to_owned());
        }
    }
    (name, version, Some(mode))
}

impl DistIndex {
    /// Reads the `*.dist-info` / `*.egg-info` entries of `dir` (and `conda-meta` of `prefix`).
    pub fn load(dir: &Path, conda_prefix: Option<&Path>, count: &Refusals) -> DistIndex {
        let mut idx = DistIndex::default();
        let Some(site_mode) = untrusted::dir_mode(dir, count) else {
            return idx;
        };
        idx.site_mode = site_mode;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return idx;
        };
        for (i, e) in entries.flatten().enumerate() {
            if i == MAX_ENTRIES {
                Refusals::bump(&count.truncated);
                break;
            }
            let fname = e.file_name();
            let fname = fname.to_string_lossy();
            let (stem, is_dist) = if let Some(s) = fname.strip_suffix(".dist-info") {
                (s, true)
            } else if let Some(s) = fname.strip_suffix(".egg-info") {
                (s, false)
            } else {
                continue;
            };
            let p = e.path();
            // Never through a link: `x.dist-info -> /home/other/env/…/y.dist-info`.
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_symlink() {
                Refusals::bump(&count.symlink);
                continue;
            }
            let is_dir = ft.is_dir();
            let meta = if is_dir {
                p.join(if is_dist { "METADATA" } else { "PKG-INFO" })
            } else {
                p.clone() // Debian ships some .egg-info as a single PKG-INFO file
            };
            let (name, version, mode) = read_headers(&meta, count);
            let Some(mode) =
                mode.or_else(|| is_dir.then(|| untrusted::dir_mode(&p, count)).flatten())
            else {
                continue;
            };
            let mut parts = stem.splitn(2, '-');
            let dir_name = parts.next().unwrap_or(stem).to_owned();
            let dir_version = parts
                .next()
                .map(|v| v.split('-').next().unwrap_or(v).to_owned());
            let name = name.unwrap_or(dir_name);
            let id = idx.dists.len();
            idx.dists
                .push((name.clone(), version.or(dir_version), mode));
            let mut tops: Vec<(String, Option<String>)> = Vec::new();
            let read = |f: &str| {
                is_dir
                    .then(|| untrusted::read_text(&p.join(f), MAX_FILE, count))
                    .flatten()
                    .map(|(t, _)| t)
            };
            if let Some(record) = read("RECORD") {
                for line in record.lines() {
                    let file = line.split(',').next().unwrap_or("");
                    tops.extend(record_top(file));
                }
            } else if let Some(files) = read("installed-files.txt") {
                for line in files.lines() {
                    tops.extend(record_top(line.trim_start_matches("../")));
                }
            }
            let declared: Vec<String> = read("top_level.txt")
                .map(|t| {
                    t.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            for d in &declared {
                idx.declared.entry(d.clone()).or_insert(id);
            }
            if tops.is_empty() {
                tops.extend(declared.into_iter().map(|l| (l, None)));
            }
            if tops.is_empty() {
                tops.push((normalize(&name), None));
            }
            idx.add(id, tops);
        }
        if let Some(prefix) = conda_prefix {
            idx.load_conda(dir, prefix, count);
        }
        idx
    }

    fn add(&mut self, id: usize, tops: Vec<(String, Option<String>)>) {
        for (top, sub) in tops {
            let v = self.by_top.entry(top.clone()).or_default();
            if !v.contains(&id) {
                v.push(id);
            }
            if let Some(sub) = sub {
                self.by_sub.entry((top, sub)).or_insert(id);
            }
        }
    }

    fn load_conda(&mut self, dir: &Path, prefix: &Path, count: &Refusals) {
        let Ok(rel_site) = dir.strip_prefix(prefix) else {
            return;
        };
        let rel_site = rel_site.to_string_lossy().into_owned() + "/";
        let meta_dir = prefix.join("conda-meta");
        if untrusted::dir_mode(&meta_dir, count).is_none() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&meta_dir) else {
            return;
        };
        for (i, e) in entries.flatten().enumerate() {
            if i == MAX_ENTRIES {
                Refusals::bump(&count.truncated);
                break;
            }
            if e.path().extension() != Some(OsStr::new("json")) {
                continue;
            }
            let Some((text, mode)) = untrusted::read_text(&e.path(), MAX_FILE, count) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let (Some(name), version) = (v["name"].as_str(), v["version"].as_str()) else {
                continue;
            };
            let tops: Vec<_> = v["files"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str()?.strip_prefix(rel_site.as_str()))
                .flat_map(record_top)
                .filter(|(t, _)| !self.by_top.contains_key(t))
                .collect();
            if tops.is_empty() {
                continue;
            }
            let id = self.dists.len();
            self.dists
                .push((name.to_owned(), version.map(str::to_owned), mode));
            self.add(id, tops);
        }
    }

    /// The distribution declaring `package` in its `top_level.txt` (an editable install).
    pub fn declared(&self, package: &str, creds: &Creds) -> Found {
        match self.declared.get(package) {
            Some(&id) => self.permitted(id, creds),
            None => Found::None,
        }
    }

    /// Distribution `id`, if the process's user could have read what it came from.
    fn permitted(&self, id: usize, creds: &Creds) -> Found {
        match self.dists.get(id) {
            Some((n, v, mode)) if creds.may_read(&self.site_mode) && creds.may_read(mode) => {
                Found::Dist(n.clone(), v.clone())
            }
            Some(_) => Found::NotPermitted,
            None => Found::None,
        }
    }

    /// The distribution owning `package` (using the module's path below the site directory to
    /// split namespace packages shared by several distributions).
    pub fn lookup(&self, package: &str, sub: Option<&str>, creds: &Creds) -> Found {
        let Some(ids) = self.by_top.get(package) else {
            return Found::None;
        };
        let id = match (ids.len(), sub) {
            (1, _) => ids[0],
            (_, Some(sub)) => *self
                .by_sub
                .get(&(package.to_owned(), sub.to_owned()))
                .unwrap_or(&ids[0]),
            _ => ids[0],
        };
        self.permitted(id, creds)
    }
}

/// A distribution lookup's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// (name, version).
    Dist(String, Option<String>),
    /// Known, but from files the process's user could not read: not used.
    NotPermitted,
    /// No distribution owns it.
    None,
}

/// Top-level (and second component) of one RECORD path, if it is a module.
pub(crate) fn record_top(file: &str) -> Option<(String, Option<String>)> {
    if file.starts_with("..") || file.starts_with('/') {
        return None;
    }
    let parts: Vec<&OsStr> = file.split('/').map(OsStr::new).collect();
    let top = top_level(&parts)?;
    let sub = (parts.len() > 2).then(|| parts[1].to_string_lossy().into_owned());
    Some((top, sub))
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

/// A site directory's metadata as a worker read it.
struct CachedIndex {
    index: Arc<DistIndex>,
    /// The prefix's kind, for a location classified `System` (a venv or conda prefix).
    kind: EnvKind,
    mtime: Option<SystemTime>,
    /// When it was read or last found unchanged.
    checked: Instant,
}

/// (mount namespace, site directory as the process names it).
type Key = (u32, PathBuf);

/// Work for the resolver's threads: read one site directory's metadata.
struct Job {
    key: Key,
    /// The site directory and prefix as readable from here (through the process's root).
    site: PathBuf,
    prefix: Option<PathBuf>,
    kind: EnvKind,
    known_mtime: Option<SystemTime>,
}

enum Outcome {
    Read(CachedIndex),
    /// The directory's mtime had not changed.
    Unchanged,
}

/// Threads reading metadata (see [`Workers`]).
const WORKERS: usize = 4;
/// Jobs queued for the workers at most (past it a job is dropped and counted).
const JOBS_QUEUED: usize = 256;
/// How long the record path waits for one site directory's metadata.
pub const DEADLINE: Duration = Duration::from_millis(300);
/// A site directory read longer ago than this is checked for changes (its mtime) again.
const RECHECK_AFTER: Duration = Duration::from_secs(1);
/// Site directories remembered at most (the oldest checked is forgotten first).
const MAX_INDEXES: usize = 4096;

/// Resolves locations to packages with distributions, caching per (mount namespace, site
/// directory). Every read of a user's files happens on worker threads (see [`untrusted`]).
pub struct Resolver {
    indexes: HashMap<Key, CachedIndex>,
    /// Jobs in flight, since when.
    pending: HashMap<Key, Instant>,
    workers: Workers<Job, (Key, Outcome)>,
    /// Refusals by cause, shared with the workers.
    pub refusals: Arc<Refusals>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new()
    }
}

impl Resolver {
    /// A resolver with its worker threads.
    pub fn new() -> Resolver {
        let refusals = Arc::new(Refusals::default());
        let count = refusals.clone();
        let shared = Arc::new(Mutex::new(ByInode::new()));
        Resolver {
            indexes: HashMap::new(),
            pending: HashMap::new(),
            workers: Workers::new("resolver", WORKERS, JOBS_QUEUED, move |job: Job| {
                (job.key.clone(), read_site(job, &count, &shared))
            }),
            refusals,
        }
    }

    fn take(&mut self, (key, outcome): (Key, Outcome)) {
        self.pending.remove(&key);
        match outcome {
            Outcome::Read(c) => {
                if self.indexes.len() >= MAX_INDEXES && !self.indexes.contains_key(&key) {
                    if let Some(old) = self
                        .indexes
                        .iter()
                        .min_by_key(|(_, c)| c.checked)
                        .map(|(k, _)| k.clone())
                    {
                        self.indexes.remove(&old);
                    }
                }
                self.indexes.insert(key, c);
            }
            Outcome::Unchanged => {
                if let Some(c) = self.indexes.get_mut(&key) {
                    c.checked = Instant::now();
                }
            }
        }
    }

    /// The site directory's metadata: cached, or read by a worker within the deadline.
    fn index(&mut self, loc: &Location, root: &Root) -> Option<&CachedIndex> {
        while let Some(r) = self.workers.try_recv() {
            self.take(r);
        }
        let key = (root.ns, loc.site_dir.clone());
        let stale = self
            .indexes
            .get(&key)
            .is_none_or(|c| c.checked.elapsed() >= RECHECK_AFTER);
        if stale {
            let since = match self.pending.get(&key) {
                Some(&t) => t,
                None => {
                    let job = Job {
                        key: key.clone(),
                        site: root.read_path(&loc.site_dir),
                        prefix: loc.prefix.as_deref().map(|p| root.read_path(p)),
                        kind: loc.kind,
                        known_mtime: self.indexes.get(&key).and_then(|c| c.mtime),
                    };
                    if self.workers.submit(job).is_err() {
                        Refusals::bump(&self.refusals.queue_full);
                        return self.indexes.get(&key);
                    }
                    let t = Instant::now();
                    self.pending.insert(key.clone(), t);
                    t
                }
            };
            // Wait only what is left of the job's own deadline, and not at all while every
            // worker is stuck: a hung file system costs the record path one deadline, not
            // one per process.
            let until = if self.workers.stuck(DEADLINE) {
                since
            } else {
                since + DEADLINE
            };
            while self.pending.contains_key(&key) {
                match self.workers.recv_until(until) {
                    Some(r) => self.take(r),
                    None => {
                        Refusals::bump(&self.refusals.deadline_missed);
                        break;
                    }
                }
            }
        }
        self.indexes.get(&key)
    }

    /// Resolves one module file of a process whose files are read through `root`, with what
    /// its user (`creds`) could read; `in_container` turns a system location into
    /// [`EnvKind::Container`].
    pub fn resolve(
        &mut self,
        loc: &Location,
        file: &Path,
        root: &Root,
        in_container: bool,
        creds: &Creds,
    ) -> Resolved {
        let (mut kind, mut distribution, mut version) = (loc.kind, None, None);
        if kind != EnvKind::Stdlib {
            let refusals = self.refusals.clone();
            if let Some(c) = self.index(loc, root) {
                kind = c.kind;
                let sub = file
                    .strip_prefix(&loc.site_dir)
                    .ok()
                    .and_then(|r| r.components().nth(1))
                    .map(|c| c.as_os_str().to_string_lossy().into_owned());
                match c.index.lookup(&loc.package, sub.as_deref(), creds) {
                    Found::Dist(d, v) => (distribution, version) = (Some(d), v),
                    Found::NotPermitted => Refusals::bump(&refusals.not_permitted),
                    Found::None => {}
                }
            }
        }
        if kind == EnvKind::System && in_container {
            kind = EnvKind::Container;
        }
        Resolved {
            package: loc.package.clone(),
            distribution,
            version,
            env_kind: kind,
            env_prefix: loc
                .prefix
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
        }
    }

    /// For a module outside every known layout: the distribution that declares it in one of the
    /// site directories the process already imported from (an editable install), with that
    /// directory's environment. `sites` are (site directory, resolved environment) pairs.
    pub fn editable(
        &self,
        package: &str,
        sites: &[(PathBuf, Resolved)],
        root: &Root,
        creds: &Creds,
    ) -> Option<Resolved> {
        sites.iter().find_map(|(site, env)| {
            let key = (root.ns, site.clone());
            let Found::Dist(d, v) = self.indexes.get(&key)?.index.declared(package, creds) else {
                return None;
            };
            Some(Resolved {
                package: package.to_owned(),
                distribution: Some(d),
                version: v,
                env_kind: env.env_kind,
                env_prefix: env.env_prefix.clone(),
            })
        })
    }
}

/// Site directories already read, by (device, inode, mtime, conda prefix): the same directory
/// reached by another path or from another mount namespace (a shared software tree, an image
/// mounted by many containers) is read once. Bounded; starts over when full.
type ByInode = HashMap<(u64, u64, i64, Option<PathBuf>), Arc<DistIndex>>;

/// A worker's job: the prefix's kind (for a `System` location) and the site directory's
/// distributions, unless its mtime is the one already known.
fn read_site(job: Job, count: &Refusals, shared: &Mutex<ByInode>) -> Outcome {
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

/// Builds a path from raw bytes (paths need not be UTF-8).
pub fn path_from_bytes(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

#[cfg(test)]
mod tests;
