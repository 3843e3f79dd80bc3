//! Python processes that were already running when the daemon started (after an upgrade, a
//! crash or a restart of the service): found in `/proc`, so that their later imports and their
//! exit are recorded like any other's.
//!
//! A process is Python when its program or a library it maps exports the CPython API
//! (`Py_Initialize` in the ELF dynamic symbol table: the interpreter binary, `libpython`, or a
//! host that embeds it) — what it *is*, as in the kernel's probation, never its name. What it
//! imported before the daemon started is what `/proc` still shows: extension modules and
//! `libpython` in `/proc/<pid>/maps`, module files open in `/proc/<pid>/fd`. Its records carry
//! `source = "ebpf-seeded"`.
use std::{os::unix::fs::MetadataExt, path::PathBuf};

use tracer_common::user::ExecInfo;

use crate::elf::ElfCache;

/// One running Python process found at start.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// What an exec event would have carried (`promoted = false`).
    pub info: ExecInfo,
    /// Module files it has loaded or holds open, `__init__` files first.
    pub files: Vec<PathBuf>,
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub(crate) fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Finds every running Python process except `self_pid`'s tree (the daemon itself).
pub fn scan(self_pid: u32) -> Vec<Seeded> {
    let mut elf = ElfCache::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == self_pid {
            continue;
        }
        if let Some(s) = inspect(pid, self_pid, &mut elf) {
            out.push(s);
        }
    }
    out
}

/// `pid`, if it is a live Python process outside `self_pid`'s tree (the daemon's).
pub(crate) fn inspect(pid: u32, self_pid: u32, elf: &mut ElfCache) -> Option<Seeded> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(base.join("stat")).ok()?;
    // Fields after the parenthesised command (which may contain spaces and parentheses).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid: u32 = fields.get(1)?.parse().ok()?;
    if ppid == self_pid {
        return None;
    }
    let start_ticks: u64 = fields.get(19)?.parse().ok()?;
    let maps = std::fs::read_to_string(base.join("maps")).unwrap_or_default();
    let mapped: Vec<PathBuf> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    let exe = std::fs::read_link(base.join("exe")).ok()?;
    if crate::elf::is_interpreter(&base, elf) != Some(true) {
        return None;
    }
    let status = std::fs::read_to_string(base.join("status")).unwrap_or_default();
    let id = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(u32::MAX)
    };
    let mnt_ns = std::fs::metadata(base.join("ns/mnt"))
        .map(|m| m.ino() as u32)
        .unwrap_or(0);
    let mut files: Vec<PathBuf> = mapped
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "so"))
        .collect();
    if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let n = target.as_os_str().as_encoded_bytes();
                if n.ends_with(b".py") || n.ends_with(b".pyc") {
                    files.push(target);
                }
            }
        }
    }
    files.sort_by_key(|p| {
        let init = p
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b"__init__."));
        (!init, p.components().count(), p.clone())
    });
    files.dedup();
    Some(Seeded {
        info: ExecInfo {
            tgid: pid,
            ppid,
            uid: id("Uid:"),
            gid: id("Gid:"),
            mnt_ns,
            ktime_ns: start_ticks.saturating_mul(1_000_000_000) / clk_tck(),
            filename: exe.into_os_string().into_encoded_bytes(),
            args: std::fs::read(base.join("cmdline")).unwrap_or_default(),
            env: std::fs::read(base.join("environ")).unwrap_or_default(),
            flags: 0,
            promoted: false,
            exe: None,
            groups: None,
        },
        files,
    })
}
