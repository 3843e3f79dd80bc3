//! Stage 1: records → the processes of each side, and the processes of one side matched to
//! the other's. A record belongs to the kernel side when the kernel or the library saw it
//! (`sources` has `ebpf`, `ebpf-seeded` or `preload`) and to the atexit side when a
//! `sitecustomize` hook reported it (`atexit`): a daemon that received the hook's reports
//! writes one record per process and package for both, so one dataset can be both sides.
//!
//! Two datasets written apart (the daemon's, and the hook's spool or old customs data) are
//! joined by host and pid with start times within a tolerance: the hook takes its start time
//! from `/proc` in clock ticks and the boot time in whole seconds, so it differs from the
//! kernel's exec time by up to a second or so, and more under clock skew between writers.
use std::collections::{BTreeMap, HashMap, HashSet};

use pyusage_record::{EnvKind, Exit, Micros, Record, Source};

/// Which side a record is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The kernel (eBPF) or the `LD_PRELOAD` library.
    Kernel,
    /// A `sitecustomize` + `atexit` hook (ours, or imported customs data).
    Atexit,
}

impl Side {
    /// Whether `r` was seen by this side.
    pub fn saw(self, r: &Record) -> bool {
        let of = |s: &Source| match self {
            Side::Kernel => matches!(s, Source::Ebpf | Source::EbpfSeeded | Source::Preload),
            Side::Atexit => *s == Source::Atexit,
        };
        if r.sources.is_empty() {
            of(&r.source)
        } else {
            r.sources.iter().any(of)
        }
    }
}

/// One package of one process, as one side saw it.
#[derive(Debug, Clone)]
pub struct Pkg {
    /// First file (or `<built-in>`, `<frozen>` from the hook).
    pub first_path: String,
    /// First seen (the hook: at exit).
    pub first_seen: Micros,
    /// Environment kind.
    pub env_kind: EnvKind,
    /// Version.
    pub version: Option<String>,
}

impl Pkg {
    /// A built-in or frozen module: no file for the kernel to see.
    pub fn fileless(&self) -> bool {
        matches!(self.first_path.as_str(), "<built-in>" | "<frozen>")
    }
}

/// One process as one side saw it.
#[derive(Debug, Clone)]
pub struct Proc {
    /// Host.
    pub host: String,
    /// Pid (0: unknown, old customs data).
    pub pid: i32,
    /// Parent pid.
    pub ppid: i32,
    /// First Python process of its tree.
    pub root_pid: i32,
    /// Exec (or fork) time.
    pub start: Micros,
    /// End.
    pub end: Option<Micros>,
    /// How it ended.
    pub exit: Exit,
    /// Exit status.
    pub exit_code: Option<i32>,
    /// Signal name.
    pub exit_signal: Option<String>,
    /// Interpreter.
    pub executable: String,
    /// Script, `-c`, `-m mod`.
    pub main: Option<String>,
    /// The uid (0 also when unknown: old data).
    pub uid: u32,
    /// Who counts as one user: the uid (a hook may know a user's name in one process and not in
    /// the next); the name for old data without pids.
    pub user: String,
    /// Slurm job.
    pub job_id: Option<String>,
    /// MPI rank.
    pub rank: Option<i32>,
    /// Packages by name.
    pub packages: BTreeMap<String, Pkg>,
    /// When the hook's exit handler ran, as the kernel saw it: the first open of its
    /// exit-time module ([`HOOK_BODY`]). What the kernel saw imported from then on and the
    /// report does not name is the hook's own doing (`_socket` to reach the daemon).
    pub hook_ran_at: Option<Micros>,
}

impl Proc {
    fn of(r: &Record) -> Proc {
        Proc {
            host: r.host.clone(),
            pid: r.pid,
            ppid: r.ppid,
            root_pid: r.root_pid,
            start: r.process_start,
            end: r.process_end,
            exit: r.exit,
            exit_code: r.exit_code,
            exit_signal: r.exit_signal.clone(),
            executable: r.executable.clone(),
            main: r.main.clone(),
            uid: r.uid,
            user: match (r.pid, &r.username) {
                (0, Some(name)) => name.clone(),
                _ => format!("uid {}", r.uid),
            },
            job_id: r.job_id.clone(),
            rank: r.rank,
            packages: BTreeMap::new(),
            hook_ran_at: None,
        }
    }

