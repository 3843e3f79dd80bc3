//! `syscalls/sys_exit_{openat,open,openat2}`: read the stashed path, promote a probation process
//! that turns out to be Python, and send a Python process's module-file opens.
//!
//! ```text
//! field:int __syscall_nr;    offset:8;    size:4;    signed:1;
//! field:long ret;    offset:16;    size:8;    signed:1;
//! ```
//! Sent for a Python process: successful opens of `*.py`, `*.pyc`, `*.so`, `*.so.N…` (from which
//! the daemon also picks the BLAS backend) and archives (`*.zip`, `*.egg`, `*.pyz`, `*.whl`), and
//! *failed* attempts of `*.pyc`: the import system tries the cached bytecode before it reads a
//! source file, which is how the daemon tells an import from a plain read. The kernel only keeps
//! everything else (data files, directories, sockets) off the ring buffer.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user_str},
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{
    Counter, EventKind, OpenEvent, EXEC_FLAG_LIBPYTHON, OPEN_FLAG_KPATH_PARTIAL, OPEN_FLAG_WRITE,
    OPEN_PATH_OFF, PATH_MAX, PROBATION_OPEN_COST, STATE_PYTHON,
};

use crate::{
    dentry::opened_path,
    maps::{
        any_inflight, config, count, header, put, release, scratch, send, unstash, Scratch, Wake,
        KPATH, PROCS, STASH, STASH_PROBATION, STASH_WRITE,
    },
    sched_process_exec::{emit_process, track},
};

/// `openat` returned.
#[tracepoint]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    on_exit(&ctx);
    0
}

/// `open` returned.
#[tracepoint]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    on_exit(&ctx);
    0
}

/// `openat2` returned.
#[tracepoint]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    on_exit(&ctx);
    0
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    if !any_inflight() {
        return;
    }
    // SAFETY: copied out before the entry is removed.
    let Some(entry) = (unsafe { STASH.get(tid) }).copied() else {
        return;
    };
    unstash(tid);
    // SAFETY: offset from the tracefs format.
    let ret: i64 = match unsafe { ctx.read_at::<i64>(config().tp_exit_ret as usize) } {
        Ok(r) => r,
        Err(_) => return count(Counter::ReadFailed),
    };
    let Some(s) = scratch() else { return };
    let Some(len) = read_path(s, entry.ptr, ret) else {
        return;
    };
    let mut len = len;
    if entry.flags & STASH_PROBATION != 0 {
        let libpython = basename_is_libpython(&Tail::new(s, len));
        if !libpython && !is_python_marker(s, len, ret < 0) {
            return spend_probation(tgid, ret >= 0);
        }
        // SAFETY: copied out at once.
        if let Some(p) = unsafe { PROCS.get(tgid) } {
            release(p);
        }
        track(tgid, STATE_PYTHON, 0);
        count(Counter::PythonExecs);
        emit_process(
            EventKind::Promote,
            if libpython { EXEC_FLAG_LIBPYTHON } else { 0 },
        );
        // `emit_process` assembled its event in the same scratch buffer: read the path again.
        match read_path(s, entry.ptr, ret) {
            Some(l) => len = l,
            None => return,
        }
    }
    let write = entry.flags & STASH_WRITE != 0;
    if write {
        if ret < 0 || !is_bytecode_output(s, len) {
            return;
        }
    } else if ret >= 0 {
        count(Counter::OpensSeen);
        if !is_module_file(s, len) && !is_archive(s, len) {
            return;
        }
    } else if !ends_with(&Tail::new(s, len), b".pyc") {
        return;
    }
    put(
        s,
        0,
        OpenEvent {
            header: header(EventKind::Open, tgid),
            path_len: len as u32,
            ret: ret as i32,
            tid,
            dfd: entry.dfd,
            flags: if write { OPEN_FLAG_WRITE } else { 0 },
            kpath_len: 0,
        },
    );
    if ret >= 0 && !write {
        // `open_kpath` adds what was really opened (from the descriptor, not user memory) and
        // sends the event; it does not return here unless the slot is empty.
        // SAFETY: a tail call with this program's own context.
        unsafe { KPATH.tail_call(ctx, 0) };
    }
    send(s, OPEN_PATH_OFF + len, Wake::Later);
}

