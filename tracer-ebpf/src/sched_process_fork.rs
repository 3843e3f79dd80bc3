//! `raw_tracepoint/sched_process_fork(struct task_struct *parent, struct task_struct *child)`.
//!
//! The raw form is used because the formatted tracepoint carries only `child_pid`, which cannot
//! tell a new process from a new thread; here `child->tgid` is read (offset from BTF) and threads
//! are skipped, so the process map and the daemon only ever see processes.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};
use tracer_common::{EventKind, ForkEvent, STATE_IGNORED, STATE_PYTHON};

use crate::{
    cpu_sample::PYPROCS,
    maps::{config, header, put, scratch, send, Wake, PROCS},
    sched_process_exec::track,
    task,
};

/// Program entry.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    try_sched_process_fork(&ctx);
    0
}

fn try_sched_process_fork(ctx: &RawTracePointContext) {
    let cfg = config();
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    let child_task: u64 = ctx.arg(1);
    let Some(child_tgid) = task::read::<u32>(child_task, cfg.task_tgid) else {
        return;
    };
    if child_tgid == parent {
        return; // a thread
    }
    if parent == cfg.self_tgid {
        track(child_tgid, STATE_IGNORED, 0);
        return;
    }
    // SAFETY: the value is copied out immediately.
    let state = match unsafe { PROCS.get(parent) } {
        Some(p) => p.state,
        None => return,
    };
    match state {
        STATE_IGNORED => track(child_tgid, STATE_IGNORED, 0),
        STATE_PYTHON => {
            track(child_tgid, STATE_PYTHON, 0);
            // A fork child runs the same interpreter at the same addresses: sampled at once,
            // before the daemon has even seen it. Not with the parent's thread-state hint: the
            // child frees every thread state but the forking thread's. Young from its own
            // first sample: its code objects must be read while it lives, too.
            // SAFETY: the value is copied out immediately.
            if let Some(mut py) = unsafe { PYPROCS.get(parent) }.copied() {
                (py.tstate, py.tstate_tid) = (0, 0);
                (py.first_sample_ns, py.wake_code) = (0, 0);
                let _ = PYPROCS.insert(child_tgid, py, 0);
            }
            let Some(s) = scratch() else { return };
            put(
                s,
                0,
                ForkEvent {
                    header: header(EventKind::Fork, parent),
                    child: child_tgid,
                    _pad: 0,
                },
            );
            send(s, core::mem::size_of::<ForkEvent>(), Wake::Later);
        }
        // A probation process's children start their own probation at their own exec.
        _ => {}
    }
}
