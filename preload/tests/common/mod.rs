//! Helpers shared by the integration tests: the library to preload, the interpreters, a
//! stand-in for the daemon's socket, and running a program with a time limit.

#![allow(dead_code)] // each test file uses a different subset

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracer_common::preload::{decode, MessageKind, OpenRecord, MAX_MESSAGE};

/// The library as shipped, on a machine whose configuration lets the tests choose the socket
/// ([`ensure_config`]).
///
/// The shipped library is the `--profile preload` build (`no_std`, panic = "abort", LTO), not
/// what `cargo test` compiles for its own profile (which links std), so this runs
/// `cargo build --profile preload -p pyusage-preload` once per test binary, into the target
/// directory the test binary was built in (`target/preload/libpyusage_preload.so`; Cargo locks
/// each profile's directory separately, so it does not wait for the `cargo test` that runs
/// it). It is up to date when nothing changed, and it works from a clean target directory.
pub fn library() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    ensure_config();
    LIB.get_or_init(build_library).clone()
}

fn build_library() -> PathBuf {
    // This binary is <target dir>/<profile>/deps/<name>.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--profile",
            "preload",
            "-p",
            "pyusage-preload",
            "--lib",
        ])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build --profile preload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = target.join("preload").join("libpyusage_preload.so");
    assert!(lib.exists(), "no library at {}", lib.display());
    lib
}

/// A copy of the library in `dir`, which is made readable by every user, for programs run as
/// `nobody` (the target directory may be private to its owner).
pub fn library_for_everyone(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let copy = dir.join("libpyusage_preload.so");
    std::fs::copy(library(), &copy).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// Compile `tests/programs/<source>` with `cc -O2 -Wall -Werror` and `extra` flags into `out`.
pub fn compile_c(source: &str, out: &Path, extra: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(source);
    let o = run(Command::new("cc")
        .args(["-O2", "-Wall", "-Werror"])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(&src));
    assert!(o.status.success(), "cc {source}: {o:?}");
}

/// The directory `open_calls.c` runs in: `m.py`, `m.pyc`, `lib.so` (root's, 0644),
/// `secret.pyc` (root's, 0600: unreadable by `nobody`); writable by everyone, for `new.pyc`.
pub fn open_calls_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |m| std::fs::Permissions::from_mode(m);
    for (name, m) in [
        ("m.py", 0o644),
        ("m.pyc", 0o644),
        ("lib.so", 0o644),
        ("secret.pyc", 0o600),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, name).unwrap();
        std::fs::set_permissions(&p, mode(m)).unwrap();
    }
    std::fs::set_permissions(dir.path(), mode(0o777)).unwrap();
    dir
}

/// The uid and gid of `nobody` (Debian's 65534).
pub const NOBODY: u32 = 65534;

/// The configuration file the library reads (its `CONFIG_PATH`).
pub const CONFIG: &str = "/etc/pyusage/preload.conf";

/// Make `/etc/pyusage/preload.conf` allow `PYUSAGE_PRELOAD_SOCKET`.
///
/// Why the tests write to `/etc`: the library takes the daemon's socket from that fixed,
/// root-owned file and honours the environment variable only when the file says
/// `allow_env_override = true` (otherwise any user could redirect the reports by default).
/// These tests point each process at their own listener through the variable, so the machine
/// that runs them needs the line. This adds it, keeping what the file already says (the last
/// line of a key wins), and leaves a file that already allows the override alone. It needs
/// root, as the end-to-end tests do; the library trusts the file only when root owns it and
/// nobody else can write it, so it is written that way (0644), through a temporary file and a
/// `rename`, so that a process starting meanwhile reads the old file or the new one.
pub fn ensure_config() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let path = Path::new(CONFIG);
        let existing = std::fs::read(path).ok();
        let trusted = std::fs::symlink_metadata(path)
            .is_ok_and(|m| m.is_file() && m.uid() == 0 && m.mode() & 0o022 == 0);
        let text = match existing {
            Some(t) if trusted && allows_override(&t) => return,
            Some(t) if trusted => t,
            _ => Vec::new(),
        };
        let mut text = text;
        if !text.is_empty() && !text.ends_with(b"\n") {
            text.push(b'\n');
        }
        text.extend_from_slice(
            b"# Added by pyusage-preload's tests: PYUSAGE_PRELOAD_SOCKET may choose the socket.\n\
              allow_env_override = true\n",
        );
        let dir = path.parent().unwrap();
        let fail = |what: &str, e: std::io::Error| -> ! {
            panic!("{what} for {CONFIG} (the preload tests need root, see ensure_config): {e}")
        };
        std::fs::create_dir_all(dir).unwrap_or_else(|e| fail("create_dir_all", e));
        let tmp = dir.join(format!(".preload.conf.{}", std::process::id()));
        std::fs::write(&tmp, &text).unwrap_or_else(|e| fail("write", e));
        let setup = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
            .and_then(|()| std::os::unix::fs::chown(&tmp, Some(0), Some(0)))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = setup {
            let _ = std::fs::remove_file(&tmp);
            fail("install", e);
        }
    });
}

