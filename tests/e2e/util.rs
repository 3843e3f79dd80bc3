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

/// Debian's interpreter (static, USDT probes) with Debian's mpi4py.
pub const DEBIAN_PYTHON: &str = "/usr/bin/python3.11";

/// A running daemon with a private data directory.
pub struct Daemon {
    child: Child,
    dir: Option<tempfile::TempDir>,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon and waits until it has attached.
    pub fn start() -> Daemon {
        Daemon::start_with(&[], &[])
    }

    /// Starts the daemon with extra flags and environment.
    pub fn start_with(extra: &[&str], env: &[(&str, &OsStr)]) -> Daemon {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "end-to-end tests must run as root (they attach BPF)"
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("daemon.log");
        let ready = dir.path().join("ready");
        let child = Command::new(bin())
            .args(["daemon", "--rotate-secs", "3600", "--host", "testhost"])
            .args(if extra.contains(&"--flush-secs") {
                &[][..]
            } else {
                &["--flush-secs", "3600"][..]
            })
            .args(extra)
            .envs(env.iter().copied())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin().display()));
        let mut d = Daemon {
            child,
            dir: Some(dir),
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
        self.dir.as_ref().expect("live daemon").path().join("data")
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
        let out = Command::new(bin())
            .args(["show", "--format", "jsonl"])
            .arg(self.data())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "show failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let recs = out
            .stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let status = self.status();
        Records {
            recs,
            status,
            _dir: self.dir.take().expect("live daemon"),
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
    pub status: Value,
    _dir: tempfile::TempDir,
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
                    "no record of {package} for pid {pid}; packages: {:?}",
                    packages(&of)
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
