//! `syscalls/sys_enter_{openat,open,openat2}`: stash the path pointer (and directory fd) of a
//! read-only open by a tracked or probation process, to be read at syscall exit.
//!
//! ```text
//! sys_enter_openat:  filename offset:24 size:8, flags offset:32 size:8
//! sys_enter_open:    filename offset:16 size:8, flags offset:24 size:8
//! sys_enter_openat2: filename offset:24 size:8, how offset:32 size:8 (struct open_how *, u64 flags first)
//! ```
//! (As on 6.18; the loader reads the real offsets from tracefs.) The path is *not* read here:
//! the string may not be paged in yet at entry and the open may fail. A process that is not
//! tracked costs this one `PROCS` lookup.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{Counter, STATE_IGNORED, STATE_PROBATION, STATE_PYTHON};

use crate::maps::{
    config, count, inflight_add, quota_give, quota_take, unstash, Quota, Stash, PROCS, STASH,
    STASH_PROBATION, STASH_WRITE,
};

const O_ACCMODE: u64 = 0o3;
const O_DIRECTORY: u64 = 0o200000;
const AT_FDCWD: i32 = -100;

/// `openat(dfd, filename, flags, mode)`.
#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    let cfg = config();
    stash(
        &ctx,
        Some(cfg.tp_openat_dfd),
        cfg.tp_openat_filename,
        Flags::Direct(cfg.tp_openat_flags),
    );
    0
}

/// `open(filename, flags, mode)`.
#[tracepoint]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    let cfg = config();
    stash(
        &ctx,
        None,
        cfg.tp_open_filename,
        Flags::Direct(cfg.tp_open_flags),
    );
    0
}

/// `openat2(dfd, filename, how, usize)`.
#[tracepoint]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    let cfg = config();
    stash(
        &ctx,
        Some(cfg.tp_openat2_dfd),
        cfg.tp_openat2_filename,
        Flags::OpenHow(cfg.tp_openat2_how),
    );
    0
}

enum Flags {
    /// Offset of an integer `flags` field.
    Direct(u32),
    /// Offset of a `struct open_how *` (user memory, `u64 flags` first).
    OpenHow(u32),
}

#[inline(always)]
fn stash(ctx: &TracePointContext, dfd_off: Option<u32>, filename_off: u32, flags: Flags) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is copied out immediately.
    let state = match unsafe { PROCS.get(tgid) } {
        Some(p) if p.state != STATE_IGNORED => p.state,
        _ => return,
    };
    let flags: u64 = match flags {
        // SAFETY: `flags`' offset comes from the tracefs format; the helper checks the read.
        Flags::Direct(off) => match unsafe { ctx.read_at::<u64>(off as usize) } {
            Ok(f) => f,
            Err(_) => return count(Counter::ReadFailed),
        },
        Flags::OpenHow(off) => {
            // SAFETY: `how`'s offset comes from the tracefs format; the helper checks it.
            let how = match unsafe { ctx.read_at::<u64>(off as usize) } {
                Ok(p) => p,
                Err(_) => return count(Counter::ReadFailed),
            };
            // SAFETY: a user pointer, read with the probe helper, which faults safely (the
            // first field of `struct open_how` is `flags`).
            match unsafe { bpf_probe_read_user(how as *const u64) } {
                Ok(f) => f,
                Err(_) => return count(Counter::ReadFailed),
            }
        }
    };
    // Writes matter only for a Python process (a bytecode file written after its source was
    // read: compilation, not import); directories never.
    let write = flags & O_ACCMODE != 0;
    if flags & O_DIRECTORY != 0 || (write && state != STATE_PYTHON) {
        return;
    }
    // SAFETY: `filename`'s offset comes from the tracefs format; the helper checks the read.
    let Ok(ptr) = (unsafe { ctx.read_at::<u64>(filename_off as usize) }) else {
        return count(Counter::ReadFailed);
    };
    let dfd: i32 = match dfd_off {
        // SAFETY: offset from the tracefs format (an `int` stored in a `long` slot).
        Some(off) => match unsafe { ctx.read_at::<i64>(off as usize) } {
            Ok(d) => d as i32,
            Err(_) => return count(Counter::ReadFailed),
        },
        None => AT_FDCWD,
    };
    let entry = Stash {
        ptr,
        flags: if state == STATE_PROBATION {
            STASH_PROBATION
        } else {
            0
        } | if write { STASH_WRITE } else { 0 },
        dfd,
        uid: bpf_get_current_uid_gid() as u32,
        _pad: 0,
    };
    let tid = pid_tgid as u32;
    // An entry left by an open that never returned (the thread was killed inside it) is
    // replaced, not counted twice.
    unstash(tid);
    // Charged to the uid: one user's thousands of threads blocked in `open()` cannot fill the
    // map for everyone.
    if !quota_take(entry.uid, Quota::Stash, config().stash_per_uid) {
        return count(Counter::StashQuota);
    }
    if STASH.insert(tid, entry, 0).is_err() {
        quota_give(entry.uid, Quota::Stash);
        count(Counter::StashFull);
    } else {
        inflight_add(1);
    }
}
