//! Processes entering and leaving the table: exec (a new interpreter image, with what its
//! command line, environment and cgroup say), exec of another program, fork, and the end of a
//! process (what it still held is imported, what it left unresolved counted).
//!
//! Separate from the opens because these events change which processes exist; the opens only
//! add to a process that does.
use std::{
    collections::HashSet,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use ahash::AHashMap as HashMap;
use tracer_common::user::ExecInfo;

use super::{without_dots, Ending, Finished, ProcFacts, ProcTable, Process};
use crate::{
    attribution::{python_main, version_from_executable, Attribution, CgroupJob},
    imports::ThreadImports,
    resolver::{path_from_bytes, python_version_of, ProcessView},
    untrusted::Creds,
};

impl ProcTable {
    /// An interpreter's exec: whatever ran under the pid before ends, and the new image is
    /// tabled unless the kernel promoted it and it is not an interpreter.
    pub(super) fn exec(&mut self, info: ExecInfo, facts: &dyn ProcFacts) -> Option<Finished> {
        let tgid = info.tgid;
        let at = self.wall(info.ktime_ns);
        if self.same_image(&info) {
            // The preload library's Hello of this very image was read first.
            self.adopt(info, facts);
            return None;
        }
        let prev = self.finish(tgid, Ending::Unknown, at);
        let by_libpython = info.flags & tracer_common::EXEC_FLAG_LIBPYTHON != 0;
        if !by_libpython && facts.is_interpreter(tgid, &mut self.shared.elf) == Some(false) {
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
        self.inspect_later(tgid, p.start);
        self.procs.insert(tgid, p);
        prev
    }

    /// Another program's exec: a Python process under the pid ends, remembered as replaced
    /// (its tree's root) until the new image shows it is Python or the pid is reaped.
    pub(super) fn exec_other(&mut self, tgid: u32, ktime_ns: u64) -> Option<Finished> {
        let at = self.wall(ktime_ns);
        if self
            .procs
            .get(&tgid)
            .and_then(|p| p.tabled_at)
            .is_some_and(|h| ktime_ns <= h)
        {
            // The exec that started an image whose Hello was read first (the process
            // connector reports every exec, the interpreter's own too).
            return None;
        }
        let f = self.finish(tgid, Ending::Unknown, at);
        if let Some(f) = &f {
            self.replaced.insert(tgid, f.process.root_pid);
        }
        f
    }

    /// A fork: a stale process under the child's pid ends, and a Python parent's child starts
    /// as its copy without what the parent imported.
    pub(super) fn fork(&mut self, parent: u32, child: u32, ktime_ns: u64) -> Option<Finished> {
        let start = self.wall(ktime_ns);
        let at = start;
        if let Some(c) = self.procs.get_mut(&child) {
            if c.forked_by_preload && c.ppid == parent {
                // Its own messages came before the fork event: it is this fork's child.
                c.forked_by_preload = false;
                return None;
            }
            if c.tabled_at.is_some_and(|h| ktime_ns <= h) {
                // The fork that made the process whose Hello was read first.
                return None;
            }
        }
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
            p.pending_so.clear();
            p.seeded = false;
            // Its package indices start over: only whether it is sampled carries over (the
            // kernel copied its parent's entry).
            p.samples = p.samples.forked();
            p.interp = p.interp.as_ref().map(|i| {
                Arc::new(crate::cpython::Interpreter {
                    pid: child,
                    ..(**i).clone()
                })
            });
            // It holds a copy of what its parent kept of the package structure: charged again.
            let held = std::mem::take(&mut p.bytes);
            if !self.shared.charge(&mut p, held) {
                p.init_dirs.clear();
                p.sites.clear();
                p.archives.clear();
            }
            self.procs.insert(child, p);
            self.sample_child(child);
        }
        stale
    }

    /// A process from its exec (or from `/proc`, seeded): who it is, what it runs, where its
    /// files are read from, and what it was started within.
    pub(super) fn new_process(
        &mut self,
        info: ExecInfo,
        prev_root: Option<u32>,
        facts: &dyn ProcFacts,
    ) -> Process {
        let attribution = self.attribution(&info, facts);
        let cwd = facts.cwd(info.tgid);
        let executable = executable(&info, facts, cwd.as_deref());
        let (main, script) = main_and_script(&info, cwd.as_deref());
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
                    .chain(
                        info.groups
                            .clone()
                            .unwrap_or_else(|| facts.groups(info.tgid)),
                    )
                    .collect(),
            },
            in_container,
            mnt_ns: info.mnt_ns,
            cwd,
            root_dir: in_container.then(|| root_dir(info.tgid)).flatten(),
            attribution: Arc::new(attribution),
            blas: None,
            packages: Vec::new(),
            seeded: !info.promoted,
            preload_seen: false,
            tabled_at: None,
            forked_by_preload: false,
            bytes: 0,
            conn: None,
            hello_args: 0,
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
            samples: Default::default(),
            interp: None,
        }
    }

    /// The job attribution from the environment, checked against the cgroup (a job named by
    /// the environment but not the cgroup is counted, and the cgroup's kept).
    fn attribution(&mut self, info: &ExecInfo, facts: &dyn ProcFacts) -> Attribution {
        let mut attribution = Attribution::from_env(&info.env);
        if let Some(cg) = facts.cgroup(info.tgid) {
            if attribution.apply_cgroup(&cg) == CgroupJob::EnvForged {
                self.fidelity.job_env_rejected += 1;
            }
        }
        attribution
    }

    /// Counts what a process left unresolved when it ends.
    fn settle(&mut self, p: &Process) {
        self.fidelity.so_not_mapped += p.pending_so.len() as u64;
        self.fidelity.archive_single_opens +=
            p.archives.values().filter(|&&n| n == 1).count() as u64;
        self.fidelity.reads_not_imports +=
            p.threads.values().filter(|t| t.pending_read()).count() as u64;
    }

    pub(super) fn finish(&mut self, pid: u32, ending: Ending, at: i64) -> Option<Finished> {
        let mut process = self.procs.remove(&pid)?;
        self.shared.release(&process);
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
                Self::import(
                    &mut self.shared,
                    &mut process,
                    &file,
                    at,
                    super::Seen::Kernel,
                );
            }
        }
        self.settle(&process);
        self.settle_samples(&mut process);
        Some(Finished {
            process,
            ending,
            end: Some(at),
            cpu: None,
        })
    }
}

