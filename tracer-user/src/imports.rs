//! Telling an import from a read, from the opens a thread makes.
//!
//! CPython's import system tries a module's cached bytecode before it reads the source:
//! `D/__pycache__/S.<tag>.pyc` (CPython 3) or `D/S.pyc` right after `D/S.py` (CPython 2). A
//! plain read (`open("x.py")`, `inspect.getsource`, `linecache`, linters, documentation tools)
//! opens the source alone. So, per thread:
//! - a `.pyc` opened successfully is an import (bytecode is only ever loaded to run it);
//! - a `.py` opened right after a probe of its own bytecode is an import (CPython 3; a stale
//!   `.pyc` was already counted and is not counted again);
//! - a `.py` followed by a probe of its own `.pyc` is an import (CPython 2);
//! - any other `.py` is a read;
//! - in a process that imported `py_compile`, a source read as if imported and followed at
//!   once by a write of its bytecode was compiled (`compileall`, `pip install`), not imported:
//!   the decision waits for the thread's next open.
//!
//! Extension modules are recognised elsewhere, by being mapped executable (see
//! `sys_enter_mmap`).
use std::{
    ffi::OsStr,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::{Path, PathBuf},
};

/// What one open meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// This module file was imported.
    Import(PathBuf),
    /// A module source was read without being imported.
    Read,
    /// A module source was compiled to bytecode, not imported.
    Compiled,
}

/// The last open of one thread that the next may complete.
#[derive(Debug, Clone, Default)]
pub struct ThreadImports {
    last: Option<Last>,
    /// An import that a write of its bytecode would turn into a compilation.
    tentative: Option<PathBuf>,
}

#[derive(Debug, Clone)]
enum Last {
    /// A bytecode probe for the source path it names; `true` when it succeeded (and was counted).
    Probe(PathBuf, bool),
    /// A source opened with no probe before it.
    Source(PathBuf),
}

impl ThreadImports {
    /// Feeds one open of this thread: `path` absolute, `ok` whether it succeeded (only `.pyc`
    /// attempts are reported when they fail), `write` whether it was a bytecode write,
    /// `compiling` whether the process has imported `py_compile`, `prefix` its
    /// `PYTHONPYCACHEPREFIX`.
    pub fn feed(
        &mut self,
        path: PathBuf,
        ok: bool,
        write: bool,
        compiling: bool,
        prefix: Option<&Path>,
    ) -> Vec<Step> {
        let mut out = Vec::new();
        if write {
            if let Some(t) = self.tentative.take() {
                let written = written_bytecode_source(&path, prefix);
                out.push(if written.as_ref() == Some(&t) {
                    Step::Compiled
                } else {
                    Step::Import(t)
                });
            }
            return out;
        }
        if let Some(t) = self.tentative.take() {
            out.push(Step::Import(t));
        }
        let name = split(&path).map_or(&b""[..], |(_, n)| n);
        if name.ends_with(b".pyc") {
            let source = source_of_bytecode(&path, prefix);
            match self.last.take() {
                // CPython 2: the source was opened first, then its bytecode tried.
                Some(Last::Source(s)) if Some(&s) == source.as_ref() => {
                    out.push(Step::Import(if ok { path.clone() } else { s }));
                    return out;
                }
                Some(Last::Source(_)) => out.push(Step::Read),
                _ => {}
            }
            if ok {
                out.push(Step::Import(path));
            }
            if let Some(s) = source {
                self.last = Some(Last::Probe(s, ok));
            }
            return out;
        }
        if !ok || !name.ends_with(b".py") {
            return out;
        }
        match self.last.take() {
            Some(Last::Probe(s, counted)) if s == path => {
                if !counted {
                    if compiling {
                        self.tentative = Some(path);
                    } else {
                        out.push(Step::Import(path));
                    }
                }
            }
            Some(Last::Source(_)) => {
                out.push(Step::Read);
                self.last = Some(Last::Source(path));
            }
            _ => self.last = Some(Last::Source(path)),
        }
        out
    }

    /// The import still waiting for the thread's next open (at process end it was one).
    pub fn flush(&mut self) -> Option<PathBuf> {
        self.tentative.take()
    }

    /// Whether a source read is still waiting for a probe that would make it an import (at
    /// process end it was a read).
    pub fn pending_read(&self) -> bool {
        matches!(self.last, Some(Last::Source(_)))
    }
}

