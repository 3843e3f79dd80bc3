//! Types shared by the pyusage eBPF programs (`tracer-ebpf`) and the daemon (`tracer-user`).
//!
//! Everything that crosses the kernel/user boundary is defined here exactly once: the
//! configuration the loader writes into the eBPF object's globals, the per-process state kept in
//! the kernel's process map, the counters, and the layout of every ring-buffer event. The kernel
//! side only ever *writes* these layouts; the user side decodes them with explicit length checks
//! (see [`user`]), never by casting raw ring-buffer bytes.
#![no_std]
#![deny(missing_docs)]

pub mod preload;
pub mod sampling;
#[cfg(feature = "user")]
pub mod user;

/// Longest module path the kernel copies (Linux `PATH_MAX`, including the NUL).
pub const PATH_MAX: usize = 4096;
/// Bytes of the command line copied at exec (enough for `python -m pkg.mod args…`).
pub const ARGS_MAX: usize = 4096;
/// Bytes of the environment block copied at exec. HPC environments with many modules loaded
/// run to 10–20 KiB; a longer block is cut and counted in [`Counter::EnvTruncated`].
pub const ENV_MAX: usize = 32768;
/// Size of the per-CPU scratch buffer an event is assembled in before `bpf_ringbuf_output`.
/// A power of two so that masking proves bounds to the verifier.
pub const SCRATCH_SIZE: usize = 65536;

/// Tag of a ring-buffer event, the first `u32` of every event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A process exec'd a Python interpreter ([`ExecEvent`]).
    Exec = 1,
    /// A tracked Python process exec'd something that is not Python ([`Header`] only).
    ExecOther = 2,
    /// A tracked Python process forked a child process, not a thread ([`ForkEvent`]).
    Fork = 3,
    /// A tracked Python process (its thread-group leader) exited ([`ExitEvent`]).
    Exit = 4,
    /// A tracked Python process opened a module file read-only, successfully ([`OpenEvent`]).
    Open = 5,
    /// A process in probation showed it is a CPython interpreter (it mapped `libpython`, or
    /// tried a file only the interpreter's start-up or import system opens: `pyvenv.cfg`, a
    /// `._pth` file, a `.pyc`, `encodings/__init__.py`); laid out as [`ExecEvent`] with the
    /// path passed to `execve` (`AT_EXECFN`) as `filename`.
    Promote = 6,
    /// A tracked Python process mapped a file descriptor executable (`mmap(PROT_EXEC)`): how
    /// the dynamic loader maps an extension module, and what a plain read never does
    /// ([`MapExecEvent`]).
    MapExec = 7,
    /// The CPU clock interrupted a thread of a sampled Python process
    /// ([`sampling::SampleEvent`]).
    Sample = 8,
}

/// Common prefix of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// [`EventKind`] as `u32`.
    pub kind: u32,
    /// Thread-group id (the process id of user space) in the initial PID namespace.
    pub tgid: u32,
    /// `bpf_ktime_get_boot_ns()` when the event happened (includes suspend; the daemon converts
    /// it to wall-clock time with one offset taken at start).
    pub ktime_ns: u64,
}

/// Fixed part of an exec/promote event. In the ring buffer it is followed by the supplementary
/// groups ([`GROUPS_MAX`] `u32`s), `filename` ([`PATH_MAX`] bytes), `args` ([`ARGS_MAX`]
/// bytes) and `env_len` bytes of environment; only `n_groups` and `*_len` of each region are
/// meaningful.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    /// Common header.
    pub header: Header,
    /// Parent's thread-group id (`task->real_parent->tgid`).
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Inode number of the process's mount namespace (`in_container` when it differs from the
    /// daemon's).
    pub mnt_ns: u32,
    /// Bytes of `filename`, without the NUL; 0 when it could not be read.
    pub filename_len: u32,
    /// Bytes of the NUL-separated argv block.
    pub args_len: u32,
    /// Bytes of the NUL-separated environment block.
    pub env_len: u32,
    /// [`EXEC_FLAG_ARGS_TRUNCATED`] | [`EXEC_FLAG_ENV_TRUNCATED`] | [`EXEC_FLAG_LIBPYTHON`] |
    /// [`EXEC_FLAG_GROUPS`].
    pub flags: u32,
    /// Supplementary groups in the groups region (with [`EXEC_FLAG_GROUPS`]).
    pub n_groups: u32,
    /// Zero.
    pub _pad: u32,
}

