//! The preload library (`libpyusage_preload.so`) with the daemon: preload-only mode (no eBPF:
//! imports from the library, exits from the process connector) and both together, on the same
//! workloads, with the same records; and a user flooding the socket.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::util::*;

/// Which collectors run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    PreloadOnly,
    Both,
}

/// A daemon listening for the library on a socket of its own, and the environment a process
/// needs to load the library and reach that socket.
struct Node {
    daemon: Daemon,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(mode: Mode) -> Node {
        ensure_preload_config();
        let dir = shared_tempdir();
        let sock = dir.path().join("preload.sock");
        let mut args = vec!["--preload-socket", sock.to_str().unwrap()];
        if mode == Mode::PreloadOnly {
            args.push("--no-ebpf");
        }
        let daemon = Daemon::start_with(&args, &[]);
        let want: &[&str] = match mode {
            Mode::PreloadOnly => &["preload"],
            Mode::Both => &["ebpf", "preload"],
        };
        assert_eq!(daemon.status()["collectors"], serde_json::json!(want));
        Node {
            daemon,
            sock,
            _dir: dir,
        }
    }

    /// `cmd` with the library preloaded and pointed at this daemon.
    fn preload<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("LD_PRELOAD", preload_lib())
            .env("PYUSAGE_PRELOAD_SOCKET", &self.sock)
    }
}

