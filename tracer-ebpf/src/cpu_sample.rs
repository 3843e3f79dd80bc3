//! `perf_event` on the software CPU clock, one per CPU: samples what a sampled Python
//! process's interrupted thread is running.
//!
//! A process that is not in [`PYPROCS`] costs one hash lookup. For one that is, the thread's
//! `PyThreadState` is found by matching `thread_id` (`pthread_self()`) to the thread pointer
//! (`task->thread.fsbase`), its frame chain is walked innermost first, and the code-object
//! address of each frame is sent with the interrupted user instruction address (so that time
//! inside an extension's `.so` is charged to the package that owns the file). Each frame costs
//! one read of user memory: the window below covers the frame's link, its code object and its
//! byte in every supported version. Reads never fault pages in (`bpf_probe_read_user`),
//! so a paged-out or hostile structure ends the walk (flagged), never stalls it.
use aya_ebpf::{
    bindings::bpf_perf_event_data,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_stack, bpf_probe_read_user, bpf_probe_read_user_buf,
    },
    macros::{map, perf_event},
    maps::HashMap,
    programs::PerfEventContext,
};
use tracer_common::{
    sampling::{
        PyLayout, PyProc, SampleEvent, FRAMES_MAX, NONE, SAMPLE_FLAG_NO_THREAD,
        SAMPLE_FLAG_READ_FAILED, SAMPLE_FLAG_TRUNCATED, SAMPLE_FRAMES_OFF, THREADS_MAX,
    },
    EventKind,
};

use crate::{
    maps::{config, header, put, scratch, send, Scratch, Wake},
    task,
};

/// Sampled processes by tgid (see [`PyProc`]); written by the daemon, copied to fork
/// children, removed at exec and exit. Sized by the loader.
#[map]
pub static PYPROCS: HashMap<u32, PyProc> = HashMap::with_max_entries(16384, 0);

/// Bytes of a frame read at once: every supported version has its link and code object
/// in the first 80 (the daemon samples no layout that does not).
pub const FRAME_WINDOW: usize = 80;
/// Where in the scratch buffer a frame's window is read to: map memory, where a bounded
/// variable offset may be read (the stack allows none).
const WINDOW_OFF: usize = tracer_common::SCRATCH_SIZE - 256;
/// Masks an offset into the window's region of the scratch buffer (a valid layout's offsets
/// are below [`FRAME_WINDOW`]; the mask only proves the bound to the verifier).
const WINDOW_MASK: usize = 127;

const BPF_F_USER_STACK: u64 = 1 << 8;

/// Program entry.
#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out immediately.
    let Some(p) = (unsafe { PYPROCS.get(tgid) }).copied() else {
        return 0;
    };
    sample(&ctx, tgid, &p);
    0
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

#[inline(always)]
fn sample(ctx: &PerfEventContext, tgid: u32, p: &PyProc) {
    let cfg = config();
    let l: &PyLayout = &p.layout;
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(s) = scratch() else { return };
    let mut flags = 0;
    let mut n: usize = 0;
    match thread_state(&cfg, p) {
        None => flags |= SAMPLE_FLAG_NO_THREAD,
        Some(ts) => {
            let mut f: u64 = user(ts + l.tstate_frame as u64).unwrap_or(0);
            if l.cframe_current_frame != NONE && f != 0 {
                f = user(f + l.cframe_current_frame as u64).unwrap_or(0);
            }
            let (back, code) = (l.frame_back as usize, l.frame_code as usize);
            // One path per depth and nothing else varying, so that the verifier's walk of
            // the loop stays linear in `FRAMES_MAX`. Shim frames (3.12+'s C-stack entries)
            // are sent too: their code is no module's, and the daemon counts them for none.
            while n < FRAMES_MAX && f != 0 {
                // SAFETY: the window's region is inside the scratch buffer; the helper
                // validates the user address.
                let read = unsafe {
                    bpf_probe_read_user_buf(
                        f as *const u8,
                        &mut s.buf[WINDOW_OFF..WINDOW_OFF + FRAME_WINDOW],
                    )
                };
                if read.is_err() {
                    flags |= SAMPLE_FLAG_READ_FAILED;
                    break;
                }
                let c = word(s, code);
                put(s, SAMPLE_FRAMES_OFF + n * 8, c);
                f = word(s, back);
                n += 1;
            }
            if n == FRAMES_MAX && f != 0 {
                flags |= SAMPLE_FLAG_TRUNCATED;
            }
        }
    }
    put(
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
    send(s, SAMPLE_FRAMES_OFF + n * 8, Wake::Later);
}

/// The `u64` at byte `off` of the frame window read into the scratch buffer.
#[inline(always)]
fn word(s: &Scratch, off: usize) -> u64 {
    let at = WINDOW_OFF + (off & WINDOW_MASK);
    // SAFETY: `at + 8 <= SCRATCH_SIZE` (the mask bounds `off` to 127, the region has 256).
    unsafe { core::ptr::read_unaligned(s.buf.as_ptr().add(at).cast::<u64>()) }
}

/// The interrupted thread's `PyThreadState` in the main interpreter: the one whose `thread_id`
/// is the thread pointer.
#[inline(always)]
fn thread_state(cfg: &tracer_common::Config, p: &PyProc) -> Option<u64> {
    let l = &p.layout;
    let fsbase: u64 = task::read(task::current(), cfg.task_fsbase)?;
    let interp: u64 = user(p.runtime + l.runtime_interp_head as u64)?;
    let mut ts: u64 = user(interp + l.interp_tstate_head as u64)?;
    let mut i = 0;
    while i < THREADS_MAX && ts != 0 {
        i += 1;
        let id: u64 = user(ts + l.tstate_thread_id as u64)?;
        if id == fsbase {
            return Some(ts);
        }
        ts = user(ts + l.tstate_next as u64)?;
    }
    None
}