    /// `host pid main (job)` for an example line.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} pid {} {} {}",
            self.host,
            self.pid,
            self.executable,
            self.main.as_deref().unwrap_or("")
        );
        if let Some(j) = &self.job_id {
            s.push_str(&format!(" job {j}"));
            if let Some(r) = self.rank {
                s.push_str(&format!(" rank {r}"));
            }
        }
        s
    }

    /// Whether the hook loaded: a `sitecustomize` from one of the hook's directories `hooks`
    /// (any `sitecustomize` when none is known: Debian's interpreters have one of their own,
    /// which `python -I` still imports).
    pub fn has_hook(&self, hooks: &HashSet<String>) -> bool {
        self.packages
            .get("sitecustomize")
            .is_some_and(|p| hooks.is_empty() || hooks.contains(hook_dir(&p.first_path)))
    }
}

/// The directory of a `sitecustomize` file, its source's for a `__pycache__/…pyc`.
pub fn hook_dir(path: &str) -> &str {
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    dir.strip_suffix("/__pycache__").unwrap_or(dir)
}

/// The hook's own module, imported by its exit handler: the kernel sees it open, but it is no
/// import of the program's. Left out of both sides.
pub const HOOK_BODY: &str = "_pyusage_atexit";

/// The processes of one side, in (host, pid, start) order.
pub fn processes(records: &[Record], side: Side) -> Vec<Proc> {
    // Without a pid (old customs data), what else tells processes apart: the job, the user,
    // the interpreter and the script.
    type Extra<'a> = Option<(Option<&'a str>, Option<&'a str>, &'a str, Option<&'a str>)>;
    // The uid is part of a process's identity: a spool record of one user's naming another
    // user's pid and start time (both readable in /proc) stays that user's own process.
    let mut by: BTreeMap<(&str, i32, Micros, u32, Extra), Proc> = BTreeMap::new();
    for r in records.iter().filter(|r| side.saw(r)) {
        let extra = (r.pid == 0).then_some((
            r.job_id.as_deref(),
            r.username.as_deref(),
            r.executable.as_str(),
            r.main.as_deref(),
        ));
        let p = by
            .entry((r.host.as_str(), r.pid, r.process_start, r.uid, extra))
            .or_insert_with(|| Proc::of(r));
        // A final record's ending beats a running snapshot's.
        if p.exit == Exit::Running && r.exit != Exit::Running {
            let pkgs = std::mem::take(&mut p.packages);
            let ran = p.hook_ran_at;
            *p = Proc::of(r);
            (p.packages, p.hook_ran_at) = (pkgs, ran);
        }
        if r.package == HOOK_BODY {
            p.hook_ran_at = Some(p.hook_ran_at.map_or(r.first_seen, |t| t.min(r.first_seen)));
            continue;
        }
        let pkg = Pkg {
            first_path: r.first_path.clone(),
            first_seen: r.first_seen,
            env_kind: r.env_kind,
            version: r.version.clone(),
        };
        p.packages.entry(r.package.clone()).or_insert(pkg);
    }
    by.into_values().collect()
}

/// Matched pairs `(kernel index, atexit index)`, and each side's unmatched indices.
#[derive(Debug, Default)]
pub struct Matching {
    /// Both sides saw the process.
    pub pairs: Vec<(usize, usize)>,
    /// Kernel side only.
    pub kernel_only: Vec<usize>,
    /// Atexit side only.
    pub atexit_only: Vec<usize>,
}

