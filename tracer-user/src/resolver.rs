//! Module file path → top-level package, distribution, version, environment kind and prefix.
//!
//! Classification of a path is pure string work ([`classify`]); only the distribution lookup
//! reads files (`*.dist-info/RECORD`, `top_level.txt`, `*.egg-info`, `conda-meta/*.json`,
//! `pyvenv.cfg`), once per site directory, cached and re-read when the directory's mtime
//! changes. Paths of processes in another mount namespace are read through `/proc/<pid>/root`.
use std::{
    collections::HashMap,
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

/// Where a package was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvKind {
    /// The interpreter's standard library (including `lib-dynload`).
    Stdlib,
    /// The interpreter's own or the OS's site/dist-packages.
    System,
    /// A virtual environment (`pyvenv.cfg` at the prefix).
    Venv,
    /// A conda environment (`conda-meta/` at the prefix).
    Conda,
    /// The user site (`~/.local/lib/pythonX.Y/site-packages`).
    User,
    /// A directory on `PYTHONPATH`.
    PythonPath,
    /// A system location inside a container's mount namespace.
    Container,
    /// Anything else that is still a module (e.g. next to the main script).
    Unknown,
}

impl EnvKind {
    /// The schema's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EnvKind::Stdlib => "stdlib",
            EnvKind::System => "system",
            EnvKind::Venv => "venv",
            EnvKind::Conda => "conda",
            EnvKind::User => "user",
            EnvKind::PythonPath => "pythonpath",
            EnvKind::Container => "container",
            EnvKind::Unknown => "unknown",
        }
    }
}

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
    /// (name, version) of each distribution.
    dists: Vec<(String, Option<String>)>,
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

fn read_headers(path: &Path) -> (Option<String>, Option<String>) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return (None, None);
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
    (name, version)
}

