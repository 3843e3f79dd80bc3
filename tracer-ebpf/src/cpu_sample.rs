//! `perf_event` on the software CPU clock, one per CPU: samples what a sampled Python
//! process's interrupted thread is running.
//!
//! A process that is not in [`PYPROCS`] costs one hash lookup. For one that is, the thread's
//! `PyThreadState` is found by matching `thread_id` (`pthread_self()`) to the thread pointer
//! (`task->thread.fsbase`), its frame chain is walked innermost first, and the code-object
//! address of each frame is sent with the interrupted user instruction address (so that time
//! inside an extension's `.so` is charged to the package that owns the file). The thread state
//! the thread found last is tried first ([`PyProc::tstate`]). A frame costs one read of user
//! memory ([`FRAME_READ`] bytes from the frame's link or its code object, whichever comes
//! first), except in 3.11+, whose frames lie in the thread's data stack: the two pages below
//! the innermost frame are read at once (one read costs about as much as a few small ones),
//! and each frame found in them is taken from that copy; a process whose walk found callers in
//! the two pages below them gets four (`PyProc::deep`, kept by this program). Reads never
//! fault pages in (`bpf_probe_read_user`), so a paged-out or hostile structure ends the walk
//! (flagged), never stalls it. A sample of a process in its first second wakes the daemon
//! when its innermost code object is new (at most one each 20 ms on the node: [`young_turn`],
//! [`wake_now`]): the daemon must read the code objects before the process exits. Other
//! samples wait for its timed drain.
use aya_ebpf::{
    bindings::bpf_perf_event_data,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_stack, bpf_ktime_get_boot_ns, bpf_probe_read_user,
        bpf_probe_read_user_buf,
    },
    macros::{map, perf_event},
    maps::{Array, HashMap},
    programs::PerfEventContext,
};
use tracer_common::{
    sampling::{
        PyLayout, PyProc, SampleEvent, FRAMES_MAX, FRAME_READ, FRAME_SPAN, NONE,
        SAMPLE_FLAG_NO_THREAD, SAMPLE_FLAG_READ_FAILED, SAMPLE_FLAG_TRUNCATED, SAMPLE_FRAMES_OFF,
        SAMPLE_WAKE_EVERY_NS, THREADS_MAX, YOUNG_NS,
    },
    Counter, EventKind,
};

use crate::{
    maps::{config, counter, header, put_aligned, scratch, send_waking_if, Scratch},
    task,
};

/// Sampled processes by tgid (see [`PyProc`]); written by the daemon, copied to fork
/// children, removed at exec and exit. Sized by the loader.
#[map]
pub static PYPROCS: HashMap<u32, PyProc> = HashMap::with_max_entries(16384, 0);

/// The boot-clock time (ns) of the last sample that woke the daemon, node-wide (see
/// [`SAMPLE_WAKE_EVERY_NS`]).
#[map]
pub static SAMPLE_WAKE: Array<u64> = Array::with_max_entries(1, 0);

/// Bytes of a frame read alone (see [`FRAME_READ`]).
const WINDOW: usize = FRAME_READ as usize;
/// Where in the scratch buffer a frame's window is read to: map memory, where a bounded
/// variable offset may be read (the stack allows none).
const WINDOW_OFF: usize = tracer_common::SCRATCH_SIZE - 256;
/// Masks an offset into the window's region of the scratch buffer (a valid layout's offsets
/// in the window are below [`FRAME_READ`]; the mask only proves the bound to the verifier).
const WINDOW_MASK: usize = 127;

