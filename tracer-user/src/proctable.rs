//! The process table: Python processes keyed by pid, built only from exec/fork/exit events
//! in ring-buffer order (never from lazy `/proc` look-ups, which race with PID reuse: the exit
//! of a pid always precedes the fork that reuses it). Each process collects the packages its
//! *imports* resolve to; when it ends, it is handed back as a [`Finished`] process.
//!
//! An open is an import only when it carries the import system's signature (see
//! [`crate::imports`]); plain reads of module files are counted in [`Fidelity`], never recorded.
use std::{
    collections::HashSet,
    ffi::OsString,
    os::unix::{
        ffi::{OsStrExt, OsStringExt},
        fs::OpenOptionsExt,
        io::AsRawFd,
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use ahash::AHashMap as HashMap;

use serde::{Deserialize, Serialize};
use tracer_common::user::{Event, ExecInfo, OpenInfo};

use crate::{
    attribution::{python_main, version_from_executable, Attribution, CgroupJob},
    imports::{self, Step, ThreadImports},
    resolver::{
        classify, classify_unplaced, path_from_bytes, python_version_of, Class, ProcessView,
        Resolved, Resolver, Root,
    },
    untrusted::Creds,
};

/// What the table saw that it did not record, so a centre can see what capture cannot tell
/// apart (reported in `status.json` as `fidelity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fidelity {
    /// Module sources opened without the import system's bytecode probe first: reads
    /// (linters, `inspect`, `linecache`, documentation tools), not imports.
    pub reads_not_imports: u64,
    /// Module sources compiled, not imported: read as if imported, then their bytecode written
    /// at once, by a process that had imported `py_compile` (`pip install`, `compileall`).
    pub compiled_not_imported: u64,
    /// Import-like opens by `python -m compileall` / `-m py_compile` once `py_compile` is
    /// loaded: checking that bytecode is fresh opens it just as importing it does, so these
    /// are not recorded.
    pub compile_ambiguous: u64,
    /// Extension modules opened but never mapped executable (read as data, not loaded).
    pub so_not_mapped: u64,
    /// Relative opens whose directory could no longer be read from `/proc` (process gone).
    pub relative_unresolved: u64,
    /// Archives opened only once by a process (`zipfile` reads, not `zipimport`).
    pub archive_single_opens: u64,
    /// Python processes seeded from `/proc` at daemon start.
    pub seeded_processes: u64,
    /// Processes the kernel promoted (they tried a file CPython tries) whose program and
    /// libraries turned out not to be an interpreter: not recorded.
    pub promotions_not_python: u64,
    /// Processes whose environment named another Slurm job than their cgroup: the cgroup's job
    /// was recorded and the environment's job variables dropped.
    pub job_env_rejected: u64,
    /// Opens whose file, as the kernel resolved it, is not at the path the process passed
    /// (a symbolic link on the way, a chroot, or a buffer rewritten during the open): the
    /// kernel's path is the one recorded.
    pub opened_elsewhere: u64,
    /// Opens of files deeper than the kernel's path walk whose passed path does not end as the
    /// kernel's: not used (nothing trustworthy says what was opened).
    pub opened_unverified: u64,
}

/// One package seen in one process.
#[derive(Debug, Clone)]
pub struct PackageSeen {
    /// Resolution of its first module file.
    pub resolved: Resolved,
    /// First module file opened.
    pub first_path: String,
    /// Module files opened.
    pub n_files: u32,
    /// Wall-clock µs of the first open.
    pub first_seen: i64,
}

/// A live Python process.
#[derive(Debug, Clone)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// First Python process of the tree.
    pub root_pid: u32,
    /// Exec (or fork) time, wall-clock µs.
    pub start: i64,
    /// Interpreter path as executed.
    pub executable: String,
    /// `3.11`.
    pub python_version: Option<String>,
    /// Script, `-c`, `-m mod`.
    pub main: Option<String>,
    /// Real uid.
    pub uid: u32,
    /// Its user's uid and groups: the metadata it could read is all that is used for it.
    creds: Creds,
    /// In another mount namespace than the daemon's.
    pub in_container: bool,
    /// Its mount namespace (inode).
    mnt_ns: u32,
    /// Its working directory when first seen.
    cwd: Option<PathBuf>,
    /// For another mount namespace: its root directory, opened (`O_PATH`) when first seen.
    root_dir: Option<Arc<std::fs::File>>,
    /// Job attribution captured at exec.
    pub attribution: Arc<Attribution>,
    /// BLAS backend seen.
    pub blas: Option<&'static str>,
    /// Packages in order of first open.
    pub packages: Vec<PackageSeen>,
    /// Seeded from `/proc` at daemon start rather than seen starting.
    pub seeded: bool,
    /// Known to be an interpreter. A process promoted for opening `libpython` is not, until it
    /// maps it executable (the descriptor is `libpython_fd`) or `/proc` shows it: one that only
    /// read the library (`cat`) ends without records.
    verified: bool,
    libpython_fd: Option<i32>,
    /// Resolver view (PYTHONPATH, script).
    view: Arc<ProcessView>,
    index: HashMap<String, usize>,
    /// Per-thread import-signature state.
    threads: HashMap<u32, ThreadImports>,
    /// Shared objects opened and not yet mapped executable, by descriptor.
    pending_so: HashMap<i32, (PathBuf, i64)>,
    /// Directories whose `__init__` this process imported: the package structure that says
    /// where a top-level package starts outside any known layout.
    init_dirs: HashSet<PathBuf>,
    /// Opens per archive (`zipimport` opens its archive once per module it loads).
    archives: HashMap<PathBuf, u32>,
    /// The process imported `py_compile`: later import-like opens may be compilation.
    compiling: bool,
    /// For `python -m compileall` / `-m py_compile`: the trees it was asked to compile (empty:
    /// all of `sys.path`), whose import-like opens are ambiguous once `py_compile` is loaded.
    compile_targets: Option<Vec<PathBuf>>,
    /// Site directories it imported from, with their environment (for editable installs).
    sites: Vec<(PathBuf, Resolved)>,
    /// Package directories below a site directory → index in `packages`: every further module
    /// file in one is counted without being classified again (most of a process's imports).
    /// Keyed by the bytes: `Path`'s own hash walks components.
    dirs: HashMap<OsString, usize>,
}

