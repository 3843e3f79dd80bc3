//! What a live process loads: its opens (fed to the import-signature state of their thread,
//! or, for shared objects, archives, `libpython` and BLAS, judged by name), the mappings that
//! show a shared object loaded, and each imported module file classified, resolved and counted.
//!
//! Separate because this is the hot path: most events are opens, and most opens land in a
//! package already seen.
use std::{
    ffi::OsString,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::{Path, PathBuf},
};

use std::collections::hash_map::Entry;
use tracer_common::user::OpenInfo;

use super::{
    in_package, without_dots, Fidelity, PackageSeen, ProcFacts, ProcTable, Process, Seen, Shared,
    ENTRY_BYTES,
};
use crate::{
    imports::{self, Step, ThreadImports},
    resolver::{classify, classify_unplaced, python_version_of, Class, Resolved},
};

/// `AT_FDCWD`.
const AT_FDCWD: i32 = -100;
/// Set in the thread key of the preload library's opens (thread ids stay below 2^22).
const PRELOAD_THREAD: u32 = 1 << 31;

impl ProcTable {
    /// One open (or failed bytecode probe): fed to the process's import-signature state.
    pub(super) fn open(&mut self, mut o: OpenInfo, facts: &dyn ProcFacts, by: Seen) {
        if by == Seen::Preload {
            o.tid |= PRELOAD_THREAD;
        }
        let at = self.wall(o.ktime_ns);
        let Some(p) = self.procs.get_mut(&o.tgid) else {
            return;
        };
        let rel = PathBuf::from(OsString::from_vec(std::mem::take(&mut o.path)));
        let Some(path) = absolute(rel, &o, p, facts) else {
            self.fidelity.relative_unresolved += 1;
            return;
        };
        // The file the kernel opened (from the descriptor): what is recorded. The path as
        // passed, read from the process's memory, is what the import system's probe-then-read
        // sequence is paired on; the two differ through symbolic links, or when a thread
        // rewrote the buffer while the open blocked.
        let Some(opened) = kernel_path(&o, &path, &mut self.fidelity) else {
            return;
        };
        let name = imports::split(&path).map_or(&b""[..], |(_, n)| n);
        let truth = |p: PathBuf| recorded_path(&opened, p);
        if o.ret >= 0 {
            if !p.verified && name.starts_with(b"libpython") {
                p.libpython_fd = Some(o.ret);
                return;
            }
            if let Some(b) = crate::resolver::blas_kind(name) {
                p.blas.get_or_insert(b);
                return;
            }
            if imports::is_shared_object(name) {
                let path = truth(path);
                if by == Seen::Preload
                    && p.python_version
                        .as_deref()
                        .is_some_and(|v| v.starts_with("2."))
                {
                    // CPython 2's import system opens an extension module (`fopen`) right
                    // before it loads it; the library cannot see the mapping that follows.
                    Self::import(&mut self.shared, p, &path, at, by);
                    return;
                }
                if !p.pending_so.contains_key(&o.ret)
                    && !self.shared.charge(p, path.as_os_str().len() + ENTRY_BYTES)
                {
                    return;
                }
                if p.pending_so.insert(o.ret, (path, at)).is_some() {
                    self.fidelity.so_not_mapped += 1;
                }
                return;
            }
            if imports::is_archive(name) {
                let path = truth(path);
                if !p.archives.contains_key(&path)
                    && !self.shared.charge(p, path.as_os_str().len() + ENTRY_BYTES)
                {
                    return;
                }
                let n = p.archives.entry(path.clone()).or_insert(0);
                *n += 1;
                // `zipimport` opens the archive to read its directory, then again for every
                // module it loads: a second open is the first import from it.
                if *n == 2 {
                    Self::import(&mut self.shared, p, &path, at, by);
                }
                return;
            }
        }
        Self::feed(
            &mut self.shared,
            &mut self.fidelity,
            p,
            &o,
            path,
            &opened,
            at,
        );
    }

