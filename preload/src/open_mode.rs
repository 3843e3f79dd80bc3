//! Open mode: the fallback for CPython 2.7 and 3.6–3.7, which have no audit hooks.
//!
//! The library exports wrappers of the libc `open` family (`open`, `open64`, `openat`,
//! `openat64`, `fopen`, `fopen64`). Being preloaded, they come before libc in the global
//! scope, so every object that calls these functions through its PLT (libpython, the
//! interpreter's extension modules, the program) calls them. Each wrapper calls the real
//! function with the caller's arguments unchanged and returns what it returned, `errno`
//! included. Only in a process where the constructor switched open mode on ([`OPEN_MODE`]:
//! an interpreter without `PySys_AddAuditHook` that has `Py_Initialize`, connected to the
//! daemon) does a wrapper then look at the path and send one [`MessageKind::Open`] for
//! - every successful open of a name ending in `.py`, `.pyc`, `.pyo` or `.so`, and
//! - every failed open of a `.pyc`: the daemon's import rules pair a module with its bytecode
//!   probe (3.x importlib tries `__pycache__/m.cpython-3x.pyc` before the source; 2.7 tries
//!   `m.pyc` after opening `m.py`), and a failed probe is how a source without bytecode shows.
//!
//! Failed opens of `.py`, `.so` and `module.so` are not sent: 2.7's importer probes each of
//! them with `fopen` in every `sys.path` entry for every module, hundreds per start, and
//! they say nothing the successful open does not.
//!
//! In every other process (not Python, Python ≥ 3.8 with its hook) a wrapper costs one relaxed
//! atomic load besides the call of the real function, whose address the constructor found as
//! `dlsym(RTLD_NEXT, …)` would ([`resolve`]).
//!
//! What open mode cannot see: anything libc opens internally (`fopen` calls its internal
//! `open`, which no wrapper sees, and no wrapper needs to), and in particular the shared
//! objects `dlopen` maps: the loader opens them with its own system calls. Python 3.6–3.7
//! find extension modules with `stat` and load them with `dlopen`, so their `.so` files are
//! not observed (2.7 `fopen`s the `.so` first, which is). A `dlopen` wrapper would see them,
//! but glibc's `dlopen` searches the *caller's* `DT_RUNPATH`, so any wrapper that `call`s the
//! real one breaks programs that rely on `$ORIGIN` run paths (`docs/preload-research.md`,
//! "Embedded interpreters loaded with dlopen"); it is left out on purpose.
//!
//! Reentrancy: a report calls `fstat` (the descriptor identity check), `gettid` and `send`,
//! none of which opens a file, so a wrapper never re-enters itself, and it needs no
//! thread-local guard; all three are async-signal-safe, as `open` is, so a wrapper called from
//! a signal handler stays safe. Nothing is allocated: the message is built on the stack, in a
//! function kept out of line so that the fast path does not reserve its ~5 KB.
//!
//! [`MessageKind::Open`]: tracer_common::preload::MessageKind::Open

use core::ffi::{c_char, c_int, c_uint, c_void, CStr};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use tracer_common::preload::{MessageKind, OpenRecord, PATH_MAX};

use crate::{errno, send_message, set_errno};

/// Set by the constructor, after the Hello was sent and the socket stored, in an interpreter
/// without audit hooks; never cleared (a dead connection stops the sending instead).
pub static OPEN_MODE: AtomicBool = AtomicBool::new(false);

/// A libc function as `dlsym(RTLD_NEXT, name)` finds it: the next definition after this
/// library in the search order (libc's, or that of another preloaded library that wraps it,
/// which must keep working). Null until resolved.
struct Next {
    name: &'static CStr,
    addr: AtomicPtr<c_void>,
}