/// The argv block was longer than [`ARGS_MAX`].
pub const EXEC_FLAG_ARGS_TRUNCATED: u32 = 1;
/// The environment block was longer than [`ENV_MAX`].
pub const EXEC_FLAG_ENV_TRUNCATED: u32 = 2;
/// Promoted because it opened `libpython*` (the library need not be mapped yet).
pub const EXEC_FLAG_LIBPYTHON: u32 = 4;
/// The groups region holds all the process's supplementary groups, as the kernel had them
/// (`real_cred->group_info`) at the event; without it they are unknown (more than
/// [`GROUPS_MAX`], or this kernel's BTF does not describe them).
pub const EXEC_FLAG_GROUPS: u32 = 8;
/// Supplementary groups an exec event carries at most.
pub const GROUPS_MAX: usize = 32;

/// Offset of the supplementary groups region in an exec event.
pub const EXEC_GROUPS_OFF: usize = core::mem::size_of::<ExecEvent>();
/// Offset of the filename region in an exec event.
pub const EXEC_FILENAME_OFF: usize = EXEC_GROUPS_OFF + GROUPS_MAX * 4;
/// Offset of the argv region in an exec event.
pub const EXEC_ARGS_OFF: usize = EXEC_FILENAME_OFF + PATH_MAX;
/// Offset of the environment region in an exec event.
pub const EXEC_ENV_OFF: usize = EXEC_ARGS_OFF + ARGS_MAX;

/// A tracked process forked a child process.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    /// Common header; `tgid` is the parent.
    pub header: Header,
    /// The child's pid (= its tgid: threads are not reported).
    pub child: u32,
    /// Padding, zero.
    pub _pad: u32,
}

/// A tracked process ended (its last thread exited).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    /// Common header.
    pub header: Header,
    /// `task->exit_code`: `code << 8` for an exit, the signal number (| 0x80 for a core dump)
    /// for a death by signal.
    pub exit_code: u32,
    /// [`EXIT_FLAG_CPU`] when the three CPU times below were read.
    pub flags: u32,
    /// The whole process's tick-sampled user time, ns: `signal->utime` (threads already
    /// reaped) + the exiting thread's `utime` + a zombie leader's `utime`.
    pub utime_ns: u64,
    /// The same sum of `stime`, ns.
    pub stime_ns: u64,
    /// The same sum of the exact scheduler runtime, ns: `signal->sum_sched_runtime` +
    /// `se.sum_exec_runtime` of the exiting thread and of a zombie leader. User space splits
    /// it in the proportion `utime:stime`, as the kernel's `cputime_adjust` does for `/proc`.
    pub runtime_ns: u64,
}

/// Most threads the exit program walks for their CPU times; a process with more live threads
/// at its end gets none (null, not a partial sum).
pub const EXIT_THREADS_MAX: u32 = 1024;

/// The CPU times of an [`ExitEvent`] were read (every offset was in the kernel's BTF and every
/// read succeeded); without it they are zero and mean "unknown".
pub const EXIT_FLAG_CPU: u32 = 1;

/// Fixed part of an open event, followed by `path_len` bytes of path (no NUL) exactly as the
/// process passed it (it may be relative to `dfd`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OpenEvent {
    /// Common header.
    pub header: Header,
    /// Bytes of path that follow.
    pub path_len: u32,
    /// What the open returned: the file descriptor, or `-errno` for a failed attempt (only
    /// `.pyc` attempts are sent when they fail: the import system's bytecode probe).
    pub ret: i32,
    /// Thread id: the import system's probe-then-read sequence is per thread.
    pub tid: u32,
    /// The directory fd a relative path is relative to (`AT_FDCWD` = -100 for `open`).
    pub dfd: i32,
    /// [`OPEN_FLAG_WRITE`].
    pub flags: u32,
    /// Bytes of the path the kernel opened that follow the path as passed: its components,
    /// NUL-terminated, from the file up to the root of the process's mount namespace (0 for a
    /// failed attempt or when it could not be read).
    pub kpath_len: u32,
}