/// Runs the workloads of [`same_records_in_both_modes`]; returns each one's pid by label.
fn workloads(node: &Node, scratch: &Path) -> BTreeMap<&'static str, u32> {
    let mut pids = BTreeMap::new();
    let venv = venv_python();
    let pyenv313 = pyenv("3.13.0");
    let mut go = |label: &'static str, cmd: &mut Command, code: Option<i32>| {
        let (pid, out) = run(node.preload(cmd));
        assert_eq!(
            out.status.code(),
            code,
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pids.insert(label, pid);
        out
    };
    // A venv with third-party packages and their versions.
    go(
        "venv",
        &mut python(&venv, "import numpy, yaml, json"),
        Some(0),
    );
    // Isolated, no site: the hook is in before the interpreter reads any of it.
    go(
        "isolated",
        Command::new(DEBIAN_PYTHON).env_clear().args([
            "-I",
            "-S",
            "-c",
            "import json, email.mime.text",
        ]),
        Some(0),
    );
    go(
        "os_exit",
        &mut python(&venv, "import yaml, os; os._exit(3)"),
        Some(3),
    );
    go(
        "sigkill",
        &mut python(
            &venv,
            "import numpy, os, signal; os.kill(os.getpid(), signal.SIGKILL)",
        ),
        None,
    );
    // The job is read at load, before the program empties its environment.
    go(
        "cleared_env",
        python(&pyenv313, "import os; os.environ.clear(); import csv").env("SLURM_JOB_ID", "4242"),
        Some(0),
    );
    // A console script (absolute shebang to the venv) and a renamed interpreter.
    let script = scratch.join("run_tool");
    std::fs::write(&script, format!("#!{}\nimport yaml\n", venv.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    go(
        "console_script",
        Command::new(&script)
            .env_clear()
            .env("PATH", "/usr/bin:/bin"),
        Some(0),
    );
    let snake = scratch.join("snake");
    std::os::unix::fs::symlink(&pyenv313, &snake).unwrap();
    go("renamed", &mut python(&snake, "import json"), Some(0));
    // A conda-style environment: its own interpreter (a copy of pyenv's 3.11, whose libpython
    // it finds in the environment's lib/), the standard library linked in, `conda-meta`
    // naming the version of a package in its site-packages.
    let conda = conda_env(scratch);
    go(
        "conda",
        &mut python(conda.join("bin/python3.11"), "import condapkg, json"),
        Some(0),
    );
    // Interpreters without audit hooks: the library reports their opens.
    for (label, v) in [("py27", "2.7.18"), ("py37", "3.7.16")] {
        go(
            label,
            &mut python(pyenv(v), "import json, email.mime.text, os; os._exit(5)"),
            Some(5),
        );
    }
    // A fork child (multiprocessing) imports what its parent never did.
    let code = "import multiprocessing as mp, os\n\
                def child():\n    import yaml\n    print(os.getpid(), flush=True)\n\
                p = mp.get_context('fork').Process(target=child); p.start(); p.join()\n";
    let out = go("mp_parent", &mut python(&venv, code), Some(0));
    let child: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    pids.insert("mp_child", child);
    pids
}

/// What must be the same whichever collector saw a process, per package.
///
/// A package the CPU sampler alone found running (eBPF mode only: a fork child executing code
/// it inherited from its parent, such as `multiprocessing`'s bootstrap, without opening a file
/// of it) is left out: the library has no sampler, and whether a short child is sampled at all
/// is chance. Such a record is exactly one with no module file and at least one sample.
fn summary(r: &Records, pid: u32) -> BTreeMap<String, Value> {
    r.of(pid)
        .iter()
        .filter(|x| !sampled_only(x))
        .map(|x| {
            let keep = [
                "exit",
                "exit_code",
                "exit_signal",
                "executable",
                "main",
                "job_id",
                "env_kind",
                "distribution",
                "version",
                "uid",
                "root_pid",
            ];
            let v: serde_json::Map<String, Value> = keep
                .iter()
                .map(|k| (k.to_string(), x[*k].clone()))
                .collect();
            (x["package"].as_str().unwrap().to_owned(), Value::Object(v))
        })
        .collect()
}

/// A record of a package that only the CPU sampler saw (see [`summary`]).
fn sampled_only(x: &Value) -> bool {
    x["n_files"] == 0 && x["cpu_samples_inclusive"].as_u64().is_some_and(|n| n > 0)
}

#[test]
fn same_records_in_both_modes() {
    let mut seen = Vec::new();
    for mode in [Mode::PreloadOnly, Mode::Both] {
        let scratch = shared_tempdir();
        let node = Node::start(mode);
        let pids = workloads(&node, scratch.path());
        let r = node.daemon.stop();
        // One record per process and package: the two collectors never double a record.
        let mut keys: Vec<(i64, &str)> = r
            .recs
            .iter()
            .map(|x| (x["pid"].as_i64().unwrap(), x["package"].as_str().unwrap()))
            .collect();
        keys.sort();
        let twice: Vec<String> = keys
            .windows(2)
            .filter(|w| w[0] == w[1])
            .flat_map(|w| {
                r.recs
                    .iter()
                    .filter(move |x| x["pid"] == w[0].0 && x["package"] == w[0].1)
                    .map(|x| {
                        format!(
                            "{} {} {} {} start {} end {} exit {} main {}",
                            x["pid"],
                            x["package"],
                            x["sources"],
                            x["executable"],
                            x["process_start"],
                            x["process_end"],
                            x["exit"],
                            x["main"]
                        )
                    })
            })
            .collect();
        assert!(
            twice.is_empty(),
            "{mode:?}: recorded twice:\n{}\n{}",
            twice.join("\n"),
            r.status
        );
        for (label, pid) in &pids {
            for x in r.of(*pid) {
                let sources: Vec<&str> = x["sources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap())
                    .collect();
                match mode {
                    Mode::PreloadOnly => {
                        assert_eq!(x["source"], "preload", "{label}: {x}");
                        assert_eq!(sources, ["preload"], "{label}: {x}");
                        // The proc connector's exit carries no CPU time: null, never 0.
                        if x["exit"] != "running" {
                            assert!(x["cpu_user_us"].is_null(), "{label}: {x}");
                            assert!(x["cpu_sys_us"].is_null(), "{label}: {x}");
                        }
                    }
                    Mode::Both => {
                        assert_eq!(x["source"], "ebpf", "{label}: {x}");
                        assert!(sources.contains(&"ebpf"), "{label}: {x}");
                        if x["exit"] == "exited" || x["exit"] == "signaled" {
                            assert!(x["cpu_user_us"].is_u64(), "{label}: {x}");
                            assert!(x["cpu_sys_us"].is_u64(), "{label}: {x}");
                        }
                    }
                }
            }
        }
        let sum = |label: &str| {
            let s = summary(&r, pids[label]);
            assert!(
                !s.is_empty(),
                "{mode:?}: no records of {label} (pid {})\n{}\n{}",
                pids[label],
                r.status,
                r.log
            );
            s
        };
        // What each workload must show, in either mode.
        let venv = sum("venv");
        assert!(
            venv.contains_key("numpy") && venv.contains_key("yaml"),
            "{venv:?}"
        );
        assert_eq!(venv["yaml"]["env_kind"], "venv");
        assert_eq!(venv["yaml"]["distribution"], "PyYAML");
        assert_eq!(venv["yaml"]["version"], venv_version("PyYAML").as_str());
        assert_eq!(venv["yaml"]["exit"], "exited");
        let iso = sum("isolated");
        assert!(
            iso.contains_key("json") && iso.contains_key("email"),
            "{iso:?}"
        );
        let ex = sum("os_exit");
        assert_eq!(
            (&ex["yaml"]["exit"], &ex["yaml"]["exit_code"]),
            (&"exited".into(), &3.into())
        );
        let k = sum("sigkill");
        assert_eq!(
            (&k["numpy"]["exit"], &k["numpy"]["exit_signal"]),
            (&"signaled".into(), &"SIGKILL".into())
        );
        let c = sum("cleared_env");
        assert_eq!(c["csv"]["job_id"], "4242", "{c:?}");
        let cs = sum("console_script");
        assert_eq!(cs["yaml"]["executable"], venv_python().to_str().unwrap());
        assert!(cs["yaml"]["main"].as_str().unwrap().ends_with("/run_tool"));
        let sn = sum("renamed");
        assert!(sn["json"]["executable"]
            .as_str()
            .unwrap()
            .ends_with("/snake"));
        for label in ["py27", "py37"] {
            let old = sum(label);
            assert!(
                old.contains_key("json") && old.contains_key("email"),
                "{label}: {old:?}"
            );
            assert_eq!(
                (&old["json"]["exit"], &old["json"]["exit_code"]),
                (&"exited".into(), &5.into())
            );
        }
        let c = sum("conda");
        assert_eq!(
            (&c["condapkg"]["env_kind"], &c["condapkg"]["version"]),
            (&"conda".into(), &"3.2.1".into()),
            "{c:?}"
        );
        let child = sum("mp_child");
        assert!(child.contains_key("yaml"), "{child:?}");
        assert_eq!(child["yaml"]["root_pid"], pids["mp_parent"]);
        assert!(!sum("mp_parent").contains_key("yaml"));
        // The same, field by field, as the other mode saw it (pids differ, labels do not).
        let by_label: BTreeMap<&str, BTreeMap<String, Value>> = pids
            .keys()
            .map(|l| {
                let mut s = sum(l);
                for v in s.values_mut() {
                    v.as_object_mut().unwrap().remove("root_pid");
                    // The scratch directory differs between the two runs.
                    for f in ["executable", "main"] {
                        if let Some(p) = v[f].as_str() {
                            let p = p.replace(scratch.path().to_str().unwrap(), "<scratch>");
                            v[f] = p.into();
                        }
                    }
                }
                (*l, s)
            })
            .collect();
        seen.push((mode, by_label, r.status.clone()));
    }
    let (_, a, st) = &seen[0];
    let (_, b, _) = &seen[1];
    for label in a.keys() {
        if label.starts_with("py3") {
            // CPython 3.6/3.7 extension modules are loaded by dlopen, whose opens the library
            // does not see: what it saw is a subset of what the kernel saw, field for field.
            for (pkg, v) in &a[label] {
                assert_eq!(Some(v), b[label].get(pkg), "{label} {pkg}");
            }
            continue;
        }
        assert_eq!(
            a[label], b[label],
            "{label}: preload-only vs eBPF + preload"
        );
    }
    assert_eq!(st["preload"]["malformed"], 0, "{st}");
    assert!(st["preload"]["connections"].as_u64().unwrap() >= 11, "{st}");
}

/// One user floods the socket (many connections, each writing as fast as it can, valid
/// messages and garbage, plus idle connections); another user's imports still all arrive.
#[test]
fn a_flood_from_one_user_does_not_cost_another_users_imports() {
    let node = Node::start(Mode::PreloadOnly);
    let flooder = r#"
import os, socket, sys, time
path = sys.argv[1]
hello = bytes([1, 4, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0]) + b"/bin/flood"
msg = bytes([1, 3, 0, 0, 0, 0, 40, 0, 0, 0, 0, 0]) + b"/x/lib/python3.11/site-packages/spam.py".ljust(40, b"_")
junk = b"\xff" * 64
idle = [socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(50)]
for s in idle:
    s.connect(path)
for i in range(6):
    if os.fork() == 0:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(path)
        s.setblocking(False)
        s.send(hello)
        end = time.time() + 6
        n = 0
        while time.time() < end:
            try:
                s.send(msg if n % 4 else junk)
                n += 1
            except BlockingIOError:
                time.sleep(0.0005)
        os._exit(0)
for i in range(6):
    os.wait()
"#;
    let mut flood = as_nobody("/usr/bin/python3.11");
    flood
        .args(["-c", flooder])
        .arg(&node.sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let flood = flood.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // Meanwhile root runs ordinary Python processes under the library.
    let mut victims = Vec::new();
    for i in 0..8 {
        let code = format!("import json, csv, email.mime.text, yaml; print({i})");
        let (pid, out) = run(node.preload(&mut python(venv_python(), &code)));
        assert!(out.status.success());
        victims.push(pid);
        std::thread::sleep(Duration::from_millis(300));
    }
    let st = flood.wait_with_output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let r = node.daemon.stop();
    for pid in victims {
        let mut got = r
            .of(pid)
            .iter()
            .map(|x| x["package"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        got.sort();
        for want in ["csv", "email", "json", "yaml"] {
            assert!(
                got.iter().any(|g| g == want),
                "pid {pid}: {got:?}\n{}",
                r.status
            );
        }
        assert!(r.of(pid).iter().all(|x| x["uid"] == 0));
    }
    let p = &r.status["preload"];
    assert!(
        p["paused"].as_u64().unwrap() > 0,
        "the flood was throttled: {p}"
    );
    assert!(p["malformed"].as_u64().unwrap() > 0, "garbage counted: {p}");
    // What nobody's flood claimed is nobody's: uid from the kernel, never a root record.
    let spam: Vec<_> = r.recs.iter().filter(|x| x["package"] == "spam").collect();
    assert!(spam.iter().all(|x| x["uid"] == 65534), "{spam:?}");
}

/// A conda-style environment under `dir` (see the `conda` workload); its prefix.
fn conda_env(dir: &Path) -> PathBuf {
    use std::os::unix::fs::symlink;
    let prefix = dir.join("envs/sci");
    let home = pyenv("3.11.7");
    let pyenv_root = home.parent().unwrap().parent().unwrap();
    let lib = prefix.join("lib/python3.11");
    let site = lib.join("site-packages/condapkg");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::fs::create_dir_all(prefix.join("conda-meta")).unwrap();
    std::fs::copy(&home, prefix.join("bin/python3.11")).unwrap();
    symlink(
        pyenv_root.join("lib/libpython3.11.so.1.0"),
        prefix.join("lib/libpython3.11.so.1.0"),
    )
    .unwrap();
    for e in std::fs::read_dir(pyenv_root.join("lib/python3.11")).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "site-packages" {
            symlink(e.path(), lib.join(e.file_name())).unwrap();
        }
    }
    std::fs::write(site.join("__init__.py"), "X = 1\n").unwrap();
    std::fs::write(
        prefix.join("conda-meta/condapkg-3.2.1-py311_0.json"),
        r#"{"name":"condapkg","version":"3.2.1","files":["lib/python3.11/site-packages/condapkg/__init__.py"]}"#,
    )
    .unwrap();
    prefix
}

/// The interpreter of a pyenv version.
fn pyenv(version: &str) -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let v = &version[..version.rfind('.').unwrap()];
    PathBuf::from(format!("{home}/.pyenv/versions/{version}/bin/python{v}"))
}

/// The library never breaks its host: imports from a signal handler while other threads
/// import, `fork()` from a threaded program (the child imports too), `os.posix_spawn` and a
/// `vfork`-style `subprocess`, with the daemon listening and each interpreter's hook
/// sending; every process ends normally, within its time, with its imports recorded.
#[test]
fn signal_handlers_threads_and_fork_do_not_break_the_host() {
    let node = Node::start(Mode::Both);
    // First a signal handler imports while the main thread sleeps, then threads import at
    // once. (A handler that imports while its thread or another is inside an import can
    // deadlock or trip importlib's lock checks, with or without the library: Python's own
    // limits, not tested here.)
    let code = r#"
import os, signal, sys, threading, time, importlib
mods = ["json", "csv", "email.mime.text", "decimal", "fractions", "statistics", "difflib",
        "textwrap", "string", "zipfile", "tarfile", "gzip", "bz2", "lzma", "sqlite3", "uuid"]
hits = []
busy = []
def on_alarm(sig, frame):
    # Not re-entered: the next alarm may fire while this one imports.
    if busy or len(hits) >= len(mods):
        return
    busy.append(1)
    hits.append(1)
    importlib.import_module(mods[len(hits) - 1])
    busy.clear()
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
end = time.time() + 20
while len(hits) < len(mods) and time.time() < end:
    time.sleep(0.001)
signal.setitimer(signal.ITIMER_REAL, 0, 0)
others = ["pprint", "shlex", "getopt", "glob", "fnmatch", "netrc", "plistlib", "wave"]
def worker(k):
    for m in others[k::4]:
        importlib.import_module(m)
threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
[t.start() for t in threads]
kids = []
for i in range(8):
    pid = os.fork()
    if pid == 0:
        import yaml
        os._exit(0)
    kids.append(pid)
[t.join() for t in threads]
for pid in kids:
    _, st = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(st) == 0, st
pid = os.posix_spawn("/bin/true", ["/bin/true"], os.environ)
assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
import subprocess
assert subprocess.run(["/bin/echo", "ok"], capture_output=True).stdout == b"ok\n"
assert len(hits) >= len(mods), hits
"#;
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "60"])
        .arg(venv_python())
        .args(["-c", code]);
    let (_, out) = run(node.preload(&mut cmd));
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let r = node.daemon.stop();
    let forked_yaml = r
        .recs
        .iter()
        .filter(|x| x["package"] == "yaml" && x["sources"].as_array().unwrap().len() == 2)
        .count();
    assert_eq!(
        forked_yaml, 8,
        "each fork child's yaml, seen by both collectors"
    );
    for p in ["sqlite3", "uuid", "wave", "plistlib"] {
        assert!(r.recs.iter().any(|x| x["package"] == p), "{p}");
    }
}

/// Attaching the eBPF tracer fails (here: no tracefs at the configured place) while a preload
/// socket is set: the daemon says so in one line and runs in preload-only mode.
#[test]
fn preload_only_mode_when_attaching_fails() {
    ensure_preload_config();
    let dir = shared_tempdir();
    let sock = dir.path().join("preload.sock");
    let d = Daemon::start_with(
        &[
            "--preload-socket",
            sock.to_str().unwrap(),
            "--config",
            write_config(dir.path(), "tracefs = \"/nonexistent-tracefs\"\n")
                .to_str()
                .unwrap(),
        ],
        &[],
    );
    assert_eq!(d.status()["collectors"], serde_json::json!(["preload"]));
    let (pid, out) = run(python(venv_python(), "import yaml")
        .env("LD_PRELOAD", preload_lib())
        .env("PYUSAGE_PRELOAD_SOCKET", &sock));
    assert!(out.status.success());
    let r = d.stop();
    let line: Vec<&str> = r
        .log
        .lines()
        .filter(|l| l.contains("running in preload-only mode"))
        .collect();
    assert_eq!(line.len(), 1, "{}", r.log);
    assert!(
        line[0].contains("cannot attach the eBPF tracer"),
        "{}",
        line[0]
    );
    assert_eq!(r.one(pid, "yaml")["source"], "preload");
}

/// A configuration file in `dir` with `text`.
fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("config.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// What the `sitecustomize` atexit hook does, written out for the test: at exit, report `json`
/// and `encodings` with their files and `sys` as built-in, on a connection of its own (no
/// Hello), then exit at once. The socket's path is the first argument.
const ATEXIT_HOOK: &str = r#"
import atexit, socket, struct, sys
def report():
    args = b''
    for name in ('json', 'sys', 'encodings'):
        f = getattr(sys.modules[name], '__file__', None) or '<built-in>'
        args += name.encode() + b'\0' + f.encode() + b'\0'
    d = struct.pack('<BBBBHHHH', 1, 6, 0, 0, 0, 0, len(args), 0) + args
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sys.argv[1])
    s.send(d)
    s.close()
atexit.register(report)
import json
"#;

/// Short processes whose atexit report is sent microseconds before they exit: every report
/// lands in its process's records, with the kernel's account of the same packages (eBPF) or
/// the library's (preload-only), even when the exit is handled first.
#[test]
fn atexit_reports_land_in_the_records_of_processes_that_exit_at_once() {
    for mode in [Mode::Both, Mode::PreloadOnly] {
        let node = Node::start(mode);
        let sock = node.sock.to_str().unwrap().to_owned();
        let pids: Vec<u32> = (0..20)
            .map(|_| {
                let mut cmd = python(pyenv("3.11.7"), ATEXIT_HOOK);
                cmd.arg(&sock);
                // Preload-only: the library tables the process (its Hello), the exit comes
                // from the process connector.
                if mode == Mode::PreloadOnly {
                    node.preload(&mut cmd);
                }
                let (pid, out) = run(&mut cmd);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                pid
            })
            .collect();
        let r = node.daemon.stop();
        let other = match mode {
            Mode::Both => "ebpf",
            Mode::PreloadOnly => "preload",
        };
        for pid in &pids {
            for package in ["json", "encodings"] {
                let x = r.one(*pid, package);
                assert_eq!(x["source"], other, "{mode:?}: {x}");
                assert_eq!(
                    x["sources"],
                    serde_json::json!([other, "atexit"]),
                    "{mode:?}: {x}\n{}",
                    r.status
                );
                assert_eq!(x["env_kind"], "stdlib", "{x}");
            }
            let sys = r.one(*pid, "sys");
            assert_eq!(
                (&sys["source"], &sys["sources"]),
                (&"atexit".into(), &serde_json::json!(["atexit"])),
                "{mode:?}: {sys}"
            );
            assert_eq!(
                (&sys["env_kind"], &sys["first_path"], &sys["n_files"]),
                (&"stdlib".into(), &"<built-in>".into(), &0.into()),
                "{sys}"
            );
            assert_eq!(sys["exit"], "exited");
        }
        let p = &r.status["preload"];
        assert_eq!(p["atexit"], 20, "{mode:?}: {p}");
        assert_eq!(p["malformed"], 0, "{p}");
        assert_eq!(r.status["fidelity"]["atexit_late"], 0, "{}", r.status);
    }
}
