//! The path the kernel actually opened, from the new descriptor's dentries.
//!
//! The path an open event carries is read from the process's memory at syscall exit; a thread
//! that rewrites that buffer while another thread's `open()` blocks could name a file it never
//! opened. So for a successful open the kernel's own answer is sent too: starting at
//! `current->files->fdt->fd[ret]->f_path`, each dentry's name up to its mount's root, then the
//! mount point in the parent mount, until the root of the process's mount namespace. The names
//! go out leaf first, each NUL-terminated; the daemon reverses them.
use aya_ebpf::helpers::generated::bpf_probe_read_kernel_str;
use tracer_common::{KPATH_DEPTH, KPATH_MAX, SCRATCH_SIZE};

use crate::{
    maps::{config, Scratch},
    task,
};

/// `a == b` for two kernel pointers, as a comparison of their XOR with zero: a register to
/// register comparison makes the verifier tie the two values together, and the states it
/// keeps per iteration of the walk then no longer match (the program exceeds its budget).
#[inline(always)]
fn same(a: u64, b: u64) -> bool {
    // SAFETY: a volatile read of a local only hides the XOR from the optimiser, which would
    // otherwise turn it back into `a == b`.
    unsafe { core::ptr::read_volatile(&(a ^ b)) == 0 }
}

/// Longest component read at once (`NAME_MAX` + NUL).
const NAME_READ: usize = 256;

/// Writes the components of the file open on `fd` at `start` in the scratch buffer; returns
/// their length in bytes (0 when it could not be read) and whether they reach the root (`false`:
/// only the last [`KPATH_DEPTH`] levels or [`KPATH_MAX`] bytes).
#[inline(always)]
pub fn opened_path(s: &mut Scratch, start: usize, fd: i32) -> (u32, bool) {
    let cfg = config();
    let cur = task::current();
    let Some(files) = task::read::<u64>(cur, cfg.task_files) else {
        return (0, false);
    };
    let Some(fdt) = task::read::<u64>(files, cfg.files_fdt) else {
        return (0, false);
    };
    let max_fds: u32 = task::read(fdt, cfg.fdtable_max_fds).unwrap_or(0);
    if fd < 0 || fd as u32 >= max_fds {
        return (0, false);
    }
    let Some(fds) = task::read::<u64>(fdt, cfg.fdtable_fd) else {
        return (0, false);
    };
    let Some(file) = task::read::<u64>(fds + 8 * fd as u64, 0) else {
        return (0, false);
    };
    let (Some(mut dentry), Some(vfsmnt)) = (
        task::read::<u64>(file, cfg.file_dentry),
        task::read::<u64>(file, cfg.file_mnt),
    ) else {
        return (0, false);
    };
    let mut mnt = vfsmnt.wrapping_sub(cfg.mount_mnt as u64);
    let mut len: usize = 0;
    for _ in 0..KPATH_DEPTH {
        let Some(root) = task::read::<u64>(mnt, cfg.mount_mnt + cfg.vfsmount_root) else {
            return (0, false);
        };
        if same(dentry, root) {
            // The top of this mount: continue from where it is mounted, unless it is the
            // namespace's root mount.
            let Some(parent) = task::read::<u64>(mnt, cfg.mount_parent) else {
                return (0, false);
            };
            if same(parent, mnt) || parent == 0 {
                return (len as u32, true);
            }
            let Some(point) = task::read::<u64>(mnt, cfg.mount_mountpoint) else {
                return (0, false);
            };
            dentry = point;
            mnt = parent;
            continue;
        }
        let Some(up) = task::read::<u64>(dentry, cfg.dentry_parent) else {
            return (0, false);
        };
        if same(up, dentry) {
            return (len as u32, true); // a file system's root outside any mount walk (detached)
        }
        let Some(name) = task::read::<u64>(dentry, cfg.dentry_name) else {
            return (0, false);
        };
        if len + NAME_READ > KPATH_MAX {
            return (len as u32, false);
        }
        // The mask proves the destination in bounds to the verifier; `start + len` is below
        // half the buffer by construction.
        let at = (start + len) & (SCRATCH_SIZE / 2 - 1);
        // SAFETY: `at + NAME_READ` is within the scratch buffer; the helper validates `name`.
        let n = unsafe {
            bpf_probe_read_kernel_str(
                s.buf.as_mut_ptr().add(at).cast(),
                NAME_READ as u32,
                name as *const _,
            )
        };
        if n <= 1 {
            return (0, false);
        }
        len += n as usize;
        dentry = up;
    }
    (len as u32, false)
}