impl Process {
    /// Where this process's files are read from: its root directory, held open from when it
    /// was first seen (so a short-lived container process's files stay readable after it
    /// exits), for another mount namespace.
    fn root(&self) -> Root {
        if !self.in_container {
            return Root::host();
        }
        let dir = match &self.root_dir {
            Some(f) => PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())),
            None => PathBuf::from(format!("/proc/{}/root", self.pid)),
        };
        Root {
            dir,
            ns: self.mnt_ns,
        }
    }

    /// Whether `file` is in what this `compileall`/`py_compile` process was asked to compile.
    fn compiles(&self, file: &Path) -> bool {
        match &self.compile_targets {
            None => false,
            Some(t) if t.is_empty() => true,
            Some(t) => t.iter().any(|d| file.starts_with(d)),
        }
    }
}

/// The paths `python -m compileall|py_compile [options] PATH…` compiles, absolute; `None` for
/// any other command line.
fn compile_targets(args: &[u8], cwd: Option<&Path>) -> Option<Vec<PathBuf>> {
    let argv: Vec<&[u8]> = args.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
    let m = argv.iter().position(|a| *a == b"-m")?;
    if !matches!(
        argv.get(m + 1).copied(),
        Some(b"compileall" | b"py_compile")
    ) {
        return None;
    }
    // compileall's options that take a value.
    const VALUED: [&[u8]; 9] = [
        b"-d", b"-s", b"-p", b"-x", b"-i", b"-j", b"-r", b"-o", b"-e",
    ];
    let mut out = Vec::new();
    let mut i = m + 2;
    while i < argv.len() {
        let a = argv[i];
        if VALUED.contains(&a) || a == b"--invalidation-mode" {
            i += 2;
            continue;
        }
        if !a.starts_with(b"-") {
            let p = path_from_bytes(a);
            out.push(match cwd {
                Some(c) if p.is_relative() => without_dots(&c.join(p)),
                _ => p,
            });
        }
        i += 1;
    }
    Some(out)
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `exit(code)` / return from main / `os._exit(code)`.
    Exited(i32),
    /// Killed by a signal (number).
    Signaled(i32),
    /// Unknown (exit code unreadable, image replaced by a non-Python exec, or vanished).
    Unknown,
    /// Still running (periodic flush).
    Running,
}

