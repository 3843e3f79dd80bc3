//! The library as the loader really uses it: `LD_PRELOAD` of the cdylib into real interpreters
//! (pyenv 3.8 and 3.13 with a shared libpython, Debian's 3.11 with libpython in the
//! executable: audit hook; pyenv 2.7, 3.6 and 3.7, shared libpython: open mode), with a
//! `SOCK_SEQPACKET` listener in a temporary directory standing in for the daemon. Programs that
//! are not Python: `non_python.rs`.
//!
//! The library is the shipped build (`--profile preload`), built by `common::library`; the
//! machine's `/etc/pyusage/preload.conf` must allow the socket override (`common::ensure_config`
//! adds the line, as root).
//!
//! A missing interpreter fails the test: these are the builds the design was measured on.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use common::{
    compile_c, interpreters, library, library_for_everyone, old_interpreters, open_calls_dir, run,
    Listener, Msg, Stalled, NOBODY,
};
use tracer_common::preload::{MessageKind, OpenRecord};

const SCRIPT: &str = "import json, email.mime.text, _json; print(json.dumps([1, 2]))";

/// A variable the tests set, to find in each Hello's environment (how the daemon attributes
/// a process to a Slurm job).
const JOB_VAR: (&str, &str) = ("SLURM_JOB_ID", "4242");

/// The three ways each interpreter is started, each with the command line the interpreter is
/// executed with (NUL-separated, as the Hello carries it).
fn modes(py: &Path, lib: &Path, sock: &Path) -> Vec<(&'static str, Command, Vec<u8>)> {
    let argv = |args: &[&str]| {
        let mut v = py.as_os_str().as_encoded_bytes().to_vec();
        v.push(0);
        for a in args {
            v.extend_from_slice(a.as_bytes());
            v.push(0);
        }
        v
    };
    let mut plain = Command::new(py);
    plain.args(["-c", SCRIPT]);
    let mut isolated = Command::new(py);
    isolated.args(["-I", "-S", "-c", SCRIPT]);
    let mut empty_env = Command::new("/usr/bin/env");
    empty_env
        .arg("-i")
        .arg(format!("LD_PRELOAD={}", lib.display()))
        .arg(format!("PYUSAGE_PRELOAD_SOCKET={}", sock.display()))
        .arg(format!("{}={}", JOB_VAR.0, JOB_VAR.1))
        .arg(py)
        .args(["-c", SCRIPT]);
    let mut out = vec![
        ("plain", plain, argv(&["-c", SCRIPT])),
        ("-I -S", isolated, argv(&["-I", "-S", "-c", SCRIPT])),
        ("env -i", empty_env, argv(&["-c", SCRIPT])),
    ];
    for (_, c, _) in &mut out {
        c.env("LD_PRELOAD", lib)
            .env("PYUSAGE_PRELOAD_SOCKET", sock)
            .env(JOB_VAR.0, JOB_VAR.1)
            .env_remove("PYTHONMALLOC")
            .env_remove("PYTHONDEVMODE");
    }
    out
}

/// Each connection starts with exactly one Hello, which names the interpreter as executed,
/// carries one of the expected command lines, and an environment with [`JOB_VAR`].
fn check_hellos(py: &Path, msgs: &[Msg], conns: usize, mut expected: Vec<Vec<u8>>) {
    let job = format!("{}={}\0", JOB_VAR.0, JOB_VAR.1);
    for conn in 0..conns {
        let mine: Vec<&Msg> = msgs.iter().filter(|m| m.conn == conn).collect();
        let hello = mine
            .first()
            .unwrap_or_else(|| panic!("{py:?}: connection {conn} is empty"));
        assert_eq!(hello.kind, MessageKind::Hello, "{py:?}: first of {conn}");
        assert_eq!(
            mine.iter().filter(|m| m.kind == MessageKind::Hello).count(),
            1,
            "{py:?}: one Hello on {conn}"
        );
        assert_eq!(Path::new(&hello.path), py, "{py:?}: Hello path");
        let found = expected.iter().position(|a| *a == hello.args);
        let args = String::from_utf8_lossy(&hello.args);
        let found = found.unwrap_or_else(|| panic!("{py:?}: unexpected args {args:?}"));
        expected.swap_remove(found);
        assert!(
            hello.env.starts_with(job.as_bytes())
                || hello
                    .env
                    .windows(job.len() + 1)
                    .any(|w| w[0] == 0 && w[1..] == *job.as_bytes()),
            "{py:?}: {job:?} not in {:?}",
            String::from_utf8_lossy(&hello.env)
        );
        assert!(
            hello.env.ends_with(b"\0"),
            "{py:?}: env block ends with NUL"
        );
    }
    assert!(expected.is_empty(), "{py:?}: no Hello for {expected:?}");
}