/// `path`'s parent and file name, as `Path::parent` and `Path::file_name` give them. Every
/// open takes a few of these, and `Path`'s component parser was a tenth of the import path's
/// CPU (a byte-at-a-time loop after it, a third of the process table's): a plain absolute
/// path (no empty, `.` or `..` component, no trailing `/`, as the import system builds them)
/// is split at its last `/` (one vector pass checks that it is plain, `memrchr` finds the
/// `/`); any other goes through `Path`.
pub fn split(path: &Path) -> Option<Split<'_>> {
    let b = path.as_os_str().as_bytes();
    if let Some(last) = plain_last_slash(b) {
        let parent = if last == 0 { &b[..1] } else { &b[..last] };
        return Some((Path::new(OsStr::from_bytes(parent)), &b[last + 1..]));
    }
    Some((path.parent()?, path.file_name()?.as_bytes()))
}

/// A directory and a file name in it, as [`split`] gives them.
pub type Split<'a> = (&'a Path, &'a [u8]);

/// [`split`] of `path`, and [`split`] of its parent: the parent of a plain path is plain
/// (or `/`), so its split is one `memrchr`, not a second scan.
pub fn split_twice(path: &Path) -> Option<(&Path, &[u8], Option<Split<'_>>)> {
    let b = path.as_os_str().as_bytes();
    let Some(last) = plain_last_slash(b) else {
        let (dir, name) = split(path)?;
        return Some((dir, name, split(dir)));
    };
    let name = &b[last + 1..];
    if last == 0 {
        return Some((Path::new("/"), name, None));
    }
    let dir = &b[..last];
    let up = memchr::memrchr(b'/', dir).map(|j| {
        let above = if j == 0 { &dir[..1] } else { &dir[..j] };
        (Path::new(OsStr::from_bytes(above)), &dir[j + 1..])
    });
    Some((Path::new(OsStr::from_bytes(dir)), name, up))
}

/// The index of the last `/` of a plain absolute path (see [`split`]); `None` for any other.
fn plain_last_slash(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&b'/') || b.last() == Some(&b'/') || has_odd_component(b) {
        return None;
    }
    memchr::memrchr(b'/', b)
}

/// Whether a `/` in `b` starts an empty, `.` or `..` component (the end of `b` counts as a
/// `/`). One pass without an early exit, which the compiler turns into vector compares: a
/// byte loop that stopped at each separator was a third of the process table's CPU, and a
/// `memchr` per separator or a `memmem` per pattern cost about as much again, paths'
/// components being shorter than a vector.
fn has_odd_component(b: &[u8]) -> bool {
    let odd = |c0: u8, c1: u8, c2: u8, c3: u8| {
        (c0 == b'/')
            & ((c1 == b'/') | ((c1 == b'.') & ((c2 == b'/') | ((c2 == b'.') & (c3 == b'/')))))
    };
    let n = b.len();
    let mut bad = false;
    if n >= 4 {
        let (b0, b1, b2, b3) = (&b[..n - 3], &b[1..n - 2], &b[2..n - 1], &b[3..]);
        for i in 0..n - 3 {
            bad |= odd(b0[i], b1[i], b2[i], b3[i]);
        }
    }
    // The last three bytes, the end standing for a `/`.
    let at = |i: usize| b.get(i).copied().unwrap_or(b'/');
    let from = n.saturating_sub(3);
    for (i, &c) in b.iter().enumerate().skip(from) {
        bad |= odd(c, at(i + 1), at(i + 2), at(i + 3));
    }
    bad
}

