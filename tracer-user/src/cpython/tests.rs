//! Against real interpreters: pyenv's 3.8–3.13 (`--enable-shared`: the runtime is in
//! `libpython3.X.so.1.0`, the executable is PIE) and Debian's `/usr/bin/python3.11` (static,
//! not PIE, exports its symbols); 2.7 and 3.7 must be refused.
use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use super::*;

/// The pyenv interpreter `<version>.*` (`"3.9"`: `~/.pyenv/versions/3.9.*/bin/python3.9`).
fn pyenv(version: &str) -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let versions = Path::new(&home).join(".pyenv/versions");
    let prefix = format!("{version}.");
    let dir = std::fs::read_dir(&versions)
        .unwrap_or_else(|e| panic!("{}: {e}", versions.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .unwrap_or_else(|| panic!("no pyenv {prefix}* under {}", versions.display()));
    dir.join("bin").join(format!("python{version}"))
}

const DEBIAN: &str = "/usr/bin/python3.11";

/// A process of ours, killed when dropped.
struct Running {
    child: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program args` with stdout piped, and waits (30 s at most) for its first line.
fn start(
    program: &Path,
    args: &[&Path],
    dir: tempfile::TempDir,
    env: &[(&str, &Path)],
) -> (Running, String) {
    let stderr = dir.path().join("stderr");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("PYTHONUTF8", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let running = Running {
        child,
        stderr,
        _dir: dir,
    };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if !line.is_empty() => (running, line.trim_end().to_owned()),
        other => panic!(
            "{}: no ready line ({other:?}); stderr: {}",
            program.display(),
            std::fs::read_to_string(&running.stderr).unwrap_or_default()
        ),
    }
}

const MAIN: &str = r#"
import importlib.util, os, sys, threading, time
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)

def load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(here, file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

other = load("other", "other_ж.py")
emoji = load("emoji", "emoji_😀.py")
import a
started = []
for target in (other.block, emoji.block):
    threading.Thread(target=target, args=(started,), daemon=True).start()
while len(started) < 2:
    time.sleep(0.01)
a.run(started)
"#;

const A: &str = "import bé\n\ndef run(started):\n    bé.go(started)\n";
const B: &str = "import c\n\ndef go(started):\n    c.spin(started)\n";
const C: &str = r#"import sys, threading, time


def spin(started):
    me = (threading.get_ident(), threading.get_native_id(), "main")
    v = sys.version_info
    print(v[0], v[1], v[2], id(LEGACY), " ".join("%d:%d:%s" % t for t in [me] + started), flush=True)
    while True:
        time.sleep(3600)


class S(str):
    pass


# A str subclass's instance is not compact: its characters are elsewhere.
LEGACY = S("/legacy/\u00e9\u0436")
"#;
const BLOCK: &str = r#"import threading, time

def block(started):
    started.append((threading.get_ident(), threading.get_native_id(), "NAME"))
    while True:
        time.sleep(3600)
"#;

/// A thread of the script: `threading.get_ident()`, `get_native_id()`, and which.
#[derive(Debug)]
struct ScriptThread {
    ident: u64,
    tid: i32,
    name: String,
}

struct Script {
    running: Running,
    dir: PathBuf,
    version: (u8, u8, u8),
    /// Address of a `str` subclass instance.
    legacy: u64,
    threads: Vec<ScriptThread>,
}

/// Runs the script with `python` (its `PYTHONHOME`, for a copy, in `home`): the main thread
/// sleeps in c.py (called from main.py → a.py → bé.py), a thread in other_ж.py, a thread in
/// emoji_😀.py (file names of each `str` kind: ASCII, Latin-1, UCS-2, UCS-4).
fn run_script(python: &Path, home: Option<&Path>) -> Script {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    for (name, text) in [
        ("main.py", MAIN.to_owned()),
        ("a.py", A.to_owned()),
        ("bé.py", B.to_owned()),
        ("c.py", C.to_owned()),
        ("other_ж.py", BLOCK.replace("NAME", "other")),
        ("emoji_😀.py", BLOCK.replace("NAME", "emoji")),
    ] {
        std::fs::write(path.join(name), text).unwrap();
    }
    let env: Vec<(&str, &Path)> = home.map(|h| ("PYTHONHOME", h)).into_iter().collect();
    let (running, line) = start(python, &[&path.join("main.py")], dir, &env);
    let mut words = line.split(' ');
    let mut n = || words.next().unwrap().parse::<u8>().unwrap();
    let version = (n(), n(), n());
    let legacy = words.next().unwrap().parse().unwrap();
    let threads = words
        .map(|w| {
            let mut p = w.splitn(3, ':');
            ScriptThread {
                ident: p.next().unwrap().parse().unwrap(),
                tid: p.next().unwrap().parse().unwrap(),
                name: p.next().unwrap().to_owned(),
            }
        })
        .collect();
    Script {
        running,
        dir: path,
        version,
        legacy,
        threads,
    }
}

/// The thread pointer (`fs` base) of thread `tid`, by `PTRACE_GETREGS`.
fn fs_base(tid: i32) -> u64 {
    // SAFETY: ptrace on a thread of a process this test started; the register block is a
    // plain struct the kernel fills.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_ATTACH, tid, 0usize, 0usize),
            0,
            "PTRACE_ATTACH {tid}: {}",
            std::io::Error::last_os_error()
        );
        let mut status = 0;
        assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        let r = libc::ptrace(libc::PTRACE_GETREGS, tid, 0usize, &mut regs as *mut _);
        let err = std::io::Error::last_os_error();
        libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, 0usize);
        assert_eq!(r, 0, "PTRACE_GETREGS {tid}: {err}");
        regs.fs_base
    }
}

/// Inspects and walks the script's process and checks everything the sampler relies on.
fn check(python: &Path, home: Option<&Path>, expect_executable: bool) {
    let s = run_script(python, home);
    let pid = s.running.pid();
    let interp = Interpreter::inspect(pid).unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let (major, minor, patch) = s.version;
    assert_eq!((interp.version.major, interp.version.minor), (major, minor));
    if minor >= 11 {
        assert_eq!(interp.version.patch, Some(patch));
    }
    assert_eq!(interp.in_executable, expect_executable, "{interp:?}");
    assert_ne!(interp.code_type, 0);
    assert_ne!(interp.str_type, 0);
    if minor == 13 {
        assert_eq!(interp.source, LayoutSource::DebugOffsets);
        // 3.13.0's debug offsets are its table.
        assert_eq!(interp.layout, layout(3, 13).unwrap());
        assert_eq!(interp.objects, object_layout(3, 13).unwrap());
    } else {
        assert_eq!(interp.source, LayoutSource::Table);
    }
    let stacks = interp.walk_threads().unwrap();
    assert_eq!(stacks.len(), 3, "{stacks:?}");
    let file = |code: u64| interp.code_filename(code).unwrap();
    let in_dir = |name: &str| s.dir.join(name).to_str().unwrap().to_owned();
    for t in &s.threads {
        let stack = stacks
            .iter()
            .find(|st| st.thread_id == t.ident)
            .unwrap_or_else(|| panic!("no thread state for {t:?} in {stacks:?}"));
        assert!(!stack.truncated && !stack.read_failed, "{stack:?}");
        // The kernel's match: thread_id is the thread pointer.
        assert_eq!(fs_base(t.tid), t.ident, "{t:?}: fs_base is pthread_self()");
        let files: Vec<String> = stack.frames.iter().map(|&c| file(c)).collect();
        match t.name.as_str() {
            "main" => {
                assert_eq!(
                    files,
                    ["c.py", "bé.py", "a.py", "main.py"].map(in_dir),
                    "{}",
                    python.display()
                );
                let info = interp.code_info(stack.frames[0]).unwrap();
                assert_eq!(info.name, "spin");
                assert_eq!(info.firstlineno, 4);
                assert_eq!(info.filename, in_dir("c.py"));
                assert_eq!(interp.code_info(stack.frames[3]).unwrap().name, "<module>");
            }
            name => {
                let own = if name == "other" {
                    "other_ж.py"
                } else {
                    "emoji_😀.py"
                };
                assert_eq!(files[0], in_dir(own), "{files:?}");
                assert!(
                    files[1..].iter().all(|f| f.ends_with("/threading.py")),
                    "{files:?}"
                );
                assert_eq!(interp.code_info(stack.frames[0]).unwrap().name, "block");
            }
        }
    }
    // Not a code object: refused by its type.
    let main = stacks.iter().find(|st| st.frames.len() == 4).unwrap();
    assert!(matches!(
        interp.code_filename(main.frames[0] + 8),
        Err(CpythonError::Invalid { .. }) | Err(CpythonError::Read { .. })
    ));
    // Many at once, as the sampler's workers read them: the same answer as one by one, for
    // code objects, repeats, and addresses that are no code object or not mapped at all.
    let mut codes: Vec<u64> = stacks.iter().flat_map(|st| st.frames.clone()).collect();
    codes.extend([
        main.frames[0] + 8,
        0,
        8,
        u64::MAX - 4,
        main.frames[1],
        main.frames[0],
    ]);
    let each: Vec<Option<Vec<u8>>> = codes
        .iter()
        .map(|&c| interp.code_path_bytes(c).ok())
        .collect();
    assert_eq!(interp.code_paths_bytes(&codes), each, "{codes:x?}");
    assert!(each[0].is_some() && each.iter().filter(|f| f.is_none()).count() >= 3);
    assert_eq!(walk_threads(pid).unwrap().len(), 3);
    // A non-compact string: read when its type is not checked, refused when it is.
    let mem = Memory::new(pid);
    let legacy = mem.str_bytes(s.legacy, &interp.objects, 0).unwrap();
    assert_eq!(String::from_utf8(legacy).unwrap(), "/legacy/éж");
    assert!(matches!(
        mem.str_bytes(s.legacy, &interp.objects, interp.str_type),
        Err(CpythonError::Invalid { .. })
    ));
}

/// One test per interpreter: (name, interpreter, whether the runtime is in the executable).
macro_rules! interpreters {
    ($($name:ident: $python:expr, $in_executable:expr;)*) => {$(
        #[test]
        fn $name() {
            check(&$python, None, $in_executable);
        }
    )*};
}

interpreters! {
    cpython_3_8: pyenv("3.8"), false;
    cpython_3_9: pyenv("3.9"), false;
    cpython_3_10: pyenv("3.10"), false;
    cpython_3_11: pyenv("3.11"), false;
    cpython_3_12: pyenv("3.12"), false;
    cpython_3_13: pyenv("3.13"), false;
    cpython_debian_3_11_static: PathBuf::from(DEBIAN), true;
}

/// A copy of `python` named `worker` in a directory of its own, run with `home`.
fn renamed(python: &Path, home: &Path, expect_executable: bool) {
    let dir = tempfile::tempdir().unwrap();
    let worker = dir.path().join("worker");
    std::fs::copy(python, &worker).unwrap();
    std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o755)).unwrap();
    check(&worker, Some(home), expect_executable);
}

#[test]
fn cpython_renamed_pyenv_3_9() {
    let python = pyenv("3.9");
    let home = python.parent().unwrap().parent().unwrap().to_path_buf();
    renamed(&python, &home, false);
}

#[test]
fn cpython_renamed_debian_3_11() {
    renamed(Path::new(DEBIAN), Path::new("/usr"), true);
}

/// An interpreter whose executable was deleted since it started (an upgrade replaced it):
/// still read, as the file mapped (`map_files`, else `/proc/<pid>/exe` without
/// `CAP_SYS_ADMIN`), never as whatever the path now names.
#[test]
fn cpython_deleted_executable() {
    let dir = tempfile::tempdir().unwrap();
    let worker = dir.path().join("worker");
    std::fs::copy(DEBIAN, &worker).unwrap();
    let s = run_script(&worker, Some(Path::new("/usr")));
    std::fs::remove_file(&worker).unwrap();
    let interp = Interpreter::inspect(s.running.pid()).unwrap();
    assert_eq!(interp.version.minor, 11);
    assert_eq!(interp.walk_threads().unwrap().len(), 3);
    // Another file at that path now: not taken for it.
    std::fs::write(&worker, b"not python").unwrap();
    assert_eq!(
        Interpreter::inspect(s.running.pid()).unwrap().runtime,
        interp.runtime
    );
}

/// Runs `program args` until it prints a line.
fn idle(program: &Path, args: &[&Path]) -> Running {
    start(program, args, tempfile::tempdir().unwrap(), &[]).0
}

fn sleeper() -> [&'static Path; 2] {
    [
        Path::new("-c"),
        Path::new(
            "import sys, time; sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(600)",
        ),
    ]
}

#[test]
fn cpython_2_7_and_3_7_are_unsupported() {
    for version in ["2.7", "3.7"] {
        let p = idle(&pyenv(version), &sleeper());
        match Interpreter::inspect(p.pid()) {
            Err(CpythonError::Unsupported(why)) => eprintln!("{version}: {why}"),
            other => panic!("{version}: {other:?}"),
        }
    }
}

/// Debian's debug build (package python3.11-dbg, installed by scripts/install-deps.sh).
#[test]
fn cpython_debug_build_is_unsupported() {
    let debug = Path::new("/usr/bin/python3.11d");
    assert!(
        debug.exists(),
        "{} absent: install python3.11-dbg (scripts/install-deps.sh)",
        debug.display()
    );
    let p = idle(debug, &sleeper());
    match Interpreter::inspect(p.pid()) {
        Err(CpythonError::Unsupported(why)) => assert!(why.contains("debug build"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn cpython_not_python() {
    let p = idle(
        Path::new("/bin/sh"),
        &[Path::new("-c"), Path::new("echo ready; exec sleep 600")],
    );
    // `exec` may not have happened when the line is read: wait for `sleep`.
    for _ in 0..100 {
        let exe = std::fs::read_link(format!("/proc/{}/exe", p.pid())).unwrap();
        if exe.file_name().is_some_and(|n| n == "sleep") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let e = Interpreter::inspect(p.pid()).unwrap_err();
    assert!(matches!(e, CpythonError::NotPython { .. }), "{e:?}");
    eprintln!("{e}");
    assert!(matches!(
        Interpreter::inspect(u32::MAX / 2),
        Err(CpythonError::Proc { .. })
    ));
}

/// The version by symbols agrees with the soname on pyenv's 3.8–3.10, and says "before 3.8"
/// on 3.7 (the method static builds without `Py_Version` rely on).
#[test]
fn cpython_version_by_symbols() {
    for minor in [7, 8, 9, 10] {
        let python = pyenv(&format!("3.{minor}"));
        let abi = if minor == 7 { "m" } else { "" };
        let lib = python
            .parent()
            .unwrap()
            .join(format!("../lib/libpython3.{minor}{abi}.so.1.0"));
        let mut facts = image::read_facts(std::fs::File::open(&lib).unwrap(), &lib).unwrap();
        assert!(facts.soname.is_some());
        assert_eq!(version(&facts, &lib).unwrap().minor, minor);
        facts.soname = None;
        assert_eq!(
            version(&facts, &lib).unwrap().minor,
            minor,
            "{}",
            lib.display()
        );
    }
}

#[test]
fn cpython_sonames() {
    assert_eq!(
        soname_version("libpython3.9.so.1.0"),
        Some((3, 9, String::new()))
    );
    assert_eq!(
        soname_version("libpython3.13t.so.1.0"),
        Some((3, 13, "t".into()))
    );
    assert_eq!(
        soname_version("libpython3.7m.so.1.0"),
        Some((3, 7, "m".into()))
    );
    assert_eq!(
        soname_version("libpython3.10d.so"),
        Some((3, 10, "d".into()))
    );
    assert_eq!(soname_version("libc.so.6"), None);
}

#[test]
fn cpython_builds_refused_by_their_symbols() {
    let lib = pyenv("3.12")
        .parent()
        .unwrap()
        .join("../lib/libpython3.12.so.1.0");
    let facts = image::read_facts(std::fs::File::open(&lib).unwrap(), &lib).unwrap();
    let mapping = Mapping {
        start: 0,
        end: 0,
        offset: 0,
        dev: 0,
        ino: 0,
        path: lib.clone(),
    };
    for (symbol, what) in [
        ("_Py_MergeZeroLocalRefcount", "free-threaded"),
        ("_Py_NegativeRefcount", "debug"),
    ] {
        let mut f = facts.clone();
        f.symbols.insert(symbol, 0);
        match interpreter(1, &mapping, false, &Arc::new(f), None) {
            Err(CpythonError::Unsupported(why)) => assert!(why.contains(what), "{why}"),
            other => panic!("{other:?}"),
        }
    }
    let mut f = facts.clone();
    f.soname = Some("libpython3.13t.so.1.0".into());
    f.py_version = Some(0x030d00f0);
    assert!(matches!(
        version(&f, &lib),
        Err(CpythonError::Unsupported(why)) if why.contains("free-threaded")
    ));
}

/// `ld.so` maps a library's segments one at a time over a first read-only mapping of the whole
/// file: a process inspected in between (it is inspected as soon as it opens `libpython`) must
/// not be found with a `_PyRuntime` a page off (every walk of its threads would then fail, as
/// one did in CI), only once its data segment is in place. Staged here in this test's own
/// process, which maps pyenv's `libpython3.12.so` as the loader does, segment by segment.
#[test]
fn cpython_library_mapped_halfway_is_found_once_its_data_segment_is() {
    const PAGE: u64 = 4096;
    let python = pyenv("3.12");
    let lib = python
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("lib/libpython3.12.so.1.0");
    let file = std::fs::File::open(&lib).unwrap();
    let facts = image::read_facts(file.try_clone().unwrap(), &lib).unwrap();
    let runtime_vaddr = facts.symbols["_PyRuntime"];
    let down = |x: u64| x & !(PAGE - 1);
    let up = |x: u64| (x + PAGE - 1) & !(PAGE - 1);
    let span = facts
        .segments
        .iter()
        .map(|s| up(s.vaddr + s.memsz))
        .max()
        .unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: a new private read-only mapping of the file, placed by the kernel; nothing
    // reads it but the inspection (through /proc), and it is unmapped at the end.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span as usize,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0,
        )
    };
    assert_ne!(
        base,
        libc::MAP_FAILED,
        "{}",
        std::io::Error::last_os_error()
    );
    let base = base as u64;
    let pid = std::process::id();
    let (code, data) = (1, facts.segment_of(runtime_vaddr).unwrap());
    assert_eq!(facts.segments.len(), 4, "{:?}", facts.segments);
    for (i, s) in facts.segments.iter().enumerate().skip(1) {
        // Before segment `i`: not found (the code is not mapped yet, or the data segment is
        // not): never found at another address.
        match Interpreter::inspect(pid) {
            Err(CpythonError::NotPython { .. }) if i <= code => {}
            Err(CpythonError::BadImage { reason, .. }) if i > code => eprintln!("{i}: {reason}"),
            other => panic!("before segment {i} of {:?}: {other:?}", facts.segments),
        }
        let prot = match i {
            1 => libc::PROT_READ | libc::PROT_EXEC,
            _ if s == data => libc::PROT_READ | libc::PROT_WRITE,
            _ => libc::PROT_READ,
        };
        let len = up(s.offset + s.filesz) - down(s.offset);
        // SAFETY: over this test's own mapping of the file (inside `span`), as `ld.so` maps it.
        let at = unsafe {
            libc::mmap(
                (base + down(s.vaddr)) as *mut libc::c_void,
                len as usize,
                prot,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                fd,
                down(s.offset) as libc::off_t,
            )
        };
        assert_eq!(
            at as u64,
            base + down(s.vaddr),
            "{}",
            std::io::Error::last_os_error()
        );
    }
    let found = Interpreter::inspect(pid);
    // SAFETY: this test's own mapping, which nothing refers to any more.
    unsafe { libc::munmap(base as *mut libc::c_void, span as usize) };
    let found = found.unwrap();
    assert_eq!(found.runtime, base + runtime_vaddr);
    assert_eq!(found.image, lib);
}