/// Whether the last `allow_env_override` line of a configuration says `true` (the library's
/// rule; comments are dropped at any `#`, which is stricter than the library).
fn allows_override(text: &[u8]) -> bool {
    let text = String::from_utf8_lossy(text);
    let mut allowed = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == "allow_env_override" {
                allowed = value.trim() == "true";
            }
        }
    }
    allowed
}

pub fn interpreters() -> Vec<PathBuf> {
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

/// The interpreters without audit hooks (pyenv, shared libpython), which the library observes
/// through their opens ("open mode").
pub fn old_interpreters() -> Vec<PathBuf> {
    let home = std::env::var("HOME").unwrap();
    let list: Vec<PathBuf> = ["2.7.18", "3.6.15", "3.7.16"]
        .iter()
        .map(|v| PathBuf::from(format!("{home}/.pyenv/versions/{v}/bin/python")))
        .collect();
    for p in &list {
        assert!(p.exists(), "interpreter missing: {}", p.display());
    }
    list
}

/// A decoded message, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    /// Which connection, numbered in accept order from 0.
    pub conn: usize,
    pub kind: MessageKind,
    pub name: String,
    pub path: String,
    pub args: Vec<u8>,
    pub env: Vec<u8>,
}

impl Msg {
    /// The record of an Open message (`None` for other kinds).
    pub fn open(&self) -> Option<OpenRecord> {
        (self.kind == MessageKind::Open)
            .then(|| OpenRecord::from_bytes(&self.args))
            .flatten()
    }
}

/// A SEQPACKET listener with an accept thread and one reader thread per connection.
pub struct Listener {
    dir: tempfile::TempDir,
    fd: i32,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
    received: Arc<Mutex<Vec<Msg>>>,
    connections: Arc<Mutex<usize>>,
}

impl Listener {
    pub fn new() -> Self {
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
                        let conn = {
                            let mut n = connections.lock().unwrap();
                            *n += 1;
                            *n - 1
                        };
                        let received = received.clone();
                        readers.push(std::thread::spawn(move || read_all(c, conn, &received)));
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

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("preload.sock")
    }

    /// Let every user connect (the directory 0755, the socket 0666), as the daemon's socket
    /// is, for tests that run programs as `nobody`.
    pub fn open_to_everyone(&self) {
        use std::os::unix::fs::PermissionsExt;
        let mode = |m| std::fs::Permissions::from_mode(m);
        std::fs::set_permissions(self.dir.path(), mode(0o755)).unwrap();
        std::fs::set_permissions(self.path(), mode(0o666)).unwrap();
    }

    /// Stop accepting, wait for every connection's end of stream, return messages and the
    /// number of connections.
    pub fn finish(mut self) -> (Vec<Msg>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for r in self.acceptor.take().unwrap().join().unwrap() {
            r.join().unwrap();
        }
        let msgs = self.received.lock().unwrap().clone();
        let conns = *self.connections.lock().unwrap();
        (msgs, conns)
    }
}

/// A daemon that never reads: a listening socket whose connections are never accepted. The
/// library connects, and once the connection's queue is full (the sender's buffer,
/// `net.core.wmem_default`: ~270 small messages here; not `net.unix.max_dgram_qlen`, which
/// bounds datagram sockets only) each send fails with `EAGAIN` and the message is dropped.
pub struct Stalled {
    dir: tempfile::TempDir,
    fd: i32,
}

impl Stalled {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = CString::new(dir.path().join("stalled.sock").as_os_str().as_bytes()).unwrap();
        // SAFETY: plain socket calls on a fresh descriptor with a valid, NUL-terminated path.
        let fd = unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (d, s) in addr.sun_path.iter_mut().zip(path.as_bytes()) {
                *d = *s as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            assert_eq!(libc::bind(fd, (&raw const addr).cast(), len), 0);
            assert_eq!(libc::listen(fd, 64), 0);
            fd
        };
        Stalled { dir, fd }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("stalled.sock")
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

fn read_all(fd: i32, conn: usize, out: &Mutex<Vec<Msg>>) {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    loop {
        // SAFETY: `buf` is writable for its length; a blocking read until end of stream.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            break;
        }
        let m = decode(&buf[..n as usize]).expect("library sent a malformed message");
        out.lock().unwrap().push(Msg {
            conn,
            kind: m.kind,
            name: m.name.to_owned(),
            path: String::from_utf8_lossy(m.path).into_owned(),
            args: m.args.to_vec(),
            env: m.env.to_vec(),
        });
    }
    // SAFETY: the accepted descriptor, closed once.
    unsafe { libc::close(fd) };
}

/// Run a command with a 60 s limit (a hang fails the test instead of blocking it).
pub fn run(cmd: &mut Command) -> Output {
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
