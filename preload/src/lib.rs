//! `libpyusage_preload.so`: the `LD_PRELOAD` import observer for nodes without eBPF.
//!
//! An administrator loads the library into every process of a node (`/etc/ld.so.preload`, or
//! `LD_PRELOAD` for a trial). In a CPython ≥ 3.8 process it installs a PEP 578 audit hook
//! before the interpreter initialises and streams what the import system does to the daemon,
//! one datagram per event, at the moment it happens: a SIGKILL loses nothing already seen.
//! In CPython 2.7 and 3.6–3.7, which have no audit hooks, it reports instead the interpreter's
//! opens of module files through wrappers of the libc `open` family ("open mode", below).
//! In every other process it costs the mapping of a 24 KB object and a walk of the loaded
//! objects' symbol tables at load time, then one atomic load per call of a wrapped `open`
//! (see "Build and cost" below).
//! The design follows the experiments in `docs/preload-research.md` (pyenv 2.7–3.13 and
//! Debian's 3.11 on this project's machines); the reasons below point there.
//!
//! # Recognising Python: by symbol, in the constructor
//!
//! A function pointer in `.init_array` runs when the loader has mapped every `DT_NEEDED`
//! object but before `main`. The constructor then looks `PySys_AddAuditHook` up in the
//! dynamic symbol tables of the loaded objects, which finds the API whether libpython is a
//! shared object (pyenv: the executable exports no `Py*` symbol, its `libpython3.x.so.1.0`
//! does) or linked into the executable (Debian's `/usr/bin/python3.11` exports its API
//! dynamically). It does not look at the program's name, so console scripts, venv copies and
//! renamed interpreters are covered, and so are `-I`, `-S`, `-E` and an empty environment: the
//! hook is in place before the interpreter reads any of them. In a process that is not Python
//! the miss, and finding the functions the `open` wrappers forward to (below), is all that
//! happens. It is found by walking the objects' own hash tables
//! (`dl_iterate_phdr`, module `elf`) rather than with `dlsym`, whose miss `malloc`s an error
//! message: in a small program that first allocation sets up the heap, which measured as much
//! as loading the library. In Python, `dlsym(RTLD_DEFAULT, …)` resolves the API.
//!
//! The same walk asks for `Py_Initialize`: a process that has it but not `PySys_AddAuditHook`
//! is CPython 2.7–3.7 (or a program linking their libpython), observed in open mode.
//!
//! Not covered by this library yet, on purpose:
//! - **libpython loaded later with `dlopen`** (C hosts that embed Python on demand, plugins)
//!   is invisible to the constructor. That needs a `dlopen` wrapper that handles only names
//!   containing `libpython` and passes every other call on as a guaranteed tail jump (a naked
//!   function), because glibc's `dlopen` searches the *caller's* `DT_RUNPATH` and a wrapper
//!   that `call`s the real one breaks programs built with `$ORIGIN` run paths.
//! - An interpreter that is **already initialised** when the library is loaded (only possible
//!   through that `dlopen` path) would need `PyGILState_Ensure` around the install; the
//!   constructor checks `Py_IsInitialized() == 0` and otherwise installs nothing.
//!
//! # Open mode: CPython 2.7 and 3.6–3.7
//!
//! Without audit hooks the import system can only be seen in the files it opens. The library
//! exports `open`, `open64`, `openat`, `openat64`, `fopen` and `fopen64` (module
//! `open_mode`); being preloaded, they are what libpython and the program call. Each calls the
//! next definition (libc's, or another preloaded wrapper's), found in the constructor the way
//! `dlsym(RTLD_NEXT, …)` would (`elf::next_functions`), with the caller's arguments, and
//! returns its result and `errno` untouched. In an interpreter without hooks the constructor
//! connects and sends the Hello as for ≥ 3.8, then sets the open-mode flag; from then on each
//! successful open of a `.py`, `.pyc`, `.pyo` or `.so` and each failed open of a `.pyc` (the
//! bytecode probes the daemon's import rules need) is sent as a [`MessageKind::Open`]: the path
//! as passed (2.7 passes paths relative to the working directory for `sys.path` entry `''`),
//! the thread, the descriptor or `-errno`, the directory descriptor and the flags (for `fopen`,
//! those its mode stands for). Same socket, same checks and drop counting as the hook's.
//! What it sees: 2.7 `fopen`s `m.py`, then `m.pyc` (and probes `m.so`, `mmodule.so`, … in every
//! `sys.path` entry: only the failed `.pyc` probes are sent), and `fopen`s an extension's `.so`
//! before `dlopen`ing it; 3.6–3.7 open only `__pycache__/m.cpython-3x.pyc`, or the failed probe
//! and then `m.py`.
//! What it cannot see: extension modules of 3.6–3.7, which are found with `stat` and mapped
//! with `dlopen`, whose opens are the loader's own system calls. A `dlopen` wrapper would see
//! them, and is left out on purpose: glibc's `dlopen` searches the *caller's* `DT_RUNPATH`, so
//! a wrapper that calls the real one breaks programs that load libraries through `$ORIGIN` run
//! paths (`docs/preload-research.md`, "Embedded interpreters loaded with dlopen"). Nor can it
//! tell a script's own `open('x.py')` from an import (the daemon's rules decide), and a ≥ 3.8
//! interpreter whose hook is skipped for the debug allocator (below) is not put in open mode:
//! it stays unobserved.
//!
//! # When the hook is not installed although Python is there
//!
//! A hook added before initialisation is allocated with the raw default allocator; when the
//! interpreter then chooses the **debug allocator** it frees that entry with the wrong one and
//! aborts in `Py_FinalizeEx` (rc 134, every version 3.8–3.13, see the research). So the
//! constructor installs nothing when `PYTHONMALLOC` contains `debug`, when `PYTHONDEVMODE` is
//! non-empty, or when `/proc/self/cmdline` holds `-X dev` among the interpreter's options
//! (checked even under `-E`, which would make Python ignore the variables: being unobserved is
//! the safe side). `--with-pydebug` builds use the debug allocator by default; they are
//! recognised by `_Py_GetRefTotal` (≤ 3.11) or `_Py_GetGlobalRefTotal` (3.12+), which only
//! those builds export (no such build was available to test). Embedders that set
//! `PyPreConfig.allocator` themselves cannot be detected.
//!
//! # Transport
//!
//! The constructor connects one `AF_UNIX` `SOCK_SEQPACKET` socket (`SOCK_CLOEXEC`, so it never
//! leaks across `exec`). When the daemon's accept backlog is full (a burst of starts, or a
//! user's connect storm) `connect` waits for a slot at most 20 ms (`SO_SNDTIMEO`), then gives
//! up; afterwards the descriptor is non-blocking. If the daemon is absent (no socket, nobody
//! listening) `connect` fails at once, nothing is installed and the process runs exactly as
//! without the library: no retry, no message.
//! The socket is `/run/pyusage/preload.sock` unless the configuration file
//! `/etc/pyusage/preload.conf` names another (`socket = /absolute/path`; [`parse_config`]). The
//! file is read only in Python processes, and trusted only when it is a regular file owned by
//! root that group and others cannot write, of at most 4 KiB ([`read_config`]); otherwise the
//! defaults apply, since whoever can write it could misdirect every process's reports.
//! `PYUSAGE_PRELOAD_SOCKET` overrides the path only when the file says
//! `allow_env_override = true` (for tests; off by default) and the process is not secure-exec
//! (setuid, file capabilities: `AT_SECURE`).
//!
//! The first message of every connection is a [`MessageKind::Hello`], sent by the constructor
//! before it installs the hook: the program as executed (`AT_EXECFN`), the command line (the
//! `argv` glibc passes to `.init_array` functions; `/proc/self/cmdline` when there is none) and
//! the initial environment, each NUL-separated and cut to the format's maximum. It is the
//! process's exec record for the daemon (what the eBPF exec event carries: `main`'s arguments,
//! Slurm job and rank variables). If it cannot be sent whole, the connection is closed and
//! nothing is installed, because the daemon discards connections that do not start with one.
//!
//! Every message is one datagram in the format of [`tracer_common::preload`], sent with
//! `MSG_DONTWAIT | MSG_NOSIGNAL`: the hook never blocks and never raises `SIGPIPE`. When the
//! daemon's queue is full the message is dropped and counted ([`dropped`]); when the daemon
//! has gone (`EPIPE`, `ECONNRESET`, …) the library stops sending for the rest of the process.
//! Messages carry no ids: the daemon reads the sender's pid/uid/gid from the kernel with each
//! datagram (`SCM_CREDENTIALS`), which stays right for `fork()` children that keep writing on
//! the inherited connection.
//!
//! Before each send the hook checks with `fstat` that the descriptor is still the socket it
//! connected (same device and inode): a program that closes all descriptors and reuses the
//! number for its own socket must never receive our bytes. If it is not, sending stops.
//!
//! # The hook
//!
//! It runs with the GIL held (none on free-threaded builds), in the importing thread, from
//! interpreter start to finalisation. It switches on the event name first and returns for
//! everything but two events:
//! - `import`: argument 0 (module name) and argument 1 (`None` for the attempt, raised before
//!   the finder runs; the `.so` path when an extension module is loaded) become
//!   [`MessageKind::Import`] or [`MessageKind::ExtensionImport`];
//! - `exec` of a code object: its `co_filename`, when it is an absolute path (not
//!   `<frozen …>` or `<string>`), is the source path of the module body that ran
//!   ([`MessageKind::Exec`]; also when the code came from a `.pyc`).
//!
//! It reads nothing else (`sys.path` and `sys.meta_path`, arguments 2–4, would need `repr` of
//! arbitrary finder objects, i.e. Python code that can import and re-enter the hook), calls
//! only C getters resolved once in the constructor, clears any error it caused with
//! `PyErr_Clear`, preserves `errno`, always returns 0 (non-zero would abort the import), takes
//! no lock that a `fork()` could leave held, and cannot panic (below). Events are not
//! deduplicated here (`json.scanner` is reported twice for
//! `import json`); the daemon keeps a set per process.
//!
//! # Build and cost
//!
//! Ship `cargo build --profile preload -p pyusage-preload` (`target/preload/`; the workspace
//! `Cargo.toml` defines the profile: panic = "abort", LTO, one codegen unit, stripped). That
//! build is `#![no_std]`: it links libc only (std would add libgcc_s and ~400 KB), exports
//! only the six `open` wrappers (each name it exports replaces that function for the whole
//! process), has ~30 relocations, and is linked with `-z defs` and `-z now` (build.rs).
//! Other profiles link std for its panic runtime; the code is the same. No code path should
//! panic: the crate denies indexing, `unwrap` and friends (clippy), and the panic handler
//! aborts, as a panic in any `extern "C"` function would.
//!
//! Measured with `bench/preload_exec.c` (fork + exec of `/bin/true`, alternating blocks):
//! the library adds ~40 µs of CPU per exec, the same as an empty C shared object, i.e. the
//! cost of preloading anything (was ~160 µs with std and a `dlsym` miss). The open wrappers
//! add ~4 µs (finding the six functions they forward to in libc's hash tables; `dlsym` took
//! twice that), within the exec benchmark's noise. Numbers and method in
//! `docs/preload-research.md`.
//!
//! [`MessageKind::Import`]: tracer_common::preload::MessageKind::Import
//! [`MessageKind::ExtensionImport`]: tracer_common::preload::MessageKind::ExtensionImport
//! [`MessageKind::Exec`]: tracer_common::preload::MessageKind::Exec
//! [`MessageKind::Hello`]: tracer_common::preload::MessageKind::Hello
//! [`MessageKind::Open`]: tracer_common::preload::MessageKind::Open