impl Next {
    const fn new(name: &'static CStr) -> Self {
        Next {
            name,
            addr: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The cached address (null before the constructor ran). Relaxed is enough: the function's
    /// code was mapped by the loader before any wrapper could run.
    fn get(&self) -> *mut c_void {
        self.addr.load(Ordering::Relaxed)
    }

    /// Look the function up and cache it. A miss (impossible for these libc functions) leaves
    /// null, and its error string is cleared so that the program's own `dlerror` stays clean.
    fn resolve(&self) -> *mut c_void {
        // SAFETY: the name is NUL-terminated; RTLD_NEXT searches the objects after the caller
        // (this library), which is mapped and relocated whenever its code runs.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        if p.is_null() {
            // SAFETY: `dlerror` has no preconditions.
            unsafe { libc::dlerror() };
        } else {
            self.addr.store(p, Ordering::Relaxed);
        }
        p
    }
}

static OPEN: Next = Next::new(c"open");
static OPEN64: Next = Next::new(c"open64");
static OPENAT: Next = Next::new(c"openat");
static OPENAT64: Next = Next::new(c"openat64");
static FOPEN: Next = Next::new(c"fopen");
static FOPEN64: Next = Next::new(c"fopen64");

/// The functions the wrappers forward to.
static NEXT: [&Next; 6] = [&OPEN, &OPEN64, &OPENAT, &OPENAT64, &FOPEN, &FOPEN64];

/// Resolve the real functions; the constructor calls this first, in every process, so that
/// a wrapper's fast path is a load and a call. They are found by walking the loaded objects'
/// symbol tables the way `dlsym(RTLD_NEXT, …)` searches them (`elf::next_functions`): six
/// `dlsym` calls cost 6–9 µs per exec here, the first one cold, about 1 % of a `/bin/true`,
/// in every process of a node. A name the walk cannot answer for sure goes to `dlsym`.
///
/// A wrapper that runs before the constructor (from another library's constructor) gets by
/// without it: the `open` and `openat` wrappers issue the `openat` system call themselves, the
/// `fopen` ones resolve their function then.
pub fn resolve() {
    // Any address inside this library: the search starts after the object that holds it.
    let ours = (&raw const OPEN_MODE) as usize;
    let found = crate::elf::next_functions(NEXT.map(|f| f.name), ours);
    for (f, addr) in NEXT.iter().zip(found) {
        if addr == 0 {
            f.resolve();
        } else {
            f.addr.store(addr as *mut c_void, Ordering::Relaxed);
        }
    }
}

/// `open`, `open64`: C declares them `int open(const char *, int, ...)`.
type OpenFn = unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
/// `openat`, `openat64`: `int openat(int, const char *, int, ...)`.
type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;
/// `fopen`, `fopen64`.
type FopenFn = unsafe extern "C" fn(*const c_char, *const c_char) -> *mut libc::FILE;

/// Call the real `openat`-like function `f` (an `open` when `dfd` is `None`), or when it is
/// not resolved yet the `openat` system call, which is what glibc's `open` and `openat` are
/// on Linux (the kernel sets `O_LARGEFILE` itself on 64-bit).
///
/// # Safety
/// The caller's arguments, as it passed them to the wrapper.
unsafe fn call_open(
    f: &Next,
    dfd: Option<c_int>,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    let p = f.get();
    if p.is_null() {
        // SAFETY: the system call validates every argument itself (a bad pointer is EFAULT);
        // `syscall` returns -1 and sets errno on failure, as `open` does.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::c_long::from(dfd.unwrap_or(libc::AT_FDCWD)),
                path,
                libc::c_long::from(flags),
                libc::c_long::from(mode),
            )
        };
        return c_int::try_from(r).unwrap_or(-1);
    }
    // SAFETY: `p` is the address of the libc function named by `f`, of the C signature
    // `OpenFn`/`OpenatFn`, and the arguments are the caller's. `mode` is passed as the
    // variadic argument: see the ABI note on `open`.
    unsafe {
        match dfd {
            None => core::mem::transmute::<*mut c_void, OpenFn>(p)(path, flags, mode),
            Some(dfd) => core::mem::transmute::<*mut c_void, OpenatFn>(p)(dfd, path, flags, mode),
        }
    }
}

