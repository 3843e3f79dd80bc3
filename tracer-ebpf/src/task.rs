//! Reads of `task_struct`/`mm_struct` fields at offsets the loader took from kernel BTF.
//! Without CO-RE these offsets are the only safe way to reach fields no tracepoint carries
//! (exit code, parent, argv/environment location, mount namespace, CPU times).
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

/// Reads a `T` at `base + off` in kernel memory; `None` when the read faults.
#[inline(always)]
pub fn read<T: Copy>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: `bpf_probe_read_kernel` validates the address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// The current task pointer.
#[inline(always)]
pub fn current() -> u64 {
    // SAFETY: helper with no preconditions.
    unsafe { bpf_get_current_task() }
}