/// The kernel's path in an open event is only its last [`KPATH_DEPTH`] levels (or
/// [`KPATH_MAX`] bytes): a deeper file's path as passed must end with them.
pub const OPEN_FLAG_KPATH_PARTIAL: u32 = 2;

/// Most bytes of the kernel's path of an opened file, and most levels walked (the verifier's
/// budget bounds the walk).
pub const KPATH_MAX: usize = 4096;
/// See [`KPATH_MAX`].
pub const KPATH_DEPTH: usize = 16;

/// The file was opened for writing: only bytecode files (`*.pyc`, `*.pyc.<n>` temporaries) are
/// sent so, as the sign that a module source just read was compiled, not imported.
pub const OPEN_FLAG_WRITE: u32 = 1;

/// A tracked process mapped `fd` with `PROT_EXEC`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MapExecEvent {
    /// Common header.
    pub header: Header,
    /// Thread id.
    pub tid: u32,
    /// The mapped file descriptor.
    pub fd: i32,
}

/// Offset of the path in an open event.
pub const OPEN_PATH_OFF: usize = core::mem::size_of::<OpenEvent>();

/// State of a process in the kernel's `PROCS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcState {
    /// One of the `STATE_*` constants.
    pub state: u32,
    /// For [`STATE_PROBATION`]: opens left before the process is forgotten.
    pub budget: u32,
    /// The uid charged for a probation entry (see [`UidUse::probation`]).
    pub uid: u32,
    /// Padding.
    pub _pad: u32,
}

/// What one uid holds of the kernel's shared resources, in the `UIDS` map. No uid other than
/// root may hold more than its share, so no ordinary user can fill a map or the ring buffer
/// and make another user's processes go unrecorded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UidUse {
    /// Entries on probation in `PROCS` (at most [`Config::probation_per_uid`]).
    pub probation: u64,
    /// Opens in flight in `STASH` (at most [`Config::stash_per_uid`]).
    pub stash: u64,
    /// The drain epoch `ring_bytes` counts in (the daemon advances `EPOCH` after each drain).
    pub epoch: u64,
    /// Bytes written to the ring buffer in `epoch`; once the ring is half full, a uid past
    /// [`Config::ring_share`] has its events dropped (counted) instead of filling it.
    pub ring_bytes: u64,
}

/// Size of the kernel's ring buffer of events (16 MiB holds ~2,000 Python starts with full
/// environments at once).
pub const RING_BYTES: u32 = 16 * 1024 * 1024;

/// A Python process: its module opens are reported.
pub const STATE_PYTHON: u32 = 1;
/// A freshly exec'd process, not yet known to be Python: its first open attempts are watched
/// for what only a CPython interpreter opens (see [`EventKind::Promote`]).
pub const STATE_PROBATION: u32 = 2;

/// Probation budget units a successful open costs (a failed attempt costs one): the dynamic
/// loader may fail hundreds of opens along a long `LD_LIBRARY_PATH` before the interpreter
/// starts, while a program that opens many files successfully is soon known not to be Python.
pub const PROBATION_OPEN_COST: u32 = 64;
/// The daemon itself or one of its children: never reported.
pub const STATE_IGNORED: u32 = 3;

/// Defines [`Counter`] with its index and its name in `status.json` side by side, and
/// [`Counter::ALL`], so that a counter is added in one place.
macro_rules! counters {
    ($($(#[$m:meta])* $v:ident = $i:literal => $name:literal,)+) => {
        /// Per-CPU counters, indices into the `COUNTERS` map. Every early return that loses
        /// data increments one.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($(#[$m])* $v = $i,)+
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$v,)+];

            /// Its name in `status.json`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$v => $name,)+
                }
            }
        }
    };
}