/// Bytes of a thread's data stack read at once below its innermost frame (3.11+): two pages,
/// page-aligned, which hold the callers of a stack ~40 deep (a frame is its 72-byte header
/// and its locals and value stack); deeper callers are read one by one. One read of 8 KiB
/// costs less than a few reads of 80 bytes: each read of user memory has a fixed cost that
/// dwarfs its copy. (Reading the next block inside the walk made the program too large for
/// the verifier.)
const BLOCK: usize = 8192;
/// The block of a process whose stacks are deep ([`PyProc::deep`]): four pages, ~90 frames.
/// Not for every process: four pages cost shallow stacks more than they save deep ones.
const BLOCK_DEEP: usize = 2 * BLOCK;
/// A walk of at most this many frames clears [`PyProc::deep`] (they fit in [`BLOCK`]).
const SHALLOW: usize = 32;
/// [`PyProc::deep`]: the process's walks read [`BLOCK_DEEP`] (0: [`BLOCK`]).
const DEEP: u32 = 1;
/// [`PyProc::deep`]: a read of [`BLOCK_DEEP`] failed, so walks read [`BLOCK`] and do not ask
/// for more until a shallow walk clears it.
const DEEP_UNMAPPED: u32 = 2;
/// Where in the scratch buffer the block is read to (the event's frames lie below it, the
/// frame window above it).
const BLOCK_OFF: usize = tracer_common::SCRATCH_SIZE / 2;
/// Where in the scratch buffer [`young_turn`]'s answer is kept during the walk (above the
/// frame window).
const WAKE_OFF: usize = tracer_common::SCRATCH_SIZE - 8;
const _: () = assert!(WINDOW_OFF + WINDOW_MASK + 8 <= WAKE_OFF);
const PAGE: u64 = 4096;
const _: () = assert!(SAMPLE_FRAMES_OFF + FRAMES_MAX * 8 <= BLOCK_OFF);
const _: () = assert!(BLOCK_OFF + BLOCK_DEEP + 8 <= WINDOW_OFF);

const BPF_F_USER_STACK: u64 = 1 << 8;

/// Program entry.
#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(entry) = PYPROCS.get_ptr_mut(tgid) else {
        return 0;
    };
    // SAFETY: a map value pointer from the lookup: its memory stays valid for the program's run
    // (the element may be reused meanwhile, never freed under it); copied out at once.
    let p = unsafe { *entry };
    sample(&ctx, tgid, &p, entry);
    0
}

/// Sets the sampled process's [`PyProc::deep`] (a plain store to the map entry: the verifier's
/// state is the same after it whatever the value, so it adds no path to the walk). The entry
/// may have been deleted and its element reused for another process since the lookup (a
/// preallocated hash map recycles at once): the value is only a hint of which read costs less.
#[inline(always)]
fn set_deep(entry: *mut PyProc, deep: u32) {
    // SAFETY: a value pointer of `PYPROCS` from this run's lookup, valid for the run.
    unsafe { (*entry).deep = deep };
}

/// Sets the sampled process's [`PyProc::tstate`] and the thread that found it, as [`set_deep`]
/// does (a hint: checked before each use, so an entry reused for another process meanwhile,
/// or a pair torn by two CPUs' stores, costs at most one read).
#[inline(always)]
fn set_tstate(entry: *mut PyProc, ts: u64, tid: u32) {
    // SAFETY: a value pointer of `PYPROCS` from this run's lookup, valid for the run.
    unsafe {
        (*entry).tstate = ts;
        (*entry).tstate_tid = tid;
    }
}

/// The first half of whether a sample wakes the daemon, decided before the walk: the time now
/// (boot clock, ns; never 0) when the process is in its first [`YOUNG_NS`] and no sample woke
/// the daemon on the node in the last [`SAMPLE_WAKE_EVERY_NS`], else 0. Starts the process's
/// clock at its first sample ([`PyProc::first_sample_ns`], a hint stored as [`set_deep`]
/// stores: a torn or reused entry costs at most one wake-up more or less).
#[inline(always)]
fn young_turn(p: &PyProc, entry: *mut PyProc, turn: *const u64) -> u64 {
    // SAFETY: helper with no preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let first = if p.first_sample_ns == 0 {
        // SAFETY: a value pointer of `PYPROCS` from this run's lookup, valid for the run.
        unsafe { (*entry).first_sample_ns = now };
        now
    } else {
        p.first_sample_ns
    };
    // SAFETY: `SAMPLE_WAKE`'s one value, valid for the program's run.
    let last = unsafe { *turn };
    if now.wrapping_sub(first) >= YOUNG_NS || now.wrapping_sub(last) < SAMPLE_WAKE_EVERY_NS {
        return 0;
    }
    now
}

