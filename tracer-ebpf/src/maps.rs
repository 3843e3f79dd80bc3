//! Maps, the load-time configuration global, and the helpers every program uses to count and
//! send.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::{bpf_get_current_uid_gid, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, ProgramArray, RingBuf},
};
use tracer_common::{
    Config, Counter, EventKind, Header, ProcState, UidUse, COUNTER_COUNT, SCRATCH_SIZE,
};

/// Filled in by the loader (`EbpfLoader::set_global`) from BTF and tracefs before load.
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    self_tgid: 0,
    probation_opens: 0,
    probation_per_uid: 0,
    stash_per_uid: 0,
    ring_share: 0,
    ring_bytes: 0,
    task_exit_code: 0,
    cpu_times: 0,
    task_utime: 0,
    task_stime: 0,
    task_runtime: 0,
    task_signal: 0,
    task_group_leader: 0,
    task_thread_node: 0,
    signal_utime: 0,
    signal_stime: 0,
    signal_runtime: 0,
    signal_thread_head: 0,
    task_real_parent: 0,
    task_tgid: 0,
    task_mm: 0,
    task_nsproxy: 0,
    task_real_cred: 0,
    cred_group_info: 0,
    group_info_ngroups: 0,
    group_info_gid: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    mm_env_start: 0,
    mm_env_end: 0,
    tp_openat_dfd: 0,
    tp_openat_filename: 0,
    tp_openat_flags: 0,
    tp_open_filename: 0,
    tp_open_flags: 0,
    tp_openat2_dfd: 0,
    tp_openat2_filename: 0,
    tp_openat2_how: 0,
    tp_exit_ret: 0,
    tp_mmap_prot: 0,
    tp_mmap_fd: 0,
    tp_exit_group_dead: 0,
    task_files: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    fdtable_max_fds: 0,
    file_dentry: 0,
    file_mnt: 0,
    dentry_parent: 0,
    dentry_name: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    vfsmount_root: 0,
    task_fsbase: 0,
};

/// The configuration, read so the compiler cannot constant-fold the zero initialiser.
#[inline(always)]
pub fn config() -> Config {
    // SAFETY: `CONFIG` is a plain static that is only ever written by the loader before load.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

/// Events to the daemon.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(tracer_common::RING_BYTES, 0);

/// Tracked processes by tgid: looked up on every open in the system, so a plain hash (an LRU
/// map's lookup also updates its reference bits, measurably slower). Entries are removed at
/// exit and when probation ends; a full map is counted (`Counter::ProcsFull`). Probation
/// entries are charged to their uid ([`UIDS`]), so one user's idle processes cannot fill it.
#[map]
pub static PROCS: HashMap<u32, ProcState> = HashMap::with_max_entries(65536, 0);

/// Slot 0: `open_kpath`, tail-called by `sys_exit_open*` to add the kernel's path of an opened
/// file to its event. A program of its own, so that the dentry walk is verified apart from the
/// path checks before it (together they exceed the verifier's budget).
#[map]
pub static KPATH: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// What each uid holds of `PROCS`, `STASH` and the ring buffer ([`UidUse`]).
#[map]
pub static UIDS: HashMap<u32, UidUse> = HashMap::with_max_entries(65536, 0);

/// The daemon's drain count: it advances it after every drain of the ring buffer, which
/// starts a new accounting period for [`UidUse::ring_bytes`].
#[map]
pub static EPOCH: Array<u64> = Array::with_max_entries(1, 0);

const BPF_NOEXIST: u64 = 1;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// This uid's entry in [`UIDS`], created on first use.
#[inline(always)]
pub fn uid_use(uid: u32) -> Option<*mut UidUse> {
    if let Some(p) = UIDS.get_ptr_mut(uid) {
        return Some(p);
    }
    let _ = UIDS.insert(uid, UidUse::default(), BPF_NOEXIST);
    UIDS.get_ptr_mut(uid)
}

/// Which per-uid count a quota applies to.
#[derive(Clone, Copy)]
pub enum Quota {
    /// [`UidUse::probation`].
    Probation,
    /// [`UidUse::stash`].
    Stash,
}

#[inline(always)]
fn quota_slot(u: *mut UidUse, q: Quota) -> *mut u64 {
    // SAFETY: `u` points to a live map value; only a field address is taken.
    unsafe {
        match q {
            Quota::Probation => core::ptr::addr_of_mut!((*u).probation),
            Quota::Stash => core::ptr::addr_of_mut!((*u).stash),
        }
    }
}

/// Charges one unit of `q` to `uid`; `false` (nothing charged) when it already holds
/// `limit`. Root is never limited. The check and the add are not one atomic step: CPUs racing
/// may overshoot by a few, which is harmless.
#[inline(always)]
pub fn quota_take(uid: u32, q: Quota, limit: u32) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(u) = uid_use(uid) else {
        return true;
    };
    let slot = quota_slot(u, q);
    // SAFETY: a live, aligned map value field; read as signed: releases racing a take may
    // leave it briefly below zero.
    let held = unsafe { core::ptr::read_volatile(slot) } as i64;
    if held >= limit as i64 {
        return false;
    }
    // SAFETY: as above; `lock xadd` on the BPF target.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1) };
    true
}

