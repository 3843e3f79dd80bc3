//! What an ELF file exports: tells an interpreter (`Py_Initialize`) and an extension module
//! (`PyInit_<name>`, CPython 2: `init<name>`) from other shared objects by what they are.
use std::{
    collections::{HashMap, HashSet},
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use object::{Object, ObjectSymbol};

use crate::workers::Workers;

/// Largest file read (interpreters and `libpython` are tens of MiB).
const MAX_BYTES: u64 = 256 << 20;
/// Files remembered at most (the cache starts over past it).
const MAX_CACHED: usize = 4096;
/// How long the record path waits for one file's answer.
const DEADLINE: Duration = Duration::from_millis(300);

type Cache = Arc<Mutex<HashMap<(u64, u64, i64), Arc<HashSet<String>>>>>;
/// A question's number and the file's entry points.
type Answer = (u64, Arc<HashSet<String>>);

/// The CPython entry points ELF files define, cached by (device, inode, mtime). The files are
/// the users' (a program in a home directory, a `.so` on a FUSE mount): they are opened and
/// read by worker threads ([`Workers`]), and a file not answered within `DEADLINE` counts as
/// defining nothing.
pub struct ElfCache {
    workers: Workers<(u64, PathBuf), Answer>,
    next: u64,
    /// Files not answered within the deadline.
    pub deadline_missed: u64,
}

impl Default for ElfCache {
    fn default() -> Self {
        ElfCache::new()
    }
}

impl ElfCache {
    /// A new, empty cache with its threads.
    pub fn new() -> ElfCache {
        let cache: Cache = Default::default();
        ElfCache {
            workers: Workers::new("elf", 2, 64, move |(id, path): (u64, PathBuf)| {
                (id, read_entry_points(&path, &cache))
            }),
            next: 0,
            deadline_missed: 0,
        }
    }

    /// Whether `path` defines the dynamic symbol `name` (only CPython entry points are kept:
    /// `PyInit_*`, `init*`; `Py_Initialize` stands for defining or calling any embedding entry
    /// point). Not a regular file, unreadable, too large, not ELF or not answered in time:
    /// `false`.
    pub fn exports(&mut self, path: &Path, name: &str) -> bool {
        self.answer(path, name).unwrap_or(false)
    }

    /// Whether `path` exports `name`; `None` when no answer came within the deadline (a hung
    /// mount, or a daemon starved of CPU), which callers deciding what a process *is* must not
    /// read as "no".
    pub fn answer(&mut self, path: &Path, name: &str) -> Option<bool> {
        if self.workers.stuck(DEADLINE) {
            self.deadline_missed += 1;
            return None;
        }
        self.next += 1;
        let id = self.next;
        if self.workers.submit((id, path.to_path_buf())).is_err() {
            self.deadline_missed += 1;
            return None;
        }
        let until = Instant::now() + DEADLINE;
        // Answers to earlier, timed-out questions may come first: skipped.
        while let Some((got, set)) = self.workers.recv_until(until) {
            if got == id {
                return Some(set.contains(name));
            }
        }
        self.deadline_missed += 1;
        None
    }
}

/// Opens `path` without blocking on a special file, and parses it unless cached.
fn read_entry_points(path: &Path, cache: &Cache) -> Arc<HashSet<String>> {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    else {
        return Arc::default();
    };
    let Ok(meta) = file.metadata() else {
        return Arc::default();
    };
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return Arc::default();
    }
    let key = (meta.dev(), meta.ino(), meta.mtime());
    if let Some(set) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return set;
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    let set = Arc::new(match file.take(MAX_BYTES).read_to_end(&mut data) {
        Ok(_) => entry_points(&data),
        Err(_) => HashSet::new(),
    });
    if let Ok(mut c) = cache.lock() {
        if c.len() >= MAX_CACHED {
            c.clear();
        }
        c.insert(key, set.clone());
    }
    set
}

/// CPython's embedding entry points: a program that defines one is an interpreter, one that
/// calls one (an undefined symbol, resolved in `libpython`) runs one.
const EMBEDDING: [&str; 5] = [
    "Py_Initialize",
    "Py_InitializeEx",
    "Py_InitializeFromConfig",
    "Py_BytesMain",
    "Py_Main",
];

