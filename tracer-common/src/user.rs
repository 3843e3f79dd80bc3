//! User-side view of the shared types: `aya::Pod` for the loader, and decoding of ring-buffer
//! events with explicit length checks (a short or unknown record is an error, never a cast).
extern crate std;

use std::{fmt, vec::Vec};

use crate::{
    sampling::{PyProc, SampleEvent, FRAMES_MAX, SAMPLE_FRAMES_OFF},
    Config, EventKind, ExecEvent, ExitEvent, ForkEvent, Header, MapExecEvent, OpenEvent, ProcState,
    ARGS_MAX, ENV_MAX, EXEC_ARGS_OFF, EXEC_ENV_OFF, EXEC_FILENAME_OFF, OPEN_PATH_OFF, PATH_MAX,
};

// SAFETY: plain `#[repr(C)]` structs of integers with no padding holes, valid for any bits.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for ProcState {}
// SAFETY: as above (its size is checked to have no padding in `sampling`).
unsafe impl aya::Pod for PyProc {}

impl TryFrom<u32> for EventKind {
    type Error = DecodeError;
    fn try_from(v: u32) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => EventKind::Exec,
            2 => EventKind::ExecOther,
            3 => EventKind::Fork,
            4 => EventKind::Exit,
            5 => EventKind::Open,
            6 => EventKind::Promote,
            7 => EventKind::MapExec,
            8 => EventKind::Sample,
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the fixed part of its kind, or a length field points past the end.
    Short {
        /// The kind's tag.
        kind: u32,
        /// Bytes received.
        len: usize,
    },
    /// A tag this version does not know.
    UnknownKind(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { kind, len } => {
                write!(
                    f,
                    "ring-buffer event of kind {kind} truncated ({len} bytes)"
                )
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown ring-buffer event kind {k}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A decoded kernel event, owning its bytes so it can cross a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A Python interpreter was exec'd (or, with `promoted`, an embedded one was found).
    Exec(ExecInfo),
    /// A tracked process exec'd a non-Python program.
    ExecOther {
        /// Process.
        tgid: u32,
        /// Boot-clock ns.
        ktime_ns: u64,
    },
    /// A tracked process forked.
    Fork {
        /// Parent.
        parent: u32,
        /// Child.
        child: u32,
        /// Boot-clock ns.
        ktime_ns: u64,
    },
    /// A tracked process ended.
    Exit {
        /// Process.
        tgid: u32,
        /// Raw `task->exit_code`.
        exit_code: u32,
        /// The process's CPU time as the kernel counted it at the exit; `None` when it could
        /// not be read (or the exit came from a source that carries none).
        cpu: Option<ExitCpu>,
        /// Boot-clock ns.
        ktime_ns: u64,
    },
    /// A module file was opened, or a bytecode file was tried and not found.
    Open(OpenInfo),
    /// A file descriptor was mapped executable.
    MapExec {
        /// Process.
        tgid: u32,
        /// Thread.
        tid: u32,
        /// The descriptor.
        fd: i32,
        /// Boot-clock ns.
        ktime_ns: u64,
    },
    /// The CPU clock interrupted a thread of a sampled process.
    Sample(SampleInfo),
}

/// A process's CPU time at its exit, raw from the kernel (see [`ExitEvent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCpu {
    /// Tick-sampled user time, ns.
    pub utime_ns: u64,
    /// Tick-sampled system time, ns.
    pub stime_ns: u64,
    /// Exact scheduler runtime, ns.
    pub runtime_ns: u64,
}

/// One open (or failed bytecode probe) of a Python process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInfo {
    /// Process.
    pub tgid: u32,
    /// Thread.
    pub tid: u32,
    /// Boot-clock ns.
    pub ktime_ns: u64,
    /// The descriptor, or `-errno` for a failed attempt.
    pub ret: i32,
    /// Directory fd a relative `path` is relative to (`-100` = the current directory).
    pub dfd: i32,
    /// Opened for writing (a bytecode file being written).
    pub write: bool,
    /// Raw path bytes as passed (not necessarily UTF-8, possibly relative).
    pub path: Vec<u8>,
    /// For a successful open: the path the kernel opened, from the descriptor (absolute in
    /// the process's mount namespace, links resolved), as its components leaf first, each
    /// NUL-terminated (see [`OpenInfo::opened_path`]); `None` when it could not be read.
    pub opened: Option<Vec<u8>>,
    /// `opened` holds only the file's last levels (a deeper file): the path as passed must end
    /// with them.
    pub opened_partial: bool,
}

