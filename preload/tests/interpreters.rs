//! The library as the loader really uses it: `LD_PRELOAD` of the cdylib into real interpreters
//! (pyenv 3.8 and 3.13 with a shared libpython, Debian's 3.11 with libpython in the
//! executable), with a `SOCK_SEQPACKET` listener in a temporary directory standing in for the
//! daemon. Programs that are not Python: `non_python.rs`.
//!
//! The library is the shipped build (`--profile preload`), built by `common::library`; the
//! machine's `/etc/pyusage/preload.conf` must allow the socket override (`common::ensure_config`
//! adds the line, as root).
//!
//! A missing interpreter fails the test: these are the builds the design was measured on.

mod common;

use std::path::Path;
use std::process::Command;

use common::{interpreters, library, run, Listener, Msg};
use tracer_common::preload::MessageKind;

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