/// Matches processes by host, pid and uid, start times within `skew` µs: each atexit-side
/// process in turn takes the closest kernel-side candidate not yet taken. A pid of 0 (old data
/// without pids) never matches.
pub fn match_processes(kernel: &[Proc], atexit: &[Proc], skew: Micros) -> Matching {
    let mut index: HashMap<(&str, i32), Vec<usize>> = HashMap::new();
    for (i, p) in kernel.iter().enumerate() {
        index.entry((p.host.as_str(), p.pid)).or_default().push(i);
    }
    let mut taken = vec![false; kernel.len()];
    let mut m = Matching::default();
    for (j, a) in atexit.iter().enumerate() {
        let best = (a.pid != 0)
            .then(|| index.get(&(a.host.as_str(), a.pid)))
            .flatten()
            .and_then(|cands| {
                cands
                    .iter()
                    .copied()
                    .filter(|&i| {
                        !taken[i]
                            && kernel[i].uid == a.uid
                            && (kernel[i].start - a.start).abs() <= skew
                    })
                    .min_by_key(|&i| (kernel[i].start - a.start).abs())
            });
        match best {
            Some(i) => {
                taken[i] = true;
                m.pairs.push((i, j));
            }
            None => m.atexit_only.push(j),
        }
    }
    m.kernel_only = (0..kernel.len()).filter(|&i| !taken[i]).collect();
    m
}

/// Why the hook did not report a process that the kernel side saw.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelOnly {
    /// Still running when the data was written.
    StillRunning,
    /// A fork child of a process that loaded the hook (a multiprocessing worker): it leaves by
    /// `os._exit`, so atexit handlers never run in it.
    ForkChild,
    /// No `sitecustomize` loaded: `python -I`, `-E`, `-S`, or no `PYTHONPATH` with the hook.
    HookNotLoaded,
    /// The hook loaded; an MPI rank other than 0 of a job whose rank 0 reported and no other
    /// rank did (a rank-0-only hook, the old tool's behaviour).
    NonZeroRank,
    /// Killed at the Slurm time limit (the job's state is TIMEOUT), by this signal.
    TimeLimit(String),
    /// Killed by this signal.
    Signal(String),
    /// The interpreter crashed (SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE).
    Crash(String),
    /// Exited (with this status) and no report: `os._exit`, or a report lost on its way.
    OsExit(i32),
    /// The hook ran and recorded an error for this process (its `.errors` file).
    HookError,
    /// The image was replaced by a non-Python exec, or the end was not seen.
    ExecOrUnknown,
}

impl KernelOnly {
    /// Stable short name.
    pub fn key(&self) -> String {
        match self {
            KernelOnly::StillRunning => "still_running".into(),
            KernelOnly::ForkChild => "fork_child".into(),
            KernelOnly::HookNotLoaded => "hook_not_loaded".into(),
            KernelOnly::NonZeroRank => "non_zero_rank".into(),
            KernelOnly::TimeLimit(s) => format!("time_limit:{s}"),
            KernelOnly::Signal(s) => format!("signal:{s}"),
            KernelOnly::Crash(s) => format!("crash:{s}"),
            KernelOnly::OsExit(c) => format!("os_exit:{c}"),
            KernelOnly::HookError => "hook_error".into(),
            KernelOnly::ExecOrUnknown => "exec_or_unknown".into(),
        }
    }

    /// In words.
    pub fn words(&self) -> String {
        match self {
            KernelOnly::StillRunning => "still running".into(),
            KernelOnly::ForkChild => {
                "fork child (multiprocessing worker: leaves by os._exit, atexit never runs)".into()
            }
            KernelOnly::HookNotLoaded => {
                "hook never loaded (python -I/-E/-S, or no PYTHONPATH with the hook)".into()
            }
            KernelOnly::NonZeroRank => "MPI rank other than 0 (rank-0-only reports)".into(),
            KernelOnly::TimeLimit(s) => format!("killed at the Slurm time limit ({s})"),
            KernelOnly::Signal(s) => format!("killed by {s}"),
            KernelOnly::Crash(s) => format!("interpreter crash ({s})"),
            KernelOnly::OsExit(c) => {
                format!("exited ({c}) without a report: os._exit, or the report was lost")
            }
            KernelOnly::HookError => "the hook recorded an error (see hook health)".into(),
            KernelOnly::ExecOrUnknown => "exec of another program, or end not seen".into(),
        }
    }
}

