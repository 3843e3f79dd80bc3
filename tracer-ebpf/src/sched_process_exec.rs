//! `sched/sched_process_exec`: a new program image is running.
//!
//! Nothing is decided here from the program's name: a console script is named after the script,
//! a copied or symlinked interpreter after the link, and `python-config` is a shell script. Every
//! new image starts on probation (`STATE_PROBATION`); `sys_exit_open*` promotes it when it tries
//! to open what only a CPython interpreter opens at start-up, and only then is its argv and
//! environment copied (from `mm->arg_*`/`env_*`, which still hold the exec-time strings: the
//! interpreter has run no Python code yet). A tracked Python process that execs again is
//! reported as [`EventKind::ExecOther`] and starts over on probation.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated::bpf_probe_read_kernel,
        generated::bpf_probe_read_user, generated::bpf_probe_read_user_str,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{
    Counter, EventKind, ExecEvent, Header, ProcState, ARGS_MAX, ENV_MAX, EXEC_ARGS_OFF,
    EXEC_ENV_OFF, EXEC_FILENAME_OFF, EXEC_FLAG_ARGS_TRUNCATED, EXEC_FLAG_ENV_TRUNCATED,
    EXEC_FLAG_GROUPS, EXEC_GROUPS_OFF, GROUPS_MAX, PATH_MAX, STATE_IGNORED, STATE_PROBATION,
    STATE_PYTHON,
};

use crate::{
    cpu_sample::PYPROCS,
    maps::{config, count, header, put, quota_give, quota_take, scratch, send, Quota, Wake, PROCS},
    task,
};

/// Program entry.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    try_sched_process_exec(&ctx);
    0
}

fn try_sched_process_exec(_ctx: &TracePointContext) {
    let cfg = config();
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out immediately; a concurrent delete only makes it stale.
    // 0 = not tracked (a plain integer: `Option` comparisons compile to reads the verifier
    // rejects as uninitialised).
    let (prev, prev_uid): (u32, u32) = match unsafe { PROCS.get(tgid) } {
        Some(p) => (p.state, p.uid),
        None => (0, 0),
    };
    if prev == STATE_IGNORED || tgid == cfg.self_tgid {
        return;
    }
    // A new image: its interpreter, if any, is found again by the daemon.
    let _ = PYPROCS.remove(tgid);
    if prev == STATE_PYTHON {
        if let Some(s) = scratch() {
            put(s, 0, header(EventKind::ExecOther, tgid));
            send(s, core::mem::size_of::<Header>(), Wake::Later);
        }
    }
    if prev == STATE_PROBATION {
        quota_give(prev_uid, Quota::Probation);
    }
    // Charged to the uid: past its share of probation entries, a new image is not watched
    // (counted), so one user's thousands of idle processes cannot fill `PROCS`.
    let uid = bpf_get_current_uid_gid() as u32;
    if !quota_take(uid, Quota::Probation, cfg.probation_per_uid) {
        count(Counter::ProbationQuota);
        if prev != 0 {
            let _ = PROCS.remove(tgid);
        }
        return;
    }
    if !track_as(tgid, STATE_PROBATION, cfg.probation_opens, uid) {
        quota_give(uid, Quota::Probation);
    }
}

/// Inserts or replaces the state of `tgid` (not on probation: charged to no uid); counts a
/// full map.
#[inline(always)]
pub fn track(tgid: u32, state: u32, budget: u32) {
    track_as(tgid, state, budget, 0);
}

/// Inserts or replaces the state of `tgid`, charged to `uid`; `false` (counted) when the map
/// is full.
#[inline(always)]
fn track_as(tgid: u32, state: u32, budget: u32, uid: u32) -> bool {
    let v = ProcState {
        state,
        budget,
        uid,
        _pad: 0,
    };
    if PROCS.insert(tgid, v, 0).is_err() {
        count(Counter::ProcsFull);
        return false;
    }
    true
}