/// Call the real `fopen`-like function `f`, resolving it now if the constructor has not run
/// yet; null with `ENOSYS` if it cannot be found (it always can: it is libc's).
///
/// # Safety
/// The caller's arguments, as it passed them to the wrapper.
unsafe fn call_fopen(f: &Next, path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    let mut p = f.get();
    if p.is_null() {
        p = f.resolve();
    }
    if p.is_null() {
        set_errno(libc::ENOSYS);
        return core::ptr::null_mut();
    }
    // SAFETY: `p` is the address of libc's `fopen`/`fopen64`, of signature `FopenFn`, and the
    // arguments are the caller's.
    unsafe { core::mem::transmute::<*mut c_void, FopenFn>(p)(path, mode) }
}

// ABI note for `open`, `open64`, `openat`, `openat64`. C declares the mode as a variadic
// argument (`int open(const char *path, int flags, ...)`), and stable Rust cannot define a
// variadic function, so the wrappers take it as one more fixed `mode_t` parameter. That is
// sound on the ABIs they are compiled for (`cfg(open_wrappers)`, set by build.rs): on x86-64
// System V and on AArch64 Linux (AAPCS64) a variadic call passes its first integer arguments
// in the same registers as a fixed-argument call (rdi, rsi, rdx, rcx; x0–x3), so the parameter
// holds the caller's mode when it passed one and an unspecified integer otherwise (x86-64's
// `al`, the vector-register count of a variadic call, is ignored by a fixed-argument callee).
// The wrapper always forwards it, as the variadic argument, to the real function, which reads
// it (`va_arg`) only when the flags contain `O_CREAT` or `O_TMPFILE`: exactly when the caller
// had to pass it. An unspecified value is never interpreted. (Apple's AArch64 ABI, which puts
// variadic arguments on the stack, is one where this would not hold.)

/// `open(2)` as libc declares it; see the module docs and the ABI note above it.
///
/// # Safety
/// As for libc's `open`: `path` is a NUL-terminated string; `mode` is only read by libc when
/// `flags` asks for it.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: the caller's arguments, forwarded unchanged.
    let r = unsafe { call_open(&OPEN, None, path, flags, mode) };
    if OPEN_MODE.load(Ordering::Relaxed) {
        report(path, libc::AT_FDCWD, flags, r);
    }
    r
}

/// `open64`: the same function as `open` on 64-bit Linux, wrapped separately because callers
/// built with `_FILE_OFFSET_BITS=64` (the interpreters) name it.
///
/// # Safety
/// As for [`open`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: the caller's arguments, forwarded unchanged.
    let r = unsafe { call_open(&OPEN64, None, path, flags, mode) };
    if OPEN_MODE.load(Ordering::Relaxed) {
        report(path, libc::AT_FDCWD, flags, r);
    }
    r
}

/// `openat(2)` as libc declares it; the ABI note above `open` applies.
///
/// # Safety
/// As for libc's `openat`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn openat(
    dfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: the caller's arguments, forwarded unchanged.
    let r = unsafe { call_open(&OPENAT, Some(dfd), path, flags, mode) };
    if OPEN_MODE.load(Ordering::Relaxed) {
        report(path, dfd, flags, r);
    }
    r
}

/// `openat64` (Python 3.x's `os.open(…, dir_fd=…)`).
///
/// # Safety
/// As for libc's `openat`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn openat64(
    dfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: the caller's arguments, forwarded unchanged.
    let r = unsafe { call_open(&OPENAT64, Some(dfd), path, flags, mode) };
    if OPEN_MODE.load(Ordering::Relaxed) {
        report(path, dfd, flags, r);
    }
    r
}

/// `fopen(3)`.
///
/// # Safety
/// As for libc's `fopen`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: the caller's arguments, forwarded unchanged.
    let f = unsafe { call_fopen(&FOPEN, path, mode) };
    if OPEN_MODE.load(Ordering::Relaxed) {
        report_fopen(path, mode, f);
    }
    f
}

/// `fopen64`: how Python 2.7 opens every module file (and probes for those that are not there).
///
/// # Safety
/// As for libc's `fopen`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: the caller's arguments, forwarded unchanged.
    let f = unsafe { call_fopen(&FOPEN64, path, mode) };
    if OPEN_MODE.load(Ordering::Relaxed) {
        report_fopen(path, mode, f);
    }
    f
}

