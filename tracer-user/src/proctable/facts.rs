//! The edge facts the table asks of a live process (`/proc`): its directories, cgroup, groups,
//! program, and whether it is an interpreter.
//!
//! Separate because it is the table's only look outside the event stream, behind a trait so
//! the tests drive the table with recorded streams and made-up facts.
use std::path::{Path, PathBuf};

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
    /// Who a live process is, as the kernel says: what an exec event carries and a preload
    /// `Hello` does not (its parent, mount namespace and real uid).
    fn identity(&self, _pid: u32) -> Option<Identity> {
        None
    }
    /// A live Python process as the scan at daemon start finds it ([`crate::seed`]): for an
    /// atexit report of a process the table missed.
    fn seed(&self, _pid: u32, _elf: &mut crate::elf::ElfCache) -> Option<crate::seed::Seeded> {
        None
    }
}

/// Who a live process is (see [`ProcFacts::identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Parent pid.
    pub ppid: u32,
    /// Mount namespace inode (0 when unreadable).
    pub mnt_ns: u32,
    /// Real uid.
    pub uid: u32,
}

/// The facts of `inner` for every pid but one, of which nothing is known: a process whose pid
/// may now be another's (a preload `Hello` read after its sender's pid was reused).
pub struct Without<'a> {
    /// Where the other facts come from.
    pub inner: &'a dyn ProcFacts,
    /// The pid nothing is asked about.
    pub pid: u32,
}

impl ProcFacts for Without<'_> {
    fn cwd(&self, pid: u32) -> Option<PathBuf> {
        (pid != self.pid).then(|| self.inner.cwd(pid)).flatten()
    }
    fn cgroup(&self, pid: u32) -> Option<String> {
        (pid != self.pid).then(|| self.inner.cgroup(pid)).flatten()
    }
    fn fd_path(&self, pid: u32, fd: i32) -> Option<PathBuf> {
        (pid != self.pid)
            .then(|| self.inner.fd_path(pid, fd))
            .flatten()
    }
    fn exe(&self, pid: u32) -> Option<PathBuf> {
        (pid != self.pid).then(|| self.inner.exe(pid)).flatten()
    }
    fn groups(&self, pid: u32) -> Vec<u32> {
        if pid == self.pid {
            return Vec::new();
        }
        self.inner.groups(pid)
    }
    fn is_interpreter(&self, pid: u32, elf: &mut crate::elf::ElfCache) -> Option<bool> {
        (pid != self.pid)
            .then(|| self.inner.is_interpreter(pid, elf))
            .flatten()
    }
    fn identity(&self, pid: u32) -> Option<Identity> {
        (pid != self.pid)
            .then(|| self.inner.identity(pid))
            .flatten()
    }
}

/// Reads facts from `/proc`.
pub struct ProcFs;

impl ProcFacts for ProcFs {
    fn cwd(&self, pid: u32) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
    }
    fn cgroup(&self, pid: u32) -> Option<String> {
        use std::io::Read;
        // Read into room for the whole file: `read_to_string` asks its size first (0 for a
        // `/proc` file) and then reads it 32 bytes at a time, six system calls at every exec
        // on a node with cgroup v1's hierarchies.
        let mut text = String::with_capacity(4096);
        std::fs::File::open(format!("/proc/{pid}/cgroup"))
            .and_then(|mut f| f.read_to_string(&mut text))
            .ok()?;
        Some(text)
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
        crate::elf::is_interpreter(Path::new(&format!("/proc/{pid}")), elf)
    }
    fn seed(&self, pid: u32, elf: &mut crate::elf::ElfCache) -> Option<crate::seed::Seeded> {
        crate::seed::inspect(pid, std::process::id(), elf)
    }
    fn identity(&self, pid: u32) -> Option<Identity> {
        use std::os::unix::fs::MetadataExt;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the parenthesised command (which may hold spaces and parentheses): state, ppid.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
        if matches!(fields.next(), Some("Z" | "X")) {
            return None; // exited, not yet reaped
        }
        let ppid = fields.next()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let mnt_ns = std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
            .map(|m| m.ino() as u32)
            .unwrap_or(0);
        Some(Identity { ppid, mnt_ns, uid })
    }
}