/// Tail-called by `sys_exit_open*` with an open event assembled in this CPU's scratch buffer:
/// appends the kernel's path of the opened file (see `dentry.rs`) and sends it.
#[tracepoint]
pub fn open_kpath(_ctx: TracePointContext) -> u32 {
    let Some(s) = scratch() else { return 0 };
    // SAFETY: `sys_exit_open*` wrote an `OpenEvent` at offset 0 just before the tail call.
    let e: OpenEvent = unsafe { core::ptr::read_unaligned(s.buf.as_ptr().cast()) };
    let len = (e.path_len as usize) & (PATH_MAX - 1);
    let (kpath_len, whole) = opened_path(s, OPEN_PATH_OFF + len, e.ret);
    if kpath_len == 0 {
        // Only a failed kernel read leaves nothing (the open succeeded, so the descriptor
        // is there): the event still goes, with the path as passed.
        count(Counter::KpathUnread);
    }
    let flags = if whole {
        e.flags
    } else {
        e.flags | OPEN_FLAG_KPATH_PARTIAL
    };
    put(
        s,
        0,
        OpenEvent {
            kpath_len,
            flags,
            ..e
        },
    );
    send(s, OPEN_PATH_OFF + len + kpath_len as usize, Wake::Later);
    0
}

/// Reads the user path into the scratch buffer; its length, or `None` (counted when the open
/// succeeded: a failed open may have been given a bad pointer).
#[inline(always)]
fn read_path(s: &mut Scratch, ptr: u64, ret: i64) -> Option<usize> {
    // SAFETY: the destination has PATH_MAX bytes of room; the helper validates the source.
    let n = unsafe {
        bpf_probe_read_user_str(
            s.buf[OPEN_PATH_OFF..].as_mut_ptr().cast(),
            PATH_MAX as u32,
            ptr as *const _,
        )
    };
    if n <= 1 {
        if ret >= 0 {
            count(Counter::ReadFailed);
        }
        return None;
    }
    Some(((n - 1) as usize) & (PATH_MAX - 1))
}

/// A probation process's open that showed nothing: spend budget, forget it when spent.
#[inline(always)]
fn spend_probation(tgid: u32, success: bool) {
    let cost = if success { PROBATION_OPEN_COST } else { 1 };
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
        // SAFETY: pointer to a live map value; a racing delete leaves it valid until RCU ends.
        let left = unsafe { (*p).budget };
        if left <= cost {
            // SAFETY: as above.
            release(unsafe { &*p });
            let _ = PROCS.remove(tgid);
            count(Counter::ProbationExpired);
        } else {
            // SAFETY: as above.
            unsafe { (*p).budget = left - cost };
        }
    }
}

/// Besides `libpython*` (a shared or embedded interpreter, checked by the caller), what only a
/// CPython interpreter opens before it runs any Python code: a *failed* attempt at `pyvenv.cfg` next to the executable or
/// `<exe>._pth` (path configuration, probed by every CPython 3 at start-up, even under
/// `-I`/`-S`/`-E`), at a `.pyc` (a bytecode probe) or at `<name>module.so` (CPython 2's
/// extension probe). Only failures count: a program reading a Python tree (`cat`, `tar`,
/// `grep -r`) opens files that exist. The daemon still checks that a process promoted so is an
/// interpreter (its program defines or calls `Py_Initialize`, or it maps `libpython`).
#[inline(always)]
fn is_python_marker(s: &Scratch, len: usize, failed: bool) -> bool {
    let t = Tail::new(s, len);
    failed
        && (ends_with(&t, b".pyc")
            || ends_with(&t, b"/pyvenv.cfg")
            || ends_with(&t, b"._pth")
            || ends_with(&t, b"module.so"))
}