#![no_std]
// The library runs inside every process of a node and must never abort one: no indexing or
// slicing that can panic, no unwrap, every `unsafe` block with its justification.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::undocumented_unsafe_blocks
    )
)]

// The shipped library (`--profile preload`, panic = "abort") links no std: only libc. Builds
// with unwinding (the dev, test and release profiles, which `cargo build --workspace` and
// clippy use) take std's panic handler and unwinding runtime; the code is the same.
#[cfg(any(test, not(panic = "abort")))]
extern crate std;

mod elf;
// The wrappers take C's variadic `mode` as a fixed parameter, which is sound on the ABIs where
// build.rs sets `open_wrappers` only (see the ABI note in the module); elsewhere there is no
// open mode.
#[cfg(open_wrappers)]
mod open_mode;

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_void, CStr};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use tracer_common::preload::{
    encode, Message, MessageKind, ARGS_MAX, ENV_MAX, IMPORT_MAX, MAX_MESSAGE,
};

/// Where the daemon listens (`pyusage daemon --preload-socket PATH`) unless the configuration
/// file says otherwise.
pub const DEFAULT_SOCKET: &CStr = c"/run/pyusage/preload.sock";
/// The configuration file: trusted only when root owns it and nobody else can write it.
pub const CONFIG_PATH: &CStr = c"/etc/pyusage/preload.conf";
/// Largest configuration file read; a longer one is ignored as a whole.
pub const CONFIG_MAX: usize = 4096;
/// Environment variable that overrides the socket path, honoured only when the configuration
/// file allows it (`allow_env_override = true`, for tests) and the process is not secure-exec.
pub const SOCKET_ENV: &CStr = c"PYUSAGE_PRELOAD_SOCKET";
/// Capacity of `sockaddr_un.sun_path`; a socket path must be shorter (it is NUL-terminated).
const SUN_PATH_LEN: usize = 108;