const CRASH: &[&str] = &["SIGSEGV", "SIGABRT", "SIGBUS", "SIGILL", "SIGFPE"];

/// What the classification of kernel-only processes needs besides the process.
#[derive(Debug, Default)]
pub struct Evidence<'a> {
    /// Kernel-side processes by (host, pid).
    pub by_pid: HashMap<(&'a str, i32), Vec<usize>>,
    /// Jobs that ended at their time limit (from `sacct`).
    pub timeouts: HashSet<String>,
    /// The hook's directories (learnt from its reports of its own `sitecustomize`).
    pub hooks: HashSet<String>,
    /// Jobs whose rank 0 reported and no other rank did: a rank-0-only hook.
    pub rank0_jobs: HashSet<String>,
    /// (host, pid, uid) of processes whose hook recorded an error.
    pub errored: HashSet<(String, i32, u32)>,
}

/// Classifies kernel-side process `i`, which the hook did not report.
pub fn why_kernel_only(kernel: &[Proc], i: usize, ev: &Evidence<'_>) -> KernelOnly {
    let p = &kernel[i];
    if p.exit == Exit::Running {
        return KernelOnly::StillRunning;
    }
    if !p.has_hook(&ev.hooks) {
        // A fork child starts with no packages of its own and imports no `encodings` (a new
        // interpreter always does: a Python its hooked parent started with -I is no fork
        // child); its parent loaded the hook.
        let parent_hooked = ev
            .by_pid
            .get(&(p.host.as_str(), p.ppid))
            .into_iter()
            .flatten()
            .any(|&k| {
                let q = &kernel[k];
                q.has_hook(&ev.hooks) && q.start <= p.start && q.end.is_none_or(|e| e >= p.start)
            });
        let fresh = p.packages.contains_key("encodings");
        return if parent_hooked && !fresh && p.root_pid != p.pid {
            KernelOnly::ForkChild
        } else {
            KernelOnly::HookNotLoaded
        };
    }
    if ev.errored.contains(&(p.host.clone(), p.pid, p.uid)) {
        return KernelOnly::HookError;
    }
    let rank0_only = p.job_id.as_ref().is_some_and(|j| ev.rank0_jobs.contains(j));
    if p.rank.is_some_and(|r| r > 0) && p.exit == Exit::Exited && rank0_only {
        return KernelOnly::NonZeroRank;
    }
    match (p.exit, &p.exit_signal) {
        (Exit::Signaled, Some(s)) if CRASH.contains(&s.as_str()) => KernelOnly::Crash(s.clone()),
        (Exit::Signaled, s) => {
            let s = s.clone().unwrap_or_else(|| "a signal".into());
            if p.job_id.as_ref().is_some_and(|j| ev.timeouts.contains(j)) {
                KernelOnly::TimeLimit(s)
            } else {
                KernelOnly::Signal(s)
            }
        }
        (Exit::Exited, _) => KernelOnly::OsExit(p.exit_code.unwrap_or(0)),
        _ => KernelOnly::ExecOrUnknown,
    }
}

/// Why the kernel side has no process the hook reported.
pub fn why_atexit_only(a: &Proc, kernel_hosts: &HashSet<&str>) -> &'static str {
    if a.pid == 0 {
        "no pid in the atexit data (joined by job only)"
    } else if !kernel_hosts.contains(a.host.as_str()) {
        "host not in the kernel-side data"
    } else {
        "kernel side has no such process (missed)"
    }
}