/// The last [`WIN`] bytes of the path, right-aligned, so suffix checks index a stack array at
/// constant offsets (indexing the scratch buffer at `len - k` defeats the verifier's bounds
/// tracking once LLVM strength-reduces the loop).
const WIN: usize = 64;

struct Tail {
    win: [u8; WIN],
    len: usize,
}

impl Tail {
    #[inline(always)]
    fn new(s: &Scratch, len: usize) -> Tail {
        let mut win = [0u8; WIN];
        // The source may start before the path when `len < WIN`; those bytes are never
        // looked at (`at` checks `k <= len`). `bpf_probe_read_kernel` checks the address.
        let src = (s.buf.as_ptr() as u64 + (OPEN_PATH_OFF + len) as u64 - WIN as u64) as *const u8;
        // SAFETY: destination is a stack array of WIN bytes; the helper validates the source.
        unsafe { bpf_probe_read_kernel(win.as_mut_ptr().cast(), WIN as u32, src.cast()) };
        Tail { win, len }
    }

    /// The `k`-th byte from the end (1-based), 0 before the path's start.
    #[inline(always)]
    fn at(&self, k: usize) -> u8 {
        if k > self.len || k == 0 || k > WIN {
            return 0;
        }
        self.win[WIN - k]
    }
}

/// Whether the path ends with `pat` (at most [`WIN`] bytes).
#[inline(always)]
fn ends_with<const N: usize>(t: &Tail, pat: &[u8; N]) -> bool {
    let mut i = 0;
    while i < N {
        if t.at(N - i) != pat[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A bytecode file being written: `*.pyc`, or the `*.pyc.<n>` temporary `importlib` and
/// `py_compile` write and rename into place.
#[inline(always)]
fn is_bytecode_output(s: &Scratch, len: usize) -> bool {
    let t = Tail::new(s, len);
    if ends_with(&t, b".pyc") {
        return true;
    }
    let mut k = 6;
    while k <= 32 {
        if t.at(k) == b'.'
            && t.at(k - 1) == b'p'
            && t.at(k - 2) == b'y'
            && t.at(k - 3) == b'c'
            && t.at(k - 4) == b'.'
        {
            return true;
        }
        k += 1;
    }
    false
}

/// Archives an interpreter imports from (`sys.path` entries, eggs, zipapps).
#[inline(always)]
fn is_archive(s: &Scratch, len: usize) -> bool {
    let t = Tail::new(s, len);
    ends_with(&t, b".zip")
        || ends_with(&t, b".egg")
        || ends_with(&t, b".pyz")
        || ends_with(&t, b".whl")
}

#[inline(always)]
fn is_module_file(s: &Scratch, len: usize) -> bool {
    let t = Tail::new(s, len);
    let (a, b, c, d) = (t.at(4), t.at(3), t.at(2), t.at(1));
    if (b, c, d) == (b'.', b'p', b'y') || (a, b, c, d) == (b'.', b'p', b'y', b'c') {
        return true;
    }
    if (b, c, d) == (b'.', b's', b'o') {
        return true;
    }
    // `libfoo.so.0`, `libmkl_rt.so.2`, `libopenblas.so.0.3`: ".so." in the last 16 bytes.
    let mut k = 4;
    while k <= 16 {
        if t.at(k) == b'.' && t.at(k - 1) == b's' && t.at(k - 2) == b'o' && t.at(k - 3) == b'.' {
            return true;
        }
        k += 1;
    }
    false
}

#[inline(always)]
fn basename_is_libpython(t: &Tail) -> bool {
    const NAME: &[u8; 9] = b"libpython";
    let mut k = 10;
    while k <= WIN {
        if t.at(k) == b'/' {
            let mut i = 0;
            while i < NAME.len() {
                if t.at(k - 1 - i) != NAME[i] {
                    return false;
                }
                i += 1;
            }
            return true;
        }
        k += 1;
    }
    false
}