/// Report an `fopen`: the descriptor of the stream, or `-errno`, and the `open` flags its
/// mode string stands for.
#[cold]
#[inline(never)]
fn report_fopen(path: *const c_char, mode: *const c_char, f: *mut libc::FILE) {
    let saved = errno();
    let r = if f.is_null() {
        -1
    } else {
        // SAFETY: `f` is the stream the real `fopen` just returned to this thread's caller,
        // still open (the caller has not seen it yet); `fileno` only reads its descriptor.
        unsafe { libc::fileno(f) }
    };
    set_errno(saved);
    // SAFETY: `mode` is the string the caller passed to `fopen`, which read it (glibc reads at
    // most these 7 characters of it, stopping at a NUL).
    let mode = unsafe { c_bytes(mode, 7) };
    report(path, libc::AT_FDCWD, fopen_flags(mode), r);
}

/// Send a [`MessageKind::Open`] for a call that returned `r` (a descriptor, or -1 with `errno`
/// set) when the path is one the daemon needs; `errno` is left as the call left it.
#[cold]
#[inline(never)]
fn report(path: *const c_char, dfd: c_int, oflags: c_int, r: c_int) {
    let saved = errno();
    let failed = (r < 0).then_some(saved);
    if path_was_read(failed) {
        // SAFETY: `path` is the caller's path, which the kernel read as a NUL-terminated string
        // (`path_was_read`), and which lives until the caller's call returns.
        let p = unsafe { c_bytes(path, PATH_MAX + 1) };
        if p.len() <= PATH_MAX && wanted(p, failed.is_some()) {
            // SAFETY: `gettid` has no preconditions.
            let tid = unsafe { libc::gettid() };
            let record = OpenRecord {
                tid: tid as u32,
                // -errno; a failure that left errno 0 (no libc does) keeps its -1.
                ret: failed.filter(|&e| e > 0).map_or(r, |e| -e),
                dfd,
                oflags,
            };
            send_message(MessageKind::Open, "", p, &record.to_bytes());
        }
    }
    set_errno(saved);
}

/// Whether the call got as far as the kernel reading the path: after a success it did; the
/// failures that can come before (an invalid flag or mode, no memory for the `FILE`) or
/// instead (a bad pointer, an unterminated name) are excluded, so the path is then not read.
fn path_was_read(failed: Option<c_int>) -> bool {
    !matches!(
        failed,
        Some(libc::EFAULT | libc::ENAMETOOLONG | libc::EINVAL | libc::ENOMEM)
    )
}

/// Whether a path is reported: module-like names when opened, bytecode probes when not.
pub fn wanted(path: &[u8], failed: bool) -> bool {
    if failed {
        return path.ends_with(b".pyc");
    }
    [&b".py"[..], b".pyc", b".pyo", b".so"]
        .iter()
        .any(|s| path.ends_with(s))
}

/// The bytes of the NUL-terminated string at `s` before its NUL, or its first `max` bytes if
/// none of them is NUL; empty for null. Never reads past the NUL or beyond `max` bytes, and
/// borrows the string in place (nothing is copied or allocated).
///
/// # Safety
/// `s` is null or points to a string readable up to its NUL or `max` bytes, which stays alive
/// and unchanged while the result is used.
unsafe fn c_bytes<'a>(s: *const c_char, max: usize) -> &'a [u8] {
    if s.is_null() {
        return &[];
    }
    let s = s.cast::<u8>();
    let mut n = 0;
    // SAFETY: the bytes before `n` were not NUL, so byte `n` (`n < max`) is within the string.
    while n < max && unsafe { s.add(n).read() } != 0 {
        n += 1;
    }
    // SAFETY: the `n` bytes just read.
    unsafe { core::slice::from_raw_parts(s, n) }
}

