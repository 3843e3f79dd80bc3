//! Maps, the load-time configuration global, and the helpers every program uses to count and
//! send.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use tracer_common::{Config, Counter, EventKind, Header, ProcState, COUNTER_COUNT, SCRATCH_SIZE};

/// Filled in by the loader (`EbpfLoader::set_global`) from BTF and tracefs before load.
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    self_tgid: 0,
    probation_opens: 0,
    task_exit_code: 0,
    task_real_parent: 0,
    task_tgid: 0,
    task_pid: 0,
    task_mm: 0,
    task_nsproxy: 0,
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
};

/// The configuration, read so the compiler cannot constant-fold the zero initialiser.
#[inline(always)]
pub fn config() -> Config {
    // SAFETY: `CONFIG` is a plain static that is only ever written by the loader before load.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

/// Events to the daemon. 16 MiB holds ~2,000 Python starts with full environments at once.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Tracked processes by tgid: looked up on every open in the system, so a plain hash (an LRU
/// map's lookup also updates its reference bits, measurably slower). Entries are removed at
/// exit and when probation ends; a full map is counted (`Counter::ProcsFull`).
#[map]
pub static PROCS: HashMap<u32, ProcState> = HashMap::with_max_entries(65536, 0);

/// Path pointer of an in-flight read-only open, by thread id: the path is read at syscall exit,
/// when the page is certainly resident.
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

/// Removes the stash entry of `tid`, keeping [`INFLIGHT`] in step.
#[inline(always)]
pub fn unstash(tid: u32) {
    if STASH.remove(tid).is_ok() {
        inflight_add(u64::MAX);
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
    /// Wake it now: a new Python process, whose `/proc` entry the daemon reads while it lives.
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
    // Mask proves `len < SCRATCH_SIZE` to the verifier; callers never exceed it.
    let len = len & (SCRATCH_SIZE - 1);
    let flags = match wake {
        Wake::Now => BPF_RB_FORCE_WAKEUP,
        Wake::Later => BPF_RB_NO_WAKEUP,
    };
    match EVENTS.output::<[u8]>(&s.buf[..len], flags) {
        Ok(()) => count(Counter::EventsSent),
        Err(_) => count(Counter::RingFull),
    }
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
}
