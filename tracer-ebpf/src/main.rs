//! pyusage kernel side.
//!
//! Decides in the kernel which processes are Python by what they open, never by their name (a
//! new image is on probation until it tries a file only CPython opens at start-up), follows
//! their fork children, and reports their module-file opens (and failed bytecode probes) and
//! executable mappings through one ring buffer. A process that is not Python costs one hash-map
//! lookup per open or mmap tracepoint once its probation is over. Every early return that loses
//! data increments a per-CPU counter the daemon reports.
//!
//! One program per file, named after its tracepoint:
//! - [`sched_process_exec`]: classify a new program image, capture argv/environment.
//! - [`sched_process_fork`]: follow fork children of Python processes (not threads).
//! - [`sched_process_exit`]: report how a Python process ended, forget it.
//! - [`sys_enter_open`]: stash the user path pointer of a read-only open.
//! - [`sys_exit_open`]: read the path, promote a probation process, filter by suffix, send it.
//! - [`sys_enter_mmap`]: report executable mappings (how extension modules are loaded).
//! - [`cpu_sample`]: the CPU clock's samples of Python stacks (perf event, one per CPU).
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod cpu_sample;
mod dentry;
mod maps;
mod sched_process_exec;
mod sched_process_exit;
mod sched_process_fork;
mod sys_enter_mmap;
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