/// Returns one unit of `q` charged to `uid`.
#[inline(always)]
pub fn quota_give(uid: u32, q: Quota) {
    if uid == 0 {
        return;
    }
    if let Some(u) = UIDS.get_ptr_mut(uid) {
        // SAFETY: as in `quota_take`; adding `u64::MAX` subtracts one.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(quota_slot(u, q), u64::MAX) };
    }
}

/// Releases what a `PROCS` entry holds of its uid's quota (before it is removed or replaced).
#[inline(always)]
pub fn release(p: &ProcState) {
    if p.state == tracer_common::STATE_PROBATION {
        quota_give(p.uid, Quota::Probation);
    }
}

/// Path pointer of an in-flight read-only open, by thread id: the path is read at syscall exit,
/// when the page is certainly resident. Sized by the loader (a quarter of `PROCS`).
#[map]
pub static STASH: HashMap<u32, Stash> = HashMap::with_max_entries(16384, 0);

/// Number of entries in [`STASH`], maintained atomically. Lets `sys_exit_open*` return after
/// one array read (no hash lookup) whenever no tracked process is inside an open, which is
/// most of the time on most nodes: the exit path of a non-Python open is then nearly free.
#[map]
pub static INFLIGHT: Array<u64> = Array::with_max_entries(1, 0);

/// Adds `delta` (wrapping, so -1 is `u64::MAX`) to [`INFLIGHT`].
#[inline(always)]
pub fn inflight_add(delta: u64) {
    if let Some(p) = INFLIGHT.get_ptr_mut(0) {
        // SAFETY: `p` points into a live, 8-byte aligned array value; an atomic add (BPF
        // `lock xadd`) keeps concurrent CPUs consistent. `core::sync::atomic` has no RMW
        // operations on the BPF target, hence the intrinsic.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, delta) };
    }
}

/// Whether any open is stashed.
#[inline(always)]
pub fn any_inflight() -> bool {
    match INFLIGHT.get(0) {
        Some(v) => {
            // SAFETY: volatile read of a live array value written atomically elsewhere.
            unsafe { core::ptr::read_volatile(v) != 0 }
        }
        None => true,
    }
}

/// Removes the stash entry of `tid`, keeping [`INFLIGHT`] and its uid's quota in step.
#[inline(always)]
pub fn unstash(tid: u32) {
    // SAFETY: copied out before the entry is removed.
    let uid = match unsafe { STASH.get(tid) } {
        Some(e) => e.uid,
        None => return,
    };
    if STASH.remove(tid).is_ok() {
        inflight_add(u64::MAX);
        quota_give(uid, Quota::Stash);
    }
}

/// Per-CPU counters indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// One per-CPU buffer in which an event is assembled (BPF stacks are only 512 bytes).
#[repr(C, align(8))]
pub struct Scratch {
    /// Raw bytes.
    pub buf: [u8; SCRATCH_SIZE],
}

/// Event assembly buffers, one per CPU. A plain array indexed by CPU number because per-CPU
/// map values are limited to 32 KiB; the loader sets `max_entries` to the number of CPUs.
#[map]
pub static SCRATCH: Array<Scratch> = Array::with_max_entries(1, 0);

/// This CPU's slot of a counter, to add to without a branch.
#[inline(always)]
pub fn counter(c: Counter) -> Option<*mut u64> {
    COUNTERS.get_ptr_mut(c as u32)
}

/// Adds one to a counter.
#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot of this map; no other program runs on this CPU concurrently
        // with a non-sleepable tracepoint program.
        unsafe { *p += 1 };
    }
}

/// Returns this CPU's scratch buffer.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: helper with no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    match SCRATCH.get_ptr_mut(cpu) {
        // SAFETY: the map value lives as long as the program; indexed by this CPU, so only
        // programs on this CPU use it.
        Some(p) => Some(unsafe { &mut *p }),
        None => {
            count(Counter::ScratchMissing);
            None
        }
    }
}