/// The second half, after the walk, by arithmetic but for one branch (each branch here is
/// verified once per state the walk ends in): 1 (wake the daemon) when [`young_turn`] gave a time, the
/// sample has frames, and its innermost code object is not the one of the process's last
/// sample that woke the daemon ([`PyProc::wake_code`], which the daemon has read or is
/// reading); then takes the node's turn and counts it. Two CPUs may both take the turn: the
/// bound is approximate by one wake-up per CPU.
#[inline(always)]
fn wake_now(
    s: &Scratch,
    p: &PyProc,
    entry: *mut PyProc,
    n: usize,
    turn: *mut u64,
    woke: *mut u64,
) -> u64 {
    let now = scratch_word(s, WAKE_OFF);
    let code = scratch_word(s, SAMPLE_FRAMES_OFF);
    let w = nonzero(now) & nonzero(n as u64) & nonzero(code ^ p.wake_code);
    // One branch, to store only on a wake-up: a store on every sample would dirty the node-wide
    // `SAMPLE_WAKE` line on every CPU's every sample.
    if w != 0 {
        // SAFETY: value pointers of this run's lookups (`SAMPLE_WAKE`, this CPU's counter slot,
        // `PYPROCS`), valid for the run.
        unsafe {
            *turn = now;
            *woke += 1;
            (*entry).wake_code = code;
        }
    }
    w
}

/// 1 when `x` is not 0, else 0, for `x` below 2^63 (times, counts, user addresses), without a
/// comparison (which the compiler makes a branch).
#[inline(always)]
fn nonzero(x: u64) -> u64 {
    x.wrapping_add(u64::MAX >> 1) >> 63
}

/// The `u64` at byte `off` of the scratch buffer, a constant multiple of 8: one load, where an
/// unaligned read is eight.
#[inline(always)]
fn scratch_word(s: &Scratch, off: usize) -> u64 {
    let at = off.min(tracer_common::SCRATCH_SIZE - 8) & !7;
    // SAFETY: `at + 8 <= SCRATCH_SIZE`, and `at` is 8-aligned in the 8-aligned `Scratch`.
    unsafe { core::ptr::read(s.buf.as_ptr().add(at).cast::<u64>()) }
}

#[inline(always)]
fn user<T: Copy>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: the helper validates the user address and never faults a page in.
    unsafe { bpf_probe_read_user(addr as *const T).ok() }
}

/// The interrupted user-mode instruction: the registers' when the clock fired in user mode,
/// else the first entry of the user stack (the registers saved at kernel entry).
#[inline(always)]
fn user_ip(ctx: &PerfEventContext) -> u64 {
    // SAFETY: `ctx.ctx` is the kernel's `bpf_perf_event_data`, readable for the program's life.
    let regs = unsafe { &(*(ctx.ctx as *const bpf_perf_event_data)).regs };
    if regs.cs & 3 == 3 {
        return regs.rip;
    }
    let mut ip: u64 = 0;
    // SAFETY: 8 bytes of room at `ip`; the helper writes at most `size` bytes.
    let n = unsafe {
        bpf_get_stack(
            ctx.ctx.cast(),
            (&mut ip as *mut u64).cast(),
            8,
            BPF_F_USER_STACK,
        )
    };
    if n == 8 {
        ip
    } else {
        0
    }
}

