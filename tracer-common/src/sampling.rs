//! What the CPU sampler shares between the kernel and the daemon: the layout of one CPython
//! version's structures (written by the daemon, read by the perf-event program), the entry of a
//! sampled process, and the sample event.
//!
//! The walk the kernel does, for the thread the CPU clock interrupted:
//!
//! 1. `interp = *(runtime + runtime_interp_head)` — the main interpreter (`_PyRuntime` is
//!    found by the daemon from the ELF symbol and the process's mappings);
//! 2. `ts = *(interp + interp_tstate_head)`, then `ts = *(ts + tstate_next)` until
//!    `*(ts + tstate_thread_id) == fsbase` (`pthread_self()` is the thread pointer on
//!    x86-64: glibc and musl), at most [`THREADS_MAX`] thread states. Steps 1–2 are skipped
//!    when the thread found the thread state last ([`PyProc::tstate`]) and it is still its
//!    own with a frame: one read (its `thread_id`) instead of two and more per thread ahead;
//! 3. `f = *(ts + tstate_frame)`; when `cframe_current_frame != NONE`, `f = *(f +
//!    cframe_current_frame)` (3.11–3.12 go through `_PyCFrame`);
//! 4. per frame, `code = *(f + frame_code)` is sent, then `f = *(f + frame_back)`, at most
//!    [`FRAMES_MAX`] frames (one read of [`FRAME_READ`] bytes covers both). 3.12+'s shim
//!    frames (the byte at `f + frame_owner` is `owner_cstack`) are sent too: their code is no
//!    module's, and the daemon counts them for none. With `frames_in_data_stack` (3.11+), the
//!    two pages below the innermost frame are read at once and the frames inside them are
//!    taken from that copy.
//!
//! The daemon resolves each code object to its `co_filename` from the process's memory, which
//! is gone once the process exits: so a sample of a young process wakes it ([`YOUNG_NS`]).

/// An offset that does not exist in this version.
pub const NONE: u32 = u32::MAX;

/// Most thread states walked to find the interrupted thread's.
pub const THREADS_MAX: u32 = 64;
/// Most frames sent per sample, innermost first; a deeper stack is cut (flag
/// [`SAMPLE_FLAG_TRUNCATED`]) and its outermost frames are not attributed.
pub const FRAMES_MAX: usize = 96;

/// Bytes of a frame read alone, from the lower of its link and its code object's offsets:
/// both fields, however the version orders them (the daemon samples no layout whose two lie
/// further apart). As few as that, not the frame's head: a read's fixed cost dominates, but
/// a cold frame's read costs a cache miss per line it spans: 24 bytes span one line in three
/// reads of four (8-byte-aligned fields), 80 bytes always two or three.
pub const FRAME_READ: u32 = 24;
/// Bytes from a frame's start that hold its link and its code object in every sampled layout:
/// a frame taken from a data-stack block must lie whole in the block by this much.
pub const FRAME_SPAN: u32 = 80;

/// Whether the kernel's walk can read a layout's frames ([`FRAME_READ`], [`FRAME_SPAN`]; the
/// walk reads whole 8-aligned words, as pointer fields are in every CPython).
pub const fn frame_fields_fit(l: &PyLayout) -> bool {
    if !l.frame_back.is_multiple_of(8) || !l.frame_code.is_multiple_of(8) {
        return false;
    }
    let (lo, hi) = if l.frame_back < l.frame_code {
        (l.frame_back, l.frame_code)
    } else {
        (l.frame_code, l.frame_back)
    };
    hi <= FRAME_SPAN - 8 && hi - lo <= FRAME_READ - 8
}

/// Offsets (bytes) of the fields of one CPython version's structures that the walk reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyLayout {
    /// `_PyRuntimeState.interpreters.head`.
    pub runtime_interp_head: u32,
    /// `PyInterpreterState.tstate_head` (3.8–3.10) / `threads.head` (3.11+).
    pub interp_tstate_head: u32,
    /// `PyThreadState.next`.
    pub tstate_next: u32,
    /// `PyThreadState.thread_id` (`pthread_self()` of the thread).
    pub tstate_thread_id: u32,
    /// `PyThreadState.frame` (3.8–3.10), `.cframe` (3.11–3.12), `.current_frame` (3.13+).
    pub tstate_frame: u32,
    /// `_PyCFrame.current_frame` (3.11–3.12), else [`NONE`].
    pub cframe_current_frame: u32,
    /// `PyFrameObject.f_back` (3.8–3.10), `_PyInterpreterFrame.previous` (3.11+).
    pub frame_back: u32,
    /// `PyFrameObject.f_code` (3.8–3.10), `_PyInterpreterFrame.f_code` (3.11–3.12),
    /// `.f_executable` (3.13+).
    pub frame_code: u32,
    /// `_PyInterpreterFrame.owner` (a `char`, 3.12+), else [`NONE`].
    pub frame_owner: u32,
    /// The `owner` value of a frame owned by the C stack (`FRAME_OWNED_BY_CSTACK`), skipped.
    pub owner_cstack: u32,
    /// 1 when a thread's frames live in its data stack (3.11+: `_PyInterpreterFrame`s pushed
    /// upwards in chunks, so a caller lies below its callee): the walk reads the pages below
    /// the innermost frame at once and takes the frames it finds there from that copy.
    /// 0 (3.8–3.10: each frame a heap object): one read per frame.
    pub frames_in_data_stack: u32,
    /// Padding, zero.
    pub _pad: u32,
}