#[test]
fn interpreters_report_imports_exec_paths_and_extension_modules() {
    let lib = library();
    for py in interpreters() {
        let listener = Listener::new();
        let sock = listener.path();
        let mut outputs = Vec::new();
        let mut argvs = Vec::new();
        for (mode, mut cmd, argv) in modes(&py, &lib, &sock) {
            let out = run(&mut cmd);
            assert!(out.status.success(), "{py:?} {mode}: {out:?}");
            assert_eq!(out.stdout, b"[1, 2]\n", "{py:?} {mode}");
            assert!(out.stderr.is_empty(), "{py:?} {mode}: {out:?}");
            outputs.push(mode);
            argvs.push(argv);
        }
        let n_modes = argvs.len();
        let (msgs, conns) = listener.finish();
        // One connection per Python process; `env` is not Python and does not connect.
        assert_eq!(conns, n_modes, "{py:?}: connections");
        check_hellos(&py, &msgs, conns, argvs);
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
        // The open wrappers report only in interpreters without hooks.
        let opens: Vec<&Msg> = msgs
            .iter()
            .filter(|m| m.kind == MessageKind::Open)
            .collect();
        assert!(opens.is_empty(), "{py:?}: hook mode sent opens: {opens:#?}");
    }
}

#[test]
fn no_daemon_leaves_python_unchanged() {
    let lib = library();
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.sock");
    for py in interpreters().into_iter().chain(old_interpreters()) {
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

/// What the interpreters without hooks run, in a fresh working directory holding `usermod.py`:
/// standard library modules (their bytecode is installed), a module without bytecode (a
/// failed bytecode probe, then its source; `sys.path[0]` is the working directory, which 2.7
/// passes as the relative `''`), and the program's own failed `open` of a `.pyc`.
const OLD_SCRIPT: &str = "import json, email.mime.text, errno, usermod\n\
try:\n    open('missing.pyc')\n\
except (IOError, OSError) as e:\n    print(json.dumps([1, 2]) + ' ' + errno.errorcode[e.errno])\n";

/// An Open message's record, checked for what every Open of these runs has: the calling
/// thread, paths relative to the working directory (`AT_FDCWD`), a reported suffix, and
/// failures only for bytecode.
fn record(py: &Path, m: &Msg) -> OpenRecord {
    let r = m
        .open()
        .unwrap_or_else(|| panic!("{py:?}: Open without its record: {m:?}"));
    assert!(r.tid > 0 && r.dfd == libc::AT_FDCWD, "{py:?}: {m:?} {r:?}");
    let reported = [".py", ".pyc", ".pyo", ".so"];
    assert!(
        reported.iter().any(|s| m.path.ends_with(s)),
        "{py:?}: {m:?}"
    );
    assert!(
        r.ret >= 0 || m.path.ends_with(".pyc"),
        "{py:?}: {m:?} {r:?}"
    );
    r
}

#[test]
fn interpreters_without_hooks_report_their_opens() {
    let lib = library();
    for py in old_interpreters() {
        // "27", "36", "37": the version in 3.x bytecode names.
        let version = py.ancestors().nth(2).unwrap().file_name().unwrap();
        let version = version
            .to_str()
            .unwrap()
            .split('.')
            .take(2)
            .collect::<String>();
        let py2 = version == "27";
        let cases: [(&str, &[&str], bool); 3] = [
            ("plain", &["-c", OLD_SCRIPT], false),
            ("-S -E", &["-S", "-E", "-c", OLD_SCRIPT], true),
            ("env -i", &["-c", OLD_SCRIPT], true),
        ];
        for (mode, args, env_i) in cases {
            let what = format!("{py:?} {mode}");
            let dir = tempfile::tempdir().unwrap();
            let cwd = dir.path().canonicalize().unwrap();
            std::fs::write(cwd.join("usermod.py"), "X = 1\n").unwrap();
            let listener = Listener::new();
            let sock = listener.path();
            let mut cmd = if mode == "env -i" {
                let mut c = Command::new("/usr/bin/env");
                c.arg("-i")
                    .arg(format!("LD_PRELOAD={}", lib.display()))
                    .arg(format!("PYUSAGE_PRELOAD_SOCKET={}", sock.display()))
                    .arg(format!("{}={}", JOB_VAR.0, JOB_VAR.1))
                    .arg(&py);
                c
            } else {
                Command::new(&py)
            };
            cmd.args(args)
                .current_dir(&cwd)
                .env("LD_PRELOAD", &lib)
                .env("PYUSAGE_PRELOAD_SOCKET", &sock)
                .env(JOB_VAR.0, JOB_VAR.1)
                // Only the plain run honours it; the others write bytecode (`-E`, `env -i`).
                .env("PYTHONDONTWRITEBYTECODE", "1");
            let out = run(&mut cmd);
            assert!(out.status.success(), "{what}: {out:?}");
            assert_eq!(out.stdout, b"[1, 2] ENOENT\n", "{what}: {out:?}");
            assert!(out.stderr.is_empty(), "{what}: {out:?}");
            let (msgs, conns) = listener.finish();
            assert_eq!(conns, 1, "{what}");
            let mut argv = py.as_os_str().as_encoded_bytes().to_vec();
            for a in args {
                argv.push(0);
                argv.extend_from_slice(a.as_bytes());
            }
            argv.push(0);
            check_hellos(&py, &msgs, conns, vec![argv]);
            let opens = msgs.get(1..).unwrap_or(&[]);
            assert!(
                opens.iter().all(|m| m.kind == MessageKind::Open),
                "{what}: only Opens follow the Hello: {msgs:#?}"
            );
            // (path, ret) of each open, in order.
            let seen: Vec<(&str, i32)> = opens
                .iter()
                .map(|m| (m.path.as_str(), record(&py, m).ret))
                .collect();
            let position = |f: &dyn Fn(&str, i32) -> bool, what_: &str| {
                seen.iter()
                    .position(|&(p, r)| f(p, r))
                    .unwrap_or_else(|| panic!("{what}: no {what_} in {seen:#?}"))
            };
            let cpython = |dir: &str, module: &str| {
                if py2 {
                    format!("/{dir}/{module}.pyc")
                } else {
                    format!("/{dir}/__pycache__/{module}.cpython-{version}.pyc")
                }
            };
            // The standard library's bytecode is opened (read-only).
            for (dir, module) in [("json", "__init__"), ("email/mime", "text")] {
                let pyc = cpython(dir, module);
                let i = position(&|p, r| p.ends_with(&pyc) && r >= 0, &pyc);
                let flags = opens[i].open().unwrap().oflags;
                assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY, "{what}: {pyc}");
            }
            // The module without bytecode: its probe fails (ENOENT), its source is opened;
            // 3.x probes first, 2.7 opens the source first. 2.7 passes the paths as
            // `sys.path` has them: relative to the working directory.
            let (probe, source) = if py2 {
                ("usermod.pyc".to_string(), "usermod.py".to_string())
            } else {
                let c = cwd.display();
                (
                    format!("{c}/__pycache__/usermod.cpython-{version}.pyc"),
                    format!("{c}/usermod.py"),
                )
            };
            let failed = position(&|p, r| p == probe && r == -libc::ENOENT, "failed probe");
            let opened = position(&|p, r| p == source && r >= 0, "usermod.py");
            assert_eq!(failed < opened, !py2, "{what}: order of probe and source");
            // The program's own failed open.
            position(
                &|p, r| p == "missing.pyc" && r == -libc::ENOENT,
                "open('missing.pyc')",
            );
            // Where bytecode is written: 2.7 creates `usermod.pyc` itself (a write open); 3.x
            // writes a temporary name and renames it, which is not reported.
            let written = seen.iter().position(|&(p, r)| p == "usermod.pyc" && r >= 0);
            assert_eq!(written.is_some(), py2 && env_i, "{what}: {seen:#?}");
            if let Some(i) = written {
                let flags = opens[i].open().unwrap().oflags;
                assert_eq!(flags & libc::O_ACCMODE, libc::O_WRONLY, "{what}");
                assert_ne!(flags & libc::O_CREAT, 0, "{what}");
            }
            // Extension modules: 2.7 `fopen`s the `.so` before `dlopen`; 3.x only `dlopen`s it,
            // whose opens are the loader's own system calls: not seen.
            let dynload = seen
                .iter()
                .filter(|(p, _)| p.contains("/lib-dynload/_json"))
                .count();
            assert_eq!(dynload > 0, py2, "{what}: _json's .so: {seen:#?}");
        }
    }
}

/// A program that exports `Py_Initialize` and no `PySys_AddAuditHook` is what the library
/// takes for CPython 2.7–3.7: `open_calls.c` built so, run as `nobody` and as root, reports
/// each open the rules keep, with the record the call really had (descriptor or `-errno`,
/// directory descriptor, flags, thread), and its own results and `errno` values are those it
/// gets without the library: ENOENT, EACCES on root's 0600 file as `nobody`, EEXIST, EBADF,
/// and an untouched `errno` after every success; also when the daemon does not read and the
/// sends fail.
#[test]
fn open_mode_reports_exact_results_and_keeps_errno() {
    let bin = tempfile::tempdir().unwrap();
    let lib = library_for_everyone(bin.path());
    let exe = bin.path().join("open_calls_python");
    compile_c("open_calls.c", &exe, &["-DFAKE_PYTHON", "-rdynamic"]);
    let run_calls = |preload: bool, sock: &Path, as_nobody: bool, repeat: &[&str]| {
        let dir = open_calls_dir();
        let mut cmd = Command::new(&exe);
        cmd.arg(dir.path())
            .args(repeat)
            .env("PYUSAGE_PRELOAD_SOCKET", sock)
            .env_remove("LD_PRELOAD");
        if preload {
            cmd.env("LD_PRELOAD", &lib);
        }
        if as_nobody {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "nobody: {as_nobody}: {out:?}");
        assert!(out.stderr.is_empty(), "nobody: {as_nobody}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // The same results but for descriptor numbers: the library's socket holds one.
    let without_fds = |s: &str| {
        s.lines()
            .map(|l| {
                let mut w: Vec<&str> = l.split(' ').collect();
                for i in 1..w.len() {
                    if w[i - 1] == "fd" || w[i - 1] == "(dfd" {
                        w[i] = if w[i].ends_with(',') { "N," } else { "N" };
                    }
                }
                w.join(" ")
            })
            .collect::<Vec<_>>()
    };
    // A daemon that does not read: after ~270 queued messages every send fails (EAGAIN,
    // dropped: 4,000 reports here), and `errno` is still what each open left.
    let stalled = Stalled::new();
    let reference = run_calls(false, &stalled.path(), false, &["2000"]);
    let observed = run_calls(true, &stalled.path(), false, &["2000"]);
    assert_eq!(without_fds(&reference), without_fds(&observed), "stalled");
    assert_ne!(reference, observed, "stalled: the library connected");
    let repeat = "repeat 2000: opened 2000, errno kept 2000; failed 2000, ENOENT 2000";
    assert!(observed.lines().any(|l| l == repeat), "{observed}");
    for as_nobody in [true, false] {
        let what = if as_nobody { "nobody" } else { "root" };
        let listener = Listener::new();
        listener.open_to_everyone();
        let reference = run_calls(false, &listener.path(), as_nobody, &[]);
        let observed = run_calls(true, &listener.path(), as_nobody, &[]);
        let (msgs, conns) = listener.finish();
        assert_eq!(conns, 1, "{what}: {msgs:#?}");
        assert_eq!(msgs.first().map(|m| m.kind), Some(MessageKind::Hello));
        assert_eq!(without_fds(&reference), without_fds(&observed), "{what}");
        assert_eq!(
            observed.contains("secret.pyc (re): -1 errno 13"),
            as_nobody,
            "{what}: {observed}"
        );
        // Each line the rules keep (success of a reported suffix, failure of a `.pyc` after
        // the path was read) is one Open with the line's values, in order.
        let fopen_flags = |mode: &str| match mode {
            "re" => libc::O_RDONLY | libc::O_CLOEXEC,
            "r" => libc::O_RDONLY,
            "a+" => libc::O_RDWR | libc::O_CREAT | libc::O_APPEND,
            other => panic!("mode {other}"),
        };
        let mut expected = Vec::new();
        for line in observed.lines().filter(|l| l.contains("): ")) {
            // "CALL PATH (dfd D, flags 0F): fd N errno E" / "CALL PATH (MODE): -1 errno E"
            let (call_path, rest) = line.split_once(" (").unwrap();
            let (call, path) = call_path.split_once(' ').unwrap();
            let (how, result) = rest.split_once("): ").unwrap();
            let r: Vec<&str> = result.split(' ').collect();
            let ret = match r[..] {
                ["fd", fd, "errno", _] => fd.parse::<i32>().unwrap(),
                ["-1", "errno", e] => -e.parse::<i32>().unwrap(),
                _ => panic!("{line}"),
            };
            let (dfd, oflags) = if call.starts_with("fopen") {
                if how == "q" {
                    continue; // EINVAL before the path was read: not reported
                }
                (libc::AT_FDCWD, fopen_flags(how))
            } else {
                let (d, f) = how.split_once(", flags ").unwrap();
                let d = d.strip_prefix("dfd ").unwrap().parse::<i32>().unwrap();
                (d, i32::from_str_radix(f, 8).unwrap())
            };
            let suffix = [".py", ".pyc", ".pyo", ".so"]
                .iter()
                .any(|s| path.ends_with(s));
            if (ret >= 0 && suffix) || (ret < 0 && path.ends_with(".pyc")) {
                expected.push((path.to_string(), ret, dfd, oflags));
            }
        }
        let tid = msgs.get(1).and_then(|m| m.open()).map(|r| r.tid);
        let got: Vec<(String, i32, i32, i32)> = msgs
            .iter()
            .skip(1)
            .map(|m| {
                let r = m.open().unwrap_or_else(|| panic!("{what}: {m:?}"));
                assert_eq!(Some(r.tid), tid, "{what}: one thread");
                (m.path.clone(), r.ret, r.dfd, r.oflags)
            })
            .collect();
        assert_eq!(got, expected, "{what}");
        // The program's `errno` after each failure is the real one (the lines were compared
        // with the run without the library above); here, that the interesting ones occurred.
        for needle in [
            "-1 errno 2",
            "new.pyc (dfd N, flags 0301): -1 errno 17",
            "m.pyc (dfd N, flags 00): -1 errno 9",
        ] {
            assert!(
                without_fds(&observed).iter().any(|l| l.ends_with(needle)),
                "{what}: {needle:?} in {observed}"
            );
        }
        assert!(tid.is_some_and(|t| t > 0), "{what}");
    }
}