/// Walks and sends the interrupted thread's stack, and keeps the process's
/// [`PyProc::deep`]: set by a walk that finds a caller just below a whole two-page block,
/// cleared by a shallow one.
#[inline(always)]
fn sample(ctx: &PerfEventContext, tgid: u32, p: &PyProc, entry: *mut PyProc) {
    let cfg = config();
    let l: &PyLayout = &p.layout;
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(s) = scratch() else { return };
    // Never missing (an array's one value, this CPU's counter slot): looked up before the walk,
    // so that no branch on them comes after it.
    let Some(turn) = SAMPLE_WAKE.get_ptr_mut(0) else {
        return;
    };
    let Some(woke) = counter(Counter::SampleWakeups) else {
        return;
    };
    // Half decided before the walk and kept in map memory, whose contents the verifier does
    // not track: decided after it, or kept in a register, each of the verifier's many states of
    // the walk would be verified again per outcome (past its limit).
    put_aligned(s, WAKE_OFF, young_turn(p, entry, turn));
    let mut flags = 0;
    let mut n: usize = 0;
    match innermost_frame(&cfg, p, entry, tid) {
        None => flags |= SAMPLE_FLAG_NO_THREAD,
        Some(mut f) => {
            let (back, code) = (l.frame_back as usize, l.frame_code as usize);
            // A frame read alone is read from the lower of the two offsets.
            let base = if back < code { back } else { code };
            let (wback, wcode) = (back - base, code - base);
            // The block: the page of the innermost frame and the one below (three below for
            // a deep process, else one), or that page alone when the ones below are not
            // mapped (the bottom of a data-stack chunk).
            let (mut lo, mut span): (u64, u64) = (0, 0);
            // The bottom of a whole two-page block read for a process not marked deep (else
            // 0): a caller found in the two pages below it would have been in four. Made by
            // arithmetic, not a comparison: comparisons split the verifier's states, and
            // inside the walk that made the program too large.
            let mut watch: u64 = 0;
            let not_deep = (((p.deep | (p.deep >> 1)) & 1) ^ 1) as u64;
            // Computed, not chosen by a branch: one size the verifier does not know, so the
            // walk below is verified once for either.
            let want = BLOCK as u64 + ((p.deep & 1) as u64) * BLOCK as u64;
            if l.frames_in_data_stack != 0 && f > want {
                let page = f & !(PAGE - 1);
                let below = page + PAGE - want;
                let two = page + PAGE - BLOCK as u64;
                if read_block(s, below, want as usize) {
                    (lo, span) = (below, want);
                    watch = below * not_deep;
                } else if p.deep == DEEP && f > BLOCK as u64 && read_block(s, two, BLOCK) {
                    // Four pages are not there (a data-stack chunk's start): not tried again
                    // until a shallow walk.
                    set_deep(entry, DEEP_UNMAPPED);
                    (lo, span) = (two, BLOCK as u64);
                } else if read_block(s, page, PAGE as usize) {
                    (lo, span) = (page, PAGE);
                }
            }
            // Two paths per depth that meet again, and nothing else varying, so that the
            // verifier's walk of the loop stays linear in `FRAMES_MAX`. Shim frames (3.12+'s
            // C-stack entries) are sent too: their code is no module's, and the daemon counts
            // them for none.
            while n < FRAMES_MAX && f != 0 {
                let at = f.wrapping_sub(lo);
                let (c, b) = if span != 0 && at <= span - FRAME_SPAN as u64 {
                    let at = at as usize;
                    (block_word(s, at + code), block_word(s, at + back))
                } else {
                    // SAFETY: the window's region is inside the scratch buffer; the helper
                    // validates the user address.
                    let read = unsafe {
                        bpf_probe_read_user_buf(
                            (f + base as u64) as *const u8,
                            &mut s.buf[WINDOW_OFF..WINDOW_OFF + WINDOW],
                        )
                    };
                    if read.is_err() {
                        flags |= SAMPLE_FLAG_READ_FAILED;
                        break;
                    }
                    if watch.wrapping_sub(f).wrapping_sub(1) < BLOCK as u64 {
                        // A caller in the two pages below a whole two-page block, which four
                        // pages would have held: the next walks read four. (Not any frame
                        // read alone: 3.12+'s C-stack entry frames and generators' frames lie
                        // elsewhere in every walk.)
                        set_deep(entry, DEEP);
                    }
                    (word(s, wcode), word(s, wback))
                };
                put_aligned(s, SAMPLE_FRAMES_OFF + n * 8, c);
                f = b;
                n += 1;
            }
            if n == FRAMES_MAX && f != 0 {
                flags |= SAMPLE_FLAG_TRUNCATED;
            }
            if flags & SAMPLE_FLAG_READ_FAILED != 0 {
                // Perhaps a thread state freed since it was found: the next sample walks the
                // thread list.
                set_tstate(entry, 0, 0);
            }
        }
    }
    put_aligned(
        s,
        0,
        SampleEvent {
            header: header(EventKind::Sample, tgid),
            tid,
            n_frames: n as u32,
            user_ip: user_ip(ctx),
            flags,
            _pad: 0,
        },
    );
    let wake = wake_now(s, p, entry, n, turn, woke);
    send_waking_if(s, SAMPLE_FRAMES_OFF + n * 8, wake);
    if p.deep != 0 && n != 0 && n <= SHALLOW {
        // A shallow walk (not a thread without a Python stack).
        set_deep(entry, 0);
    }
}