/// The `open` flags an `fopen` mode stands for, as glibc maps them: the first character
/// (`r`, `w`, `a`), then among the next six, before a NUL or `,`, `+` (read and write), `x`
/// (`O_EXCL`) and `e` (`O_CLOEXEC`).
pub fn fopen_flags(mode: &[u8]) -> c_int {
    let (mut access, mut extra) = match mode.first() {
        Some(b'w') => (libc::O_WRONLY, libc::O_CREAT | libc::O_TRUNC),
        Some(b'a') => (libc::O_WRONLY, libc::O_CREAT | libc::O_APPEND),
        _ => (libc::O_RDONLY, 0),
    };
    for &c in mode.iter().skip(1).take(6) {
        match c {
            0 | b',' => break,
            b'+' => access = libc::O_RDWR,
            b'x' => extra |= libc::O_EXCL,
            b'e' => extra |= libc::O_CLOEXEC,
            _ => {}
        }
    }
    access | extra
}

#[cfg(test)]
mod tests {
    use super::{c_bytes, call_open, fopen_flags, path_was_read, wanted, Next};
    use super::{fopen, fopen64, open, open64, openat, openat64};
    use crate::{errno, set_errno};
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    fn cstr(p: &std::path::Path) -> CString {
        CString::new(p.as_os_str().as_bytes()).unwrap()
    }