impl Ending {
    /// Decodes the kernel's `task->exit_code` (`u32::MAX` = unreadable).
    pub fn from_exit_code(code: u32) -> Ending {
        if code == u32::MAX {
            return Ending::Unknown;
        }
        match code & 0x7f {
            0 => Ending::Exited(((code >> 8) & 0xff) as i32),
            sig => Ending::Signaled(sig as i32),
        }
    }
}

/// A process that ended, with its packages.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The process.
    pub process: Process,
    /// How it ended.
    pub ending: Ending,
    /// When (wall-clock µs); `None` for [`Ending::Running`].
    pub end: Option<i64>,
}

/// Edge facts the table may ask for at exec (kept behind a trait so tests drive the core with
/// recorded event streams).
pub trait ProcFacts {
    /// Current directory of a live process (for a relative script path).
    fn cwd(&self, pid: u32) -> Option<PathBuf>;
    /// `/proc/<pid>/cgroup` text.
    fn cgroup(&self, pid: u32) -> Option<String>;
    /// The path of directory descriptor `fd` of a live process (for `openat(dirfd, rel)`).
    fn fd_path(&self, pid: u32, fd: i32) -> Option<PathBuf>;
    /// The program a live process runs (`/proc/<pid>/exe`).
    fn exe(&self, pid: u32) -> Option<PathBuf>;
    /// Supplementary groups of a live process (`Groups:` of `/proc/<pid>/status`), for
    /// deciding what metadata its user could read.
    fn groups(&self, _pid: u32) -> Vec<u32> {
        Vec::new()
    }
    /// Whether a live process is a CPython interpreter (its program or a mapped `libpython`
    /// exports `Py_Initialize`); `None` when it can no longer be read (it exited).
    fn is_interpreter(&self, pid: u32, elf: &mut crate::elf::ElfCache) -> Option<bool>;
}

/// Reads facts from `/proc`.
pub struct ProcFs;

impl ProcFacts for ProcFs {
    fn cwd(&self, pid: u32) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
    }
    fn cgroup(&self, pid: u32) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
    }
    fn fd_path(&self, pid: u32, fd: i32) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()
    }
    fn exe(&self, pid: u32) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{pid}/exe")).ok()
    }
    fn groups(&self, pid: u32) -> Vec<u32> {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return Vec::new();
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .map(|g| {
                g.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
    fn is_interpreter(&self, pid: u32, elf: &mut crate::elf::ElfCache) -> Option<bool> {
        is_interpreter(Path::new(&format!("/proc/{pid}")), elf)
    }
}

/// Whether the process at `/proc/<pid>` (`base`) is a CPython interpreter: its program defines
/// or calls CPython's embedding entry points, or it maps a `libpython*` that defines them.
/// `None` when `/proc` no longer has it.
pub fn is_interpreter(base: &Path, elf: &mut crate::elf::ElfCache) -> Option<bool> {
    // The program first: it settles most interpreters without reading `maps`.
    if elf.exports(&base.join("exe"), "Py_Initialize") {
        return Some(true);
    }
    let maps = std::fs::read_to_string(base.join("maps")).ok()?;
    let root = base.join("root");
    let found = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"libpython"))
        })
        .any(|p| elf.exports(&root.join(p.trim_start_matches('/')), "Py_Initialize"));
    Some(found)
}

/// What resolving imports reads from files, cached across processes.
struct Shared {
    resolver: Resolver,
    elf: crate::elf::ElfCache,
}