/// The source a bytecode file caches: `D/__pycache__/S.<tag>[.opt-N].pyc` → `D/S.py`;
/// `<prefix>/D/S.<tag>.pyc` → `/D/S.py` under a `PYTHONPYCACHEPREFIX`; `D/S.pyc` → `D/S.py`.
pub fn source_of_bytecode(pyc: &Path, prefix: Option<&Path>) -> Option<PathBuf> {
    let (dir, name, up) = split_twice(pyc)?;
    // Built as bytes in one allocation: this runs for every bytecode file a process opens.
    let source = |dir: &[u8], stem: &[u8]| {
        let mut b = Vec::with_capacity(dir.len() + stem.len() + 4);
        b.extend_from_slice(dir);
        if !dir.ends_with(b"/") {
            b.push(b'/');
        }
        b.extend_from_slice(stem);
        b.extend_from_slice(b".py");
        PathBuf::from(std::ffi::OsString::from_vec(b))
    };
    let tagged_stem = || name.iter().position(|&c| c == b'.').map(|e| &name[..e]);
    if let Some(rel) = prefix.and_then(|p| dir.strip_prefix(p).ok()) {
        let mut d = b"/".to_vec();
        d.extend_from_slice(rel.as_os_str().as_bytes());
        return Some(source(&d, tagged_stem()?));
    }
    let (above, dir_name) = up.unwrap_or((dir, b""));
    if dir_name == b"__pycache__" {
        Some(source(above.as_os_str().as_bytes(), tagged_stem()?))
    } else {
        Some(source(
            dir.as_os_str().as_bytes(),
            name.strip_suffix(b".pyc")?,
        ))
    }
}

/// The source whose bytecode is being written: `D/__pycache__/S.<tag>.pyc[.<n>]` → `D/S.py`.
fn written_bytecode_source(path: &Path, prefix: Option<&Path>) -> Option<PathBuf> {
    let name = path.file_name()?.as_encoded_bytes();
    let end = name.windows(4).rposition(|w| w == b".pyc")? + 4;
    source_of_bytecode(&path.with_file_name(path_from_bytes(&name[..end])), prefix)
}

/// The directory a module file belongs to (its `__pycache__`'s parent for bytecode).
pub fn module_dir(file: &Path) -> Option<&Path> {
    module_place(file).map(|(dir, _)| dir)
}

/// [`module_dir`], and whether the file is its package's `__init__` (two splits, not four:
/// every import asks both).
pub fn module_place(file: &Path) -> Option<(&Path, bool)> {
    let (dir, name, up) = split_twice(file)?;
    let init = name.starts_with(b"__init__.");
    match up {
        Some((above, b"__pycache__")) => Some((above, init)),
        _ => Some((dir, init)),
    }
}

/// Directory of a package whose `__init__` this module file is.
pub fn init_dir(file: &Path) -> Option<PathBuf> {
    module_place(file).and_then(|(dir, init)| init.then(|| dir.to_path_buf()))
}

/// `*.so`: an extension module or a shared library, loaded only if mapped executable.
pub fn is_shared_object(name: &[u8]) -> bool {
    name.ends_with(b".so")
}