impl OpenInfo {
    /// The path the kernel opened, absolute.
    pub fn opened_path(&self) -> Option<Vec<u8>> {
        let leaf_first = self.opened.as_deref()?;
        let mut out = Vec::with_capacity(leaf_first.len() + 1);
        for c in components(leaf_first).rev() {
            out.push(b'/');
            out.extend_from_slice(c);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        Some(out)
    }

    /// Whether the kernel opened exactly `path` (absolute, no `.`/`..` components), or, for a
    /// partial kernel path, a file at the end of `path`; compared without building the
    /// kernel's path: the common case, on the path of every open.
    pub fn opened_is(&self, path: &[u8]) -> bool {
        let Some(k) = self.opened.as_deref() else {
            return true;
        };
        self.tail_is(k, path)
            .unwrap_or_else(|| self.components_are(k, path))
    }

    /// [`Self::opened_is`] by comparing the components of `path`, leaf first, with the
    /// kernel's `k`, empty ones skipped on both sides.
    fn components_are(&self, k: &[u8], path: &[u8]) -> bool {
        let mut want = path.split(|&b| b == b'/').filter(|c| !c.is_empty()).rev();
        let mut got = components(k);
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(_), None) => return self.opened_partial,
                (Some(a), Some(b)) if a == b => {}
                _ => return false,
            }
        }
    }

    /// [`Self::opened_is`]'s answer when `path` ends with the kernel's components as
    /// `/<name>` each and nothing is left of it (or the kernel's path is partial); `None` for
    /// anything else (a mismatch, or an empty component in `path`), which the component by
    /// component comparison decides. Each kernel component is compared once with the end of
    /// `path`, which is never scanned: that scan was most of the comparison's cost.
    fn tail_is(&self, k: &[u8], path: &[u8]) -> Option<bool> {
        let mut want = path;
        for c in components(k) {
            let n = want.len().checked_sub(c.len() + 1)?;
            if want[n] != b'/' || &want[n + 1..] != c {
                return None;
            }
            want = &want[..n];
        }
        (want.is_empty() || self.opened_partial).then_some(true)
    }
}

fn components(leaf_first: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    leaf_first.split(|&b| b == 0).filter(|c| !c.is_empty())
}

/// One CPU sample of a Python process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleInfo {
    /// Process.
    pub tgid: u32,
    /// Thread.
    pub tid: u32,
    /// Boot-clock ns.
    pub ktime_ns: u64,
    /// The interrupted user instruction address, 0 when unknown.
    pub user_ip: u64,
    /// Code-object addresses, innermost frame first.
    pub frames: Vec<u64>,
    /// `SAMPLE_FLAG_*`.
    pub flags: u32,
}

/// Everything the kernel captured at exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecInfo {
    /// Process.
    pub tgid: u32,
    /// Parent process.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Mount namespace inode.
    pub mnt_ns: u32,
    /// Boot-clock ns.
    pub ktime_ns: u64,
    /// Path as passed to `execve` (`AT_EXECFN`): the interpreter, or the script of a `#!` exec.
    pub filename: Vec<u8>,
    /// NUL-separated argv.
    pub args: Vec<u8>,
    /// NUL-separated environment.
    pub env: Vec<u8>,
    /// `EXEC_FLAG_*`.
    pub flags: u32,
    /// Found by what it opened (every live Python process is; `false` only for processes
    /// seeded from `/proc` at daemon start).
    pub promoted: bool,
    /// The program of a process executed from a descriptor (`fexecve`, a `memfd`: `filename`
    /// is `/dev/fd/N` or `/proc/self/fd/N`), read from `/proc/<pid>/exe` as soon as the event
    /// arrived: a short process may be gone by the time the event is handled.
    pub exe: Option<Vec<u8>>,
    /// Supplementary groups as the kernel had them at the event; `None` when it could not
    /// say (more than [`GROUPS_MAX`](crate::GROUPS_MAX), or a process not from an exec
    /// event): then they are read from `/proc`.
    pub groups: Option<Vec<u32>>,
}

impl ExecInfo {
    /// Whether the program was executed from a descriptor, so that only `/proc/<pid>/exe`
    /// names it.
    pub fn from_descriptor(&self) -> bool {
        let f = self.filename.as_slice();
        f.is_empty() || f.starts_with(b"/dev/fd/") || f.starts_with(b"/proc/")
    }
}

