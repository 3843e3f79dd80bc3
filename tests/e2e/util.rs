//! Helpers: start/stop a daemon, run interpreters, pick records.
use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The `pyusage` binary under test.
pub fn bin() -> PathBuf {
    std::env::var_os("PYUSAGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/pyusage"))
}

/// `target/fixtures` (made by `scripts/fixtures.sh`).
pub fn fixtures() -> PathBuf {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures");
    let f = f.canonicalize().unwrap_or(f);
    assert!(
        f.join("venv/bin/python").exists(),
        "Python fixtures missing: run scripts/fixtures.sh (scripts/test.sh does)"
    );
    f
}

/// The fixture venv's interpreter (pyenv's CPython 3.11 with numpy and PyYAML).
pub fn venv_python() -> PathBuf {
    fixtures().join("venv/bin/python")
}

/// The preload library under test (`PYUSAGE_PRELOAD_LIB`, else the shipped build's:
/// `cargo build --profile preload -p pyusage-preload`).
pub fn preload_lib() -> PathBuf {
    let lib = std::env::var_os("PYUSAGE_PRELOAD_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/preload/libpyusage_preload.so")
        });
    assert!(
        lib.exists(),
        "{} missing: build it (scripts/test.sh does)",
        lib.display()
    );
    lib
}

