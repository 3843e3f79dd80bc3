//! `syscalls/sys_enter_mmap`: a Python process maps a file executable.
//!
//! ```text
//! field:unsigned long prot;    offset:32;    size:8;    signed:0;
//! field:unsigned long fd;    offset:48;    size:8;    signed:0;
//! ```
//! The dynamic loader maps an extension module's text with `PROT_EXEC` from the descriptor it
//! just opened; reading a `.so` as data never does. The daemon pairs the descriptor with the
//! process's last open that returned it. A process that is not Python costs one `PROCS` lookup.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use tracer_common::{Counter, EventKind, MapExecEvent, STATE_PYTHON};

use crate::maps::{config, count, header, put, scratch, send, Wake, PROCS};

const PROT_EXEC: u64 = 4;

/// `mmap(addr, len, prot, flags, fd, off)`.
#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    try_sys_enter_mmap(&ctx);
    0
}

fn try_sys_enter_mmap(ctx: &TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is copied out immediately.
    match unsafe { PROCS.get(tgid) } {
        Some(p) if p.state == STATE_PYTHON => {}
        _ => return,
    }
    let cfg = config();
    // SAFETY: `prot`'s offset comes from the tracefs format; the helper checks the read.
    let Ok(prot) = (unsafe { ctx.read_at::<u64>(cfg.tp_mmap_prot as usize) }) else {
        return count(Counter::ReadFailed);
    };
    if prot & PROT_EXEC == 0 {
        return;
    }
    // SAFETY: `fd`'s offset comes from the tracefs format; the helper checks the read.
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(cfg.tp_mmap_fd as usize) }) else {
        return count(Counter::ReadFailed);
    };
    let fd = fd as i64 as i32;
    if fd < 0 {
        return;
    }
    let Some(s) = scratch() else { return };
    put(
        s,
        0,
        MapExecEvent {
            header: header(EventKind::MapExec, tgid),
            tid: pid_tgid as u32,
            fd,
        },
    );
    send(s, core::mem::size_of::<MapExecEvent>(), Wake::Later);
}
