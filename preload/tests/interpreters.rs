//! The library as the loader really uses it: `LD_PRELOAD` of the cdylib into real interpreters
//! (pyenv 3.8 and 3.13 with a shared libpython, Debian's 3.11 with libpython in the
//! executable) and into programs that are not Python, with a `SOCK_SEQPACKET` listener in a
//! temporary directory standing in for the daemon.
//!
//! Which library: `libpyusage_preload.so` next to this test binary, in
//! `target/<profile>/deps/`. Before it builds an integration test, Cargo compiles the package's
//! library with all of its crate types in one `rustc` run (`--crate-type cdylib --crate-type
//! rlib`, seen with `cargo test -v`), because the test links the `rlib`; so `cargo test -p
//! pyusage-preload` always has a cdylib of the same sources there, and nothing extra is built.
//! Not `target/<profile>/libpyusage_preload.so`: `cargo test` does not copy ("uplift") the
//! cdylib there, so that one is from the last `cargo build` and can be stale (checked: after an
//! edit, `cargo test` rewrote `deps/` and left it as it was). As a guard the test fails when the
//! cdylib is much older than the `rlib` beside it.
//!
//! A missing interpreter fails the test: these are the builds the design was measured on.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracer_common::preload::{decode, MessageKind};

const SCRIPT: &str = "import json, email.mime.text, _json; print(json.dumps([1, 2]))";

fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let lib = deps.join("libpyusage_preload.so");
    let rlib = deps.join("libpyusage_preload.rlib");
    assert!(lib.exists(), "no cdylib at {}", lib.display());
    // Both come from one rustc run; a cdylib much older than the rlib would be stale.
    let mtime = |p: &Path| p.metadata().unwrap().modified().unwrap();
    if let Ok(age) = mtime(&rlib).duration_since(mtime(&lib)) {
        assert!(
            age < Duration::from_secs(60),
            "{} is older than {}",
            lib.display(),
            rlib.display()
        );
    }
    lib
}

fn interpreters() -> Vec<PathBuf> {
    let home = std::env::var("HOME").unwrap();
    let list = [
        PathBuf::from(format!("{home}/.pyenv/versions/3.8.18/bin/python")),
        PathBuf::from(format!("{home}/.pyenv/versions/3.13.0/bin/python")),
        PathBuf::from("/usr/bin/python3.11"),
    ];
    for p in &list {
        assert!(p.exists(), "interpreter missing: {}", p.display());
    }
    list.to_vec()
}

/// A decoded message, owned.
#[derive(Debug, Clone, PartialEq)]
struct Msg {
    kind: MessageKind,
    name: String,
    path: String,
}

/// A SEQPACKET listener with an accept thread and one reader thread per connection.
struct Listener {
    dir: tempfile::TempDir,
    fd: i32,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
    received: Arc<Mutex<Vec<Msg>>>,
    connections: Arc<Mutex<usize>>,
}