/// Builds and sends an [`ExecEvent`] for the current process: identity, the path passed to
/// `execve` (`AT_EXECFN`: the kernel copies it to the top of the new stack, right after the
/// environment strings, so it starts at `mm->env_end`), argv and environment (from
/// `mm->arg_*`/`env_*`), mount namespace.
#[inline(always)]
pub fn emit_process(kind: EventKind, extra_flags: u32) {
    let cfg = config();
    let Some(s) = scratch() else { return };
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let cur = task::current();
    let parent: u64 = task::read(cur, cfg.task_real_parent).unwrap_or(0);
    let ppid: u32 = task::read(parent, cfg.task_tgid).unwrap_or(0);
    let nsproxy: u64 = task::read(cur, cfg.task_nsproxy).unwrap_or(0);
    let mnt_ns: u64 = task::read(nsproxy, cfg.nsproxy_mnt_ns).unwrap_or(0);
    let mnt_ns_inum: u32 = task::read(mnt_ns, cfg.mnt_ns_inum).unwrap_or(0);
    let mm: u64 = task::read(cur, cfg.task_mm).unwrap_or(0);
    let mut flags = extra_flags;

    let dst = s.buf[EXEC_FILENAME_OFF..].as_mut_ptr();
    let execfn: u64 = task::read(mm, cfg.mm_env_end).unwrap_or(0);
    // SAFETY: `dst` has PATH_MAX bytes of room; the helper bounds the copy by that size and
    // validates the user address.
    let n = unsafe { bpf_probe_read_user_str(dst.cast(), PATH_MAX as u32, execfn as *const _) };
    let filename_len = if n > 0 {
        (n - 1) as u32
    } else {
        count(Counter::ReadFailed);
        0
    };

    let args_len = copy_user_range(
        s.buf[EXEC_ARGS_OFF..].as_mut_ptr(),
        task::read(mm, cfg.mm_arg_start).unwrap_or(0),
        task::read(mm, cfg.mm_arg_end).unwrap_or(0),
        ARGS_MAX,
        &mut flags,
        EXEC_FLAG_ARGS_TRUNCATED,
    );
    let env_len = copy_user_range(
        s.buf[EXEC_ENV_OFF..].as_mut_ptr(),
        task::read(mm, cfg.mm_env_start).unwrap_or(0),
        task::read(mm, cfg.mm_env_end).unwrap_or(0),
        ENV_MAX,
        &mut flags,
        EXEC_FLAG_ENV_TRUNCATED,
    );
    if flags & EXEC_FLAG_ENV_TRUNCATED != 0 {
        count(Counter::EnvTruncated);
    }
    let n_groups = copy_groups(s.buf[EXEC_GROUPS_OFF..].as_mut_ptr(), cur, &mut flags);
    put(
        s,
        0,
        ExecEvent {
            header: header(kind, (pid_tgid >> 32) as u32),
            ppid,
            uid: uid_gid as u32,
            gid: (uid_gid >> 32) as u32,
            mnt_ns: mnt_ns_inum,
            filename_len,
            args_len,
            env_len,
            flags,
            n_groups,
            _pad: 0,
        },
    );
    send(s, EXEC_ENV_OFF + env_len as usize, Wake::Now);
}

/// Copies the process's supplementary groups (`real_cred->group_info`, as `/proc/<pid>/status`
/// shows them) to `dst` and sets [`EXEC_FLAG_GROUPS`]; returns how many. Read here, at the
/// event, they are the process's own: read from `/proc` when the daemon handles the event,
/// a short process has gone (and its pid may be another's), and the read was a fortieth of
/// the daemon's CPU per Python start. More than [`GROUPS_MAX`], or no offsets: none, and the
/// daemon reads `/proc`.
#[inline(always)]
fn copy_groups(dst: *mut u8, task: u64, flags: &mut u32) -> u32 {
    let cfg = config();
    if cfg.task_real_cred == 0 {
        return 0;
    }
    let cred: u64 = task::read(task, cfg.task_real_cred).unwrap_or(0);
    let info: u64 = task::read(cred, cfg.cred_group_info).unwrap_or(0);
    let Some(n) = task::read::<i32>(info, cfg.group_info_ngroups) else {
        return 0;
    };
    if n < 0 || n as usize > GROUPS_MAX {
        return 0;
    }
    // Mask for the verifier: `GROUPS_MAX * 4` is a power of two, above every `n * 4` here.
    let len = ((n as usize) * 4) & (2 * GROUPS_MAX * 4 - 1);
    if len > 0 {
        // SAFETY: `dst` has `GROUPS_MAX * 4` bytes of room and `len` is at most that; the
        // helper validates the kernel address.
        let r = unsafe {
            bpf_probe_read_kernel(
                dst.cast(),
                len as u32,
                (info + cfg.group_info_gid as u64) as *const _,
            )
        };
        if r < 0 {
            count(Counter::ReadFailed);
            return 0;
        }
    }
    *flags |= EXEC_FLAG_GROUPS;
    n as u32
}

/// Copies `[start, end)` of user memory (at most `max - 1` bytes) to `dst`; returns the length.
#[inline(always)]
fn copy_user_range(
    dst: *mut u8,
    start: u64,
    end: u64,
    max: usize,
    flags: &mut u32,
    trunc: u32,
) -> u32 {
    if start == 0 || end <= start {
        return 0;
    }
    let mut len = (end - start) as usize;
    if len > max - 1 {
        len = max - 1;
        *flags |= trunc;
    }
    // Mask for the verifier: `max` is a power of two, so this keeps `len` as computed.
    let len = len & (max - 1);
    // SAFETY: `dst` has `max` bytes of room; the helper validates the user address.
    let r = unsafe { bpf_probe_read_user(dst.cast(), len as u32, start as *const _) };
    if r < 0 {
        count(Counter::ReadFailed);
        return 0;
    }
    len as u32
}