counters! {
    /// Opens by tracked processes that reached the exit tracepoint with a stashed path.
    OpensSeen = 0 => "opens_seen",
    /// Events successfully written to the ring buffer.
    EventsSent = 1 => "events_sent",
    /// Events lost because the ring buffer was full.
    RingFull = 2 => "ring_full",
    /// Paths, argv or environment that could not be read from user memory.
    ReadFailed = 3 => "read_failed",
    /// Opens not stashed because the stash map was full.
    StashFull = 4 => "stash_full",
    /// Processes not tracked because the process map was full.
    ProcsFull = 5 => "procs_full",
    /// Processes promoted to Python (by what they opened).
    PythonExecs = 6 => "python_execs",
    /// Exec events whose environment was longer than [`ENV_MAX`].
    EnvTruncated = 7 => "env_truncated",
    /// Scratch buffer unavailable (should never happen).
    ScratchMissing = 8 => "scratch_missing",
    /// Processes that ended probation without showing they are Python.
    ProbationExpired = 9 => "probation_expired",
    /// Execs not watched because their uid already had its share of probation entries.
    ProbationQuota = 10 => "probation_quota",
    /// Opens not watched because their uid already had its share of opens in flight.
    StashQuota = 11 => "stash_quota",
    /// Events dropped because the ring buffer was half full and their uid had written its
    /// share since the last drain.
    RingShare = 12 => "ring_share",
    /// Successful module opens whose file the kernel's path walk could not read (a kernel
    /// read failed): the path as passed is recorded, unverified.
    KpathUnread = 13 => "kpath_unread",
    /// Samples of young processes sent with a wake-up of the daemon, so that it reads their
    /// code objects while the process lives ([`sampling::YOUNG_NS`]).
    SampleWakeups = 14 => "sample_wakeups",
}

/// Number of counters (the size of the `COUNTERS` map).
pub const COUNTER_COUNT: u32 = Counter::ALL.len() as u32;

// Each counter's value is its index in `ALL`: the map is indexed by it.
const _: () = {
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(Counter::ALL[i] as usize == i);
        i += 1;
    }
};