/// A sampled process, in the kernel's `PYPROCS` map by tgid: written by the daemon once it has
/// found the interpreter's `_PyRuntime`; copied to fork children by the fork program; removed
/// at exec and exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PyProc {
    /// Address of `_PyRuntime` in the process.
    pub runtime: u64,
    /// The layout of its version.
    pub layout: PyLayout,
    /// Kept by the sampling program itself (the daemon writes 0): 1 once a walk found a caller
    /// in the two pages below a whole two-page data-stack block, so that the next walks read
    /// four pages; 2 when four pages could not be read there (not tried again); back to 0
    /// after a walk of 1–32 frames.
    pub deep: u32,
    /// Kept by the sampling program itself (the daemon writes 0): the thread (kernel tid)
    /// whose `PyThreadState` is [`PyProc::tstate`].
    pub tstate_tid: u32,
    /// Kept by the sampling program itself (the daemon writes 0, the fork program clears it):
    /// the `PyThreadState` its last walk of the thread list found, tried first for that same
    /// thread. A process whose one busy thread is sampled pays one read for its thread state,
    /// not a walk of the list ahead of it. A hint: used only for the thread that found it
    /// (a new thread can have an exited one's thread pointer, whose freed state keeps its
    /// `thread_id`), checked by its `thread_id`, and dropped when it yields no frame or a
    /// read fails (a state freed and made again elsewhere by the same thread).
    pub tstate: u64,
    /// Kept by the sampling program itself (the daemon writes 0, the fork program clears it):
    /// the boot-clock time (ns) of the process's first sample. Its samples in the
    /// [`YOUNG_NS`] after it may wake the daemon (see [`YOUNG_NS`]).
    pub first_sample_ns: u64,
    /// Kept by the sampling program itself (the daemon writes 0, the fork program clears it):
    /// the innermost code object of the process's last sample that woke the daemon. A sample
    /// whose innermost code object is this one does not wake it: the daemon has it already.
    pub wake_code: u64,
}

// No padding holes (the daemon writes it as plain bytes): a field added to `PyLayout` keeps
// its size a multiple of 8, with an explicit pad if need be.
const _: () = assert!(core::mem::size_of::<PyProc>() == 40 + core::mem::size_of::<PyLayout>());

/// How long after its first sample a process's samples wake the daemon: those whose innermost
/// code object differs from that of the process's last sample that woke it
/// ([`PyProc::wake_code`]), at most one every [`SAMPLE_WAKE_EVERY_NS`] on the whole node. Its
/// code objects are named only by reading the process's memory, which is gone once it exits;
/// without a wake-up its samples wait up to the ring's timed drain (200 ms), so a process that
/// ended sooner had none of its samples attributed. Its first second is when a process meets
/// most of its code objects (its imports, then its main work); later ones are read at the
/// timed drains, and only those first met in the last 200 ms before an exit are lost.
pub const YOUNG_NS: u64 = 1_000_000_000;
/// The least time between two samples that wake the daemon, node-wide: it bounds the
/// wake-ups they cost to 50 a second, however many young processes run.
pub const SAMPLE_WAKE_EVERY_NS: u64 = 20_000_000;

/// Fixed part of a sample event, followed by `n_frames` code-object addresses (`u64`,
/// innermost first).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SampleEvent {
    /// Common header (`kind` = [`crate::EventKind::Sample`]).
    pub header: crate::Header,
    /// Thread id.
    pub tid: u32,
    /// Code objects that follow.
    pub n_frames: u32,
    /// The interrupted user-mode instruction address (the user registers' even when the
    /// clock fired in the kernel), 0 when unknown.
    pub user_ip: u64,
    /// [`SAMPLE_FLAG_TRUNCATED`] | [`SAMPLE_FLAG_NO_THREAD`] | [`SAMPLE_FLAG_READ_FAILED`].
    pub flags: u32,
    /// Padding, zero.
    pub _pad: u32,
}

/// The stack was deeper than [`FRAMES_MAX`].
pub const SAMPLE_FLAG_TRUNCATED: u32 = 1;
/// No thread state matched the thread (a thread that never ran Python, or more than
/// [`THREADS_MAX`] thread states): only `user_ip` is meaningful.
pub const SAMPLE_FLAG_NO_THREAD: u32 = 2;
/// A read of the interpreter's memory failed mid-walk (paged out, or a structure changing
/// under the walk): the frames sent are those read before it.
pub const SAMPLE_FLAG_READ_FAILED: u32 = 4;

/// Offset of the code-object addresses in a sample event.
pub const SAMPLE_FRAMES_OFF: usize = core::mem::size_of::<SampleEvent>();
