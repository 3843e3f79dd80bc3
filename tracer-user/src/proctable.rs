//! The process table: Python processes keyed by pid, built only from exec/fork/exit events
//! in ring-buffer order (never from lazy `/proc` look-ups, which race with PID reuse: the exit
//! of a pid always precedes the fork that reuses it). Each process collects the packages its
//! *imports* resolve to; when it ends, it is handed back as a [`Finished`] process.
//!
//! An open is an import only when it carries the import system's signature (see
//! [`crate::imports`]); plain reads of module files are counted in [`Fidelity`], never recorded.
//!
//! The stages, one private submodule each: `lifecycle` (exec, fork, exit) → `opens` (opens,
//! mappings, imports) and `upkeep` (verification, seeding, snapshots, reaping); `facts` is
//! what the table may ask `/proc`. This file keeps what they share: the process and its
//! ending, the table itself with its event dispatch, and lexical path helpers.
use std::{
    collections::HashSet,
    ffi::OsString,
    os::unix::{ffi::OsStrExt, io::AsRawFd},
    path::{Path, PathBuf},
    sync::Arc,
};

use ahash::AHashMap as HashMap;

use serde::{Deserialize, Serialize};
use tracer_common::user::Event;

use crate::{
    attribution::Attribution,
    imports::ThreadImports,
    resolver::{ProcessView, Resolved, Resolver, Root},
    untrusted::Creds,
};

mod atexit;
mod facts;
mod lifecycle;
mod opens;
mod preload;
pub mod samples;
mod upkeep;

pub use atexit::EXIT_GRACE;
pub use facts::{Identity, ProcFacts, ProcFs, Without};

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
    /// Messages of the preload library for a process that had already ended (the kernel's
    /// exit was handled first), or whose process is not the one that sent the connection's
    /// `Hello` (its pid reused, or another user's): not used.
    pub preload_late: u64,
    /// Module files not recorded because their process (1 MiB) or all its user's processes
    /// (64 MiB) hold as much state as the daemon keeps for them.
    pub state_bounded: u64,
    /// Opens whose file, as the kernel resolved it, is not at the path the process passed
    /// (a symbolic link on the way, a chroot, or a buffer rewritten during the open): the
    /// kernel's path is the one recorded.
    pub opened_elsewhere: u64,
    /// Opens of files deeper than the kernel's path walk whose passed path does not end as the
    /// kernel's: not used (nothing trustworthy says what was opened).
    pub opened_unverified: u64,
    /// Atexit reports not used: their pid was another user's process, or no process of the
    /// sender's uid (tabled, ending, or live in `/proc`), or it ended before the report was
    /// read and past the grace that waits for reports (`ProcTable::set_exit_grace`).
    pub atexit_late: u64,
}

/// One package seen in one process.
#[derive(Debug, Clone)]
pub struct PackageSeen {
    /// Resolution of its first module file.
    pub resolved: Resolved,
    /// First module file opened.
    pub first_path: String,
    /// Module files the kernel saw opened (eBPF).
    pub n_files: u32,
    /// Module files the preload library reported imported.
    pub n_preload: u32,
    /// Wall-clock µs of the first open (of the atexit report, for a package only it named).
    pub first_seen: i64,
    /// The process's atexit report named it.
    pub atexit: bool,
}

/// Which collector saw an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The eBPF tracer (an open with the import system's signature, or a mapping).
    Kernel,
    /// The preload library (a module body run, an extension module loaded).
    Preload,
    /// The CPU sampler found the package running (in a fork child that inherited it from its
    /// parent without opening a file of it): no module file counted.
    Sampled,
}

impl PackageSeen {
    /// One more module file of the package, seen by `by` at `at`. Each collector counts its
    /// own files: with both, the record takes the larger count, not the sum.
    fn count(&mut self, by: Seen, at: i64) {
        match by {
            Seen::Kernel => self.n_files += 1,
            Seen::Preload => self.n_preload += 1,
            Seen::Sampled => {}
        }
        self.first_seen = self.first_seen.min(at);
    }
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
    /// The preload library reported this process.
    pub preload_seen: bool,
    /// Tabled from something else than its exec event — the preload library's `Hello`, or
    /// `/proc` at daemon start — at this boot-clock ns: an exec event of the kernel up to this
    /// time is of this same image (it was in flight), and adopts it instead of ending it.
    tabled_at: Option<u64>,
    /// Created from a message of a fork child on its parent's connection, before the fork
    /// event: the fork event, when it comes, keeps it.
    forked_by_preload: bool,
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
    /// Bytes of state charged to this process (see `Shared::charge`).
    bytes: usize,
    /// The preload connection whose `Hello` was this process's (or its fork parent's): only
    /// messages on it are about this process.
    conn: Option<u64>,
    /// Hash of the command line of that `Hello` (see `lifecycle::same_command_line`).
    hello_args: u64,
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
    /// The CPU sampler's samples of it.
    pub samples: samples::Samples,
    /// Its interpreter, once the sampler found it.
    interp: Option<Arc<crate::cpython::Interpreter>>,
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
    /// Its CPU time: at the exit as the kernel counted it (eBPF exits only), for a running
    /// process as `/proc` says; `None` when unknown.
    pub cpu: Option<crate::cputime::CpuTime>,
}

/// What resolving imports reads from files, cached across processes.
struct Shared {
    resolver: Resolver,
    elf: crate::elf::ElfCache,
    /// Bytes of per-process state held for each uid's processes (see [`Shared::charge`]).
    uid_bytes: HashMap<u32, usize>,
    /// Files not recorded because a process or its user reached a bound.
    state_bounded: u64,
}

