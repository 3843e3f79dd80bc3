//! Stage one of resolving: a module file's path → its top-level package, `sys.path` entry,
//! environment kind and prefix, from the path's text alone (and, for a file outside every known
//! layout, from the package structure the process imported).
//!
//! Separate because it is pure: no I/O, no user's files, no cache; it runs for every import on
//! the record path and is tested on strings.
use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use super::{Class, EnvKind, Location, ProcessView};

fn comps(path: &Path) -> Vec<&OsStr> {
    Comps::of(path).parts
}

/// A path's normal components, and the directories they lead through.
///
/// Every module file of every import is classified, and building its `sys.path` entry and
/// prefix by collecting components into a `PathBuf` (one push, with its separator logic, per
/// component) was the largest part of that. A plain absolute path (`/a/b/c`: no empty, `.` or
/// `..` component, no trailing `/`, as the import system builds them) is split at each `/` in
/// one pass, and the directory through its `n`-th component is a prefix of its bytes; any other
/// goes through `Path`'s parser, as before.
struct Comps<'a> {
    parts: Vec<&'a OsStr>,
    /// The path's bytes when they are exactly `/` + the parts joined by `/`.
    plain: Option<&'a [u8]>,
}

impl<'a> Comps<'a> {
    fn of(path: &'a Path) -> Comps<'a> {
        let b = path.as_os_str().as_bytes();
        if let Some(rest) = b.strip_prefix(b"/") {
            let parts: Vec<&OsStr> = rest.split(|&c| c == b'/').map(OsStr::from_bytes).collect();
            if parts
                .iter()
                .all(|s| !matches!(s.as_bytes(), b"" | b"." | b".."))
            {
                return Comps {
                    parts,
                    plain: Some(b),
                };
            }
        }
        let parts = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(s) => Some(s),
                _ => None,
            })
            .collect();
        Comps { parts, plain: None }
    }

    /// `/` followed by the first `n` components.
    fn through(&self, n: usize) -> PathBuf {
        match self.plain {
            Some(b) => {
                // `/` + each part and its separator, less the last separator.
                let end = self.parts[..n].iter().map(|s| s.len() + 1).sum::<usize>();
                PathBuf::from(OsStr::from_bytes(&b[..end.max(1)]))
            }
            None => std::iter::once(OsStr::new("/"))
                .chain(self.parts[..n].iter().copied())
                .collect(),
        }
    }
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
pub(super) fn top_level(rest: &[&OsStr]) -> Option<String> {
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
    let c = Comps::of(path);
    let Some(name) = c.parts.last().map(|s| s.as_bytes()) else {
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
    if let Some(class) = in_site_packages(&c) {
        return class;
    }
    if let Some(class) = in_stdlib(&c) {
        return class;
    }
    in_process_dirs(path, view)
}

/// A module file under site-packages / dist-packages (the last one: a venv inside a system
/// tree), with the environment's prefix; `None` when the path has no such directory.
fn in_site_packages(comps: &Comps) -> Option<Class> {
    let c = &comps.parts[..];
    let i = c
        .iter()
        .rposition(|s| s.as_bytes() == b"site-packages" || s.as_bytes() == b"dist-packages")?;
    let site_dir = comps.through(i + 1);
    let Some(package) = top_level(&c[i + 1..]) else {
        return Some(Class::Ignore);
    };
    // prefix: strip `lib/pythonX.Y` or `lib/python3` (Debian) and an optional `local`.
    let mut j = i;
    if j >= 2
        && c[j - 2].as_bytes().starts_with(b"lib")
        && c[j - 1].as_bytes().starts_with(b"python")
    {
        j -= 2;
    }
    let prefix = comps.through(j);
    let user = j >= 1 && c[j - 1].as_bytes() == b".local";
    Some(Class::Module(Location {
        package,
        site_dir,
        kind: if user { EnvKind::User } else { EnvKind::System },
        prefix: Some(prefix),
    }))
}

/// A module file of the standard library: `…/lib/pythonX.Y/<mod>` or
/// `…/lib/pythonX.Y/lib-dynload/<ext>`; `None` when the path is under no `lib/pythonX.Y`.
fn in_stdlib(comps: &Comps) -> Option<Class> {
    let c = &comps.parts[..];
    let i = c.windows(2).position(|w| {
        w[0].as_bytes().starts_with(b"lib") && is_versioned_python_dir(w[1].as_bytes())
    })?;
    let mut rest = &c[i + 2..];
    if rest.first().map(|s| s.as_bytes()) == Some(b"lib-dynload") {
        rest = &rest[1..];
    }
    if let Some(package) = top_level(rest) {
        let site_dir = comps.through(i + 2);
        let prefix = comps.through(i);
        return Some(Class::Module(Location {
            package,
            site_dir,
            kind: EnvKind::Stdlib,
            prefix: Some(prefix),
        }));
    }
    Some(Class::Ignore)
}

/// A module file in a directory the process itself put on `sys.path` (its `PYTHONPATH`, its
/// script's directory); the main script is not a module, anything else is unplaced.
fn in_process_dirs(path: &Path, view: &ProcessView) -> Class {
    if view.script.as_deref() == Some(path) {
        return Class::Ignore;
    }
    // A script named relative to a working directory that could not be read (the process
    // gone before its exec was handled) says nothing of where its directory is: taken as
    // one, the empty directory would be a prefix of every path, and every unplaced module
    // would be named after its path's first component.
    let script_dir = view
        .script
        .as_deref()
        .filter(|s| s.is_absolute())
        .and_then(Path::parent);

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

#[cfg(test)]
mod comps_tests {
    use super::*;

    proptest::proptest! {
        /// The one-pass split agrees with `Path`'s parser on every path, plain or not: the same
        /// components, and the same directory through each of them.
        #[test]
        fn comps_are_paths_components(s in "[/._ab]{0,14}") {
            let p = Path::new(&s);
            let want: Vec<&OsStr> = p
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(s) => Some(s),
                    _ => None,
                })
                .collect();
            let c = Comps::of(p);
            proptest::prop_assert_eq!(&c.parts, &want);
            for n in 0..=want.len() {
                let joined: PathBuf = std::iter::once(OsStr::new("/"))
                    .chain(want[..n].iter().copied())
                    .collect();
                proptest::prop_assert_eq!(c.through(n), joined);
            }
        }
    }
}