/// Reads `len` (at most [`BLOCK_DEEP`]) bytes of user memory at `addr` into the block's region
/// of the scratch buffer; `false` if any of it is unreadable (the region is then zeroed).
#[inline(always)]
fn read_block(s: &mut Scratch, addr: u64, len: usize) -> bool {
    let len = if len > BLOCK_DEEP { BLOCK_DEEP } else { len };
    // SAFETY: the block's region is inside the scratch buffer; the helper validates the user
    // address.
    unsafe {
        bpf_probe_read_user_buf(addr as *const u8, &mut s.buf[BLOCK_OFF..BLOCK_OFF + len]).is_ok()
    }
}

/// The `u64` at byte `off` of the block read into the scratch buffer, rounded down to a
/// multiple of 8: one load, where an unaligned read is eight, per frame walked. Frames and
/// their fields are 8-aligned in every CPython (an odd frame pointer is a hostile or torn one,
/// whose words are garbage either way, and the daemon checks what it names).
#[inline(always)]
fn block_word(s: &Scratch, off: usize) -> u64 {
    let at = BLOCK_OFF + (off & (BLOCK_DEEP - 8));
    // SAFETY: `at + 8 <= SCRATCH_SIZE` (the mask bounds `off` below `BLOCK_DEEP`; the region
    // and the frame window above it leave more than 8 bytes after it), and `at` is 8-aligned
    // in the 8-aligned `Scratch`.
    unsafe { core::ptr::read(s.buf.as_ptr().add(at).cast::<u64>()) }
}

/// The `u64` at byte `off` of the frame window read into the scratch buffer.
#[inline(always)]
fn word(s: &Scratch, off: usize) -> u64 {
    let at = WINDOW_OFF + (off & WINDOW_MASK & !7);
    // SAFETY: `at + 8 <= SCRATCH_SIZE` (the mask bounds `off` to 127, the region has 256), and
    // `at` is 8-aligned in the 8-aligned `Scratch` (a layout's offsets are multiples of 8).
    unsafe { core::ptr::read(s.buf.as_ptr().add(at).cast::<u64>()) }
}

/// The interrupted thread's innermost frame (0: none), from its `PyThreadState` in the main
/// interpreter: the one whose `thread_id` is the thread pointer (`None`: no such state).
///
/// The one this thread found last ([`PyProc::tstate`]) is tried first. Only by the same
/// thread: a new thread can get an exited one's thread pointer (glibc reuses its stack and
/// TCB), and the exited one's freed state keeps its `thread_id`. And only when it has a frame:
/// a thread whose state was freed and made again elsewhere (`PyGILState_Release` and
/// `_Ensure` on a thread that Python did not start) would find its old state without one, as
/// CPython left it. A stale state whose memory was reused meanwhile gives a failed read, and
/// the caller drops the hint.
#[inline(always)]
fn innermost_frame(
    cfg: &tracer_common::Config,
    p: &PyProc,
    entry: *mut PyProc,
    tid: u32,
) -> Option<u64> {
    let l = &p.layout;
    let fsbase: u64 = task::read(task::current(), cfg.task_fsbase)?;
    if p.tstate != 0
        && p.tstate_tid == tid
        && user::<u64>(p.tstate + l.tstate_thread_id as u64) == Some(fsbase)
    {
        let f = frame_of(l, p.tstate);
        if f != 0 {
            return Some(f);
        }
    }
    let interp: u64 = user(p.runtime + l.runtime_interp_head as u64)?;
    let mut ts: u64 = user(interp + l.interp_tstate_head as u64)?;
    let mut i = 0;
    while i < THREADS_MAX && ts != 0 {
        i += 1;
        let id: u64 = user(ts + l.tstate_thread_id as u64)?;
        if id == fsbase {
            set_tstate(entry, ts, tid);
            return Some(frame_of(l, ts));
        }
        ts = user(ts + l.tstate_next as u64)?;
    }
    None
}

/// A thread state's innermost frame (0: none or unreadable).
#[inline(always)]
fn frame_of(l: &PyLayout, ts: u64) -> u64 {
    let f: u64 = user(ts + l.tstate_frame as u64).unwrap_or(0);
    if l.cframe_current_frame != NONE && f != 0 {
        return user(f + l.cframe_current_frame as u64).unwrap_or(0);
    }
    f
}
