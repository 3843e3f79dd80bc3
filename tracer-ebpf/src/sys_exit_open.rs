//! `syscalls/sys_exit_{openat,open,openat2}`: on success, read the stashed path and send it if
//! it names a module file.
//!
//! ```text
//! field:int __syscall_nr;    offset:8;    size:4;    signed:1;
//! field:long ret;    offset:16;    size:8;    signed:1;
//! ```
//! Sent: `*.py`, `*.pyc`, `*.so` (extension modules) and `*.so.N…` (shared libraries, from which
//! the daemon picks the BLAS backend). The daemon decides which of these belong to a package;
//! the kernel only keeps everything else (data files, directories, sockets) off the ring buffer.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user_str},
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{Counter, EventKind, Header, OpenEvent, OPEN_PATH_OFF, PATH_MAX, STATE_PYTHON};

use crate::{
    maps::{any_inflight, config, count, put, scratch, send, unstash, Scratch, PROCS, STASH},
    sched_process_exec::{emit_process, track, Filename},
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
    if ret < 0 {
        return;
    }
    count(Counter::OpensSeen);
    let Some(s) = scratch() else { return };
    // SAFETY: the destination has PATH_MAX bytes of room; the helper validates the source.
    let n = unsafe {
        bpf_probe_read_user_str(
            s.buf[OPEN_PATH_OFF..].as_mut_ptr().cast(),
            PATH_MAX as u32,
            entry.ptr as *const _,
        )
    };
    if n <= 1 {
        return count(Counter::ReadFailed);
    }
    let len = ((n - 1) as usize) & (PATH_MAX - 1);
    if entry.probation != 0 {
        return probation(s, tgid, len, entry.ptr);
    }
    if !is_module_file(s, len) {
        return;
    }
    put(
        s,
        0,
        OpenEvent {
            header: Header {
                kind: EventKind::Open as u32,
                tgid,
                // SAFETY: helper with no preconditions.
                ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
            },
            path_len: len as u32,
            fd: ret as u32,
        },
    );
    send(s, OPEN_PATH_OFF + len);
}

/// A non-Python process's early open: promote it if it is `libpython*`, else spend budget.
#[inline(always)]
fn probation(s: &mut Scratch, tgid: u32, len: usize, ptr: u64) {
    if basename_is_libpython(s, len) {
        track(tgid, STATE_PYTHON, 0);
        emit_process(EventKind::Promote, Filename::User(ptr as *const u8));
        return;
    }
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
        // SAFETY: pointer to a live map value; a racing delete leaves it valid until RCU ends.
        let left = unsafe { (*p).budget };
        if left <= 1 {
            let _ = PROCS.remove(tgid);
        } else {
            // SAFETY: as above.
            unsafe { (*p).budget = left - 1 };
        }
    }
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
fn basename_is_libpython(s: &Scratch, len: usize) -> bool {
    const NAME: &[u8; 9] = b"libpython";
    let t = Tail::new(s, len);
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
