//! `sched/sched_process_exit`: a task is exiting.
//!
//! ```text
//! field:char comm[16];    offset:8;    size:16;    signed:0;
//! field:pid_t pid;    offset:24;    size:4;    signed:1;
//! field:int prio;    offset:28;    size:4;    signed:1;
//! field:bool group_dead;    offset:32;    size:1;    signed:0;
//! ```
//! The tracepoint carries no exit code, but `task->exit_code` is already set when it fires
//! (`do_exit` stores it first): read at the BTF offset. It holds `code << 8` for an exit and the
//! signal number for a kill, which is what lets a SIGKILLed or wall-clock-killed job be recorded
//! with the packages it had imported. `signal_deliver` is useless for this: every fatal signal
//! reaches the group as SIGKILL there.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use tracer_common::{EventKind, ExitEvent, STATE_PYTHON};

use crate::{
    maps::{any_inflight, config, header, put, release, scratch, send, unstash, Wake, PROCS},
    task,
};

/// Program entry.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    try_sched_process_exit(&ctx);
    0
}

fn try_sched_process_exit(ctx: &TracePointContext) {
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let pid = pid_tgid as u32;
    // A thread killed inside an open never reaches `sys_exit_open*`: drop its stash here.
    if any_inflight() {
        unstash(pid);
    }
    // The whole process is gone when the last thread exits (`group_dead`); kernels without
    // the field: when the leader exits.
    let process_done = if cfg.tp_exit_group_dead != 0 {
        // SAFETY: offset from the tracefs format; the read is checked by the helper.
        matches!(unsafe { ctx.read_at::<u8>(cfg.tp_exit_group_dead as usize) }, Ok(v) if v != 0)
    } else {
        pid == tgid
    };
    if !process_done {
        return;
    }
    // SAFETY: the value is copied out immediately.
    let Some(entry) = (unsafe { PROCS.get(tgid) }).copied() else {
        return;
    };
    let state = entry.state;
    release(&entry);
    let _ = PROCS.remove(tgid);
    if state != STATE_PYTHON {
        return;
    }
    // `u32::MAX` tells the daemon the code could not be read (`exit = unknown`).
    let exit_code: u32 = task::read(task::current(), cfg.task_exit_code).unwrap_or(u32::MAX);
    let Some(s) = scratch() else { return };
    put(
        s,
        0,
        ExitEvent {
            header: header(EventKind::Exit, tgid),
            exit_code,
            _pad: 0,
        },
    );
    send(s, core::mem::size_of::<ExitEvent>(), Wake::Later);
}