/// Bytes of per-process state (paths of packages, directories, archives, threads) one process
/// may hold, and all processes of one uid together. Real interpreters hold tens of KiB; the
/// bounds keep a user who reports made-up paths (through the preload socket, or real files
/// made for it) from growing the daemon without end.
const PROCESS_BYTES: usize = 1 << 20;
const UID_BYTES: usize = 64 << 20;

impl Shared {
    /// Charges `n` bytes of new state to `p` and its uid; false (counted) when that would
    /// pass a bound, and the state is then not kept.
    fn charge(&mut self, p: &mut Process, n: usize) -> bool {
        Self::charge_parts(
            &mut self.uid_bytes,
            &mut self.state_bounded,
            &mut p.bytes,
            p.uid,
            n,
        )
    }

    /// [`Shared::charge`] on the fields it uses, for callers that hold other parts of the
    /// table or of the process (the resolver, a map entry) at the same time.
    fn charge_parts(
        uid_bytes: &mut HashMap<u32, usize>,
        state_bounded: &mut u64,
        bytes: &mut usize,
        uid: u32,
        n: usize,
    ) -> bool {
        let u = uid_bytes.entry(uid).or_insert(0);
        if *bytes + n > PROCESS_BYTES || *u + n > UID_BYTES {
            *state_bounded += 1;
            return false;
        }
        *bytes += n;
        *u += n;
        true
    }

    /// Gives back what an ending process held.
    fn release(&mut self, p: &Process) {
        if let Some(u) = self.uid_bytes.get_mut(&p.uid) {
            *u = u.saturating_sub(p.bytes);
            if *u == 0 {
                self.uid_bytes.remove(&p.uid);
            }
        }
    }
}

/// What one entry of a process's maps costs besides its path, for [`Shared::charge`].
const ENTRY_BYTES: usize = 64;

/// How long after its promotion a process that opened `libpython` is checked for mapping it.
pub const VERIFY_AFTER_US: i64 = 100_000;

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
    /// Processes that ended on an exit event, with when (wall µs), for a while: a preload
    /// `Hello` read after its process's exit must not start it again.
    recent_ends: HashMap<u32, i64>,
    /// How long a process ended by its exit event waits for its atexit report before it is
    /// handed on (`None`: at once). See `atexit`.
    exit_grace: Option<std::time::Duration>,
    /// Processes ended by their exit event, waiting until the instant for an atexit report.
    closing: HashMap<u32, (Finished, std::time::Instant)>,
    /// Ended processes ready to be handed on by [`ProcTable::closed`].
    closed: Vec<Finished>,
    /// The CPU sampler, when sampling is on.
    sampler: Option<crate::sampler::Sampler>,
    /// Processes found gone at the last reap (pid, start): ended at the next if still there.
    reap_suspects: std::collections::HashSet<(u32, i64)>,
    /// Processes whose interpreter the sampler is to find: pid, start, attempts left, and
    /// not before when.
    to_inspect: Vec<(u32, i64, u8, std::time::Instant)>,
    /// Code objects sampled in this batch of events and not known yet, by process (pid,
    /// start): asked of the sampler's workers at the batch's end, in one job per process.
    to_resolve: Vec<(u32, i64, Vec<u64>)>,
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
                uid_bytes: HashMap::new(),
                state_bounded: 0,
            },
            fidelity: Fidelity::default(),
            boot_to_wall_us,
            host_mnt_ns,
            recent_ends: HashMap::new(),
            exit_grace: None,
            closing: HashMap::new(),
            closed: Vec::new(),
            sampler: None,
            to_inspect: Vec::new(),
            to_resolve: Vec::new(),
            reap_suspects: Default::default(),
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

    /// Whether nothing waits on time: no process, none ending, no inspection due.
    pub fn is_quiet(&self) -> bool {
        self.procs.is_empty()
            && self.closing.is_empty()
            && self.closed.is_empty()
            && self.to_inspect.is_empty()
    }

    /// Users' metadata refused or cut, by cause.
    pub fn refusals(&self) -> crate::untrusted::RefusalCounts {
        let mut c = self.shared.resolver.refusals.snapshot();
        c.elf_deadline_missed = self.shared.elf.deadline_missed;
        c
    }

    /// What was seen and not recorded.
    pub fn fidelity(&self) -> Fidelity {
        Fidelity {
            state_bounded: self.shared.state_bounded,
            ..self.fidelity
        }
    }

    /// Applies one event; returns processes that ended.
    pub fn handle(&mut self, ev: Event, facts: &dyn ProcFacts) -> Option<Finished> {
        match ev {
            Event::Exec(info) => self.exec(info, facts),
            Event::ExecOther { tgid, ktime_ns } => self.exec_other(tgid, ktime_ns),
            Event::Fork {
                parent,
                child,
                ktime_ns,
            } => self.fork(parent, child, ktime_ns),
            Event::Exit {
                tgid,
                exit_code,
                cpu,
                ktime_ns,
            } => {
                let at = self.wall(ktime_ns);
                let mut f = self.finish(tgid, Ending::from_exit_code(exit_code), at)?;
                f.cpu = cpu.map(crate::cputime::CpuTime::at_exit);
                self.ended(tgid, at);
                self.close(f)
            }
            Event::Open(o) => {
                self.open(o, facts, Seen::Kernel);
                None
            }
            Event::MapExec {
                tgid, fd, ktime_ns, ..
            } => {
                let at = self.wall(ktime_ns);
                self.map_exec(tgid, fd, at);
                None
            }
            Event::Sample(s) => {
                self.sample(s);
                None
            }
        }
    }
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