/// What the command line runs (script, `-c`, `-m mod`), with a script's path made absolute
/// (from the live process's directory), and the script's path itself.
fn main_and_script(info: &ExecInfo, cwd: Option<&Path>) -> (Option<String>, Option<PathBuf>) {
    let mut main = python_main(&info.args);
    let script = main.as_deref().filter(|m| !m.starts_with('-')).map(|m| {
        let p = PathBuf::from(m);
        match cwd {
            Some(c) if !p.is_absolute() => without_dots(&c.join(&p)),
            _ => p,
        }
    });
    if let Some(s) = &script {
        main = Some(s.to_string_lossy().into_owned());
    }
    (main, script)
}

/// A process's root directory, opened (`O_PATH`) while it is alive so its files stay
/// readable after it exits.
fn root_dir(tgid: u32) -> Option<Arc<std::fs::File>> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(format!("/proc/{tgid}/root"))
        .ok()
        .map(Arc::new)
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

/// The interpreter a new process runs, as `sys.executable` would name it: for a `#!` script
/// the kernel put the interpreter in `argv[0]` and the script (the path passed to `execve`)
/// after it; a program run from a descriptor (`fexecve`, a `memfd`) is named by
/// `/proc/<pid>/exe`; anything else is the path as executed, made absolute.
fn executable(info: &ExecInfo, facts: &dyn ProcFacts, cwd: Option<&Path>) -> String {
    let argv: Vec<&[u8]> = info.args.split(|&b| b == 0).collect();
    let file = info.filename.as_slice();
    let shebang = argv.len() >= 2
        && argv[0].starts_with(b"/")
        && argv[0] != file
        && (argv[1] == file || argv.get(2).is_some_and(|a| *a == file));
    if shebang {
        return String::from_utf8_lossy(argv[0]).into_owned();
    }
    if info.from_descriptor() {
        if let Some(exe) = &info.exe {
            return String::from_utf8_lossy(exe).into_owned();
        }
        if let Some(exe) = facts.exe(info.tgid) {
            return exe.to_string_lossy().into_owned();
        }
    }
    let path = path_from_bytes(file);
    if path.is_relative() {
        if let Some(cwd) = cwd {
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
        // Options whose value is the next argument (`-W ignore`): skip the value too.
        if a == b"-W" || a == b"--check-hash-based-pycs" {
            i += 1;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc` of a process that has exited: nothing to read.
    struct Gone;
    impl ProcFacts for Gone {
        fn cwd(&self, _: u32) -> Option<PathBuf> {
            None
        }
        fn cgroup(&self, _: u32) -> Option<String> {
            None
        }
        fn fd_path(&self, _: u32, _: i32) -> Option<PathBuf> {
            None
        }
        fn exe(&self, _: u32) -> Option<PathBuf> {
            None
        }
        fn is_interpreter(&self, _: u32, _: &mut crate::elf::ElfCache) -> Option<bool> {
            None
        }
    }

    #[test]
    fn a_program_run_from_a_descriptor_is_named_by_the_exe_read_on_arrival() {
        let info = |file: &str, exe: Option<&str>| ExecInfo {
            tgid: 5,
            ppid: 1,
            uid: 0,
            gid: 0,
            mnt_ns: 1,
            ktime_ns: 0,
            filename: file.into(),
            args: b"python3\0-c\0pass".to_vec(),
            env: Vec::new(),
            flags: 0,
            promoted: true,
            exe: exe.map(|e| e.into()),
            groups: None,
        };
        let memfd = "/memfd:interp (deleted)";
        for file in ["/proc/self/fd/3", "/dev/fd/3", ""] {
            assert_eq!(executable(&info(file, Some(memfd)), &Gone, None), memfd);
            // Not read in time, and gone: the path as executed is all there is.
            assert_eq!(executable(&info(file, None), &Gone, None), file);
        }
        // A program run by its path is named by it, whatever was read.
        assert_eq!(
            executable(&info("/usr/bin/python3", Some(memfd)), &Gone, None),
            "/usr/bin/python3"
        );
    }

    #[test]
    fn x_options_are_found_past_options_with_separate_values() {
        let argv = |a: &[&str]| a.join("\0").into_bytes();
        let key = b"pycache_prefix=";
        for args in [
            &["python3", "-X", "pycache_prefix=/p", "s.py"][..],
            &["python3", "-Xpycache_prefix=/p", "s.py"],
            &["python3", "-W", "ignore", "-X", "pycache_prefix=/p", "s.py"],
            &[
                "python3",
                "-I",
                "--check-hash-based-pycs",
                "never",
                "-Xpycache_prefix=/p",
            ],
        ] {
            assert_eq!(x_option(&argv(args), key), Some("/p".into()), "{args:?}");
        }
        for args in [
            &["python3", "s.py", "-X", "pycache_prefix=/p"][..],
            &["python3", "-c", "-Xpycache_prefix=/p"],
            &["python3", "-W", "-Xpycache_prefix=/p"],
        ] {
            assert_eq!(x_option(&argv(args), key), None, "{args:?}");
        }
    }
}