    /// Feeds an open to its thread's import-signature state and acts on the steps it yields:
    /// imports recorded (with the kernel's path for this open's file when it differs), reads,
    /// compilations and ambiguous opens counted.
    fn feed(
        shared: &mut Shared,
        fidelity: &mut Fidelity,
        p: &mut Process,
        o: &OpenInfo,
        path: PathBuf,
        opened: &Option<PathBuf>,
        at: i64,
    ) {
        // The library's opens (interpreters without audit hooks) repeat the kernel's when
        // both run: each collector's sequence is judged on its own thread state.
        let by = match o.tid & PRELOAD_THREAD {
            0 => Seen::Kernel,
            _ => Seen::Preload,
        };
        // The library's thread ids are the process's word: each new thread is charged.
        let thread = match p.threads.entry(o.tid) {
            Entry::Occupied(t) => t.into_mut(),
            Entry::Vacant(v) => {
                if !Shared::charge_parts(
                    &mut shared.uid_bytes,
                    &mut shared.state_bounded,
                    &mut p.bytes,
                    p.uid,
                    ENTRY_BYTES,
                ) {
                    return;
                }
                v.insert(ThreadImports::default())
            }
        };
        let prefix = p.view.pycache_prefix.as_deref();
        // Only when the kernel's path differs (rare) is this open's path kept to swap it in.
        let this = opened.is_some().then(|| path.clone());
        let steps = thread.feed(path, o.ret >= 0, o.write, p.compiling, prefix);
        for step in steps {
            let step = match step {
                Step::Import(f) if this.as_ref() == Some(&f) => {
                    Step::Import(recorded_path(opened, f))
                }
                s => s,
            };
            match step {
                Step::Import(file) if p.compiling && p.compiles(&file) => {
                    fidelity.compile_ambiguous += 1;
                }
                Step::Import(file) => {
                    Self::import(shared, p, &file, at, by);
                }
                Step::Read => fidelity.reads_not_imports += 1,
                Step::Compiled => fidelity.compiled_not_imported += 1,
            }
        }
    }

    /// A descriptor was mapped executable: the shared object last opened on it was loaded.
    pub(super) fn map_exec(&mut self, tgid: u32, fd: i32, at: i64) {
        let Some(p) = self.procs.get_mut(&tgid) else {
            return;
        };
        if p.libpython_fd == Some(fd) {
            p.verified = true;
            p.libpython_fd = None;
            return;
        }
        if let Some((path, opened)) = p.pending_so.remove(&fd) {
            Self::import(&mut self.shared, p, &path, opened.min(at), Seen::Kernel);
        }
    }