/// An opaque CPython object; only ever handled by pointer.
#[repr(C)]
struct PyObject {
    _private: [u8; 0],
}

type AuditHook = extern "C" fn(*const c_char, *mut PyObject, *mut c_void) -> c_int;

/// The C API functions the hook calls, resolved once in the constructor (the library does not
/// link libpython: the process decides which one, if any, is there).
struct Api {
    tuple_size: unsafe extern "C" fn(*mut PyObject) -> isize,
    tuple_get_item: unsafe extern "C" fn(*mut PyObject, isize) -> *mut PyObject,
    as_utf8_and_size: unsafe extern "C" fn(*mut PyObject, *mut isize) -> *const c_char,
    get_attr_string: unsafe extern "C" fn(*mut PyObject, *const c_char) -> *mut PyObject,
    object_type: unsafe extern "C" fn(*mut PyObject) -> *mut PyObject,
    dec_ref: unsafe extern "C" fn(*mut PyObject),
    err_clear: unsafe extern "C" fn(),
    /// `&_Py_NoneStruct`, compared by address only.
    none: *mut PyObject,
    /// `&PyCode_Type`, compared by address only.
    code_type: *mut PyObject,
}

// SAFETY: the function pointers are plain code addresses, and the two object pointers are the
// addresses of static, immortal interpreter objects that the hook only compares, never
// dereferences; sharing them between threads is sound.
unsafe impl Sync for Api {}

/// [`Api`], written once by the constructor before it sets [`API_READY`] and installs the hook;
/// read by the hook only after it saw [`API_READY`].
struct ApiCell(UnsafeCell<MaybeUninit<Api>>);

// SAFETY: the cell is written only by the constructor, before `API_READY` is set with Release
// ordering (and before the hook that reads it exists); readers load `API_READY` with Acquire
// first and never write.
unsafe impl Sync for ApiCell {}

static API: ApiCell = ApiCell(UnsafeCell::new(MaybeUninit::uninit()));
/// Whether [`API`] holds a value.
static API_READY: AtomicBool = AtomicBool::new(false);
/// Set by the first run of the constructor (guards [`API`] against a second writer).
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// The connected socket, or -1 when there is none or sending has stopped.
static SOCK: AtomicI32 = AtomicI32::new(-1);
/// Device and inode of [`SOCK`] at connect time, to notice a reused descriptor number.
static SOCK_DEV: AtomicU64 = AtomicU64::new(0);
static SOCK_INO: AtomicU64 = AtomicU64::new(0);
/// Messages dropped because the daemon's queue was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The resolved API, once the constructor has stored it.
fn api() -> Option<&'static Api> {
    if !API_READY.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: `API_READY` is set only after `API` was written, and it is never written again.
    Some(unsafe { (*API.0.get()).assume_init_ref() })
}

/// Messages this process dropped because the daemon's queue was full (`EAGAIN`).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

// Without std nothing else names libc (the `libc` crate leaves that to std), and the library
// must name it: it is linked with `-z defs` (build.rs), and the loader should see the need.
#[cfg(all(panic = "abort", not(test)))]
#[link(name = "c")]
unsafe extern "C" {}

/// The panic handler of the `no_std` build. It aborts, as a panic in any `extern "C"` function
/// does; no code path of the library should reach it (no indexing without a check, no
/// `unwrap`). Checked on the optimised build with `objdump -d`: the only call to a panic is
/// in `tracer_common::preload::encode` (its `split_at_mut` after a sum of lengths that the
/// optimiser does not bound), unreachable because every field is first cut to its maximum.
#[cfg(all(panic = "abort", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: `abort` has no preconditions.
    unsafe { libc::abort() }
}

/// The constructor, run by the loader when the library is mapped (before `main`). glibc calls
/// `.init_array` functions with `(argc, argv, envp)`, the process's initial command line and
/// environment, which the [`MessageKind::Hello`] carries.
#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = constructor;

extern "C" fn constructor(argc: c_int, argv: *const *const c_char, envp: *const *const c_char) {
    let saved = errno();
    init(Process { argc, argv, envp });
    set_errno(saved);
}

/// What the loader passed to the constructor.
#[derive(Clone, Copy)]
struct Process {
    argc: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
}

fn errno() -> c_int {
    // SAFETY: `__errno_location` returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value }
}