/// Whether sending an event wakes the daemon.
#[derive(Clone, Copy)]
pub enum Wake {
    /// Wake it now: a new Python process, whose `/proc` entry the daemon reads while it lives,
    /// or a young process's sample, whose code objects it reads while the process lives.
    Now,
    /// Do not: the daemon drains the ring on a timer anyway, and a wake-up per open would cost
    /// it a context switch per module file.
    Later,
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Sends the first `len` bytes of the scratch buffer; counts success or a full ring.
#[inline(always)]
pub fn send(s: &Scratch, len: usize, wake: Wake) {
    let flags = match wake {
        Wake::Now => BPF_RB_FORCE_WAKEUP,
        Wake::Later => BPF_RB_NO_WAKEUP,
    };
    send_flags(s, len, flags);
}

/// As [`send`], waking the daemon when `wake` is 1 ([`Wake::Now`]; 0: [`Wake::Later`]), by
/// arithmetic: no branch on it, so a value the verifier does not know adds no path.
#[inline(always)]
pub fn send_waking_if(s: &Scratch, len: usize, wake: u64) {
    const _: () = assert!(BPF_RB_NO_WAKEUP + 1 == BPF_RB_FORCE_WAKEUP);
    send_flags(s, len, BPF_RB_NO_WAKEUP + (wake & 1));
}

#[inline(always)]
fn send_flags(s: &Scratch, len: usize, flags: u64) {
    // Mask proves `len < SCRATCH_SIZE` to the verifier; callers never exceed it.
    let len = len & (SCRATCH_SIZE - 1);
    if !ring_share_left(len as u64) {
        return count(Counter::RingShare);
    }
    match EVENTS.output::<[u8]>(&s.buf[..len], flags) {
        Ok(()) => count(Counter::EventsSent),
        Err(_) => count(Counter::RingFull),
    }
}

/// Whether the current uid may write `len` more bytes: always while the ring is less than
/// half full; past that, only within its [`Config::ring_share`] since the daemon's last drain.
/// So one user flooding the ring can fill it halfway plus one share, and every other user
/// keeps at least its own share of the rest. Root is never limited.
#[inline(always)]
fn ring_share_left(len: u64) -> bool {
    let cfg = config();
    let uid = bpf_get_current_uid_gid() as u32;
    if uid == 0 || cfg.ring_share == 0 {
        return true;
    }
    let Some(u) = uid_use(uid) else {
        return true;
    };
    let epoch = match EPOCH.get(0) {
        // SAFETY: volatile read of a value the daemon writes.
        Some(e) => unsafe { core::ptr::read_volatile(e) },
        None => 0,
    };
    // SAFETY: `u` points to a live map value; plain reads and writes (an estimate: racing
    // CPUs of one uid may lose an addition).
    unsafe {
        if (*u).epoch != epoch {
            (*u).epoch = epoch;
            (*u).ring_bytes = 0;
        }
        let used = EVENTS.query(BPF_RB_AVAIL_DATA);
        if used > (cfg.ring_bytes / 2) as u64 && (*u).ring_bytes + len > cfg.ring_share as u64 {
            return false;
        }
        (*u).ring_bytes += len;
    }
    true
}

/// The common prefix of an event of `kind` about process `tgid`, stamped now.
#[inline(always)]
pub fn header(kind: EventKind, tgid: u32) -> Header {
    Header {
        kind: kind as u32,
        tgid,
        // SAFETY: helper with no preconditions.
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
    }
}

/// Writes a plain value at `off` in the scratch buffer.
#[inline(always)]
pub fn put<T: Copy>(s: &mut Scratch, off: usize, v: T) {
    if off + core::mem::size_of::<T>() <= SCRATCH_SIZE {
        // SAFETY: bounds checked above; unaligned write into a byte buffer.
        unsafe { core::ptr::write_unaligned(s.buf.as_mut_ptr().add(off).cast::<T>(), v) };
    }
}

/// As [`put`], at an offset that is a multiple of `T`'s alignment (checked when `off` is a
/// constant, as the compiler folds it): one store per field, where an unaligned write is one
/// per byte. In a program verified once per path, as the sampler's end is, that counts.
#[inline(always)]
pub fn put_aligned<T: Copy>(s: &mut Scratch, off: usize, v: T) {
    if off.is_multiple_of(core::mem::align_of::<T>())
        && off + core::mem::size_of::<T>() <= SCRATCH_SIZE
    {
        // SAFETY: bounds checked above; `buf` starts the 8-aligned `Scratch`, so `off` keeps
        // `T`'s alignment (at most 8 for every event type).
        unsafe { core::ptr::write(s.buf.as_mut_ptr().add(off).cast::<T>(), v) };
    }
}

/// The opener is on probation.
pub const STASH_PROBATION: u32 = 1;
/// The open is for writing (Python processes only).
pub const STASH_WRITE: u32 = 2;

/// A stashed open: the user path pointer, the directory fd it is relative to, and whether the
/// opener is on probation.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Stash {
    /// User pointer to the path.
    pub ptr: u64,
    /// [`STASH_PROBATION`] | [`STASH_WRITE`].
    pub flags: u32,
    /// `dfd` of `openat`/`openat2`; `AT_FDCWD` for `open`.
    pub dfd: i32,
    /// The uid charged for it ([`UidUse::stash`]).
    pub uid: u32,
    /// Padding.
    pub _pad: u32,
}
