//! Programs that are not Python run exactly as without the library: the same stdout, stderr
//! and exit code, byte for byte, whether the daemon's socket is listening or absent, and none
//! of them connects. That includes a program that calls each `open` wrapper the library exports
//! on present, missing and unreadable files, as root and as `nobody`, and prints every result
//! and `errno` (`programs/open_calls.c`). And the socket of a Python process does not leak into
//! what it `exec`s.
//!
//! The library is the shipped build (`common::library`).

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{
    compile_c, interpreters, library, library_for_everyone, open_calls_dir, run, Listener, NOBODY,
};
use tracer_common::preload::MessageKind;

/// One program to compare: a name for messages and a way to make a fresh command (with its
/// own scratch directory where it writes, so that every run starts from the same state).
struct Program {
    name: &'static str,
    make: Box<dyn Fn() -> (Command, tempfile::TempDir)>,
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `cmd` run in a fresh scratch directory.
fn simple(name: &'static str, argv: &'static [&'static str]) -> Program {
    Program {
        name,
        make: Box::new(move || {
            let dir = scratch();
            let mut cmd = Command::new(argv[0]);
            cmd.args(&argv[1..]).current_dir(dir.path());
            (cmd, dir)
        }),
    }
}

const MAKEFILE: &str = "\
all: out.txt
\t@cat out.txt
\t@$(MAKE) --no-print-directory -s again
out.txt: in.txt
\ttr a-z A-Z < in.txt > out.txt
again:
\t@echo made; ls
";

/// Build `c_host.c` twice: as is, and with `-rdynamic` so that its own `open` is the one the
/// whole process (the preloaded library included) binds to.
fn c_programs(dir: &Path) -> [PathBuf; 2] {
    let plain = dir.join("c_host");
    let exported = dir.join("c_host_rdynamic");
    compile_c("c_host.c", &plain, &[]);
    compile_c("c_host.c", &exported, &["-rdynamic"]);
    [plain, exported]
}

/// `open_calls.c` (not Python: no `Py_Initialize`), run as root or as `nobody`, in a fresh
/// directory of files to open (`common::open_calls_dir`).
fn open_calls(exe: &Path, as_nobody: bool) -> Program {
    let exe = exe.to_path_buf();
    Program {
        name: if as_nobody {
            "open calls, as nobody"
        } else {
            "open calls"
        },
        make: Box::new(move || {
            let dir = open_calls_dir();
            let mut cmd = Command::new(&exe);
            cmd.arg(dir.path());
            if as_nobody {
                cmd.uid(NOBODY).gid(NOBODY);
            }
            (cmd, dir)
        }),
    }
}

fn programs(bin: &Path) -> Vec<Program> {
    let mut list = vec![
        simple("ls -la /usr/lib", &["/bin/ls", "-la", "/usr/lib"]),
        simple("ls of a missing file", &["/bin/ls", "/nonexistent-pyusage"]),
        simple(
            "cat",
            &["/bin/cat", "/etc/os-release", "/nonexistent-pyusage"],
        ),
        simple(
            "sh -c loop",
            &[
                "/bin/sh",
                "-c",
                "i=0; while [ $i -lt 20 ]; do i=$((i + 1)); echo $i; cat /etc/hostname; \
                 /bin/true; done; ls /nonexistent-pyusage; exit 7",
            ],
        ),
        Program {
            name: "make",
            make: Box::new(|| {
                let dir = scratch();
                std::fs::write(dir.path().join("Makefile"), MAKEFILE).unwrap();
                std::fs::write(dir.path().join("in.txt"), "hello make\n").unwrap();
                let mut cmd = Command::new("make");
                cmd.current_dir(dir.path());
                (cmd, dir)
            }),
        },
    ];
    let calls = bin.join("open_calls");
    compile_c("open_calls.c", &calls, &[]);
    list.push(open_calls(&calls, false));
    list.push(open_calls(&calls, true));
    // A static program (the loader, and so the library, is not involved) and a setuid one
    // run by `nobody` (secure execution: the loader ignores LD_PRELOAD with a path).
    let stat = bin.join("c_host_static");
    compile_c("c_host.c", &stat, &["-static"]);
    list.push(Program {
        name: "static C program",
        make: Box::new(move || {
            let dir = scratch();
            let mut cmd = Command::new(&stat);
            cmd.arg("/etc/os-release").current_dir(dir.path());
            (cmd, dir)
        }),
    });
    let suid = bin.join("id_setuid");
    std::fs::copy("/usr/bin/id", &suid).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::set_permissions(bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    list.push(Program {
        name: "setuid program, as nobody",
        make: Box::new(move || {
            let dir = scratch();
            let mut cmd = Command::new(&suid);
            cmd.uid(NOBODY).gid(NOBODY).current_dir("/");
            (cmd, dir)
        }),
    });
    for exe in c_programs(bin) {
        let name = if exe.ends_with("c_host") {
            "C program"
        } else {
            "C program, -rdynamic"
        };
        list.push(Program {
            name,
            make: Box::new(move || {
                let dir = scratch();
                let mut cmd = Command::new(&exe);
                cmd.arg("/etc/os-release").current_dir(dir.path());
                (cmd, dir)
            }),
        });
    }
    list
}

fn run_program(p: &Program, env: &[(&str, &Path)]) -> Output {
    let (mut cmd, _dir) = (p.make)();
    cmd.env_remove("LD_PRELOAD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

#[test]
fn non_python_programs_are_unchanged_and_do_not_connect() {
    let bin = scratch();
    // In a directory `nobody` can read, as `open_calls` runs as `nobody` too.
    let lib = library_for_everyone(bin.path());
    let programs = programs(bin.path());
    let listener = Listener::new();
    listener.open_to_everyone();
    let listening = listener.path();
    let absent = bin.path().join("absent.sock");
    for p in &programs {
        for sock in [&listening, &absent] {
            let var = ("PYUSAGE_PRELOAD_SOCKET", sock.as_path());
            let reference = run_program(p, &[var]);
            let preloaded = run_program(p, &[var, ("LD_PRELOAD", &lib)]);
            let what = format!("{} (socket {})", p.name, sock.display());
            assert_eq!(reference.status.code(), preloaded.status.code(), "{what}");
            assert_eq!(
                String::from_utf8_lossy(&reference.stdout),
                String::from_utf8_lossy(&preloaded.stdout),
                "{what}: stdout"
            );
            assert_eq!(reference.stdout, preloaded.stdout, "{what}: stdout bytes");
            assert_eq!(reference.stderr, preloaded.stderr, "{what}: stderr");
            assert!(
                !reference.stdout.is_empty() || !reference.stderr.is_empty(),
                "{what}: produced no output to compare"
            );
        }
    }
    // The C program did what it says (its output, with the number of descriptors it has open,
    // is compared above; here, that it ran).
    let c = run_program(&programs[programs.len() - 1], &[("LD_PRELOAD", &lib)]);
    let out = String::from_utf8_lossy(&c.stdout);
    assert_eq!(c.status.code(), Some(4), "{c:?}");
    for line in [
        "fork: exit 3",
        "spawned",
        "posix_spawn: exit 0",
        "vforked",
        "vfork: exit 5",
        "own open called 2 times",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} not in {out}");
    }
    // The open calls gave the real results: descriptors, ENOENT, EACCES for `nobody` on the
    // file only root may read, EEXIST, EINVAL, EBADF; `errno 1234` is what each call found
    // before it and a success must leave.
    let calls = |p: &Program| {
        let out = run_program(p, &[("LD_PRELOAD", &lib)]);
        assert_eq!(out.status.code(), Some(0), "{}: {out:?}", p.name);
        String::from_utf8(out.stdout).unwrap()
    };
    let by_name = |n: &str| programs.iter().find(|p| p.name == n).unwrap();
    let root = calls(by_name("open calls"));
    let nobody = calls(by_name("open calls, as nobody"));
    for (out, secret) in [(&root, "fd 4 errno 1234"), (&nobody, "-1 errno 13")] {
        for line in [
            "dir fd 3",
            "open m.py (dfd -100, flags 02000000): fd 4 errno 1234",
            "openat64 lib.so (dfd 3, flags 02000000): fd 4 errno 1234",
            "fopen64 m.pyc (r): fd 4 errno 1234",
            "open missing.pyc (dfd -100, flags 02000000): -1 errno 2",
            "fopen missing.py (re): -1 errno 2",
            &format!("fopen secret.pyc (re): {secret}"),
            &format!("openat secret.pyc (dfd 3, flags 02000000): {secret}"),
            "new.pyc mode 0640",
            "openat new.pyc (dfd 3, flags 0301): -1 errno 17",
            "fopen missing.pyc (q): -1 errno 22",
            "openat m.pyc (dfd -1, flags 00): -1 errno 9",
        ] {
            assert!(out.lines().any(|l| l == line), "{line:?} not in {out}");
        }
    }
    let (msgs, conns) = listener.finish();
    assert_eq!((msgs.len(), conns), (0, 0), "{msgs:?}");
}

/// The library's socket is `SOCK_CLOEXEC`: a Python process has it open, and the program it
/// `exec`s does not.
#[test]
fn the_socket_does_not_leak_across_exec() {
    let lib = library();
    let code = "import os\n\
        fds = os.listdir('/proc/self/fd')\n\
        links = [os.readlink('/proc/self/fd/' + f) for f in fds if os.path.exists('/proc/self/fd/' + f)]\n\
        print(sum(l.startswith('socket:') for l in links), flush=True)\n\
        os.execv('/bin/ls', ['ls', '-l', '/proc/self/fd'])\n";
    for py in interpreters() {
        let listener = Listener::new();
        let out = run(Command::new(&py)
            .args(["-c", code])
            .env("LD_PRELOAD", &lib)
            .env("PYUSAGE_PRELOAD_SOCKET", listener.path()));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{py:?}: {out:?}");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("1"),
            "{py:?}: one socket before exec: {text}"
        );
        let listing: Vec<&str> = lines.collect();
        assert!(
            listing
                .iter()
                .any(|l| l.contains("/proc/") && l.contains(" 3 -> ")),
            "{py:?}: ls listed its descriptors: {text}"
        );
        assert!(
            listing.iter().all(|l| !l.contains("socket:")),
            "{py:?}: a socket crossed exec: {text}"
        );
        let (msgs, conns) = listener.finish();
        // Python connected (so there was a socket to leak); `ls` did not.
        assert_eq!(conns, 1, "{py:?}: {msgs:?}");
        assert_eq!(msgs.first().map(|m| m.kind), Some(MessageKind::Hello));
    }
}