/// Defined `PyInit_*`/`init*` names, plus `Py_Initialize` when the file defines or calls any of
/// [`EMBEDDING`].
fn entry_points(data: &[u8]) -> HashSet<String> {
    let Ok(file) = object::File::parse(data) else {
        return HashSet::new();
    };
    let mut out = HashSet::new();
    for s in file.dynamic_symbols() {
        let Ok(n) = s.name() else { continue };
        if EMBEDDING.contains(&n) {
            out.insert("Py_Initialize".to_owned());
        } else if s.is_definition() && (n.starts_with("PyInit_") || n.starts_with("init")) {
            out.insert(n.to_owned());
        }
    }
    out
}

/// Whether the process at `/proc/<pid>` (`base`) is a CPython interpreter: its program defines
/// or calls CPython's embedding entry points, or it maps a `libpython*` that defines them.
/// `None` when `/proc` no longer has it.
pub fn is_interpreter(base: &Path, elf: &mut ElfCache) -> Option<bool> {
    // The program first: it settles most interpreters without reading `maps`. An answer that
    // did not come in time is "unknown", never "not an interpreter".
    if elf.answer(&base.join("exe"), "Py_Initialize")? {
        return Some(true);
    }
    let maps = std::fs::read_to_string(base.join("maps")).ok()?;
    if maps.is_empty() {
        // Exiting (its memory released, not yet a zombie, or a zombie not yet reaped): it maps
        // nothing and has no `exe` to read, so the program's answer above was "no". Unknown,
        // never "not an interpreter": that dropped the records of a short interpreter whose
        // promotion was handled late. (A live process always maps its program; a thread group
        // whose leader exited reads as a zombie's.)
        return None;
    }
    let root = base.join("root");
    let libs = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"libpython"))
        });
    for lib in libs {
        if elf.answer(&root.join(lib.trim_start_matches('/')), "Py_Initialize")? {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyenv_python_calls_libpython() {
        let exe = std::fs::read_dir("/root/.pyenv/versions")
            .unwrap()
            .flatten()
            .map(|e| e.path().join("bin/python3"))
            .find(|p| p.exists())
            .unwrap();
        assert!(
            ElfCache::new().exports(&exe, "Py_Initialize"),
            "{}",
            exe.display()
        );
    }

    #[test]
    fn libc_is_neither_an_interpreter_nor_an_extension() {
        let mut c = ElfCache::new();
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        assert!(!c.exports(libc, "Py_Initialize"));
        assert!(!c.exports(Path::new("/etc/hostname"), "Py_Initialize"));
    }

    /// What a process is, asked while it runs, once it has exited but is not yet reaped (a
    /// zombie: no `exe`, empty `maps`) and once it is gone. Only the running one may answer;
    /// "not an interpreter" for an exited Python dropped its records (a CI failure).
    /// The state letter of the process at `/proc/<pid>` (`base`), from its `stat`.
    fn state(base: &Path) -> Option<char> {
        let stat = std::fs::read_to_string(base.join("stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    #[test]
    fn exited_processes_are_unknown_not_other_programs() {
        let mut elf = ElfCache::new();
        let base = |pid: u32| PathBuf::from(format!("/proc/{pid}"));
        for (program, args, python) in [
            (
                "/usr/bin/python3.11",
                &["-c", "import sys; sys.stdin.read()"][..],
                true,
            ),
            ("/bin/cat", &[][..], false),
        ] {
            let mut child = std::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id();
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(
                is_interpreter(&base(pid), &mut elf),
                Some(python),
                "{program}"
            );
            drop(child.stdin.take());
            let t = Instant::now();
            while state(&base(pid)) != Some('Z') {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "{program} did not exit"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(
                is_interpreter(&base(pid), &mut elf),
                None,
                "{program} exited"
            );
            child.wait().unwrap();
            assert_eq!(
                is_interpreter(&base(pid), &mut elf),
                None,
                "{program} reaped"
            );
        }
    }

    #[test]
    fn debian_python_is_an_interpreter() {
        let mut c = ElfCache::new();
        assert!(c.exports(Path::new("/usr/bin/python3.11"), "Py_Initialize"));
    }
}