/// How long after its promotion a process that opened `libpython` is checked for mapping it.
pub const VERIFY_AFTER_US: i64 = 100_000;

/// `AT_FDCWD`.
const AT_FDCWD: i32 = -100;

/// The table.
pub struct ProcTable {
    procs: HashMap<u32, Process>,
    /// Root pid of Python processes whose image was just replaced by an exec, until the new
    /// image shows it is Python (or the pid is reaped).
    replaced: HashMap<u32, u32>,
    /// Processes promoted for opening `libpython`, with their start, until checked.
    unverified: Vec<(u32, i64)>,
    shared: Shared,
    fidelity: Fidelity,
    /// Add to boot-clock ns / 1000 to get wall-clock µs.
    boot_to_wall_us: i64,
    host_mnt_ns: u32,
}

impl ProcTable {
    /// A new table. `boot_to_wall_us` converts `bpf_ktime_get_boot_ns` to wall time;
    /// `host_mnt_ns` is the daemon's mount namespace inode.
    pub fn new(boot_to_wall_us: i64, host_mnt_ns: u32) -> ProcTable {
        ProcTable {
            procs: HashMap::new(),
            replaced: HashMap::new(),
            unverified: Vec::new(),
            shared: Shared {
                resolver: Resolver::new(),
                elf: crate::elf::ElfCache::new(),
            },
            fidelity: Fidelity::default(),
            boot_to_wall_us,
            host_mnt_ns,
        }
    }

    fn wall(&self, ktime_ns: u64) -> i64 {
        (ktime_ns / 1000) as i64 + self.boot_to_wall_us
    }

    /// Number of live processes.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Users' metadata refused or cut, by cause.
    pub fn refusals(&self) -> crate::untrusted::RefusalCounts {
        let mut c = self.shared.resolver.refusals.snapshot();
        c.elf_deadline_missed = self.shared.elf.deadline_missed;
        c
    }

    /// What was seen and not recorded.
    pub fn fidelity(&self) -> Fidelity {
        self.fidelity
    }

    /// Applies one event; returns processes that ended.
    pub fn handle(&mut self, ev: Event, facts: &dyn ProcFacts) -> Option<Finished> {
        match ev {
            Event::Exec(info) => {
                let tgid = info.tgid;
                let at = self.wall(info.ktime_ns);
                let prev = self.finish(tgid, Ending::Unknown, at);
                let by_libpython = info.flags & tracer_common::EXEC_FLAG_LIBPYTHON != 0;
                if !by_libpython && facts.is_interpreter(tgid, &mut self.shared.elf) == Some(false)
                {
                    self.fidelity.promotions_not_python += 1;
                    return prev;
                }
                let prev_root = prev
                    .as_ref()
                    .map(|f| f.process.root_pid)
                    .or_else(|| self.replaced.remove(&tgid));
                let p = self.new_process(info, prev_root, facts);
                if by_libpython {
                    // It opened libpython; whether it maps it (an interpreter) or only reads
                    // it (`cat`) shows a little later.
                    self.unverified.push((tgid, p.start));
                }
                self.procs.insert(tgid, p);
                prev
            }
            Event::ExecOther { tgid, ktime_ns } => {
                let at = self.wall(ktime_ns);
                let f = self.finish(tgid, Ending::Unknown, at);
                if let Some(f) = &f {
                    self.replaced.insert(tgid, f.process.root_pid);
                }
                f
            }
            Event::Fork {
                parent,
                child,
                ktime_ns,
            } => {
                let start = self.wall(ktime_ns);
                let at = start;
                let stale = self.finish(child, Ending::Unknown, at);
                if let Some(pp) = self.procs.get(&parent) {
                    let mut p = pp.clone();
                    p.pid = child;
                    p.ppid = parent;
                    p.start = start;
                    p.packages.clear();
                    p.index.clear();
                    p.threads.clear();
                    p.dirs.clear();
                    p.seeded = false;
                    self.procs.insert(child, p);
                }
                stale
            }
            Event::Exit {
                tgid,
                exit_code,
                ktime_ns,
            } => {
                let at = self.wall(ktime_ns);
                self.finish(tgid, Ending::from_exit_code(exit_code), at)
            }
            Event::Open(o) => {
                self.open(o, facts);
                None
            }
            Event::MapExec {
                tgid, fd, ktime_ns, ..
            } => {
                let at = self.wall(ktime_ns);
                self.map_exec(tgid, fd, at);
                None
            }
        }
    }

