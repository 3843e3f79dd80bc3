//! The process table: Python processes keyed by pid, built only from exec/fork/exit events
//! in ring-buffer order (never from lazy `/proc` look-ups, which race with PID reuse: the exit
//! of a pid always precedes the fork that reuses it). Each process collects the packages its
//! module opens resolve to; when it ends, it is handed back as a [`Finished`] process.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use tracer_common::user::{Event, ExecInfo};

use crate::{
    attribution::{python_main, version_from_executable, Attribution},
    resolver::{
        classify, path_from_bytes, python_version_of, Class, ProcessView, Resolved, Resolver,
    },
};

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
    /// In another mount namespace than the daemon's.
    pub in_container: bool,
    /// Job attribution captured at exec.
    pub attribution: Arc<Attribution>,
    /// BLAS backend seen.
    pub blas: Option<&'static str>,
    /// Packages in order of first open.
    pub packages: Vec<PackageSeen>,
    /// Resolver view (PYTHONPATH, script).
    view: Arc<ProcessView>,
    index: HashMap<String, usize>,
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
}

/// The table.
pub struct ProcTable {
    procs: HashMap<u32, Process>,
    resolver: Resolver,
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
            resolver: Resolver::new(),
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

    /// Applies one event; returns processes that ended.
    pub fn handle(&mut self, ev: Event, facts: &dyn ProcFacts) -> Option<Finished> {
        match ev {
            Event::Exec(info) => {
                let tgid = info.tgid;
                let at = self.wall(info.ktime_ns);
                let prev = self.finish(tgid, Ending::Unknown, at);
                let p = self.new_process(info, prev.as_ref().map(|f| f.process.root_pid), facts);
                self.procs.insert(tgid, p);
                prev
            }
            Event::ExecOther { tgid, ktime_ns } => {
                let at = self.wall(ktime_ns);
                self.finish(tgid, Ending::Unknown, at)
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
            Event::Open {
                tgid,
                ktime_ns,
                path,
            } => {
                let at = self.wall(ktime_ns);
                self.open(tgid, &path, at);
                None
            }
        }
    }

    fn new_process(
        &self,
        info: ExecInfo,
        prev_root: Option<u32>,
        facts: &dyn ProcFacts,
    ) -> Process {
        let mut attribution = Attribution::from_env(&info.env);
        if attribution.job_id.is_none() || attribution.step_id.is_none() {
            if let Some(cg) = facts.cgroup(info.tgid) {
                attribution.fill_from_cgroup(&cg);
            }
        }
        let executable = if info.promoted {
            // The libpython path was captured; the program is `/proc/<pid>/exe` if still there.
            std::fs::read_link(format!("/proc/{}/exe", info.tgid))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| String::from_utf8_lossy(&info.filename).into_owned())
        } else {
            String::from_utf8_lossy(&info.filename).into_owned()
        };
        let mut main = python_main(&info.args);
        let script = main.as_deref().filter(|m| !m.starts_with('-')).map(|m| {
            let p = PathBuf::from(m);
            if p.is_absolute() {
                p
            } else {
                facts.cwd(info.tgid).map(|c| c.join(&p)).unwrap_or(p)
            }
        });
        if let Some(s) = &script {
            main = Some(s.to_string_lossy().into_owned());
        }
        let root_pid = prev_root
            .or_else(|| self.procs.get(&info.ppid).map(|p| p.root_pid))
            .unwrap_or(info.tgid);
        let python_version = version_from_executable(&info.filename)
            .or_else(|| python_version_of(&path_from_bytes(&info.filename)));
        let view = Arc::new(ProcessView {
            pythonpath: attribution.pythonpath.clone(),
            script,
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
            in_container: info.mnt_ns != 0 && info.mnt_ns != self.host_mnt_ns,
            attribution: Arc::new(attribution),
            blas: None,
            packages: Vec::new(),
            view,
            index: HashMap::new(),
        }
    }

    fn open(&mut self, tgid: u32, raw: &[u8], at: i64) {
        let Some(p) = self.procs.get_mut(&tgid) else {
            return;
        };
        let path = path_from_bytes(raw);
        if !path.is_absolute() {
            return;
        }
        match classify(&path, &p.view) {
            Class::Ignore => {}
            Class::Blas(b) => {
                p.blas.get_or_insert(b);
            }
            Class::Module(loc) => {
                if p.python_version.is_none() {
                    p.python_version = python_version_of(&path);
                }
                if let Some(&i) = p.index.get(&loc.package) {
                    p.packages[i].n_files += 1;
                    return;
                }
                let root = if p.in_container {
                    PathBuf::from(format!("/proc/{tgid}/root"))
                } else {
                    PathBuf::from("/")
                };
                let resolved = self
                    .resolver
                    .resolve(&loc, &path, Path::new(&root), p.in_container);
                p.index.insert(loc.package.clone(), p.packages.len());
                p.packages.push(PackageSeen {
                    resolved,
                    first_path: String::from_utf8_lossy(raw).into_owned(),
                    n_files: 1,
                    first_seen: at,
                });
            }
        }
    }

    fn finish(&mut self, pid: u32, ending: Ending, at: i64) -> Option<Finished> {
        self.procs.remove(&pid).map(|process| Finished {
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
            .filter(|p| p.start < older_than && !p.packages.is_empty())
            .map(|p| Finished {
                process: p.clone(),
                ending: Ending::Running,
                end: None,
            })
            .collect()
    }

    /// Ends processes for which `alive` says no (their exit event was lost, e.g. an LRU
    /// eviction in the kernel map); they are reported with [`Ending::Unknown`].
    pub fn reap(&mut self, alive: impl Fn(u32) -> bool, now: i64) -> Vec<Finished> {
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

#[cfg(test)]
mod tests;