    /// Records one imported module file of a process, as seen by `by`; returns the index of its
    /// package in `p.packages` (`None`: not a package's module, or a bound was reached).
    pub(super) fn import(
        ctx: &mut Shared,
        p: &mut Process,
        file: &Path,
        at: i64,
        by: Seen,
    ) -> Option<usize> {
        let Shared {
            resolver,
            elf,
            uid_bytes,
            state_bounded,
        } = ctx;
        if by != Seen::Sampled {
            // An import runs a module body, whose code object is freed after it: the addresses
            // of code objects sampled so far may now be another module's.
            p.samples.forget_code();
        }
        // Bytecode under a PYTHONPYCACHEPREFIX is placed where its source is.
        let source = p.view.pycache_prefix.as_deref().and_then(|pre| {
            file.starts_with(pre)
                .then(|| imports::source_of_bytecode(file, Some(pre)))
                .flatten()
        });
        let path = source.as_deref().unwrap_or(file);
        let place = imports::module_place(path);
        if let Some((dir, true)) = place {
            if !p.init_dirs.contains(dir) {
                let n = dir.as_os_str().len() + ENTRY_BYTES;
                if !Shared::charge_parts(uid_bytes, state_bounded, &mut p.bytes, p.uid, n) {
                    return None;
                }
                p.init_dirs.insert(dir.to_path_buf());
            }
        }
        let module_dir = place.map(|(dir, _)| dir);
        if let Some(&i) = module_dir.and_then(|d| p.dirs.get(d.as_os_str())) {
            p.packages[i].count(by, at);
            return Some(i);
        }
        let (class, unplaced) = match classify(path, &p.view) {
            Class::Unplaced => {
                let root = p.root();
                let is_extension = |so: &Path, stem: &str| {
                    let host = root.dir.join(so.strip_prefix("/").unwrap_or(so));
                    elf.exports(&host, &format!("PyInit_{stem}"))
                        || elf.exports(&host, &format!("init{stem}"))
                };
                (classify_unplaced(path, &p.init_dirs, is_extension), true)
            }
            c => (c, false),
        };
        let Class::Module(loc) = class else {
            return None;
        };
        if loc.package == "py_compile" && loc.kind == crate::resolver::EnvKind::Stdlib {
            p.compiling = true;
        }
        if p.python_version.is_none() {
            p.python_version = python_version_of(path);
        }
        // Only directories inside the package's own tree (not `lib-dynload`, not the site
        // directory itself, whose files are each their own top-level module).
        let cache_dir = |p: &mut Process, i: usize, ub: &mut _, sb: &mut u64| {
            if let Some(d) = module_dir.filter(|d| in_package(d, &loc.site_dir, &loc.package)) {
                let n = d.as_os_str().len() + ENTRY_BYTES;
                if Shared::charge_parts(ub, sb, &mut p.bytes, p.uid, n) {
                    p.dirs.insert(d.as_os_str().to_owned(), i);
                }
            }
        };
        if let Some(&i) = p.index.get(&loc.package) {
            p.packages[i].count(by, at);
            cache_dir(p, i, uid_bytes, state_bounded);
            return Some(i);
        }
        // A new package: its first path, its name twice (index, record) and its resolution.
        let n = file.as_os_str().len() + 2 * loc.package.len() + 4 * ENTRY_BYTES;
        if !Shared::charge_parts(uid_bytes, state_bounded, &mut p.bytes, p.uid, n) {
            return None;
        }
        let root = p.root();
        let mut resolved = resolver.resolve(&loc, path, &root, p.in_container, &p.creds);
        if unplaced {
            use crate::resolver::EnvKind;
            let sites: Vec<(PathBuf, Resolved)> = p
                .sites
                .iter()
                .filter(|(_, r)| !matches!(r.env_kind, EnvKind::Stdlib | EnvKind::Unknown))
                .cloned()
                .collect();
            if let Some(r) = resolver.editable(&loc.package, &sites, &root, &p.creds) {
                resolved = r;
            }
        } else if !p.sites.iter().any(|(s, _)| *s == loc.site_dir) {
            p.sites.push((loc.site_dir.clone(), resolved.clone()));
        }
        let i = p.packages.len();
        cache_dir(p, i, uid_bytes, state_bounded);
        p.index.insert(loc.package.clone(), i);
        let mut seen = PackageSeen {
            resolved,
            first_path: file.to_string_lossy().into_owned(),
            n_files: 0,
            n_preload: 0,
            first_seen: at,
            atexit: false,
        };
        seen.count(by, at);
        p.packages.push(seen);
        Some(i)
    }
}

/// The absolute path of an open: as passed, or joined to the directory it is relative to (the
/// process's working directory, live or else as it was at exec; or the directory descriptor's).
/// `None` when that directory can no longer be read.
fn absolute(rel: PathBuf, o: &OpenInfo, p: &Process, facts: &dyn ProcFacts) -> Option<PathBuf> {
    if rel.is_absolute() {
        return Some(rel);
    }
    let base = if o.dfd == AT_FDCWD {
        // Live, else as it was at exec (a process that already exited).
        facts.cwd(o.tgid).or_else(|| p.cwd.clone())
    } else {
        facts.fd_path(o.tgid, o.dfd)
    };
    base.map(|b| without_dots(&b.join(rel)))
}

/// The file the kernel opened when it is not at `path` as passed (counted): `Some(None)` when
/// it is, `None` when what was opened is unknown (counted; the open is not used).
fn kernel_path(o: &OpenInfo, path: &Path, fidelity: &mut Fidelity) -> Option<Option<PathBuf>> {
    if o.opened_is(path.as_os_str().as_bytes()) {
        Some(None)
    } else if o.opened_partial {
        // Deeper than the kernel's walk, and not ending as the kernel says: what was
        // opened is unknown, and the passed path cannot be trusted.
        fidelity.opened_unverified += 1;
        None
    } else {
        fidelity.opened_elsewhere += 1;
        Some(
            o.opened_path()
                .map(|k| PathBuf::from(OsString::from_vec(k))),
        )
    }
}

/// What is recorded for a path from this open: the kernel's file when it differs.
fn recorded_path(opened: &Option<PathBuf>, p: PathBuf) -> PathBuf {
    match opened {
        Some(k) => k.clone(),
        None => p,
    }
}