/// Archives on `sys.path` (`.zip`, `.egg`), zipapps (`.pyz`) and wheels.
pub fn is_archive(name: &[u8]) -> bool {
    [&b".zip"[..], b".egg", b".pyz", b".whl"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// Builds a path from raw bytes (paths need not be UTF-8).
pub fn path_from_bytes(b: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The one-pass split agrees with `Path` on every path, plain or not.
        #[test]
        fn split_is_paths_parent_and_file_name(s in "[/._ab]{0,12}") {
            let p = Path::new(&s);
            let want = p.parent().zip(p.file_name().map(OsStr::as_bytes));
            proptest::prop_assert_eq!(split(p), want);
        }
    }

    /// Every path of up to eight bytes over `/`, `.` and `a` (the cases the vector scans
    /// single out: `//`, `/.`, `/..`, hidden names, trailing separators) splits as `Path` does.
    #[test]
    fn split_is_paths_parent_and_file_name_on_every_short_path() {
        let mut paths = vec![String::new()];
        let mut last = paths.clone();
        for _ in 0..8 {
            last = last
                .iter()
                .flat_map(|p| ['/', '.', 'a'].map(|c| format!("{p}{c}")))
                .collect();
            paths.extend(last.iter().cloned());
        }
        for s in &paths {
            let p = Path::new(s);
            let want = p.parent().zip(p.file_name().map(OsStr::as_bytes));
            assert_eq!(split(p), want, "{s:?}");
            let twice = split(p).map(|(d, n)| (d, n, split(d)));
            assert_eq!(split_twice(p), twice, "{s:?}");
        }
        assert_eq!(paths.len(), 9841);
    }

    fn feed(t: &mut ThreadImports, p: &str, ok: bool) -> Vec<Step> {
        t.feed(PathBuf::from(p), ok, false, false, None)
    }

    #[test]
    fn a_source_read_then_its_bytecode_written_was_compiled_once_py_compile_is_loaded() {
        let mut t = ThreadImports::default();
        let probe = |t: &mut ThreadImports, m: &str| {
            t.feed(
                format!("/a/__pycache__/{m}.cpython-311.pyc").into(),
                false,
                false,
                true,
                None,
            )
        };
        assert!(probe(&mut t, "m").is_empty());
        assert!(t.feed("/a/m.py".into(), true, false, true, None).is_empty());
        assert_eq!(
            t.feed(
                "/a/__pycache__/m.cpython-311.pyc.1403".into(),
                true,
                true,
                true,
                None
            ),
            vec![Step::Compiled]
        );
        // Imported (its own next import follows), not compiled.
        assert!(probe(&mut t, "n").is_empty());
        assert!(t.feed("/a/n.py".into(), true, false, true, None).is_empty());
        assert_eq!(probe(&mut t, "o"), vec![Step::Import("/a/n.py".into())]);
        assert!(t.feed("/a/o.py".into(), true, false, true, None).is_empty());
        assert_eq!(t.flush(), Some("/a/o.py".into()));
    }

    #[test]
    fn probe_then_source_is_an_import_plain_read_is_not() {
        let mut t = ThreadImports::default();
        assert!(feed(&mut t, "/a/__pycache__/m.cpython-311.pyc", false).is_empty());
        assert_eq!(
            feed(&mut t, "/a/m.py", true),
            vec![Step::Import("/a/m.py".into())]
        );
        assert!(feed(&mut t, "/a/n.py", true).is_empty());
        assert_eq!(feed(&mut t, "/a/o.py", true), vec![Step::Read]);
        assert!(t.pending_read());
    }

    #[test]
    fn bytecode_counts_once_even_when_stale() {
        let mut t = ThreadImports::default();
        let pyc = "/a/__pycache__/m.cpython-311.opt-1.pyc";
        assert_eq!(feed(&mut t, pyc, true), vec![Step::Import(pyc.into())]);
        assert!(feed(&mut t, "/a/m.py", true).is_empty());
        assert!(!t.pending_read());
    }

    #[test]
    fn python2_source_then_bytecode() {
        let mut t = ThreadImports::default();
        assert!(feed(&mut t, "/l/site.py", true).is_empty());
        assert_eq!(
            feed(&mut t, "/l/site.pyc", true),
            vec![Step::Import("/l/site.pyc".into())]
        );
        assert!(feed(&mut t, "/l/os.py", true).is_empty());
        assert_eq!(
            feed(&mut t, "/l/os.pyc", false),
            vec![Step::Import("/l/os.py".into())]
        );
    }

    #[test]
    fn a_probe_for_another_module_does_not_make_a_read_an_import() {
        let mut t = ThreadImports::default();
        feed(&mut t, "/a/__pycache__/x.cpython-311.pyc", false);
        assert!(feed(&mut t, "/a/y.py", true).is_empty());
        assert_eq!(
            feed(&mut t, "/a/__pycache__/z.cpython-311.pyc", false),
            vec![Step::Read]
        );
    }

    #[test]
    fn pycache_prefix_pairs_bytecode_with_its_source() {
        let mut t = ThreadImports::default();
        let pre = Some(Path::new("/scratch/pyc"));
        let probe = "/scratch/pyc/home/u/m.cpython-311.pyc";
        assert!(t.feed(probe.into(), false, false, false, pre).is_empty());
        assert_eq!(
            t.feed("/home/u/m.py".into(), true, false, false, pre),
            vec![Step::Import("/home/u/m.py".into())]
        );
        assert_eq!(
            source_of_bytecode(Path::new(probe), pre),
            Some("/home/u/m.py".into())
        );
    }

    #[test]
    fn bytecode_and_init_paths() {
        assert_eq!(
            source_of_bytecode(
                Path::new("/d/__pycache__/_sysconfigdata__x86_64-linux-gnu.cpython-311.pyc"),
                None
            ),
            Some("/d/_sysconfigdata__x86_64-linux-gnu.py".into())
        );
        assert_eq!(
            init_dir(Path::new("/d/p/__pycache__/__init__.cpython-311.pyc")),
            Some("/d/p".into())
        );
        assert_eq!(init_dir(Path::new("/d/p/__init__.py")), Some("/d/p".into()));
        assert_eq!(init_dir(Path::new("/d/p/m.py")), None);
    }
}