    fn new_process(
        &mut self,
        info: ExecInfo,
        prev_root: Option<u32>,
        facts: &dyn ProcFacts,
    ) -> Process {
        let mut attribution = Attribution::from_env(&info.env);
        if let Some(cg) = facts.cgroup(info.tgid) {
            if attribution.apply_cgroup(&cg) == CgroupJob::EnvForged {
                self.fidelity.job_env_rejected += 1;
            }
        }
        let executable = executable(&info, facts);
        let mut main = python_main(&info.args);
        let script = main.as_deref().filter(|m| !m.starts_with('-')).map(|m| {
            let p = PathBuf::from(m);
            if p.is_absolute() {
                p
            } else {
                facts
                    .cwd(info.tgid)
                    .map(|c| without_dots(&c.join(&p)))
                    .unwrap_or(p)
            }
        });
        if let Some(s) = &script {
            main = Some(s.to_string_lossy().into_owned());
        }
        let cwd = facts.cwd(info.tgid);
        let compile_targets = compile_targets(&info.args, cwd.as_deref());
        let in_container = info.mnt_ns != 0 && info.mnt_ns != self.host_mnt_ns;
        let root_pid = prev_root
            .or_else(|| self.procs.get(&info.ppid).map(|p| p.root_pid))
            .unwrap_or(info.tgid);
        let python_version = version_from_executable(executable.as_bytes())
            .or_else(|| version_from_executable(&info.filename))
            .or_else(|| python_version_of(Path::new(&executable)));
        let pycache_prefix = attribution
            .pycache_prefix
            .clone()
            .or_else(|| x_option(&info.args, b"pycache_prefix="));
        let view = Arc::new(ProcessView {
            pythonpath: attribution.pythonpath.clone(),
            script,
            pycache_prefix,
        });
        Process {
            pid: info.tgid,
            ppid: info.ppid,
            root_pid,
            start: self.wall(info.ktime_ns),
            executable,
            python_version,
            main,
            uid: info.uid,
            creds: Creds {
                uid: info.uid,
                gids: std::iter::once(info.gid)
                    .chain(facts.groups(info.tgid))
                    .collect(),
            },
            in_container,
            mnt_ns: info.mnt_ns,
            cwd,
            root_dir: in_container
                .then(|| {
                    std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                        .open(format!("/proc/{}/root", info.tgid))
                        .ok()
                })
                .flatten()
                .map(Arc::new),
            attribution: Arc::new(attribution),
            blas: None,
            packages: Vec::new(),
            seeded: !info.promoted,
            verified: info.flags & tracer_common::EXEC_FLAG_LIBPYTHON == 0,
            libpython_fd: None,
            view,
            index: HashMap::new(),
            threads: HashMap::new(),
            pending_so: HashMap::new(),
            init_dirs: HashSet::new(),
            archives: HashMap::new(),
            compiling: false,
            compile_targets,
            sites: Vec::new(),
            dirs: HashMap::new(),
        }
    }