/// `dlsym(RTLD_DEFAULT, name)`, or null.
fn sym(name: &CStr) -> *mut c_void {
    // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT searches the global scope.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

/// `getenv(name)` as bytes, without allocating.
fn env(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated. The constructor runs before `main`, when no other
    // thread can be changing the environment.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null `getenv` result is a NUL-terminated string that lives as long as the
    // environment entry, i.e. for the constructor's use.
    Some(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// Resolve a symbol as a function pointer of type `F`, or `None`.
///
/// # Safety
/// `F` must be an `extern "C"` function pointer type matching the symbol's C signature.
unsafe fn func<F: Copy>(name: &CStr) -> Option<F> {
    let p = sym(name);
    if p.is_null() {
        return None;
    }
    // SAFETY: `F` is a function pointer (pointer-sized) of the symbol's signature, by the
    // caller's contract, and `p` is the non-null address of that function.
    Some(unsafe { core::mem::transmute_copy::<*mut c_void, F>(&p) })
}

fn init(process: Process) {
    // The open wrappers (module `open_mode`) are called in every process; they call the real
    // functions through these addresses.
    #[cfg(open_wrappers)]
    open_mode::resolve();
    // Most processes are not Python: that answer comes without `dlsym`, whose miss costs a
    // small program its first `malloc` (see `elf`). Both names in one walk of the objects.
    let [hook_api, init_api] = elf::defined_each([c"PySys_AddAuditHook", c"Py_Initialize"]);
    let mut looked_up = false;
    let add_hook = match hook_api {
        Some(false) => core::ptr::null_mut(),
        _ => {
            looked_up = true;
            sym(c"PySys_AddAuditHook")
        }
    };
    if add_hook.is_null() {
        // Not CPython ≥ 3.8 (or libpython not loaded yet). An interpreter that has
        // `Py_Initialize` all the same is CPython 2.7–3.7: observed through its opens.
        let older = match init_api {
            Some(found) => found,
            None => {
                looked_up = true;
                !sym(c"Py_Initialize").is_null()
            }
        };
        if looked_up {
            // Clear a failed lookup's error string so that a later `dlerror()` of the program
            // itself does not report it.
            // SAFETY: `dlerror` has no preconditions.
            unsafe { libc::dlerror() };
        }
        if older {
            start_open_mode(process);
        }
        return;
    }
    if debug_allocator_possible() {
        return;
    }
    // SAFETY: the signatures below are those of the CPython 3.8–3.13 C API.
    let api = unsafe {
        let is_initialized: Option<unsafe extern "C" fn() -> c_int> = func(c"Py_IsInitialized");
        match is_initialized {
            Some(f) if f() == 0 => {}
            _ => return,
        }
        let (none, code_type) = (sym(c"_Py_NoneStruct"), sym(c"PyCode_Type"));
        if none.is_null() || code_type.is_null() {
            return;
        }
        let (
            Some(tuple_size),
            Some(tuple_get_item),
            Some(as_utf8_and_size),
            Some(get_attr_string),
            Some(object_type),
            Some(dec_ref),
            Some(err_clear),
        ) = (
            func(c"PyTuple_Size"),
            func(c"PyTuple_GetItem"),
            func(c"PyUnicode_AsUTF8AndSize"),
            func(c"PyObject_GetAttrString"),
            func(c"PyObject_Type"),
            func(c"Py_DecRef"),
            func(c"PyErr_Clear"),
        )
        else {
            return;
        };
        Api {
            tuple_size,
            tuple_get_item,
            as_utf8_and_size,
            get_attr_string,
            object_type,
            dec_ref,
            err_clear,
            none: none.cast(),
            code_type: code_type.cast(),
        }
    };
    let config = read_config(CONFIG_PATH);
    if INITIALISED.swap(true, Ordering::AcqRel) {
        return; // the constructor ran twice (cannot happen with one mapping)
    }
    let Some(fd) = connect(&config) else { return };
    // The daemon takes the first message of a connection as the process's exec record; without
    // it the connection is useless, so the hook is not installed either.
    if !send_hello(fd, process) {
        close(fd);
        return;
    }
    // SAFETY: only this first run of the constructor writes `API`, and nothing reads it before
    // `API_READY` is set below.
    unsafe { (*API.0.get()).write(api) };
    API_READY.store(true, Ordering::Release);
    SOCK.store(fd, Ordering::Release);
    // SAFETY: `add_hook` is `PySys_AddAuditHook(Py_AuditHookFunction, void *)`, callable before
    // `Py_Initialize` (documented by PEP 578 for exactly this use); `hook` has the
    // `Py_AuditHookFunction` signature and the null user data is never read.
    let rc = unsafe {
        let add: unsafe extern "C" fn(AuditHook, *mut c_void) -> c_int =
            core::mem::transmute::<*mut c_void, _>(add_hook);
        add(hook, core::ptr::null_mut())
    };
    if rc != 0 {
        SOCK.store(-1, Ordering::Release);
        close(fd);
    }
}

/// In an interpreter without audit hooks: connect and send the Hello exactly as for one with
/// them, then switch the open wrappers' reporting on (module `open_mode`) instead of
/// installing a hook. Without a daemon, or where the wrappers are not built, nothing changes.
fn start_open_mode(process: Process) {
    #[cfg(open_wrappers)]
    {
        let config = read_config(CONFIG_PATH);
        if INITIALISED.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(fd) = connect(&config) else { return };
        if !send_hello(fd, process) {
            close(fd);
            return;
        }
        SOCK.store(fd, Ordering::Release);
        open_mode::OPEN_MODE.store(true, Ordering::Release);
    }
    #[cfg(not(open_wrappers))]
    let _ = process;
}

/// Whether the interpreter may run with the debug allocator, which would abort at exit on the
/// pre-initialisation hook entry (see the crate docs).
fn debug_allocator_possible() -> bool {
    if env(c"PYTHONMALLOC").is_some_and(|v| v.windows(5).any(|w| w == b"debug")) {
        return true;
    }
    if env(c"PYTHONDEVMODE").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    if !sym(c"_Py_GetRefTotal").is_null() || !sym(c"_Py_GetGlobalRefTotal").is_null() {
        return true; // a --with-pydebug build
    }
    // SAFETY: `dlerror` has no preconditions (clears the misses above).
    unsafe { libc::dlerror() };
    let mut buf = [0u8; 4096];
    let n = read_cmdline(&mut buf);
    dev_mode_in_args(buf.get(..n).unwrap_or(&[]))
}

/// Read the start of `/proc/self/cmdline` (the options come first); 0 on failure.
fn read_cmdline(buf: &mut [u8]) -> usize {
    // O_CLOEXEC so that nothing leaks.
    let fd = sys_open(c"/proc/self/cmdline", libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return 0;
    }
    let n = read_fd(fd, buf);
    close(fd);
    n
}

/// `openat(AT_FDCWD, path, flags)` as a system call, for the library's own files: they go
/// neither through its `open` wrapper (module `open_mode`, which the library's own calls of
/// `open` would bind to) nor through an `open` that the program defines. -1 and `errno` on
/// failure, as `open`.
fn sys_open(path: &CStr, flags: c_int) -> c_int {
    // SAFETY: `path` is NUL-terminated; the kernel checks the flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::c_long::from(libc::AT_FDCWD),
            path.as_ptr(),
            libc::c_long::from(flags),
            0 as libc::c_long,
        )
    };
    c_int::try_from(r).unwrap_or(-1)
}

/// Read from `fd` until `buf` is full, end of file or an error; the number of bytes read.
fn read_fd(fd: c_int, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let r = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if r > 0 {
            n += r as usize;
        } else if r < 0 && errno() == libc::EINTR {
            continue;
        } else {
            break;
        }
    }
    n
}