/// The library takes its socket from `/etc/pyusage/preload.conf` (root-owned), and honours
/// `PYUSAGE_PRELOAD_SOCKET` only when that file allows it: the tests need it, each daemon
/// listening on a socket of its own.
pub fn ensure_preload_config() {
    let path = Path::new("/etc/pyusage/preload.conf");
    let line = "allow_env_override = true";
    if std::fs::read_to_string(path).is_ok_and(|t| t.lines().any(|l| l.trim() == line)) {
        return;
    }
    std::fs::create_dir_all("/etc/pyusage").unwrap();
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("# written by the pyusage tests\n{line}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Debian's interpreter (static, USDT probes) with Debian's mpi4py.
pub const DEBIAN_PYTHON: &str = "/usr/bin/python3.11";

/// A running daemon with a private data directory.
pub struct Daemon {
    child: Child,
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon and waits until it has attached.
    pub fn start() -> Daemon {
        Daemon::start_with(&[], &[])
    }

    /// Starts the daemon with extra flags and environment.
    pub fn start_with(extra: &[&str], env: &[(&str, &OsStr)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut d = Daemon::start_at(&data, extra, env);
        d.dir = Some(dir);
        d
    }

    /// Starts a daemon on an existing data directory (a restart).
    pub fn start_at(data: &Path, extra: &[&str], env: &[(&str, &OsStr)]) -> Daemon {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "end-to-end tests must run as root (they attach BPF)"
        );
        std::fs::create_dir_all(data).unwrap();
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Outside the data directory: a test may fill that file system.
        let log = std::env::temp_dir().join(format!("pyusage-e2e-{}-{n}.log", std::process::id()));
        let ready = data.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let child = Command::new(bin())
            .arg("daemon")
            // Defaults unless the test sets its own: a fixed host name, long periods.
            .args(
                [
                    ("--host", "testhost"),
                    ("--flush-secs", "3600"),
                    ("--rotate-secs", "3600"),
                ]
                .iter()
                .filter(|(f, _)| !extra.contains(f))
                .flat_map(|(f, v)| [*f, *v]),
            )
            .args(extra)
            .envs(env.iter().copied())
            .arg("--data-dir")
            .arg(data)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin().display()));
        let mut d = Daemon {
            child,
            dir: None,
            data: data.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("daemon exited ({st}) before attaching:\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready after 30 s:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.data.clone()
    }

    /// Sends the daemon `sig` (`-STOP`, `-CONT`): stopped, it handles nothing while the
    /// kernel's ring holds its events.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no clean-up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The daemon's `status.json`.
    pub fn status(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.data().join("status.json")).unwrap()).unwrap()
    }

    /// SIGTERM, wait for a clean exit, then read every record back with `pyusage show`.
    pub fn stop(mut self) -> Records {
        // Give the exit events of the processes just run time to reach the ring buffer.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill with a valid pid of our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "daemon exit {status}:\n{}", self.log());
        let lines = show_lines(&self.data());
        let recs = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let status = self.status();
        Records {
            recs,
            lines,
            status,
            log: self.log(),
            data: self.data(),
            _dir: self.dir.take(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records read back after a daemon stopped.
pub struct Records {
    pub recs: Vec<Value>,
    /// The same records as `pyusage show --format jsonl` printed them.
    pub lines: Vec<String>,
    pub status: Value,
    /// The daemon's log.
    pub log: String,
    /// The data directory (kept until the records are dropped).
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// `pyusage show --format jsonl DIR`, one string per record.
pub fn show_lines(data: &Path) -> Vec<String> {
    let out = Command::new(bin())
        .args(["show", "--format", "jsonl"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A private rsyslog (scripts/services/rsyslog.sh) on a free loopback port and a unix socket.
pub struct Rsyslog {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
}

impl Rsyslog {
    /// Starts rsyslog writing raw messages to `dir/out.log`.
    pub fn start(dir: &Path) -> Rsyslog {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Rsyslog {
            child: None,
            dir: dir.to_path_buf(),
            port,
        };
        r.restart();
        r
    }

    /// (Re)starts on the same port and socket.
    pub fn restart(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services/rsyslog.sh");
        let child = Command::new(script)
            .arg(&self.dir)
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || !self.dir.join("log.sock").exists()
        {
            assert!(Instant::now() < deadline, "rsyslog did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (SIGTERM, like a service stop).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill with our child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("log.sock"));
    }

    /// Raw messages received so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("out.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The JSON payloads of the pyusage messages received so far.
    pub fn payloads(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter_map(|l| {
                l.split_once(" pyusage ")
                    .and_then(|(_, rest)| rest.split_once(" IMPORT - "))
            })
            .map(|(_, json)| json.to_owned())
            .collect()
    }

    /// Waits until every `record_id` in `ids` has arrived.
    pub fn wait_for(&self, ids: &[String], secs: u64) -> Result<(), Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got: std::collections::HashSet<String> = self
                .payloads()
                .iter()
                .filter_map(|p| serde_json::from_str::<Value>(p).ok())
                .filter_map(|v| v["record_id"].as_str().map(str::to_owned))
                .collect();
            let missing: Vec<String> = ids.iter().filter(|i| !got.contains(*i)).cloned().collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(missing);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Records {
    /// Records of one process.
    pub fn of(&self, pid: u32) -> Vec<&Value> {
        self.recs.iter().filter(|r| r["pid"] == pid).collect()
    }

    /// The record of `package` in process `pid`; panics with the process's packages if absent.
    pub fn one(&self, pid: u32, package: &str) -> &Value {
        let of = self.of(pid);
        of.iter()
            .find(|r| r["package"] == package)
            .copied()
            .unwrap_or_else(|| {
                panic!(
                    "no record of {package} for pid {pid}; packages: {:?}; counters: {}; \
                     fidelity: {}",
                    packages(&of),
                    self.status["counters"],
                    self.status["fidelity"]
                )
            })
    }

    /// Non-stdlib packages of a process, sorted.
    pub fn third_party(&self, pid: u32) -> Vec<String> {
        let mut v: Vec<String> = self
            .of(pid)
            .iter()
            .filter(|r| r["env_kind"] != "stdlib")
            .map(|r| r["package"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    }
}

pub fn packages(rs: &[&Value]) -> Vec<String> {
    rs.iter()
        .map(|r| r["package"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Runs a command to completion; returns its pid and output.
pub fn run(cmd: &mut Command) -> (u32, Output) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (pid, child.wait_with_output().unwrap())
}

/// A Python command with a clean, controlled environment.
pub fn python(exe: impl AsRef<OsStr>, code: &str) -> Command {
    let mut c = Command::new(exe);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/root")
        .args(["-c", code]);
    c
}

/// Version of a distribution in the fixture venv.
pub fn venv_version(dist: &str) -> String {
    let out = Command::new(venv_python())
        .args([
            "-c",
            &format!("import importlib.metadata as m; print(m.version('{dist}'))"),
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs a command to completion and asserts it succeeded (its stderr in the message).
pub fn output_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `program` run as `nobody:nogroup` with no supplementary groups (`setpriv`): an ordinary,
/// unprivileged user.
pub fn as_nobody(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        "nobody",
        "--regid",
        "nogroup",
        "--clear-groups",
        "--",
    ])
    .arg(program);
    c
}

/// Creates a FIFO at `path` with `mode` (exactly: the umask is undone).
pub fn mkfifo(path: &Path, mode: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), mode) },
        0,
        "mkfifo {}",
        path.display()
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A temporary directory other users can enter (mode 0755): tests that act as `nobody`.
pub fn shared_tempdir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t
}

/// This machine's short host name (what an atexit hook records).
pub fn short_hostname() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    h.trim().split('.').next().unwrap().to_owned()
}

/// A small tmpfs mounted at `dir` (created), unmounted when dropped: a file system to fill.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts `size` (e.g. `4m`) at `dir`.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a small tmpfs");
        Tmpfs(dir.to_path_buf())
    }

    /// Fills it with a file `filler` (returned) until no space is left.
    pub fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", filler.display()))
            .args(["bs=64k", "status=none"])
            .stderr(Stdio::null())
            .status();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