    /// One open (or failed bytecode probe): fed to the process's import-signature state.
    fn open(&mut self, mut o: OpenInfo, facts: &dyn ProcFacts) {
        let at = self.wall(o.ktime_ns);
        let Some(p) = self.procs.get_mut(&o.tgid) else {
            return;
        };
        let rel = PathBuf::from(OsString::from_vec(std::mem::take(&mut o.path)));
        let path = if rel.is_absolute() {
            rel
        } else {
            let base = if o.dfd == AT_FDCWD {
                // Live, else as it was at exec (a process that already exited).
                facts.cwd(o.tgid).or_else(|| p.cwd.clone())
            } else {
                facts.fd_path(o.tgid, o.dfd)
            };
            match base {
                Some(b) => without_dots(&b.join(rel)),
                None => {
                    self.fidelity.relative_unresolved += 1;
                    return;
                }
            }
        };
        // The file the kernel opened (from the descriptor): what is recorded. The path as
        // passed, read from the process's memory, is what the import system's probe-then-read
        // sequence is paired on; the two differ through symbolic links, or when a thread
        // rewrote the buffer while the open blocked.
        let opened = if o.opened_is(path.as_os_str().as_bytes()) {
            None
        } else if o.opened_partial {
            // Deeper than the kernel's walk, and not ending as the kernel says: what was
            // opened is unknown, and the passed path cannot be trusted.
            self.fidelity.opened_unverified += 1;
            return;
        } else {
            self.fidelity.opened_elsewhere += 1;
            o.opened_path()
                .map(|k| PathBuf::from(OsString::from_vec(k)))
        };
        let name = path
            .file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or(b"");
        let truth = |p: PathBuf| match &opened {
            Some(k) => k.clone(),
            None => p,
        };
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
                if p.pending_so.insert(o.ret, (truth(path), at)).is_some() {
                    self.fidelity.so_not_mapped += 1;
                }
                return;
            }
            if imports::is_archive(name) {
                let path = truth(path);
                let n = p.archives.entry(path.clone()).or_insert(0);
                *n += 1;
                // `zipimport` opens the archive to read its directory, then again for every
                // module it loads: a second open is the first import from it.
                if *n == 2 {
                    Self::import(&mut self.shared, p, &path, at);
                }
                return;
            }
        }
        let thread = p.threads.entry(o.tid).or_default();
        let prefix = p.view.pycache_prefix.as_deref();
        // Only when the kernel's path differs (rare) is this open's path kept to swap it in.
        let this = opened.is_some().then(|| path.clone());
        let steps = thread.feed(path, o.ret >= 0, o.write, p.compiling, prefix);
        for step in steps {
            let step = match step {
                Step::Import(f) if this.as_ref() == Some(&f) => Step::Import(truth(f)),
                s => s,
            };
            match step {
                Step::Import(file) if p.compiling && p.compiles(&file) => {
                    self.fidelity.compile_ambiguous += 1;
                }
                Step::Import(file) => Self::import(&mut self.shared, p, &file, at),
                Step::Read => self.fidelity.reads_not_imports += 1,
                Step::Compiled => self.fidelity.compiled_not_imported += 1,
            }
        }
    }

    /// Checks processes promoted for opening `libpython` at least [`VERIFY_AFTER_US`] ago: one
    /// that neither calls CPython's entry points nor maps a `libpython` that defines them (a
    /// program that read the library as data) is dropped without records. A process that has
    /// exited can no longer be checked and is kept.
    pub fn verify(&mut self, now: i64, facts: &dyn ProcFacts) {
        let due: Vec<(u32, i64)> = self
            .unverified
            .iter()
            .copied()
            .filter(|&(_, start)| now - start >= VERIFY_AFTER_US)
            .collect();
        self.unverified
            .retain(|&(_, start)| now - start < VERIFY_AFTER_US);
        for (pid, start) in due {
            if !self
                .procs
                .get(&pid)
                .is_some_and(|p| p.start == start && !p.verified)
            {
                continue;
            }
            match facts.is_interpreter(pid, &mut self.shared.elf) {
                Some(false) => {
                    self.procs.remove(&pid);
                    self.fidelity.promotions_not_python += 1;
                }
                Some(true) => {
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.verified = true;
                    }
                }
                None => {}
            }
        }
    }

    /// Adds a process that was running before the daemon started, with what it had loaded.
    pub fn seed(&mut self, s: crate::seed::Seeded, facts: &dyn ProcFacts) {
        let at = self.wall(s.info.ktime_ns);
        let tgid = s.info.tgid;
        let p = self.new_process(s.info, None, facts);
        self.procs.insert(tgid, p);
        self.fidelity.seeded_processes += 1;
        let p = self.procs.get_mut(&tgid).expect("just inserted");
        for f in s.files {
            let name = f.file_name().map(|n| n.as_encoded_bytes()).unwrap_or(b"");
            if let Some(b) = crate::resolver::blas_kind(name) {
                p.blas.get_or_insert(b);
            } else {
                Self::import(&mut self.shared, p, &f, at);
            }
        }
    }

    /// A descriptor was mapped executable: the shared object last opened on it was loaded.
    fn map_exec(&mut self, tgid: u32, fd: i32, at: i64) {
        let Some(p) = self.procs.get_mut(&tgid) else {
            return;
        };
        if p.libpython_fd == Some(fd) {
            p.verified = true;
            p.libpython_fd = None;
            return;
        }
        if let Some((path, opened)) = p.pending_so.remove(&fd) {
            Self::import(&mut self.shared, p, &path, opened.min(at));
        }
    }

    /// Records one imported module file of a process.
    fn import(ctx: &mut Shared, p: &mut Process, file: &Path, at: i64) {
        let Shared { resolver, elf } = ctx;
        // Bytecode under a PYTHONPYCACHEPREFIX is placed where its source is.
        let source = p.view.pycache_prefix.as_deref().and_then(|pre| {
            file.starts_with(pre)
                .then(|| imports::source_of_bytecode(file, Some(pre)))
                .flatten()
        });
        let path = source.as_deref().unwrap_or(file);
        if let Some(dir) = imports::init_dir(path) {
            p.init_dirs.insert(dir);
        }
        let module_dir = imports::module_dir(path);
        if let Some(&i) = module_dir.and_then(|d| p.dirs.get(d.as_os_str())) {
            p.packages[i].n_files += 1;
            return;
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
            return;
        };
        if loc.package == "py_compile" && loc.kind == crate::resolver::EnvKind::Stdlib {
            p.compiling = true;
        }
        if p.python_version.is_none() {
            p.python_version = python_version_of(path);
        }
        // Only directories inside the package's own tree (not `lib-dynload`, not the site
        // directory itself, whose files are each their own top-level module).
        let cache_dir = |p: &mut Process, i: usize| {
            if let Some(d) = module_dir.filter(|d| in_package(d, &loc.site_dir, &loc.package)) {
                p.dirs.insert(d.as_os_str().to_owned(), i);
            }
        };
        if let Some(&i) = p.index.get(&loc.package) {
            p.packages[i].n_files += 1;
            cache_dir(p, i);
            return;
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
        cache_dir(p, i);
        p.index.insert(loc.package.clone(), i);
        p.packages.push(PackageSeen {
            resolved,
            first_path: file.to_string_lossy().into_owned(),
            n_files: 1,
            first_seen: at,
        });
    }

    /// Counts what a process left unresolved when it ends.
    fn settle(&mut self, p: &Process) {
        self.fidelity.so_not_mapped += p.pending_so.len() as u64;
        self.fidelity.archive_single_opens +=
            p.archives.values().filter(|&&n| n == 1).count() as u64;
        self.fidelity.reads_not_imports +=
            p.threads.values().filter(|t| t.pending_read()).count() as u64;
    }

    fn finish(&mut self, pid: u32, ending: Ending, at: i64) -> Option<Finished> {
        let mut process = self.procs.remove(&pid)?;
        if !process.verified {
            // Opened libpython, never mapped it, and nothing else showed it is Python.
            self.fidelity.promotions_not_python += 1;
            return None;
        }
        let held: Vec<PathBuf> = process
            .threads
            .values_mut()
            .filter_map(ThreadImports::flush)
            .collect();
        for file in held {
            if process.compiling && process.compiles(&file) {
                self.fidelity.compile_ambiguous += 1;
            } else {
                Self::import(&mut self.shared, &mut process, &file, at);
            }
        }
        self.settle(&process);
        Some(Finished {
            process,
            ending,
            end: Some(at),
        })
    }

    /// Snapshots of processes that have been running since before `older_than` (wall µs) and
    /// have packages, for periodic `running` records.
    pub fn running(&self, older_than: i64) -> Vec<Finished> {
        self.procs
            .values()
            .filter(|p| p.start < older_than && p.verified && !p.packages.is_empty())
            .map(|p| Finished {
                process: p.clone(),
                ending: Ending::Running,
                end: None,
            })
            .collect()
    }

    /// Ends processes for which `alive` says no (their exit event was lost: the ring buffer
    /// was full when they exited); they are reported with [`Ending::Unknown`].
    pub fn reap(&mut self, alive: impl Fn(u32) -> bool, now: i64) -> Vec<Finished> {
        self.replaced.retain(|&p, _| alive(p));
        self.unverified.retain(|&(p, _)| alive(p));
        let dead: Vec<u32> = self.procs.keys().copied().filter(|&p| !alive(p)).collect();
        dead.into_iter()
            .filter_map(|pid| self.finish(pid, Ending::Unknown, now))
            .collect()
    }

    /// Ends every process (daemon shutdown): they are reported as still running.
    pub fn drain(&mut self) -> Vec<Finished> {
        self.procs
            .drain()
            .map(|(_, process)| Finished {
                process,
                ending: Ending::Running,
                end: None,
            })
            .collect()
    }
}