impl DistIndex {
    /// Reads the `*.dist-info` / `*.egg-info` entries of `dir` (and `conda-meta` of `prefix`).
    pub fn load(dir: &Path, conda_prefix: Option<&Path>) -> DistIndex {
        let mut idx = DistIndex::default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return idx;
        };
        for e in entries.flatten() {
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
            let meta = if p.is_dir() {
                p.join(if is_dist { "METADATA" } else { "PKG-INFO" })
            } else {
                p.clone() // Debian ships some .egg-info as a single PKG-INFO file
            };
            let (name, version) = read_headers(&meta);
            let mut parts = stem.splitn(2, '-');
            let dir_name = parts.next().unwrap_or(stem).to_owned();
            let dir_version = parts
                .next()
                .map(|v| v.split('-').next().unwrap_or(v).to_owned());
            let name = name.unwrap_or(dir_name);
            let id = idx.dists.len();
            idx.dists.push((name.clone(), version.or(dir_version)));
            let mut tops: Vec<(String, Option<String>)> = Vec::new();
            if let Ok(record) = std::fs::read_to_string(p.join("RECORD")) {
                for line in record.lines() {
                    let file = line.split(',').next().unwrap_or("");
                    tops.extend(record_top(file));
                }
            } else if let Ok(files) = std::fs::read_to_string(p.join("installed-files.txt")) {
                for line in files.lines() {
                    tops.extend(record_top(line.trim_start_matches("../")));
                }
            }
            let declared: Vec<String> = std::fs::read_to_string(p.join("top_level.txt"))
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
            idx.load_conda(dir, prefix);
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

    fn load_conda(&mut self, dir: &Path, prefix: &Path) {
        let Ok(rel_site) = dir.strip_prefix(prefix) else {
            return;
        };
        let rel_site = rel_site.to_string_lossy().into_owned() + "/";
        let Ok(entries) = std::fs::read_dir(prefix.join("conda-meta")) else {
            return;
        };
        for e in entries.flatten() {
            if e.path().extension() != Some(OsStr::new("json")) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(e.path()) else {
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
                .push((name.to_owned(), version.map(str::to_owned)));
            self.add(id, tops);
        }
    }

    /// The distribution declaring `package` in its `top_level.txt` (an editable install).
    pub fn declared(&self, package: &str) -> Option<(String, Option<String>)> {
        self.dists.get(*self.declared.get(package)?).cloned()
    }

    /// The distribution owning `package` (using the module's path below the site directory to
    /// split namespace packages shared by several distributions).
    pub fn lookup(&self, package: &str, sub: Option<&str>) -> Option<(String, Option<String>)> {
        let ids = self.by_top.get(package)?;
        let id = match (ids.len(), sub) {
            (1, _) => ids[0],
            (_, Some(sub)) => *self
                .by_sub
                .get(&(package.to_owned(), sub.to_owned()))
                .unwrap_or(&ids[0]),
            _ => ids[0],
        };
        self.dists.get(id).cloned()
    }
}

/// Top-level (and second component) of one RECORD path, if it is a module.
fn record_top(file: &str) -> Option<(String, Option<String>)> {
    if file.starts_with("..") || file.starts_with('/') {
        return None;
    }
    let parts: Vec<&OsStr> = file.split('/').map(OsStr::new).collect();
    let top = top_level(&parts)?;
    let sub = (parts.len() > 2).then(|| parts[1].to_string_lossy().into_owned());
    Some((top, sub))
}

struct CachedIndex {
    mtime: Option<SystemTime>,
    index: Arc<DistIndex>,
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

/// Resolves locations to packages with distributions, caching per (mount namespace, site
/// directory).
#[derive(Default)]
pub struct Resolver {
    indexes: HashMap<(u32, PathBuf), CachedIndex>,
    kinds: HashMap<(u32, PathBuf), EnvKind>,
}

impl Resolver {
    /// A new, empty resolver.
    pub fn new() -> Resolver {
        Resolver::default()
    }

    /// Resolves one module file of a process whose files are read through `root`;
    /// `in_container` turns a system location into [`EnvKind::Container`].
    pub fn resolve(
        &mut self,
        loc: &Location,
        file: &Path,
        root: &Root,
        in_container: bool,
    ) -> Resolved {
        let host = |p: &Path| root.read_path(p);
        let mut kind = loc.kind;
        if kind == EnvKind::System {
            if let Some(prefix) = &loc.prefix {
                let key = (root.ns, prefix.clone());
                kind = *self.kinds.entry(key).or_insert_with(|| {
                    let p = host(prefix);
                    if p.join("pyvenv.cfg").is_file() {
                        EnvKind::Venv
                    } else if p.join("conda-meta").is_dir() {
                        EnvKind::Conda
                    } else {
                        EnvKind::System
                    }
                });
            }
            if kind == EnvKind::System && in_container {
                kind = EnvKind::Container;
            }
        }
        let (distribution, version) = if kind == EnvKind::Stdlib {
            (None, None)
        } else {
            let site = host(&loc.site_dir);
            let key = (root.ns, loc.site_dir.clone());
            let conda = (kind == EnvKind::Conda)
                .then(|| loc.prefix.as_deref().map(host))
                .flatten();
            let mtime = std::fs::metadata(&site).and_then(|m| m.modified()).ok();
            let fresh = matches!(self.indexes.get(&key), Some(c) if c.mtime == mtime);
            if !fresh {
                let index = Arc::new(DistIndex::load(&site, conda.as_deref()));
                self.indexes
                    .insert(key.clone(), CachedIndex { mtime, index });
            }
            let sub = file
                .strip_prefix(&loc.site_dir)
                .ok()
                .and_then(|r| r.components().nth(1))
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            match self.indexes[&key]
                .index
                .lookup(&loc.package, sub.as_deref())
            {
                Some((d, v)) => (Some(d), v),
                None => (None, None),
            }
        };
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
}

impl Resolver {
    /// For a module outside every known layout: the distribution that declares it in one of the
    /// site directories the process already imported from (an editable install), with that
    /// directory's environment. `sites` are (site directory, resolved environment) pairs.
    pub fn editable(
        &self,
        package: &str,
        sites: &[(PathBuf, Resolved)],
        root: &Root,
    ) -> Option<Resolved> {
        sites.iter().find_map(|(site, env)| {
            let key = (root.ns, site.clone());
            let (d, v) = self.indexes.get(&key)?.index.declared(package)?;
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

/// Builds a path from raw bytes (paths need not be UTF-8).
pub fn path_from_bytes(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

#[cfg(test)]
mod tests;
