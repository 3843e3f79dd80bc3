//! pyusage kernel side.
//!
//! Decides in the kernel which processes are Python (an exec whose new `comm` starts with
//! `python`, or a process that maps `libpython` within its first opens), follows their fork
//! children, and reports their successful read-only opens of module files through one ring
//! buffer. A process that is not Python costs one hash-map lookup per open tracepoint and nothing
//! else. Every early return that loses data increments a per-CPU counter the daemon reports.
//!
//! One program per file, named after its tracepoint:
//! - [`sched_process_exec`]: classify a new program image, capture argv/environment.
//! - [`sched_process_fork`]: follow fork children of Python processes (not threads).
//! - [`sched_process_exit`]: report how a Python process ended, forget it.
//! - [`sys_enter_open`]: stash the user path pointer of a read-only open.
//! - [`sys_exit_open`]: on success, read the path, filter by suffix, send it.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod maps;
mod sched_process_exec;
mod sched_process_exit;
mod sched_process_fork;
mod sys_enter_open;
mod sys_exit_open;
mod task;

#[cfg(all(not(test), target_arch = "bpf"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects programs that could reach a panic, so this is never executed.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
