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
//!
//! The process's CPU time is read here too, once, from the last thread: threads that exited
//! and were reaped before are in `signal->{utime, stime, sum_sched_runtime}`; the others are
//! still on the process's thread list with their own times: this thread, a leader that exited
//! earlier (a zombie until the whole group is reaped), and threads of a killed process still
//! exiting on other CPUs. The sum is read without the kernel's `stats_lock`: a thread reaped
//! during the walk is counted once or not at all (a window of microseconds). The exiting
//! thread's runtime is as of its last scheduler update (at most a tick behind).
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use tracer_common::{Config, EventKind, ExitEvent, EXIT_FLAG_CPU, EXIT_THREADS_MAX, STATE_PYTHON};

use crate::{
    cpu_sample::PYPROCS,
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
    let _ = PYPROCS.remove(tgid);
    if state != STATE_PYTHON {
        return;
    }
    // `u32::MAX` tells the daemon the code could not be read (`exit = unknown`).
    let exit_code: u32 = task::read(task::current(), cfg.task_exit_code).unwrap_or(u32::MAX);
    let cpu = cpu_times(&cfg, task::current());
    let Some(s) = scratch() else { return };
    let (flags, [utime_ns, stime_ns, runtime_ns]) = match cpu {
        Some(t) => (EXIT_FLAG_CPU, t),
        None => (0, [0; 3]),
    };
    put(
        s,
        0,
        ExitEvent {
            header: header(EventKind::Exit, tgid),
            exit_code,
            flags,
            utime_ns,
            stime_ns,
            runtime_ns,
        },
    );
    send(s, core::mem::size_of::<ExitEvent>(), Wake::Later);
}

/// `[utime, stime, runtime]` of the whole process whose last thread `cur` is (see the module
/// comment), ns; `None` when this kernel's BTF lacked a field, a read failed or the process
/// still had more than [`EXIT_THREADS_MAX`] threads listed: the record's CPU time is then
/// null, never a partial sum.
#[inline(always)]
fn cpu_times(cfg: &Config, cur: u64) -> Option<[u64; 3]> {
    if cfg.cpu_times == 0 {
        return None;
    }
    let signal: u64 = task::read(cur, cfg.task_signal)?;
    // Threads already reaped (`__exit_signal` added their times here).
    let mut t = [
        task::read::<u64>(signal, cfg.signal_utime)?,
        task::read::<u64>(signal, cfg.signal_stime)?,
        task::read::<u64>(signal, cfg.signal_runtime)?,
    ];
    if cfg.signal_thread_head == 0 {
        // Before 6.7: the exiting thread and a zombie leader; a thread exiting concurrently
        // on another CPU is missed.
        add_task(cfg, cur, &mut t)?;
        let leader: u64 = task::read(cur, cfg.task_group_leader)?;
        if leader != cur {
            add_task(cfg, leader, &mut t)?;
        }
        return Some(t);
    }
    // Every thread still on the process's list: this one, a zombie leader, and any still
    // exiting on another CPU (a thread leaves the list in the same `__exit_signal` that adds
    // its times to `signal`), as the kernel's `thread_group_cputime` sums them.
    let head = signal + cfg.signal_thread_head as u64;
    let mut node: u64 = task::read(head, 0)?;
    for _ in 0..EXIT_THREADS_MAX {
        if node == head {
            return Some(t);
        }
        add_task(cfg, node.wrapping_sub(cfg.task_thread_node as u64), &mut t)?;
        node = task::read(node, 0)?;
    }
    None
}

/// Adds one task's own `utime`, `stime` and `se.sum_exec_runtime` to `t`.
#[inline(always)]
fn add_task(cfg: &Config, task: u64, t: &mut [u64; 3]) -> Option<()> {
    t[0] = t[0].wrapping_add(task::read::<u64>(task, cfg.task_utime)?);
    t[1] = t[1].wrapping_add(task::read::<u64>(task, cfg.task_stime)?);
    t[2] = t[2].wrapping_add(task::read::<u64>(task, cfg.task_runtime)?);
    Some(())
}