impl Listener {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preload.sock");
        let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain socket calls on a fresh descriptor with a valid, NUL-terminated path.
        let fd = unsafe {
            let fd = libc::socket(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            );
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (d, s) in addr.sun_path.iter_mut().zip(cpath.as_bytes()) {
                *d = *s as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            assert_eq!(libc::bind(fd, (&raw const addr).cast(), len), 0);
            assert_eq!(libc::listen(fd, 64), 0);
            fd
        };
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let acceptor = {
            let (stop, received, connections) =
                (stop.clone(), received.clone(), connections.clone());
            std::thread::spawn(move || {
                let mut readers = Vec::new();
                loop {
                    // Read the flag before accepting: after `stop`, one last accept pass
                    // collects connections made by processes that already exited.
                    let last = stop.load(Ordering::SeqCst);
                    loop {
                        // SAFETY: accept on our listening descriptor; null address is allowed.
                        let c = unsafe {
                            libc::accept4(
                                fd,
                                std::ptr::null_mut(),
                                std::ptr::null_mut(),
                                libc::SOCK_CLOEXEC,
                            )
                        };
                        if c < 0 {
                            break;
                        }
                        *connections.lock().unwrap() += 1;
                        let received = received.clone();
                        readers.push(std::thread::spawn(move || read_all(c, &received)));
                    }
                    if last {
                        return readers;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Listener {
            dir,
            fd,
            stop,
            acceptor: Some(acceptor),
            received,
            connections,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("preload.sock")
    }

    /// Stop accepting, wait for every connection's end of stream, return messages and the
    /// number of connections.
    fn finish(mut self) -> (Vec<Msg>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for r in self.acceptor.take().unwrap().join().unwrap() {
            r.join().unwrap();
        }
        let msgs = self.received.lock().unwrap().clone();
        let conns = *self.connections.lock().unwrap();
        (msgs, conns)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

fn read_all(fd: i32, out: &Mutex<Vec<Msg>>) {
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: `buf` is writable for its length; a blocking read until end of stream.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            break;
        }
        let m = decode(&buf[..n as usize]).expect("library sent a malformed message");
        out.lock().unwrap().push(Msg {
            kind: m.kind,
            name: m.name.to_owned(),
            path: String::from_utf8_lossy(m.path).into_owned(),
        });
    }
    // SAFETY: the accepted descriptor, closed once.
    unsafe { libc::close(fd) };
}

/// Run a command with a 60 s limit (a hang fails the test instead of blocking it).
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        so.read_to_end(&mut v).unwrap();
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        se.read_to_end(&mut v).unwrap();
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{cmd:?} hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// The three ways each interpreter is started.
fn modes(py: &Path, lib: &Path, sock: &Path) -> Vec<(&'static str, Command)> {
    let mut plain = Command::new(py);
    plain.args(["-c", SCRIPT]);
    let mut isolated = Command::new(py);
    isolated.args(["-I", "-S", "-c", SCRIPT]);
    let mut empty_env = Command::new("/usr/bin/env");
    empty_env
        .arg("-i")
        .arg(format!("LD_PRELOAD={}", lib.display()))
        .arg(format!("PYUSAGE_PRELOAD_SOCKET={}", sock.display()))
        .arg(py)
        .args(["-c", SCRIPT]);
    let mut out = vec![("plain", plain), ("-I -S", isolated), ("env -i", empty_env)];
    for (_, c) in &mut out {
        c.env("LD_PRELOAD", lib)
            .env("PYUSAGE_PRELOAD_SOCKET", sock)
            .env_remove("PYTHONMALLOC")
            .env_remove("PYTHONDEVMODE");
    }
    out
}

#[test]
fn interpreters_report_imports_exec_paths_and_extension_modules() {
    let lib = library();
    for py in interpreters() {
        let listener = Listener::new();
        let sock = listener.path();
        let mut outputs = Vec::new();
        let n_modes = modes(&py, &lib, &sock).len();
        for (mode, mut cmd) in modes(&py, &lib, &sock) {
            let out = run(&mut cmd);
            assert!(out.status.success(), "{py:?} {mode}: {out:?}");
            assert_eq!(out.stdout, b"[1, 2]\n", "{py:?} {mode}");
            assert!(out.stderr.is_empty(), "{py:?} {mode}: {out:?}");
            outputs.push(mode);
        }
        let (msgs, conns) = listener.finish();
        // One connection per Python process; `env` is not Python and does not connect.
        assert_eq!(conns, n_modes, "{py:?}: connections");
        let count = |f: &dyn Fn(&Msg) -> bool| msgs.iter().filter(|m| f(m)).count();
        let json = count(&|m| m.kind == MessageKind::Import && m.name == "json");
        let init = count(&|m| m.kind == MessageKind::Exec && m.path.ends_with("/json/__init__.py"));
        let mime =
            count(&|m| m.kind == MessageKind::Exec && m.path.ends_with("/email/mime/text.py"));
        let ext = count(&|m| {
            m.kind == MessageKind::ExtensionImport
                && m.name == "_json"
                && m.path.starts_with('/')
                && m.path.contains("/lib-dynload/_json.")
                && m.path.ends_with(".so")
        });
        for (what, n) in [
            ("import json", json),
            ("exec json/__init__.py", init),
            ("exec email/mime/text.py", mime),
            ("_json .so", ext),
        ] {
            assert!(
                n >= n_modes,
                "{py:?}: {what} seen {n} times in {outputs:?}: {msgs:#?}"
            );
        }
        assert!(
            msgs.iter()
                .all(|m| m.kind != MessageKind::Exec || m.path.starts_with('/')),
            "only absolute exec paths are sent"
        );
    }
}

#[test]
fn no_daemon_leaves_python_unchanged() {
    let lib = library();
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.sock");
    for py in interpreters() {
        let reference = run(Command::new(&py).args(["-c", SCRIPT]));
        let preloaded = run(Command::new(&py)
            .args(["-c", SCRIPT])
            .env("LD_PRELOAD", &lib)
            .env("PYUSAGE_PRELOAD_SOCKET", &absent));
        assert_eq!(reference.status.code(), preloaded.status.code(), "{py:?}");
        assert_eq!(reference.stdout, preloaded.stdout, "{py:?}");
        assert_eq!(reference.stderr, preloaded.stderr, "{py:?}");
        // A failing program keeps its exit code and its traceback.
        let fail = ["-c", "import json; raise SystemExit(3)"];
        let reference = run(Command::new(&py).args(fail));
        let preloaded = run(Command::new(&py)
            .args(fail)
            .env("LD_PRELOAD", &lib)
            .env("PYUSAGE_PRELOAD_SOCKET", &absent));
        assert_eq!(reference.status.code(), Some(3));
        assert_eq!(preloaded.status.code(), Some(3), "{py:?}");
    }
}

#[test]
fn non_python_programs_are_unchanged_and_send_nothing() {
    let lib = library();
    let listener = Listener::new();
    let sock = listener.path();
    let programs: [&[&str]; 4] = [
        &["/bin/ls", "-la", "/"],
        &["/bin/ls", "/nonexistent-pyusage"],
        &["/bin/sh", "-c", "echo hi; exit 7"],
        &["/bin/sh", "-c", "echo hi"],
    ];
    for argv in programs {
        let reference = run(Command::new(argv[0]).args(&argv[1..]));
        let preloaded = run(Command::new(argv[0])
            .args(&argv[1..])
            .env("LD_PRELOAD", &lib)
            .env("PYUSAGE_PRELOAD_SOCKET", &sock));
        assert_eq!(reference.status.code(), preloaded.status.code(), "{argv:?}");
        assert_eq!(reference.stdout, preloaded.stdout, "{argv:?}");
        assert_eq!(reference.stderr, preloaded.stderr, "{argv:?}");
    }
    let (msgs, conns) = listener.finish();
    assert_eq!((msgs.len(), conns), (0, 0), "{msgs:?}");
}

/// Interpreter arguments and one extra environment variable.
type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>);

#[test]
fn dev_mode_and_debug_allocator_skip_the_hook() {
    let lib = library();
    for py in interpreters() {
        let listener = Listener::new();
        let sock = listener.path();
        let cases: [Case; 4] = [
            (&["-X", "dev", "-c", "import json"], None),
            (&["-Xdev", "-c", "import json"], None),
            (&["-c", "import json"], Some(("PYTHONDEVMODE", "1"))),
            (&["-c", "import json"], Some(("PYTHONMALLOC", "debug"))),
        ];
        for (args, var) in cases {
            let mut cmd = Command::new(&py);
            cmd.args(args)
                .env("LD_PRELOAD", &lib)
                .env("PYUSAGE_PRELOAD_SOCKET", &sock)
                .env_remove("PYTHONMALLOC")
                .env_remove("PYTHONDEVMODE");
            if let Some((k, v)) = var {
                cmd.env(k, v);
            }
            let out = run(&mut cmd);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{py:?} {args:?} {var:?}: {out:?}"
            );
        }
        let (msgs, conns) = listener.finish();
        assert_eq!((msgs.len(), conns), (0, 0), "{py:?}: hook must be skipped");
    }
}