/// Configuration written by the loader into the eBPF object's `CONFIG` global before load.
/// Offsets of kernel structure fields come from `/sys/kernel/btf/vmlinux`, offsets of
/// tracepoint fields from tracefs `format` files: no CO-RE in Rust eBPF, so nothing is guessed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// The daemon's tgid: it and its descendants are never reported.
    pub self_tgid: u32,
    /// Probation budget of a freshly exec'd process (see [`PROBATION_OPEN_COST`]).
    pub probation_opens: u32,
    /// Probation entries one non-root uid may hold.
    pub probation_per_uid: u32,
    /// Opens in flight one non-root uid may have stashed.
    pub stash_per_uid: u32,
    /// Bytes one non-root uid may write to the ring buffer per drain once it is half full.
    pub ring_share: u32,
    /// The ring buffer's size in bytes.
    pub ring_bytes: u32,
    /// `task_struct.exit_code`.
    pub task_exit_code: u32,
    /// 1 when every offset of the CPU-time fields below was found in the kernel's BTF; 0 and
    /// the exit events carry no CPU time.
    pub cpu_times: u32,
    /// `task_struct.utime`.
    pub task_utime: u32,
    /// `task_struct.stime`.
    pub task_stime: u32,
    /// `task_struct.se.sum_exec_runtime`.
    pub task_runtime: u32,
    /// `task_struct.signal`.
    pub task_signal: u32,
    /// `task_struct.group_leader`.
    pub task_group_leader: u32,
    /// `task_struct.thread_node`, or 0 on a kernel without the per-process thread list
    /// (before 6.7): then the live threads counted are the exiting one and the leader.
    pub task_thread_node: u32,
    /// `signal_struct.utime` (reaped threads' user time).
    pub signal_utime: u32,
    /// `signal_struct.stime`.
    pub signal_stime: u32,
    /// `signal_struct.sum_sched_runtime`.
    pub signal_runtime: u32,
    /// `signal_struct.thread_head`, or 0 (see [`Config::task_thread_node`]).
    pub signal_thread_head: u32,
    /// `task_struct.real_parent`.
    pub task_real_parent: u32,
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `task_struct.nsproxy`.
    pub task_nsproxy: u32,
    /// `task_struct.real_cred`, or 0 when any of the four offsets of the supplementary groups
    /// is missing from this kernel's BTF (then they are read from `/proc`).
    pub task_real_cred: u32,
    /// `cred.group_info`.
    pub cred_group_info: u32,
    /// `group_info.ngroups`.
    pub group_info_ngroups: u32,
    /// `group_info.gid` (the array).
    pub group_info_gid: u32,
    /// `nsproxy.mnt_ns`.
    pub nsproxy_mnt_ns: u32,
    /// `mnt_namespace.ns.inum`.
    pub mnt_ns_inum: u32,
    /// `mm_struct.arg_start`.
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`.
    pub mm_arg_end: u32,
    /// `mm_struct.env_start`.
    pub mm_env_start: u32,
    /// `mm_struct.env_end`.
    pub mm_env_end: u32,
    /// `sys_enter_openat`: offset of `dfd`.
    pub tp_openat_dfd: u32,
    /// `sys_enter_openat`: offset of `filename`.
    pub tp_openat_filename: u32,
    /// `sys_enter_openat`: offset of `flags`.
    pub tp_openat_flags: u32,
    /// `sys_enter_open`: offset of `filename`.
    pub tp_open_filename: u32,
    /// `sys_enter_open`: offset of `flags`.
    pub tp_open_flags: u32,
    /// `sys_enter_openat2`: offset of `dfd`.
    pub tp_openat2_dfd: u32,
    /// `sys_enter_openat2`: offset of `filename`.
    pub tp_openat2_filename: u32,
    /// `sys_enter_openat2`: offset of `how` (a `struct open_how *`, flags first).
    pub tp_openat2_how: u32,
    /// `sys_exit_*`: offset of `ret`.
    pub tp_exit_ret: u32,
    /// `sys_enter_mmap`: offset of `prot`.
    pub tp_mmap_prot: u32,
    /// `sys_enter_mmap`: offset of `fd`.
    pub tp_mmap_fd: u32,
    /// `sched_process_exit`: offset of `bool group_dead`, or 0 when this kernel lacks the field
    /// (then the thread-group leader's exit ends the process).
    pub tp_exit_group_dead: u32,
    /// `task_struct.files`.
    pub task_files: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.fd`.
    pub fdtable_fd: u32,
    /// `fdtable.max_fds`.
    pub fdtable_max_fds: u32,
    /// `file.f_path.dentry`.
    pub file_dentry: u32,
    /// `file.f_path.mnt`.
    pub file_mnt: u32,
    /// `dentry.d_parent`.
    pub dentry_parent: u32,
    /// `dentry.d_name.name`.
    pub dentry_name: u32,
    /// `mount.mnt` (the `vfsmount` inside a `mount`).
    pub mount_mnt: u32,
    /// `mount.mnt_parent`.
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`.
    pub mount_mountpoint: u32,
    /// `vfsmount.mnt_root`.
    pub vfsmount_root: u32,
    /// `task_struct.thread.fsbase` (the user thread pointer: `pthread_self()` on x86-64), or 0
    /// when this kernel's BTF lacks it (then no thread state can be matched: samples carry
    /// only the instruction address).
    pub task_fsbase: u32,
}

/// Size checks: the kernel writes and user space reads these exact layouts.
const _: () = {
    assert!(core::mem::size_of::<Header>() == 16);
    assert!(core::mem::size_of::<ExecEvent>() == 56);
    assert!(core::mem::size_of::<ForkEvent>() == 24);
    assert!(core::mem::size_of::<ExitEvent>() == 48);
    assert!(core::mem::size_of::<OpenEvent>() == 40);
    assert!(core::mem::size_of::<MapExecEvent>() == 24);
    assert!(EXEC_ENV_OFF + ENV_MAX <= SCRATCH_SIZE);
    assert!(OPEN_PATH_OFF + PATH_MAX <= SCRATCH_SIZE);
    assert!(OPEN_PATH_OFF + PATH_MAX + KPATH_MAX + 256 <= SCRATCH_SIZE / 2);
};