/// The interpreter a new process runs, as `sys.executable` would name it: for a `#!` script
/// the kernel put the interpreter in `argv[0]` and the script (the path passed to `execve`)
/// after it; a program run from a descriptor (`fexecve`, a `memfd`) is named by
/// `/proc/<pid>/exe`; anything else is the path as executed, made absolute.
fn executable(info: &ExecInfo, facts: &dyn ProcFacts) -> String {
    let argv: Vec<&[u8]> = info.args.split(|&b| b == 0).collect();
    let file = info.filename.as_slice();
    let shebang = argv.len() >= 2
        && argv[0].starts_with(b"/")
        && argv[0] != file
        && (argv[1] == file || argv.get(2).is_some_and(|a| *a == file));
    if shebang {
        return String::from_utf8_lossy(argv[0]).into_owned();
    }
    if file.is_empty() || file.starts_with(b"/dev/fd/") || file.starts_with(b"/proc/") {
        if let Some(exe) = facts.exe(info.tgid) {
            return exe.to_string_lossy().into_owned();
        }
    }
    let path = path_from_bytes(file);
    if path.is_relative() {
        if let Some(cwd) = facts.cwd(info.tgid) {
            return without_dots(&cwd.join(path)).to_string_lossy().into_owned();
        }
    }
    String::from_utf8_lossy(file).into_owned()
}

