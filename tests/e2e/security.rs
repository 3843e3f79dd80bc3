//! Privileges and data protection.
use std::os::unix::fs::PermissionsExt;

use crate::util::*;

/// CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19).
const KEPT: u64 = (1 << 2) | (1 << 19);

fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("{name} missing"))
        .trim()
        .to_owned()
}

#[test]
fn daemon_drops_capabilities_after_attaching_and_protects_its_data() {
    let d = Daemon::start();
    let pid = d.pid();
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let st = std::fs::read_to_string(t.path().join("status")).unwrap();
        let name = field(&st, "Name:");
        for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let v = u64::from_str_radix(&field(&st, set), 16).unwrap();
            assert_eq!(v, KEPT, "thread {name}: {set} {v:#x}");
        }
        assert_eq!(u64::from_str_radix(&field(&st, "CapInh:"), 16).unwrap(), 0);
        assert_eq!(field(&st, "NoNewPrivs:"), "1", "thread {name}");
        threads += 1;
    }
    assert!(threads >= 2, "main and processor threads checked");
    let (_, out) = run(&mut python(venv_python(), "import yaml"));
    assert!(out.status.success());
    let data = d.data();
    let r = d.stop();
    assert!(!r.recs.is_empty());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o750);
    assert_eq!(mode(&data.join("spool")), 0o750);
    let parquet: Vec<_> = walk(&data.join("parquet"));
    assert!(!parquet.is_empty());
    for p in parquet {
        let want = if p.is_dir() { 0o750 } else { 0o640 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
    assert_eq!(mode(&data.join("status.json")), 0o640);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        // Not into symbolic links (some tests plant links to root's files).
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// Runs `code` with Debian's Python as `nobody`, with `sys.path[0] = site` and `env`.
fn python_as_nobody(site: &std::path::Path, code: &str, env: &[(&str, &str)]) -> u32 {
    python_as_nobody_in(&["--clear-groups"], site, code, env)
}

/// [`python_as_nobody`] with `setpriv`'s group options `groups` (`--groups 4243`).
fn python_as_nobody_in(
    groups: &[&str],
    site: &std::path::Path,
    code: &str,
    env: &[(&str, &str)],
) -> u32 {
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid", "nobody", "--regid", "nogroup"])
        .args(groups)
        .args(["--", DEBIAN_PYTHON]);
    c.args([
        "-I",
        "-B",
        "-c",
        &format!(
            "import sys; sys.path.insert(0, {:?}); {code}",
            site.to_str().unwrap()
        ),
    ])
    .env_clear();
    for (k, v) in env {
        c.env(k, v);
    }
    let (pid, out) = run(&mut c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pid
}

/// An ordinary user's environment with a FIFO for `METADATA`, a `RECORD` linking to
/// `/dev/zero`, a `*.dist-info` linking into root's private environment, a `METADATA`
/// linking to `/etc/shadow`, and terminal escapes and a spreadsheet formula in its version,
/// job id and account: the daemon neither blocks, nor reads through the links, nor lets the
/// escapes reach an administrator's terminal or the formula a spreadsheet; another user's
/// records keep coming.
#[test]
fn an_ordinary_users_hostile_metadata_neither_stalls_nor_leaks_nor_injects() {
    use std::os::unix::fs::{lchown, symlink};
    let t = shared_tempdir();
    // Root's private environment.
    let private = t.path().join("private");
    let secret = private.join("lib/python3.11/site-packages/leak-6.6.dist-info");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("METADATA"), "Name: secret-dist\nVersion: 6.6\n").unwrap();
    std::fs::write(secret.join("RECORD"), "leak/__init__.py,,\n").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The user's.
    let env = t.path().join("u");
    let site = env.join("lib/python3.11/site-packages");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(env.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
    for p in ["stall", "leak", "shadow", "esc"] {
        std::fs::create_dir_all(site.join(p)).unwrap();
        std::fs::write(site.join(p).join("__init__.py"), "").unwrap();
    }
    let stall = site.join("stall-1.0.dist-info");
    std::fs::create_dir_all(&stall).unwrap();
    mkfifo(&stall.join("METADATA"), 0o644);
    symlink("/dev/zero", stall.join("RECORD")).unwrap();
    symlink(&secret, site.join("leak-6.6.dist-info")).unwrap();
    let shadow = site.join("shadow-1.0.dist-info");
    std::fs::create_dir_all(&shadow).unwrap();
    symlink("/etc/shadow", shadow.join("METADATA")).unwrap();
    let esc = site.join("esc-1.0.dist-info");
    std::fs::create_dir_all(&esc).unwrap();
    std::fs::write(
        esc.join("METADATA"),
        "Name: esc\nVersion: 1.0\u{1b}]0;pwned\u{7}\u{1b}[2J\n",
    )
    .unwrap();
    std::fs::write(esc.join("RECORD"), "esc/__init__.py,,\n").unwrap();
    // Never through the links (they point at root's files).
    for e in walk(&env).into_iter().chain([env.clone()]) {
        lchown(&e, Some(65534), Some(65534)).unwrap();
    }

    let d = Daemon::start();
    let started = std::time::Instant::now();
    let pid = python_as_nobody(
        &site,
        "import stall, leak, shadow, esc",
        &[
            ("SLURM_JOB_ID", "\u{1b}]0;job\u{7}"),
            ("SLURM_JOB_ACCOUNT", "=HYPERLINK(\"http://x\")"),
        ],
    );
    let (root_pid, out) = run(&mut python(venv_python(), "import yaml"));
    assert!(out.status.success());
    let data = d.data();
    let r = d.stop();
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    r.one(root_pid, "yaml");
    let stall = r.one(pid, "stall");
    assert_eq!(
        (&stall["distribution"], &stall["version"]),
        (&"stall".into(), &"1.0".into()),
        "from the directory name only"
    );
    let leak = r.one(pid, "leak");
    assert!(
        leak["distribution"].is_null() && leak["version"].is_null(),
        "read through the link into a private environment: {leak}"
    );
    assert_eq!(r.one(pid, "shadow")["distribution"], "shadow");
    let m = &r.status["metadata"];
    assert!(m["symlink"].as_u64().unwrap() >= 3, "{m}");
    assert!(m["not_regular"].as_u64().unwrap() >= 1, "{m}");
    assert_eq!(
        r.one(pid, "esc")["version"],
        "1.0\u{1b}]0;pwned\u{7}\u{1b}[2J",
        "kept exactly in the data"
    );

    let show = |fmt: &str| {
        let out = std::process::Command::new(bin())
            .args(["show", "--format", fmt])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    for fmt in ["table", "csv"] {
        let o = show(fmt);
        assert!(
            !o.iter().any(|&b| b == 0x1b || b == 0x07 || b == 0x9b),
            "{fmt}: a control character reached the terminal"
        );
    }
    let csv = String::from_utf8(show("csv")).unwrap();
    assert!(csv.contains("\"'=HYPERLINK(\"\"http://x\"\")\""), "{csv}");
    assert!(csv.contains("\\u{1b}]0;job\\u{7}"), "{csv}");
}

/// Metadata its user may read only through a supplementary group (a `dist-info` of
/// `root:4243`, `0750`/`0640`; the package itself world-readable): used for a process of that
/// user in that group, and not for the same user without the group. The groups are the
/// kernel's at the exec: a member that has exited before the daemon handles its exec (the
/// daemon stopped meanwhile, its events waiting in the ring) still reads through its group.
#[test]
fn metadata_readable_through_a_supplementary_group_is_used_for_that_group_only() {
    use std::os::unix::fs::chown;
    let t = shared_tempdir();
    let env = t.path().join("g");
    let site = env.join("lib/python3.11/site-packages");
    std::fs::create_dir_all(site.join("grouped")).unwrap();
    std::fs::write(site.join("grouped/__init__.py"), "").unwrap();
    std::fs::write(env.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
    let info = site.join("grouped-2.5.dist-info");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::write(
        info.join("METADATA"),
        "Name: grouped-dist\nVersion: 2.5.1\n",
    )
    .unwrap();
    std::fs::write(info.join("RECORD"), "grouped/__init__.py,,\n").unwrap();
    for (f, mode) in [
        (info.join("METADATA"), 0o640),
        (info.join("RECORD"), 0o640),
        (info.clone(), 0o750),
    ] {
        chown(&f, Some(0), Some(4243)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let d = Daemon::start();
    let import = |groups: &[&str]| python_as_nobody_in(groups, &site, "import grouped", &[]);
    let member = import(&["--groups", "4243"]);
    d.signal("-STOP");
    let gone = import(&["--groups", "100,4243"]);
    d.signal("-CONT");
    let outsider = import(&["--clear-groups"]);
    let r = d.stop();
    for pid in [member, gone] {
        let m = r.one(pid, "grouped");
        assert_eq!(
            (&m["distribution"], &m["version"]),
            (&"grouped-dist".into(), &"2.5.1".into()),
            "read through the process's group: {m}"
        );
    }
    let o = r.one(outsider, "grouped");
    assert_ne!(
        o["version"], "2.5.1",
        "its user cannot read that metadata: {o}"
    );
    assert!(r.status["metadata"]["not_permitted"].as_u64().unwrap() >= 1);
}

/// A user's FUSE mount that answers that user only (tests/e2e/hung_fuse.py): the resolver's
/// read of its metadata hangs forever, and yet that user's record and another user's are
/// produced while it hangs, the missed deadline is counted, and the daemon stops cleanly.
#[test]
fn a_hung_fuse_mount_does_not_stall_anyone_elses_records() {
    use std::io::BufRead;
    let t = shared_tempdir();
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/hung_fuse.py");
    let mut server = std::process::Command::new(DEBIAN_PYTHON)
        .arg(&script)
        .arg(&mnt)
        .arg("65534")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the FUSE server did not mount");
    let stop_server = |server: &mut std::process::Child| {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
        server.wait().unwrap();
    };

    let d = Daemon::start();
    let site = mnt.join("lib/python3.11/site-packages");
    let pid = python_as_nobody(&site, "import hung", &[]);
    let (root_pid, out) = run(&mut python(venv_python(), "import yaml"));
    assert!(out.status.success());
    // The resolver is stuck on the mount from here on; records must still come.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = (false, false);
    while std::time::Instant::now() < deadline && seen != (true, true) {
        std::thread::sleep(std::time::Duration::from_millis(300));
        for l in show_lines(&d.data()) {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            if v["pid"] == pid && v["package"] == "hung" {
                seen.0 = true;
            }
            if v["pid"] == root_pid && v["package"] == "yaml" {
                seen.1 = true;
            }
        }
    }
    let status = d.status();
    stop_server(&mut server);
    assert_eq!(
        seen,
        (true, true),
        "records stalled behind a hung mount; status {status}"
    );
    let r = d.stop();
    assert!(
        r.status["metadata"]["deadline_missed"].as_u64().unwrap() >= 1,
        "{}",
        r.status["metadata"]
    );
    assert!(r.one(pid, "hung")["version"].is_null());
}

/// One user floods every kernel-side resource at once: hundreds of threads blocked in `open()`
/// on a FIFO (the map of opens in flight) and more idle processes than the process map holds
/// (probation entries); a second one loops opening a bytecode file (the ring buffer). A third
/// user's Python processes started meanwhile are all recorded, and each refusal is counted by
/// cause. The daemon runs with small maps (`--kernel-procs 1024 --kernel-ring-mib 1`: 256 opens
/// in flight, 64 probation entries and 32 opens per uid, 128 KiB per uid and drain once the
/// ring is half full) so that the floods overflow them quickly.
#[test]
fn one_users_floods_do_not_blind_the_kernel_side_for_another() {
    let t = shared_tempdir();
    let fifo = t.path().join("fifo");
    mkfifo(&fifo, 0o666);
    let pyc = t.path().join("__pycache__/m.cpython-311.pyc");
    std::fs::create_dir_all(pyc.parent().unwrap()).unwrap();
    std::fs::write(&pyc, b"x").unwrap();

    let d = Daemon::start_with(&["--kernel-procs", "1024", "--kernel-ring-mib", "1"], &[]);
    let spawn = |uid: &str, code: String| {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid",
            uid,
            "--regid",
            uid,
            "--clear-groups",
            "--",
            DEBIAN_PYTHON,
        ])
        .args(["-I", "-c", &code])
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        c.spawn().unwrap()
    };
    let blocked = format!(
        "import threading, time\n\
         def f():\n    open({:?}).close()\n\
         for _ in range(400): threading.Thread(target=f, daemon=True).start()\n\
         time.sleep(120)",
        fifo.to_str().unwrap()
    );
    let looping = format!(
        "import time\nend = time.time() + 120\n\
         while time.time() < end: open({:?}, 'rb').close()",
        pyc.to_str().unwrap()
    );
    let mut floods = vec![spawn("65534", blocked), spawn("4242", looping)];
    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = as_nobody("sh")
        .args([
            "-c",
            "for i in $(seq 1200); do sleep 120 >/dev/null 2>&1 & done; echo started",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "started");

    let mut victims = Vec::new();
    for _ in 0..10 {
        let (pid, out) = run(&mut python(venv_python(), "import yaml"));
        assert!(out.status.success());
        victims.push(pid);
    }
    for f in &mut floods {
        let _ = f.kill();
        let _ = f.wait();
    }
    let _ = std::process::Command::new("pkill")
        .args(["-KILL", "-u", "65534", "-x", "sleep"])
        .status();
    let r = d.stop();
    for pid in victims {
        r.one(pid, "yaml");
    }
    let c = &r.status["counters"];
    eprintln!("counters: {c}");
    assert!(c["probation_quota"].as_u64().unwrap() >= 1000, "{c}");
    assert!(c["stash_quota"].as_u64().unwrap() >= 300, "{c}");
    assert!(c["ring_share"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(c["procs_full"], 0, "{c}");
    assert_eq!(c["stash_full"], 0, "{c}");
}

/// `pyusage doctor` passes on this node (listing each program the verifier accepted, and the
/// CPU sampler attaching and reading a real interpreter's stack — Debian's, then an
/// unsupported 3.7 said so) and fails, saying what is missing, without tracefs.
#[test]
fn doctor_checks_the_node_and_says_what_is_missing() {
    let out = std::process::Command::new(bin())
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for p in [
        "sched_process_exec",
        "sys_exit_openat",
        "sched_process_fork",
        "cpu_sample",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with("ok    verifier ")
                && l.contains(p)
                && l.contains("instructions verified")),
            "{text}"
        );
    }
    assert!(
        text.contains("ok    CPU sampler: attaches to the software CPU clock"),
        "{text}"
    );
    let doctor_with = |python: &str| {
        let out = std::process::Command::new(bin())
            .arg("doctor")
            .env("PYUSAGE_DOCTOR_PYTHON", python)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = doctor_with(DEBIAN_PYTHON);
    assert!(
        text.contains("ok    CPU sampler: reads the stacks of `/usr/bin/python3.11` (CPython 3.11"),
        "{text}"
    );
    let old = format!(
        "{}/.pyenv/versions/3.7.16/bin/python3.7",
        std::env::var("HOME").unwrap()
    );
    let text = doctor_with(&old);
    assert!(
        text.lines()
            .any(|l| l.starts_with("warn  CPU sampler:") && l.contains("before 3.8")),
        "{text}"
    );
    let out = std::process::Command::new(bin())
        .args(["doctor", "--tracefs", "/nonexistent"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  tracefs: /nonexistent/events/syscalls missing"),
        "{text}"
    );
}

/// `[privacy]`: user names and uids pseudonymised with the site key, paths under a configured
/// prefix redacted, a dropped field null, in the spool and in Parquet alike.
#[test]
fn privacy_switches_apply_to_every_record() {
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("site.key");
    std::fs::write(&key, [42u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let script = t.path().join("secret_project.py");
    std::fs::write(&script, "import yaml\n").unwrap();
    let cfg = t.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[privacy]\nusername_key_file = {:?}\nredact_prefixes = [{:?}]\ndrop_fields = [\"account\"]\n",
            key.to_str().unwrap(),
            t.path().to_str().unwrap()
        ),
    )
    .unwrap();
    let d = Daemon::start_with(&["--config", cfg.to_str().unwrap()], &[]);
    let mut c = std::process::Command::new(venv_python());
    c.arg(&script)
        .env("SLURM_JOB_ID", "77")
        .env("SLURM_JOB_ACCOUNT", "m1234");
    let (pid, out) = run(&mut c);
    assert!(out.status.success());
    let r = d.stop();
    let y = r.one(pid, "yaml");
    let name = y["username"].as_str().unwrap();
    assert!(name.starts_with("u-") && name != "u-root", "{y}");
    assert_ne!(y["uid"], 0, "{y}");
    assert_eq!(y["main"], format!("{}/…", t.path().display()), "{y}");
    assert!(y["account"].is_null(), "{y}");
    assert_eq!(y["job_id"], "77");
    let bad = t.path().join("bad.toml");
    std::fs::write(&bad, "[privacy]\ndrop_fields = [\"uid\"]\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["daemon", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"uid\" is not an optional field"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With `--user pyusage` (the shipped configuration) the daemon, once attached, is that user in
/// every thread, with no groups and only the two capabilities reading needs; it owns its
/// data and still reads metadata from root's private environment for root's processes.
#[test]
fn the_daemon_becomes_its_own_user_keeping_two_capabilities() {
    let id = |flag: &str| -> u32 {
        let out = std::process::Command::new("id")
            .args([flag, "pyusage"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "user pyusage missing (scripts/install-deps.sh)"
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let t = tempfile::tempdir().unwrap();
    // The ready file is written as that user, next to the data directory.
    let run_dir = t.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::os::unix::fs::lchown(&run_dir, Some(uid), Some(gid)).unwrap();
    let d = Daemon::start_at(&run_dir.join("data"), &["--user", "pyusage"], &[]);
    let pid = d.pid();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let st = std::fs::read_to_string(t.path().join("status")).unwrap();
        let name = field(&st, "Name:");
        let ids = |f: &str| -> Vec<u32> {
            field(&st, f)
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect()
        };
        assert_eq!(ids("Uid:"), vec![uid; 4], "thread {name}");
        assert_eq!(ids("Gid:"), vec![gid; 4], "thread {name}");
        assert_eq!(field(&st, "Groups:"), "", "thread {name}");
        for set in ["CapEff:", "CapPrm:"] {
            assert_eq!(
                u64::from_str_radix(&field(&st, set), 16).unwrap(),
                KEPT,
                "{name} {set}"
            );
        }
    }
    let (ppid, out) = run(&mut python(venv_python(), "import yaml"));
    assert!(out.status.success());
    let data = d.data();
    let r = d.stop();
    let y = r.one(ppid, "yaml");
    assert_eq!(y["distribution"], "PyYAML", "{y}");
    assert_eq!(y["version"], venv_version("PyYAML"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), uid);
    assert_eq!(
        std::fs::metadata(data.join("status.json")).unwrap().uid(),
        uid
    );
}

/// A link planted where the ready file goes (a shared directory) is replaced by the file,
/// never written through.
#[test]
fn a_link_planted_at_the_ready_file_is_replaced_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let victim = t.path().join("victim");
    let ready = t.path().join("ready");
    std::os::unix::fs::symlink(&victim, &ready).unwrap();
    // The old predictable temporary name, planted too.
    std::os::unix::fs::symlink(&victim, t.path().join("ready.tmp")).unwrap();
    let mut child = daemon_with_ready_file(&[], t.path(), &ready, || {
        std::fs::symlink_metadata(&ready).unwrap().is_file()
    });
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    assert!(!victim.exists(), "written through a planted link");
    assert_eq!(
        std::fs::read_to_string(&ready).unwrap().trim(),
        child.id().to_string()
    );
}

/// A thread rewrites the path buffer while another thread's `open()` blocks (on a FIFO named
/// like bytecode): the event's path, read from memory at exit, now names a module the process
/// never opened. What is recorded is the file the kernel opened, from the descriptor.
#[test]
fn a_path_rewritten_during_a_blocking_open_is_not_recorded() {
    let t = shared_tempdir();
    let dir = t.path().join("real/__pycache__");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("m.cpython-311.pyc");
    mkfifo(&fifo, 0o666);
    let forged = "/usr/lib/python3/dist-packages/forgedpkg/__pycache__/__init__.cpython-311.pyc";
    let d = Daemon::start();
    let code = format!(
        "import ctypes, os, threading, time\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         buf = ctypes.create_string_buffer({real:?}.encode(), 4096)\n\
         def opener():\n    fd = libc.open(buf, os.O_RDONLY)\n    os.close(fd)\n\
         t = threading.Thread(target=opener); t.start(); time.sleep(0.5)\n\
         ctypes.memmove(buf, {forged:?}.encode() + b'\\0', {n})\n\
         w = os.open({real:?}, os.O_WRONLY); t.join(); os.close(w)",
        real = fifo.to_str().unwrap(),
        n = forged.len() + 1,
    );
    let mut c = as_nobody(DEBIAN_PYTHON);
    c.args(["-I", "-c", &code]).env_clear();
    let (pid, out) = run(&mut c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = d.stop();
    let forged_recs: Vec<_> = r
        .of(pid)
        .into_iter()
        .filter(|x| {
            x["package"] == "forgedpkg" || x["first_path"].as_str().unwrap().contains("forgedpkg")
        })
        .collect();
    assert!(forged_recs.is_empty(), "{forged_recs:?}");
    assert!(
        r.status["fidelity"]["opened_elsewhere"].as_u64().unwrap() >= 1,
        "{}",
        r.status["fidelity"]
    );
}

/// The shipped unit bounds the daemon's memory and tasks and protects kernel tunables.
#[test]
fn the_systemd_unit_bounds_the_daemon() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/pyusage.service"),
    )
    .unwrap();
    for d in [
        "MemoryMax=",
        "TasksMax=",
        "ProtectKernelTunables=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(d)), "{d} missing");
    }
}

/// A daemon in a mount namespace of its own (a service manager's `PrivateTmp=`) does not
/// mark the host's processes `in_container`: it compares with PID 1's namespace.
#[test]
fn a_daemon_in_its_own_mount_namespace_still_knows_the_hosts() {
    let t = tempfile::tempdir().unwrap();
    let ready = t.path().join("ready");
    let mut child = daemon_with_ready_file(
        &["unshare", "-m", "--propagation", "private", "--"],
        t.path(),
        &ready,
        || ready.exists(),
    );
    let (pid, out) = run(&mut python(venv_python(), "import yaml"));
    assert!(out.status.success());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: a signal to our own child (unshare execs the daemon in place).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let recs: Vec<serde_json::Value> = show_lines(&t.path().join("data"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["pid"] == pid && r["package"] == "yaml")
        .collect();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["in_container"], false, "{}", recs[0]);
    assert_eq!(recs[0]["env_kind"], "venv");
}

/// `pyusage daemon --data-dir DIR/data --ready-file READY`, behind the `wrapper` command if
/// any, until `ready()` holds.
fn daemon_with_ready_file(
    wrapper: &[&str],
    dir: &std::path::Path,
    ready: &std::path::Path,
    is_ready: impl Fn() -> bool,
) -> std::process::Child {
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = std::process::Command::new(w);
            c.args(rest).arg(bin());
            c
        }
        None => std::process::Command::new(bin()),
    };
    let mut child = cmd
        .args(["daemon", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--ready-file")
        .arg(ready)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !is_ready() {
        assert!(std::time::Instant::now() < deadline, "never ready");
        assert!(child.try_wait().unwrap().is_none(), "daemon exited");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

/// A module deeper than the kernel's path walk (16 levels) is still recorded: its path as
/// passed ends with the levels the kernel read.
#[test]
fn a_module_deeper_than_the_kernel_walk_is_recorded() {
    let t = tempfile::tempdir().unwrap();
    let mut deep = t.path().to_path_buf();
    for i in 0..20 {
        deep.push(format!("level{i}"));
    }
    std::fs::create_dir_all(deep.join("deeppkg")).unwrap();
    std::fs::write(deep.join("deeppkg/__init__.py"), "").unwrap();
    let d = Daemon::start();
    let (pid, out) = run(&mut python(
        venv_python(),
        &format!(
            "import sys; sys.path.insert(0, {:?}); import deeppkg",
            deep.to_str().unwrap()
        ),
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = d.stop();
    let rec = r.one(pid, "deeppkg");
    assert!(
        rec["first_path"]
            .as_str()
            .unwrap()
            .starts_with(deep.to_str().unwrap()),
        "{rec}"
    );
    assert_eq!(
        r.status["fidelity"]["opened_unverified"], 0,
        "{}",
        r.status["fidelity"]
    );
}