/// Whether a NUL-separated command line passes `-X dev` to the interpreter: among the options
/// before the script, `-c` or `-m` (whose values would belong to the program, not Python).
/// Handles `-X dev`, `-Xdev`, clusters such as `-IX dev`, and skips the values of `-W`
/// and `--check-hash-based-pycs`.
pub fn dev_mode_in_args(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|&b| b == 0).skip(1);
    while let Some(arg) = args.next() {
        if arg == b"--" || arg == b"-" || arg.first() != Some(&b'-') {
            return false;
        }
        if arg.starts_with(b"--") {
            if arg == b"--check-hash-based-pycs" {
                args.next();
            }
            continue;
        }
        for (i, &opt) in arg.iter().enumerate().skip(1) {
            match opt {
                b'c' | b'm' => return false,
                b'W' | b'X' => {
                    let inline = arg.get(i + 1..).unwrap_or(&[]);
                    let value = if inline.is_empty() {
                        args.next().unwrap_or(&[])
                    } else {
                        inline
                    };
                    if opt == b'X' && (value == b"dev" || value.starts_with(b"dev=")) {
                        return true;
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    false
}

/// The settings of [`CONFIG_PATH`]; [`Config::default`] when the file is absent or untrusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    socket: [u8; SUN_PATH_LEN],
    socket_len: usize,
    /// `allow_env_override = true`: [`SOCKET_ENV`] may choose the socket.
    pub allow_env_override: bool,
}

impl Default for Config {
    fn default() -> Self {
        let mut c = Config {
            socket: [0; SUN_PATH_LEN],
            socket_len: 0,
            allow_env_override: false,
        };
        c.set_socket(DEFAULT_SOCKET.to_bytes());
        c
    }
}

impl Config {
    /// The daemon's socket path (absolute, shorter than `sun_path`).
    pub fn socket(&self) -> &[u8] {
        self.socket.get(..self.socket_len).unwrap_or(&[])
    }

    /// Take `path` as the socket if it is absolute, has no NUL and fits `sun_path`.
    fn set_socket(&mut self, path: &[u8]) -> bool {
        if path.first() != Some(&b'/') || path.contains(&0) || path.len() >= SUN_PATH_LEN {
            return false;
        }
        let Some(dst) = self.socket.get_mut(..path.len()) else {
            return false;
        };
        dst.copy_from_slice(path);
        self.socket_len = path.len();
        true
    }
}

/// Read the configuration file at `path` ([`CONFIG_PATH`] but for tests). Its settings are used
/// only when it is a regular file (not followed through a symbolic link), owned by root, not
/// writable by group or others, and at most [`CONFIG_MAX`] bytes: otherwise whoever could write
/// it could redirect every process's reports. Any failure gives the defaults.
pub fn read_config(path: &CStr) -> Config {
    let mut buf = [0u8; CONFIG_MAX + 1];
    // O_NOFOLLOW: a link is refused (ELOOP), not followed; O_CLOEXEC: nothing leaks into a
    // child even if another thread forks meanwhile.
    let fd = sys_open(
        path,
        libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NOCTTY,
    );
    if fd < 0 {
        return Config::default();
    }
    // SAFETY: an all-zero `stat` is a valid value for `fstat` to overwrite.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat` and `fd` is open.
    let trusted = unsafe { libc::fstat(fd, &mut st) } == 0
        && st.st_mode & libc::S_IFMT == libc::S_IFREG
        && st.st_uid == 0
        && st.st_mode & (libc::S_IWGRP | libc::S_IWOTH) == 0
        && st.st_size <= CONFIG_MAX as libc::off_t;
    let n = if trusted { read_fd(fd, &mut buf) } else { 0 };
    close(fd);
    match buf.get(..n) {
        // Longer than `fstat` said (still being written): not the file that was checked.
        Some(text) if trusted && n <= CONFIG_MAX => parse_config(text),
        _ => Config::default(),
    }
}

/// Parse the configuration: lines of `key = value`, blanks around both ignored; `#` starts a
/// comment at the beginning of a line or after a blank. Keys: `socket` (an absolute path) and
/// `allow_env_override` (`true` or `false`). Unknown keys and invalid values are skipped (the
/// default stays), so that a newer file does not disable an older library; the last valid line
/// of a key wins.
pub fn parse_config(text: &[u8]) -> Config {
    let mut c = Config::default();
    for line in text.split(|&b| b == b'\n') {
        let line = strip_comment(line);
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (
            line.get(..eq).unwrap_or(&[]),
            line.get(eq + 1..).unwrap_or(&[]),
        );
        match (trim(key), trim(value)) {
            (b"socket", v) => {
                c.set_socket(v);
            }
            (b"allow_env_override", b"true") => c.allow_env_override = true,
            (b"allow_env_override", b"false") => c.allow_env_override = false,
            _ => {}
        }
    }
    c
}

/// `line` up to a `#` that starts it or follows a blank.
fn strip_comment(line: &[u8]) -> &[u8] {
    let mut prev_blank = true;
    for (i, &b) in line.iter().enumerate() {
        if b == b'#' && prev_blank {
            return line.get(..i).unwrap_or(line);
        }
        prev_blank = matches!(b, b' ' | b'\t');
    }
    line
}

/// `b` without leading and trailing spaces, tabs and carriage returns.
fn trim(b: &[u8]) -> &[u8] {
    let blank = |c: &u8| matches!(c, b' ' | b'\t' | b'\r');
    let start = b.iter().position(|c| !blank(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !blank(c)).map_or(start, |e| e + 1);
    b.get(start..end).unwrap_or(&[])
}

/// Connect to the daemon's socket; `None` when it is not there (no message, no retry).
/// How long `connect` waits for a slot in a full accept backlog (µs).
const CONNECT_WAIT_US: libc::suseconds_t = 20_000;

fn connect(config: &Config) -> Option<c_int> {
    let path = match config.allow_env_override && !secure_exec() {
        true => env(SOCKET_ENV).filter(|p| !p.is_empty()),
        false => None,
    };
    let path = path.unwrap_or(config.socket());
    // SAFETY: an all-zero `sockaddr_un` is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.len() >= addr.sun_path.len() {
        return None;
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(path) {
        *dst = src as c_char;
    }
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // A blocking connect bounded by a send timeout: when the daemon's accept backlog is full
    // (a burst of starts, or a user's connect storm), wait up to CONNECT_WAIT for a slot
    // rather than go unobserved at once; a daemon that is absent fails at once (no socket
    // file, or no listener). Sends never block: they use MSG_DONTWAIT, and the descriptor is
    // made non-blocking right after.
    let wait = libc::timeval {
        tv_sec: 0,
        tv_usec: CONNECT_WAIT_US,
    };
    // SAFETY: `wait` is a valid timeval and its size is passed with it.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const wait).cast(),
            core::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    // SAFETY: `addr` is an initialised `sockaddr_un` and its size is passed with it.
    let rc = unsafe {
        libc::connect(
            fd,
            (&raw const addr).cast(),
            core::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    let rc = match rc {
        // SAFETY: fcntl on the descriptor just created.
        0 => unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) },
        e => e,
    };
    let Some((dev, ino)) = (rc == 0).then(|| identity(fd)).flatten() else {
        close(fd);
        return None;
    };
    SOCK_DEV.store(dev, Ordering::Relaxed);
    SOCK_INO.store(ino, Ordering::Relaxed);
    Some(fd)
}

/// Send the [`MessageKind::Hello`]: the program as executed, the command line and the
/// environment, each NUL-separated and cut to the wire format's maximum. `false` when it could
/// not be sent whole (the daemon's queue is full, or the socket failed).
fn send_hello(fd: c_int, process: Process) -> bool {
    // ~78 KB: mapped for the call, not on the stack (and not a static, which every process
    // would map as zero pages at load). One byte over each maximum lets `encode` see that a
    // field was cut and flag it.
    let Some(mut map) = Mapping::new(ARGS_MAX + 1 + ENV_MAX + 1 + MAX_MESSAGE) else {
        return false;
    };
    let Some((args_buf, rest)) = map.bytes().split_at_mut_checked(ARGS_MAX + 1) else {
        return false;
    };
    let Some((env_buf, buf)) = rest.split_at_mut_checked(ENV_MAX + 1) else {
        return false;
    };
    let argc = usize::try_from(process.argc).unwrap_or(0);
    let args_len = if process.argv.is_null() || argc == 0 {
        read_cmdline(args_buf)
    } else {
        // SAFETY: glibc passes `argv` with `argc` valid NUL-terminated strings.
        unsafe { join_c_strings(process.argv, argc, args_buf) }
    };
    let envp = if process.envp.is_null() {
        // SAFETY: glibc's `environ`, read before `main` (no other thread can be changing it).
        unsafe { libc::environ.cast_const().cast::<*const c_char>() }
    } else {
        process.envp
    };
    let env_len = if envp.is_null() {
        0
    } else {
        // SAFETY: `envp` is a NULL-terminated array of NUL-terminated strings.
        unsafe { join_c_strings(envp, usize::MAX, env_buf) }
    };
    let mut exe = [0u8; 4096];
    let path = executed_program(&mut exe);
    let m = Message {
        path,
        args: args_buf.get(..args_len).unwrap_or(&[]),
        env: env_buf.get(..env_len).unwrap_or(&[]),
        ..Message::new(MessageKind::Hello)
    };
    let Ok(len) = encode(&m, buf) else {
        return false;
    };
    // SAFETY: `buf[..len]` is initialised; non-blocking and SIGPIPE-free as every send.
    let r = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            len,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(r) == Ok(len)
}

/// Anonymous private memory, unmapped when dropped.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> Option<Self> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then(|| Mapping { ptr: p.cast(), len })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a readable and writable mapping of `len` bytes (zero-filled by the
        // kernel), alive until `drop`, and borrowed mutably only through `&mut self`.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no borrow outlives `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The program as executed: the file name given to `execve` (`AT_EXECFN`), or when the kernel
/// did not supply it the target of `/proc/self/exe` (read into `buf`).
fn executed_program(buf: &mut [u8]) -> &[u8] {
    // SAFETY: `getauxval` has no preconditions; AT_EXECFN's value is the address of a
    // NUL-terminated string the kernel put on the initial stack, valid for the process's life.
    let p = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const c_char;
    if !p.is_null() {
        // SAFETY: as above.
        let name = unsafe { CStr::from_ptr(p) }.to_bytes();
        if !name.is_empty() {
            return name;
        }
    }
    // SAFETY: the path is NUL-terminated and `buf` is writable for its length.
    let n = unsafe {
        libc::readlink(
            c"/proc/self/exe".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    match usize::try_from(n) {
        Ok(n) if n > 0 => buf.get(..n).unwrap_or(b"?"),
        _ => b"?",
    }
}

/// Copy up to `count` strings of a NULL-terminated array into `out`, each followed by a NUL,
/// until `out` is full; the number of bytes written.
///
/// # Safety
/// `list` points to an array of NUL-terminated strings that ends with a null pointer or has at
/// least `count` entries.
unsafe fn join_c_strings(list: *const *const c_char, count: usize, out: &mut [u8]) -> usize {
    let mut n = 0;
    for i in 0..count {
        // SAFETY: `i` is within the array by the caller's contract (it stops at the null).
        let s = unsafe { *list.add(i) };
        let Some(room) = out.get_mut(n..).filter(|r| !r.is_empty() && !s.is_null()) else {
            break;
        };
        // SAFETY: each entry is a NUL-terminated string.
        let bytes = unsafe { CStr::from_ptr(s) }.to_bytes_with_nul();
        let k = bytes.len().min(room.len());
        if let (Some(dst), Some(src)) = (room.get_mut(..k), bytes.get(..k)) {
            dst.copy_from_slice(src);
        }
        n += k;
    }
    n
}

/// Whether the process is secure-exec (setuid, setgid, file capabilities): its environment
/// was chosen by a less privileged user and must not choose where the reports go.
fn secure_exec() -> bool {
    // SAFETY: `getauxval` has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Device and inode of an open descriptor.
fn identity(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value for `fstat` to overwrite.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat`.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

fn close(fd: c_int) {
    // SAFETY: `fd` is a descriptor this library opened and no longer uses.
    unsafe { libc::close(fd) };
}

/// The audit hook (`Py_AuditHookFunction`). Always returns 0 and leaves `errno` and the
/// interpreter's error state as it found them.
extern "C" fn hook(event: *const c_char, args: *mut PyObject, _data: *mut c_void) -> c_int {
    let saved = errno();
    if event.is_null() || args.is_null() || SOCK.load(Ordering::Relaxed) < 0 {
        return 0;
    }
    // SAFETY: CPython passes the event name as a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(event) }.to_bytes();
    let Some(api) = api() else { return 0 };
    // SAFETY: `args` is the event's argument tuple (a live object while the hook runs), and the
    // GIL (or, free-threaded, the thread state) is held by the caller.
    unsafe {
        match name {
            b"import" => on_import(api, args),
            b"exec" => on_exec(api, args),
            _ => {}
        }
    }
    set_errno(saved);
    0
}

/// The UTF-8 bytes of a `str`, borrowed from the object (valid while it lives); `None` and the
/// error cleared when it is not a `str` or not encodable.
///
/// # Safety
/// `obj` is a live object and the caller holds the interpreter.
unsafe fn utf8<'a>(api: &Api, obj: *mut PyObject) -> Option<&'a [u8]> {
    let mut len: isize = 0;
    // SAFETY: by the caller's contract; `len` is a valid out-parameter.
    let p = unsafe { (api.as_utf8_and_size)(obj, &mut len) };
    if p.is_null() || len < 0 {
        // SAFETY: clearing the error this call raised; the caller holds the interpreter.
        unsafe { (api.err_clear)() };
        return None;
    }
    // SAFETY: CPython returns a buffer of `len` bytes cached in the object.
    Some(unsafe { core::slice::from_raw_parts(p.cast::<u8>(), len as usize) })
}

/// Argument `i` of the tuple (borrowed), or `None` with the error cleared.
///
/// # Safety
/// `args` is a live tuple and the caller holds the interpreter.
unsafe fn arg(api: &Api, args: *mut PyObject, i: isize) -> Option<*mut PyObject> {
    // SAFETY: by the caller's contract.
    let o = unsafe { (api.tuple_get_item)(args, i) };
    if o.is_null() {
        // SAFETY: clearing the IndexError/SystemError just raised.
        unsafe { (api.err_clear)() };
        return None;
    }
    Some(o)
}

/// `import`: (module, filename, sys.path, sys.meta_path, sys.path_hooks); reads 0 and 1 only.
///
/// # Safety
/// As for [`arg`].
unsafe fn on_import(api: &Api, args: *mut PyObject) {
    // SAFETY: by the caller's contract (for every call in this block).
    unsafe {
        let n = (api.tuple_size)(args);
        if n < 2 {
            if n < 0 {
                (api.err_clear)();
            }
            return;
        }
        let (Some(module), Some(file)) = (arg(api, args, 0), arg(api, args, 1)) else {
            return;
        };
        let Some(module) = utf8(api, module).and_then(|b| core::str::from_utf8(b).ok()) else {
            return;
        };
        if file == api.none {
            send_message(MessageKind::Import, module, b"", b"");
        } else if let Some(path) = utf8(api, file) {
            send_message(MessageKind::ExtensionImport, module, path, b"");
        }
    }
}

/// `exec`: (code_object,); reports `co_filename` when the argument is a code object and the
/// name an absolute path.
///
/// # Safety
/// As for [`arg`].
unsafe fn on_exec(api: &Api, args: *mut PyObject) {
    // SAFETY: by the caller's contract (for every call in this block). `PyObject_Type` returns
    // a new reference, released at once; only its address is compared. `co_filename` is a
    // member of the (final) code type: reading it runs no Python code.
    unsafe {
        let n = (api.tuple_size)(args);
        if n < 1 {
            if n < 0 {
                (api.err_clear)();
            }
            return;
        }
        let Some(code) = arg(api, args, 0) else {
            return;
        };
        let ty = (api.object_type)(code);
        if ty.is_null() {
            (api.err_clear)();
            return;
        }
        let is_code = ty == api.code_type;
        (api.dec_ref)(ty);
        if !is_code {
            return;
        }
        let file = (api.get_attr_string)(code, c"co_filename".as_ptr());
        if file.is_null() {
            (api.err_clear)();
            return;
        }
        if let Some(path) = utf8(api, file) {
            if path.first() == Some(&b'/') {
                send_message(MessageKind::Exec, "", path, b"");
            }
        }
        (api.dec_ref)(file);
    }
}

/// Encode and send one message without blocking; drop and count it when the daemon's queue is
/// full, stop sending when the connection is gone or the descriptor is no longer ours. Opens no
/// file and allocates nothing (the open wrappers call it).
fn send_message(kind: MessageKind, name: &str, path: &[u8], args: &[u8]) {
    let mut buf = [0u8; IMPORT_MAX];
    let m = Message {
        name,
        path,
        args,
        ..Message::new(kind)
    };
    let Ok(len) = encode(&m, &mut buf) else {
        return;
    };
    let fd = SOCK.load(Ordering::Acquire);
    if fd < 0 {
        return;
    }
    let ours = (
        SOCK_DEV.load(Ordering::Relaxed),
        SOCK_INO.load(Ordering::Relaxed),
    );
    if identity(fd) != Some(ours) {
        SOCK.store(-1, Ordering::Release);
        return;
    }
    // SAFETY: `buf[..len]` is initialised; the flags make `send` non-blocking and SIGPIPE-free.
    let r = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            len,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if r < 0 {
        match errno() {
            libc::EAGAIN | libc::EINTR | libc::ENOBUFS => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            _ => SOCK.store(-1, Ordering::Release),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{dev_mode_in_args, parse_config, read_config, Config, CONFIG_MAX};
    use std::ffi::CString;
    use std::format;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::prelude::rust_2021::*;

    fn config(socket: &str, allow_env_override: bool) -> Config {
        let mut c = Config::default();
        assert!(c.set_socket(socket.as_bytes()));
        c.allow_env_override = allow_env_override;
        c
    }

    #[test]
    fn config_parsing() {
        assert_eq!(Config::default().socket(), b"/run/pyusage/preload.sock");
        assert!(!Config::default().allow_env_override);
        assert_eq!(parse_config(b""), Config::default());
        let text = b"# pyusage preload\n\
            \n\
            socket = /run/x/p.sock   # the daemon's\n\
            \tallow_env_override=true\r\n\
            unknown_key = 3\n\
            no equals sign\n";
        assert_eq!(parse_config(text), config("/run/x/p.sock", true));
        // Invalid values keep the default; the last valid line wins.
        let long = format!("socket = /{}\n", "a".repeat(107));
        for bad in [
            "socket = relative.sock\n",
            "socket =\n",
            long.as_str(),
            "allow_env_override = yes\n",
            "allow_env_override = True\n",
            "# allow_env_override = true\n",
            "socket#x = /y\n",
        ] {
            assert_eq!(parse_config(bad.as_bytes()), Config::default(), "{bad:?}");
        }
        let text = b"socket = /a.sock\nsocket = bad\nallow_env_override = true\n\
            allow_env_override = false\nsocket=/b#c.sock\n";
        assert_eq!(parse_config(text), config("/b#c.sock", false));
        let max = format!("socket = /{}", "a".repeat(106));
        assert_eq!(parse_config(max.as_bytes()).socket().len(), 107);
    }

    /// Write `text` to `path` with `mode`, owned by `uid` when running as root.
    fn write(path: &Path, text: &[u8], mode: u32, uid: Option<u32>) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        if let Some(uid) = uid {
            std::os::unix::fs::chown(path, Some(uid), None).unwrap();
        }
    }

    fn read(path: &Path) -> Config {
        read_config(&CString::new(path.as_os_str().as_bytes()).unwrap())
    }

    #[test]
    fn config_file_is_trusted_only_when_root_owned_and_not_writable_by_others() {
        // SAFETY: `geteuid` has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preload.conf");
        let text = b"socket = /tmp/t.sock\nallow_env_override = true\n";
        let wanted = config("/tmp/t.sock", true);
        assert_eq!(read(&path), Config::default(), "absent");
        if root {
            write(&path, text, 0o644, Some(0));
            assert_eq!(read(&path), wanted, "root, 0644");
            write(&path, text, 0o600, Some(0));
            assert_eq!(read(&path), wanted, "root, 0600");
            for mode in [0o664, 0o646, 0o666, 0o777] {
                write(&path, text, mode, Some(0));
                assert_eq!(read(&path), Config::default(), "mode {mode:o}");
            }
            write(&path, text, 0o644, Some(65534));
            assert_eq!(read(&path), Config::default(), "owned by nobody");
            // Too long, even when the settings come first.
            let mut big = text.to_vec();
            big.resize(CONFIG_MAX + 1, b'\n');
            write(&path, &big, 0o644, Some(0));
            assert_eq!(read(&path), Config::default(), "longer than CONFIG_MAX");
            big.truncate(CONFIG_MAX);
            write(&path, &big, 0o644, Some(0));
            assert_eq!(read(&path), wanted, "exactly CONFIG_MAX");
            // A symbolic link to a trusted file is not followed; a directory is not a file.
            let link = dir.path().join("link.conf");
            std::os::unix::fs::symlink(&path, &link).unwrap();
            assert_eq!(read(&link), Config::default(), "symlink");
            assert_eq!(read(dir.path()), Config::default(), "directory");
        } else {
            // Not root: every file this user creates is owned by someone other than root.
            write(&path, text, 0o644, None);
            assert_eq!(read(&path), Config::default(), "owned by a user");
        }
    }

    fn dev(args: &[&str]) -> bool {
        let mut v = Vec::new();
        for a in args {
            v.extend_from_slice(a.as_bytes());
            v.push(0);
        }
        dev_mode_in_args(&v)
    }

    #[test]
    fn dev_mode_options() {
        assert!(dev(&["python", "-X", "dev", "-c", "pass"]));
        assert!(dev(&["python", "-Xdev"]));
        assert!(dev(&["python", "-I", "-IX", "dev", "x.py"]));
        assert!(dev(&["python", "-W", "error", "-X", "dev"]));
        assert!(dev(&[
            "python",
            "--check-hash-based-pycs",
            "always",
            "-Xdev"
        ]));
        assert!(!dev(&["python", "-c", "pass", "-X", "dev"]));
        assert!(!dev(&["python", "-cX", "dev"]));
        assert!(!dev(&["python", "x.py", "-X", "dev"]));
        assert!(!dev(&["python", "-m", "mod", "-Xdev"]));
        assert!(!dev(&["python", "-W", "-Xdev"]));
        assert!(!dev(&["python", "-X", "importtime"]));
        assert!(!dev(&["python", "-X"]));
        assert!(!dev(&["python"]));
        assert!(!dev(&[]));
    }
}