/// The groups region of exec event `e` (see [`ExecInfo::groups`]).
fn groups(buf: &[u8], e: &ExecEvent) -> Option<Vec<u32>> {
    if e.flags & crate::EXEC_FLAG_GROUPS == 0 || e.n_groups as usize > crate::GROUPS_MAX {
        return None;
    }
    let region =
        buf.get(crate::EXEC_GROUPS_OFF..crate::EXEC_GROUPS_OFF + 4 * e.n_groups as usize)?;
    Some(
        region
            .chunks_exact(4)
            .map(|g| u32::from_ne_bytes([g[0], g[1], g[2], g[3]]))
            .collect(),
    )
}

fn read<T: Copy>(buf: &[u8], kind: u32) -> Result<T, DecodeError> {
    if buf.len() < core::mem::size_of::<T>() {
        return Err(DecodeError::Short {
            kind,
            len: buf.len(),
        });
    }
    // SAFETY: length checked above; `T` is a `#[repr(C)]` integer struct valid for any bits;
    // `read_unaligned` imposes no alignment requirement on the ring-buffer bytes.
    Ok(unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

fn region(buf: &[u8], off: usize, len: u32, max: usize, kind: u32) -> Result<Vec<u8>, DecodeError> {
    let len = (len as usize).min(max);
    buf.get(off..off + len)
        .map(<[u8]>::to_vec)
        .ok_or(DecodeError::Short {
            kind,
            len: buf.len(),
        })
}

impl Event {
    /// Decodes one ring-buffer record.
    pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
        let h: Header = read(buf, 0)?;
        let kind = h.kind;
        Ok(match EventKind::try_from(kind)? {
            EventKind::Exec | EventKind::Promote => {
                let e: ExecEvent = read(buf, kind)?;
                Event::Exec(ExecInfo {
                    tgid: h.tgid,
                    ppid: e.ppid,
                    uid: e.uid,
                    gid: e.gid,
                    mnt_ns: e.mnt_ns,
                    ktime_ns: h.ktime_ns,
                    filename: region(buf, EXEC_FILENAME_OFF, e.filename_len, PATH_MAX, kind)?,
                    args: region(buf, EXEC_ARGS_OFF, e.args_len, ARGS_MAX, kind)?,
                    env: region(buf, EXEC_ENV_OFF, e.env_len, ENV_MAX, kind)?,
                    flags: e.flags,
                    promoted: kind == EventKind::Promote as u32,
                    exe: None,
                    groups: groups(buf, &e),
                })
            }
            EventKind::ExecOther => Event::ExecOther {
                tgid: h.tgid,
                ktime_ns: h.ktime_ns,
            },
            EventKind::Fork => {
                let e: ForkEvent = read(buf, kind)?;
                Event::Fork {
                    parent: h.tgid,
                    child: e.child,
                    ktime_ns: h.ktime_ns,
                }
            }
            EventKind::Exit => {
                let e: ExitEvent = read(buf, kind)?;
                Event::Exit {
                    tgid: h.tgid,
                    exit_code: e.exit_code,
                    cpu: (e.flags & crate::EXIT_FLAG_CPU != 0).then_some(ExitCpu {
                        utime_ns: e.utime_ns,
                        stime_ns: e.stime_ns,
                        runtime_ns: e.runtime_ns,
                    }),
                    ktime_ns: h.ktime_ns,
                }
            }
            EventKind::Open => {
                let e: OpenEvent = read(buf, kind)?;
                Event::Open(OpenInfo {
                    tgid: h.tgid,
                    tid: e.tid,
                    ktime_ns: h.ktime_ns,
                    ret: e.ret,
                    dfd: e.dfd,
                    write: e.flags & crate::OPEN_FLAG_WRITE != 0,
                    path: region(buf, OPEN_PATH_OFF, e.path_len, PATH_MAX, kind)?,
                    opened_partial: e.flags & crate::OPEN_FLAG_KPATH_PARTIAL != 0,
                    opened: if e.kpath_len == 0 {
                        None
                    } else {
                        Some(region(
                            buf,
                            OPEN_PATH_OFF + (e.path_len as usize).min(PATH_MAX),
                            e.kpath_len,
                            crate::KPATH_MAX,
                            kind,
                        )?)
                    },
                })
            }
            EventKind::MapExec => {
                let e: MapExecEvent = read(buf, kind)?;
                Event::MapExec {
                    tgid: h.tgid,
                    tid: e.tid,
                    fd: e.fd,
                    ktime_ns: h.ktime_ns,
                }
            }
            EventKind::Sample => {
                let e: SampleEvent = read(buf, kind)?;
                let n = (e.n_frames as usize).min(FRAMES_MAX);
                let bytes = buf
                    .get(SAMPLE_FRAMES_OFF..SAMPLE_FRAMES_OFF + n * 8)
                    .ok_or(DecodeError::Short {
                        kind,
                        len: buf.len(),
                    })?;
                Event::Sample(SampleInfo {
                    tgid: h.tgid,
                    tid: e.tid,
                    ktime_ns: h.ktime_ns,
                    user_ip: e.user_ip,
                    frames: bytes
                        .chunks_exact(8)
                        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                    flags: e.flags,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn open_bytes(path: &[u8], claimed: u32) -> Vec<u8> {
        let mut b = vec![0u8; OPEN_PATH_OFF];
        b[0..4].copy_from_slice(&(EventKind::Open as u32).to_ne_bytes());
        b[4..8].copy_from_slice(&42u32.to_ne_bytes());
        b[8..16].copy_from_slice(&7u64.to_ne_bytes());
        b[16..20].copy_from_slice(&claimed.to_ne_bytes());
        b[20..24].copy_from_slice(&(-2i32).to_ne_bytes());
        b[24..28].copy_from_slice(&43u32.to_ne_bytes());
        b[28..32].copy_from_slice(&(-100i32).to_ne_bytes());
        b[32..36].copy_from_slice(&1u32.to_ne_bytes());
        b.extend_from_slice(path);
        b
    }

    #[test]
    fn decodes_open_with_non_utf8_path() {
        let p = b"/x/\xff\xfe/mod.py";
        let ev = Event::decode(&open_bytes(p, p.len() as u32)).unwrap();
        assert_eq!(
            ev,
            Event::Open(OpenInfo {
                tgid: 42,
                tid: 43,
                ktime_ns: 7,
                ret: -2,
                dfd: -100,
                write: true,
                path: p.to_vec(),
                opened: None,
                opened_partial: false,
            })
        );
    }

    /// The tail comparison agrees with the component by component one on every path and
    /// kernel buffer over a small alphabet (empty components, `//`, trailing `/` included).
    #[test]
    fn opened_is_agrees_with_comparing_components() {
        fn all(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
            let mut out = vec![Vec::new()];
            let mut last = vec![Vec::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|p: &Vec<u8>| {
                        alphabet.iter().map(move |&c| [p.as_slice(), &[c]].concat())
                    })
                    .collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        let paths = all(b"/ab", 7);
        let mut checked = 0;
        for k in all(b"ab\0", 5) {
            for partial in [false, true] {
                let o = OpenInfo {
                    tgid: 1,
                    tid: 1,
                    ktime_ns: 0,
                    ret: 3,
                    dfd: -100,
                    write: false,
                    path: Vec::new(),
                    opened: Some(k.clone()),
                    opened_partial: partial,
                };
                for p in &paths {
                    let slow = o.components_are(&k, p);
                    assert_eq!(o.opened_is(p), slow, "{p:?} vs {k:?} {partial}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 1_000_000);
    }

    #[test]
    fn decodes_the_kernels_path_leaf_first() {
        let p = b"/v/lib64/m.pyc";
        let mut b = open_bytes(p, p.len() as u32);
        let k = b"m.pyc\0lib\0v\0";
        b[36..40].copy_from_slice(&(k.len() as u32).to_ne_bytes());
        b.extend_from_slice(k);
        let Event::Open(o) = Event::decode(&b).unwrap() else {
            panic!("not an open")
        };
        assert_eq!(o.opened_path().as_deref(), Some(&b"/v/lib/m.pyc"[..]));
        assert!(o.opened_is(b"/v/lib/m.pyc"));
        assert!(!o.opened_is(b"/v/lib64/m.pyc"));
        assert!(!o.opened_is(b"/lib/m.pyc"));
        assert!(
            !o.opened_is(b"/w/v/lib/m.pyc"),
            "a whole path must match whole"
        );
        let deep = OpenInfo {
            opened_partial: true,
            ..o
        };
        assert!(
            deep.opened_is(b"/w/v/lib/m.pyc"),
            "a partial one must end the path"
        );
        assert!(!deep.opened_is(b"/w/x/lib/m.pyc"));
    }

    #[test]
    fn rejects_length_past_end_and_unknown_kind() {
        let b = open_bytes(b"/a.py", 100);
        assert!(matches!(
            Event::decode(&b),
            Err(DecodeError::Short { kind: 5, .. })
        ));
        let mut b = open_bytes(b"/a.py", 5);
        b[0] = 99;
        assert_eq!(Event::decode(&b), Err(DecodeError::UnknownKind(99)));
        assert!(matches!(
            Event::decode(&[1, 0]),
            Err(DecodeError::Short { .. })
        ));
    }
}