    /// The process's umask, read without changing it (`/proc/self/status`).
    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
    }

    /// The wrappers (here not exported: the test binary keeps libc's functions for itself) call
    /// the real functions with the caller's arguments and leave `errno` as they left it: not
    /// touched on success, the real error on failure. `OPEN_MODE` is off in the test binary,
    /// so this is the path of every process that is not an old interpreter.
    #[test]
    fn wrappers_forward_arguments_results_and_errno() {
        super::resolve();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.pyc");
        std::fs::write(&file, b"x").unwrap();
        let (file, missing) = (cstr(&file), cstr(&dir.path().join("missing.pyc")));
        let d = cstr(dir.path());
        // SAFETY: NUL-terminated paths and modes; every descriptor and stream opened is closed.
        unsafe {
            let dfd = libc::open(d.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            assert!(dfd >= 0);
            for f in [open, open64] {
                set_errno(1234);
                let fd = f(file.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0);
                assert!(fd >= 0 && errno() == 1234);
                assert_eq!(libc::fcntl(fd, libc::F_GETFD), libc::FD_CLOEXEC);
                libc::close(fd);
                assert_eq!(f(missing.as_ptr(), libc::O_RDONLY, 0), -1);
                assert_eq!(errno(), libc::ENOENT);
            }
            for f in [openat, openat64] {
                set_errno(1234);
                let fd = f(dfd, c"m.pyc".as_ptr(), libc::O_RDONLY, 0);
                assert!(fd >= 0 && errno() == 1234);
                libc::close(fd);
                assert_eq!(f(dfd, c"missing.pyc".as_ptr(), libc::O_RDONLY, 0), -1);
                assert_eq!(errno(), libc::ENOENT);
                assert_eq!(f(-1, c"m.pyc".as_ptr(), libc::O_RDONLY, 0), -1);
                assert_eq!(errno(), libc::EBADF);
            }
            // The mode reaches the real function when O_CREAT asks for it.
            let created = cstr(&dir.path().join("new.py"));
            let fd = open(
                created.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o640,
            );
            assert!(fd >= 0);
            libc::close(fd);
            let mode = std::fs::metadata(dir.path().join("new.py"))
                .unwrap()
                .permissions();
            assert_eq!(mode.mode() & 0o777, 0o640 & !umask());
            assert_eq!(
                open(created.as_ptr(), libc::O_CREAT | libc::O_EXCL, 0o600),
                -1
            );
            assert_eq!(errno(), libc::EEXIST);
            for f in [fopen, fopen64] {
                set_errno(1234);
                let s = f(file.as_ptr(), c"rbe".as_ptr());
                assert!(!s.is_null() && errno() == 1234);
                assert_eq!(
                    libc::fcntl(libc::fileno(s), libc::F_GETFD),
                    libc::FD_CLOEXEC
                );
                libc::fclose(s);
                assert!(f(missing.as_ptr(), c"r".as_ptr()).is_null());
                assert_eq!(errno(), libc::ENOENT);
                assert!(f(file.as_ptr(), c"q".as_ptr()).is_null());
                assert_eq!(errno(), libc::EINVAL);
            }
            libc::close(dfd);
        }
    }

    /// Before the constructor resolved anything, `open` and `openat` are the system call.
    #[test]
    fn unresolved_open_is_the_system_call() {
        let unresolved = Next::new(c"open");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.py");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (file, d) = (cstr(&file), cstr(dir.path()));
        // SAFETY: NUL-terminated paths; descriptors are closed.
        unsafe {
            set_errno(1234);
            let fd = call_open(&unresolved, None, file.as_ptr(), libc::O_RDONLY, 0);
            assert!(fd >= 0 && errno() == 1234);
            libc::close(fd);
            let dfd = call_open(&unresolved, None, d.as_ptr(), libc::O_DIRECTORY, 0);
            assert!(dfd >= 0);
            let fd = call_open(&unresolved, Some(dfd), c"x.py".as_ptr(), libc::O_RDONLY, 0);
            assert!(fd >= 0);
            libc::close(fd);
            libc::close(dfd);
            let r = call_open(&unresolved, None, c"/nonexistent/x.pyc".as_ptr(), 0, 0);
            assert_eq!((r, errno()), (-1, libc::ENOENT));
            let r = call_open(&unresolved, None, core::ptr::null(), 0, 0);
            assert_eq!((r, errno()), (-1, libc::EFAULT));
        }
        assert!(unresolved.get().is_null());
    }

    #[test]
    fn which_paths_are_reported() {
        for p in [
            "/x/json/__init__.py",
            "m.pyc",
            "a/b.pyo",
            "/l/_json.so",
            ".so",
        ] {
            assert!(wanted(p.as_bytes(), false), "{p}");
        }
        for p in [
            "/x/json/__init__.pyx",
            "m.pyc.123",
            "libc.so.6",
            "py",
            "",
            "/x/so",
        ] {
            assert!(!wanted(p.as_bytes(), false), "{p}");
        }
        assert!(wanted(b"__pycache__/m.cpython-37.pyc", true));
        for p in ["m.py", "m.pyo", "_json.so", "jsonmodule.so"] {
            assert!(!wanted(p.as_bytes(), true), "{p}");
        }
        assert!(path_was_read(None));
        assert!(path_was_read(Some(libc::ENOENT)));
        assert!(path_was_read(Some(libc::EACCES)));
        assert!(!path_was_read(Some(libc::EFAULT)));
        assert!(!path_was_read(Some(libc::EINVAL)));
    }

    #[test]
    fn fopen_modes() {
        use libc::{O_APPEND, O_CLOEXEC, O_CREAT, O_EXCL, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY};
        let cases: [(&[u8], i32); 10] = [
            (b"r", O_RDONLY),
            (b"rb", O_RDONLY),
            (b"rbe", O_RDONLY | O_CLOEXEC),
            (b"r+", O_RDWR),
            (b"w", O_WRONLY | O_CREAT | O_TRUNC),
            (b"wbx", O_WRONLY | O_CREAT | O_TRUNC | O_EXCL),
            (b"a+", O_RDWR | O_CREAT | O_APPEND),
            (b"r,ccs=UTF-8+", O_RDONLY),
            (b"rbbbbbb+", O_RDONLY),
            (b"", O_RDONLY),
        ];
        for (mode, flags) in cases {
            assert_eq!(fopen_flags(mode), flags, "{:?}", std::str::from_utf8(mode));
        }
    }

    #[test]
    fn bounded_strings() {
        // SAFETY: NUL-terminated literals and a null pointer.
        unsafe {
            assert_eq!(c_bytes(c"ab".as_ptr(), 4), b"ab");
            assert_eq!(c_bytes(c"abcdef".as_ptr(), 4), b"abcd");
            assert_eq!(c_bytes(c"abcd".as_ptr(), 4), b"abcd");
            assert_eq!(c_bytes(c"".as_ptr(), 4), b"");
            assert_eq!(c_bytes(core::ptr::null(), 4), b"");
        }
    }
}