/// The value of `-X <key>value` on a Python command line (before the script or `-c`/`-m`).
fn x_option(args: &[u8], key: &[u8]) -> Option<PathBuf> {
    let argv: Vec<&[u8]> = args.split(|&b| b == 0).collect();
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i];
        let value = if a == b"-X" {
            i += 1;
            argv.get(i).copied()
        } else {
            a.strip_prefix(b"-X")
        };
        if let Some(v) = value.and_then(|v| v.strip_prefix(key)) {
            return Some(path_from_bytes(v));
        }
        if !a.starts_with(b"-") || a == b"-c" || a == b"-m" {
            return None;
        }
        i += 1;
    }
    None
}

/// Whether `dir` is `site/package` or below it. On bytes, without building `site/package`:
/// this runs for every module file a process imports.
fn in_package(dir: &Path, site: &Path, package: &str) -> bool {
    let site = site.as_os_str().as_bytes();
    dir.as_os_str()
        .as_bytes()
        .strip_prefix(site.strip_suffix(b"/").unwrap_or(site))
        .and_then(|r| r.strip_prefix(b"/"))
        .and_then(|r| r.strip_prefix(package.as_bytes()))
        .is_some_and(|r| r.is_empty() || r[0] == b'/')
}

/// `a/./b` → `a/b` (lexically; `..` is kept: it may cross a symbolic link).
fn without_dots(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests;