/// Why one side lacks a package of a matched process.
pub fn why_package_gap(kernel_side: bool, k: &Proc, a: &Proc, package: &str) -> &'static str {
    if kernel_side {
        // The kernel saw it; sys.modules no longer had it at exit.
        let hook_at = k.packages.get("sitecustomize").map(|p| p.first_seen);
        let seen = k.packages.get(package).map(|p| p.first_seen);
        match (hook_at, seen) {
            (Some(h), Some(s)) if s < h => {
                "imported before the hook loaded, gone from sys.modules at exit"
            }
            _ => "not in sys.modules at exit (failed import, or removed)",
        }
    } else {
        match a.packages.get(package).map(|p| p.first_path.as_str()) {
            Some("<built-in>") => "built-in module (no file to open)",
            Some("<frozen>") => "frozen module (no file to open)",
            Some(p) if p.starts_with('/') => "a file the kernel side did not record",
            Some("<customs>") => "old customs data (no file recorded)",
            _ => "no file known (namespace package, or made at run time)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(host: &str, pid: i32, start: Micros, pkg: &str, src: Source) -> Record {
        let mut r = Record::example();
        r.host = host.into();
        r.pid = pid;
        r.process_start = start;
        r.package = pkg.into();
        r.source = src;
        r.sources = vec![src];
        r
    }

    #[test]
    fn sides_split_one_merged_dataset_and_join_within_the_skew() {
        let mut both = rec("n1", 5, 1_000_000, "numpy", Source::Ebpf);
        both.sources.push(Source::Atexit);
        let recs = vec![
            both,
            rec("n1", 5, 1_000_000, "sys", Source::Atexit),
            rec("n1", 6, 2_000_000, "json", Source::Ebpf),
            // A spool's process: start off by 0.7 s.
            rec("n1", 6, 2_700_000, "json", Source::Atexit),
            // Same pid, far later: another process.
            rec("n1", 6, 90_000_000, "json", Source::Atexit),
        ];
        let k = processes(&recs, Side::Kernel);
        let a = processes(&recs, Side::Atexit);
        assert_eq!(k.len(), 2);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].packages.keys().collect::<Vec<_>>(), ["numpy", "sys"]);
        let m = match_processes(&k, &a, 2_000_000);
        assert_eq!(m.pairs, vec![(0, 0), (1, 1)]);
        assert_eq!(m.atexit_only, vec![2]);
        assert!(m.kernel_only.is_empty());
    }

    #[test]
    fn kernel_only_reasons() {
        let mut recs = vec![];
        let mut parent = rec("n", 10, 0, "sitecustomize", Source::Ebpf);
        parent.exit = Exit::Exited;
        parent.exit_code = Some(0);
        recs.push(parent);
        let mut child = rec("n", 11, 5, "numpy", Source::Ebpf);
        (child.ppid, child.root_pid, child.exit) = (10, 10, Exit::Exited);
        recs.push(child);
        let mut isolated = rec("n", 12, 5, "json", Source::Ebpf);
        isolated.exit = Exit::Exited;
        recs.push(isolated);
        for (pid, sig) in [(13, "SIGKILL"), (14, "SIGSEGV")] {
            let mut r = rec("n", pid, 5, "sitecustomize", Source::Ebpf);
            r.exit = Exit::Signaled;
            r.exit_signal = Some(sig.into());
            r.job_id = Some(if pid == 13 { "77" } else { "78" }.into());
            recs.push(r);
        }
        let mut os_exit = rec("n", 15, 5, "sitecustomize", Source::Ebpf);
        (os_exit.exit, os_exit.exit_code) = (Exit::Exited, Some(3));
        recs.push(os_exit);
        // A new interpreter the hooked parent started with -I: not a fork child.
        let mut spawned = rec("n", 16, 5, "encodings", Source::Ebpf);
        (spawned.ppid, spawned.root_pid, spawned.exit) = (10, 10, Exit::Exited);
        recs.push(spawned);
        let k = processes(&recs, Side::Kernel);
        let mut ev = Evidence::default();
        for (i, p) in k.iter().enumerate() {
            ev.by_pid
                .entry((p.host.as_str(), p.pid))
                .or_default()
                .push(i);
        }
        ev.timeouts = ["77".to_string()].into_iter().collect();
        let got: Vec<String> = (1..k.len())
            .map(|i| why_kernel_only(&k, i, &ev).key())
            .collect();
        assert_eq!(
            got,
            [
                "fork_child",
                "hook_not_loaded",
                "time_limit:SIGKILL",
                "crash:SIGSEGV",
                "os_exit:3",
                "hook_not_loaded"
            ]
        );
    }
}
