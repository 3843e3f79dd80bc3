//! The atexit collector (`pyusage atexit install`) beside the daemon, and `pyusage compare`:
//! a scripted mix of real Python processes, each ending a different way, and the exact
//! classification of each in the comparison.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::util::*;

/// A hook installed into a fresh directory, writing to a spool (no daemon socket).
pub struct Hook {
    pub dir: PathBuf,
    pub spool: PathBuf,
    _t: tempfile::TempDir,
}

impl Hook {
    /// A hook writing to its spool only.
    pub fn install(extra: &[&str]) -> Hook {
        Hook::install_with(|_, spool| {
            let mut a = vec![
                "--out".into(),
                spool.as_os_str().to_owned(),
                "--no-socket".into(),
            ];
            a.extend(extra.iter().map(Into::into));
            a
        })
    }

    /// A hook sending to the daemon's socket `<dir>/preload.sock` only (no spool).
    pub fn install_socket() -> Hook {
        Hook::install_with(|sock, _| vec!["--socket".into(), sock.as_os_str().to_owned()])
    }

    /// `pyusage atexit install --prefix <dir>/hook` with the arguments `args` makes from the
    /// socket's and the spool's paths.
    fn install_with(args: impl FnOnce(&Path, &Path) -> Vec<std::ffi::OsString>) -> Hook {
        let t = shared_tempdir();
        let dir = t.path().join("hook");
        let spool = t.path().join("spool");
        output_ok(
            Command::new(bin())
                .args(["atexit", "install", "--prefix"])
                .arg(&dir)
                .args(args(&t.path().join("preload.sock"), &spool)),
        );
        Hook { dir, spool, _t: t }
    }

    /// The daemon socket an [`Hook::install_socket`] hook sends to.
    pub fn socket(&self) -> PathBuf {
        self._t.path().join("preload.sock")
    }

    /// `python -c code` with the hook on PYTHONPATH.
    pub fn python(&self, exe: impl AsRef<std::ffi::OsStr>, code: &str) -> Command {
        let mut c = python(exe, code);
        c.env("PYTHONPATH", &self.dir);
        c
    }
}

/// `pyusage compare … --format json`.
pub fn compare(kernel: &Path, atexit: &Path, extra: &[&str]) -> Value {
    let out = output_ok(
        Command::new(bin())
            .arg("compare")
            .arg("--ebpf")
            .arg(kernel)
            .arg("--atexit")
            .arg(atexit)
            .args(["--format", "json"])
            .args(extra),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The reason key the comparison gave a kernel-only process, by its pid in the examples.
pub fn reason_of(c: &Value, pid: u32) -> Option<String> {
    let needle = format!(" pid {pid} ");
    c["kernel_only"].as_array().unwrap().iter().find_map(|r| {
        r["examples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains(&needle))
            .then(|| r["key"].as_str().unwrap().to_owned())
    })
}

#[test]
fn compare_classifies_every_process_of_a_scripted_mix() {
    let hook = Hook::install(&[]);
    // The hook records the machine's host name; the daemon must too.
    let host = short_hostname();
    let d = Daemon::start_with(&["--flush-secs", "1", "--host", &host], &[]);
    let py = venv_python();
    let py27 = Path::new("/root/.pyenv/versions/2.7.18/bin/python");
    let mut pids = Vec::new();
    let mut expect = |label: &'static str, pid: u32| pids.push((label, pid));

    let (normal, out) = run(&mut hook.python(&py, "import json, yaml"));
    assert!(out.status.success(), "{out:?}");
    let (old, out) = run(&mut hook.python(py27, "import json"));
    assert!(out.status.success(), "{out:?}");
    let (killed, _) = run(&mut hook.python(
        &py,
        "import json, os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    ));
    expect("signal:SIGKILL", killed);
    // SIGTERM from `timeout`, as a wall-clock wrapper sends it.
    let (wrapper, out) = run(Command::new("timeout")
        .env_clear()
        .env("PYTHONPATH", &hook.dir)
        .args(["-s", "TERM", "1"])
        .arg(&py)
        .args(["-c", "import json, time; time.sleep(30)"]));
    assert_eq!(out.status.code(), Some(124));
    let (os_exit, _) = run(&mut hook.python(&py, "import json, os; os._exit(3)"));
    expect("os_exit:3", os_exit);
    // `python -I` ignores PYTHONPATH: the hook never loads.
    let (isolated, out) = run(Command::new(&py)
        .env_clear()
        .env("PYTHONPATH", &hook.dir)
        .args(["-I", "-c", "import json"]));
    assert!(out.status.success());
    expect("hook_not_loaded", isolated);
    let (crash, _) = run(&mut hook.python(&py, "import json, ctypes; ctypes.string_at(0)"));
    expect("crash:SIGSEGV", crash);
    let (exec, out) =
        run(&mut hook.python(&py, "import json, os; os.execv('/bin/true', ['true'])"));
    assert!(out.status.success());
    expect("exec_or_unknown", exec);
    // multiprocessing workers (fork), importing csv: they leave by os._exit.
    let (mp, out) = run(&mut hook.python(
        &py,
        "import multiprocessing as m, json\n\
         def work(x):\n    import csv\n    return abs(x)\n\
         m.set_start_method('fork')\n\
         with m.Pool(2) as p: print(sorted(p.map(work, [-1, -2, -3], chunksize=1)))",
    ));
    assert!(out.status.success(), "{out:?}");
    // A long-running process, still running when the data is read.
    let mut long = hook
        .python(&py, "import json, time; time.sleep(600)")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    expect("still_running", long.id());
    std::thread::sleep(Duration::from_secs(3));
    let r = d.stop();
    let _ = long.kill();
    let _ = long.wait();
    // The python under `timeout` is the wrapper's child: find it by its record.
    let term = r
        .recs
        .iter()
        .find(|x| x["ppid"].as_u64() == Some(u64::from(wrapper)) && x["package"] == "json")
        .unwrap_or_else(|| panic!("no record of timeout's python\n{}", r.log))["pid"]
        .as_u64()
        .unwrap() as u32;

    let c = compare(&r.data, &hook.spool, &["--examples", "100000"]);
    for (label, pid) in &pids {
        assert_eq!(
            reason_of(&c, *pid).as_deref(),
            Some(*label),
            "pid {pid}: its records {:?}\nkernel-only: {}\nmatched: {}",
            r.recs
                .iter()
                .filter(|x| x["pid"] == *pid)
                .map(|x| (
                    x["package"].as_str(),
                    x["exit"].as_str(),
                    x["first_path"].as_str()
                ))
                .collect::<Vec<_>>(),
            serde_json::to_string(&c["kernel_only"]).unwrap(),
            c["processes"]
        );
    }
    assert_eq!(reason_of(&c, term).as_deref(), Some("signal:SIGTERM"));
    // Both sides saw the processes that exited normally.
    for (what, pid) in [("3.11", normal), ("2.7", old), ("pool", mp)] {
        assert_eq!(
            reason_of(&c, pid),
            None,
            "{what} pid {pid} unmatched; hook wrote: {:?}",
            std::fs::read_dir(&hook.spool)
                .unwrap()
                .map(|e| std::fs::read_to_string(e.unwrap().path())
                    .unwrap()
                    .lines()
                    .filter(|l| l.contains(&format!("\"pid\":{pid},")))
                    .take(1)
                    .collect::<String>())
                .collect::<String>()
        );
    }
    // The pool's workers: every one is a fork child, and nothing else is.
    let workers: Vec<u32> = r
        .recs
        .iter()
        .filter(|x| x["ppid"].as_u64() == Some(u64::from(mp)))
        .map(|x| x["pid"].as_u64().unwrap() as u32)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(!workers.is_empty(), "no pool worker recorded");
    for w in &workers {
        assert_eq!(
            reason_of(&c, *w).as_deref(),
            Some("fork_child"),
            "worker {w}"
        );
    }
    // Exactly these of the test's processes (the ones it started, and the children of
    // `timeout` and of the pool's parent) are on the kernel side only: other tests' processes
    // run beside them, some started by this same test binary.
    let started: Vec<u64> = pids
        .iter()
        .map(|(_, p)| *p)
        .chain([normal, old, mp, wrapper])
        .map(u64::from)
        .collect();
    let parents = [wrapper, mp].map(u64::from);
    let ours = |pid: u64| {
        started.contains(&pid)
            || r.recs
                .iter()
                .any(|x| x["pid"] == pid && parents.contains(&x["ppid"].as_u64().unwrap()))
    };
    let mut got: Vec<u64> = c["kernel_only"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["examples"].as_array().unwrap().iter())
        .map(|e| {
            let e = e.as_str().unwrap();
            e.split(" pid ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .filter(|&pid| ours(pid))
        .collect();
    got.sort();
    let mut want: Vec<u64> = pids
        .iter()
        .map(|(_, p)| u64::from(*p))
        .chain([u64::from(term)])
        .chain(workers.iter().map(|w| u64::from(*w)))
        .collect();
    want.sort();
    assert_eq!(got, want, "{}", c["kernel_only"]);
    let p = &c["processes"];
    assert_eq!(p["matched"].as_u64(), Some(3), "{p}");
    assert_eq!(p["atexit_only"].as_u64(), Some(0), "{}", c["atexit_only"]);
    // Packages: `sys` is built in (no file for the kernel to see); yaml is on both sides.
    let gaps = c["package_gaps"].as_array().unwrap();
    let builtin = gaps
        .iter()
        .find(|g| g["key"] == "atexit_only:built-in module (no file to open)")
        .expect("built-in modules reported");
    let spool: Vec<Value> = std::fs::read_dir(&hook.spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let both = [normal, old, mp].map(u64::from);
    let expected = spool
        .iter()
        .filter(|a| a["first_path"] == "<built-in>" && both.contains(&a["pid"].as_u64().unwrap()))
        .filter(|a| {
            !r.recs
                .iter()
                .any(|k| k["pid"] == a["pid"] && k["package"] == a["package"])
        })
        .count();
    assert!(expected >= 3, "every interpreter has built-in modules");
    assert_eq!(builtin["count"].as_u64(), Some(expected as u64));
    let yaml = c["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["package"] == "yaml")
        .unwrap();
    // (Other tests' processes on the node may import yaml too: the kernel side is node-wide.)
    assert!(yaml["kernel"]["processes"].as_u64() >= Some(1), "{yaml}");
    assert_eq!(yaml["atexit"]["processes"], 1);
    // The paper's ranking on each side: yaml is in both, at some rank.
    let row = c["ranking_users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["package"] == "yaml")
        .unwrap();
    assert!(
        row["kernel_rank"].is_u64() && row["atexit_rank"].is_u64(),
        "{row}"
    );
}

#[test]
fn hook_never_breaks_the_program_and_chains_a_shadowed_sitecustomize() {
    let hook = Hook::install(&["--packages", "json,yaml"]);
    let t = shared_tempdir();
    // The user's own sitecustomize, later on the path: it still runs, once.
    std::fs::write(
        t.path().join("sitecustomize.py"),
        "import os\nos.environ['USER_SITE_RAN'] = os.environ.get('USER_SITE_RAN', '') + 'x'\n",
    )
    .unwrap();
    let path = format!("{}:{}", hook.dir.display(), t.path().display());
    let py = venv_python();
    for exe in [
        py.clone(),
        PathBuf::from("/root/.pyenv/versions/2.7.18/bin/python"),
        PathBuf::from("/root/.pyenv/versions/3.13.0/bin/python"),
    ] {
        let out = output_ok(
            python(&exe, "import os, json, sys; print(os.environ.get('USER_SITE_RAN')); sys.exit(4) if 0 else None")
                .env("PYTHONPATH", &path),
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "x", "{exe:?}");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The exit status and output are the program's own, even when the spool is unusable.
    std::fs::remove_dir_all(&hook.spool).unwrap();
    std::fs::write(&hook.spool, "not a directory").unwrap();
    let out = python(&py, "import json, sys; print('ok'); sys.exit(5)")
        .env("PYTHONPATH", &hook.dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Back to a directory: the fixed list keeps json only (yaml not imported).
    std::fs::remove_file(&hook.spool).unwrap();
    std::fs::create_dir(&hook.spool).unwrap();
    output_ok(&mut hook.python(&py, "import json, csv"));
    let spool: Vec<Value> = std::fs::read_dir(&hook.spool)
        .unwrap()
        .flat_map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let pkgs: Vec<&str> = spool
        .iter()
        .map(|r| r["package"].as_str().unwrap())
        .collect();
    assert_eq!(pkgs, ["json"]);
}

#[test]
fn a_report_past_its_time_budget_is_cut_and_counted() {
    let hook = Hook::install(&["--budget-ms", "0"]);
    let out = output_ok(&mut hook.python(
        venv_python(),
        "import json, csv, email.parser, http.client, decimal, argparse; print('done')",
    ));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    let d = tempfile::tempdir().unwrap();
    let c = compare(d.path(), &hook.spool, &[]);
    assert_eq!(
        c["hook_health"]["budget_exceeded"], 1,
        "{}",
        c["hook_health"]
    );
    // What was listed before the budget ran out is kept: some packages, not all of them.
    let n = c["packages"].as_array().unwrap().len();
    assert!(n > 0 && n < 60, "{n} packages");
}

#[test]
fn an_ordinary_user_can_neither_read_nor_hijack_nor_forge_the_spool() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let hook = Hook::install(&[]);
    let host = short_hostname();
    let day = String::from_utf8(output_ok(Command::new("date").args(["-u", "+%F"])).stdout)
        .unwrap()
        .trim()
        .to_owned();
    let root_file = hook.spool.join(format!("atexit-{host}-0-{day}.jsonl"));
    let nobody_sh = |script: &str| as_nobody("/bin/sh").args(["-c", script]).output().unwrap();
    // nobody plants a link where root's hook will write: the hook does not follow it.
    let victim = shared_tempdir();
    let target = victim.path().join("target");
    std::fs::write(&target, "").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = nobody_sh(&format!(
        "ln -s {} {}",
        target.display(),
        root_file.display()
    ));
    assert!(out.status.success(), "{out:?}");
    output_ok(&mut hook.python(DEBIAN_PYTHON, "import json"));
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "",
        "wrote through the link"
    );
    // nobody replaces the link by a file of its own, world-readable: root's hook refuses it.
    let out = nobody_sh(&format!(
        "rm {f} && touch {f} && chmod 666 {f}",
        f = root_file.display()
    ));
    assert!(out.status.success(), "{out:?}");
    output_ok(&mut hook.python(DEBIAN_PYTHON, "import json"));
    assert_eq!(std::fs::read_to_string(&root_file).unwrap(), "");
    let errors =
        std::fs::read_to_string(hook.spool.join(format!("atexit-{host}-0.errors"))).unwrap();
    assert_eq!(errors.lines().count(), 2, "{errors}");
    // The link: refused by the kernel (protected_symlinks in a sticky directory) or O_NOFOLLOW.
    let (link, owned) = (
        errors.lines().next().unwrap(),
        errors.lines().nth(1).unwrap(),
    );
    assert!(
        ["Permission denied", "Too many levels"]
            .iter()
            .any(|e| link.contains(e)),
        "{link}"
    );
    assert!(owned.contains("not owned by this user"), "{owned}");
    // nobody plants a FIFO there instead: root's program still exits at once (no reader, no
    // wait), and says why in its errors.
    let out = nobody_sh(&format!(
        "rm {f} && mkfifo -m 666 {f}",
        f = root_file.display()
    ));
    assert!(out.status.success(), "{out:?}");
    let started = std::time::Instant::now();
    output_ok(&mut hook.python(DEBIAN_PYTHON, "import json"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the exit hung on a FIFO"
    );
    let errors =
        std::fs::read_to_string(hook.spool.join(format!("atexit-{host}-0.errors"))).unwrap();
    assert!(
        errors
            .lines()
            .nth(2)
            .is_some_and(|l| l.contains("No such device")),
        "{errors}"
    );
    // nobody's own reports: its own file, mode 0600; root's are unreadable to it, and it
    // cannot list the spool.
    std::fs::remove_file(&root_file).unwrap();
    output_ok(&mut hook.python(DEBIAN_PYTHON, "import json"));
    let mut c = as_nobody(DEBIAN_PYTHON);
    c.env_clear()
        .env("PYTHONPATH", &hook.dir)
        .args(["-c", "import json, csv"]);
    output_ok(&mut c);
    let theirs = hook.spool.join(format!("atexit-{host}-65534-{day}.jsonl"));
    let m = std::fs::metadata(&theirs).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (65534, 0o600));
    let out = nobody_sh(&format!("cat {}", root_file.display()));
    assert!(!out.status.success(), "nobody read root's spool");
    let out = nobody_sh(&format!("ls {}", hook.spool.display()));
    assert!(!out.status.success(), "nobody listed the spool");
    // nobody forges a record of root's into its own file: the reader drops it, and counts it.
    let root_line = std::fs::read_to_string(&root_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .replace("\"package\":\"", "\"package\":\"forged");
    let out = nobody_sh(&format!("echo '{root_line}' >> {}", theirs.display()));
    assert!(out.status.success(), "{out:?}");
    let d = tempfile::tempdir().unwrap();
    let c = compare(d.path(), &hook.spool, &[]);
    assert_eq!(
        c["hook_health"]["forged_records"], 1,
        "{}",
        c["hook_health"]
    );
    assert!(c["packages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| !p["package"].as_str().unwrap().starts_with("forged")));
    let users: Vec<u64> = c["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["package"] == "csv")
        .map(|p| p["atexit"]["users"].as_u64().unwrap())
        .collect();
    assert_eq!(users, [1], "nobody's own csv import is kept");
}

/// Old customs data has no pids: its processes are compared by job only, and say so.
#[test]
fn old_customs_data_is_compared_by_job() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    output_ok(
        Command::new(bin())
            .args(["synth", "--rows", "3000", "--seed", "9", "--out"])
            .arg(&data),
    );
    let out = output_ok(
        Command::new(bin())
            .arg("show")
            .arg(&data)
            .args(["--format", "jsonl"]),
    );
    let mut jobs = std::collections::BTreeSet::new();
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        let r: Value = serde_json::from_str(l).unwrap();
        if let Some(j) = r["job_id"].as_str() {
            jobs.insert(j.to_owned());
        }
    }
    let mut lines = String::new();
    for j in jobs
        .iter()
        .take(5)
        .chain(std::iter::once(&"no-such-job".to_owned()))
    {
        lines.push_str(&format!(
            "{{\"package\": \"numpy\", \"timestamp\": 1764000000, \"job_id\": \"{j}\", \
             \"username\": \"old\", \"executable\": \"/usr/bin/python3\"}}\n"
        ));
    }
    let file = d.path().join("customs.jsonl");
    std::fs::write(&file, lines).unwrap();
    let old = d.path().join("old");
    output_ok(
        Command::new(bin())
            .arg("import-customs")
            .arg(&file)
            .arg("--out")
            .arg(&old),
    );
    let c = compare(&data, &old, &[]);
    assert_eq!(c["processes"]["matched"], 0);
    let why = &c["atexit_only"][0];
    assert_eq!(why["key"], "no pid in the atexit data (joined by job only)");
    assert_eq!(why["count"], 6);
    assert_eq!(
        (&c["jobs"]["both"], &c["jobs"]["atexit_only"]),
        (&5.into(), &1.into())
    );
}

/// The hook reporting through the daemon's socket: one dataset holds both sides, the kernel's
/// records marked `atexit` too where the hook named the package, and `compare` reads it as
/// both.
#[test]
fn the_hook_reports_through_the_daemons_socket() {
    let hook = Hook::install_socket();
    let sock = hook.socket();
    let d = Daemon::start_with(&["--preload-socket", sock.to_str().unwrap()], &[]);
    let py = venv_python();
    let with_hook = |code: &str| hook.python(&py, code);
    let (normal, out) = run(&mut with_hook("import json, yaml"));
    assert!(out.status.success(), "{out:?}");
    let (killed, _) = run(&mut with_hook(
        "import json, os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    ));
    // CPython 2.7 reaches the socket the same way (`_socket`, a header packed by hand).
    let (old, out) =
        run(&mut hook.python("/root/.pyenv/versions/2.7.18/bin/python", "import json"));
    assert!(out.status.success(), "{out:?}");
    let r = d.stop();
    let of = |pid: u32, pkg: &str| {
        r.recs
            .iter()
            .find(|x| x["pid"] == pid && x["package"] == pkg)
            .unwrap_or_else(|| panic!("no {pkg} record of {pid}\n{}", r.log))
    };
    assert_eq!(
        of(normal, "yaml")["sources"],
        serde_json::json!(["ebpf", "atexit"])
    );
    assert_eq!(of(normal, "sys")["sources"], serde_json::json!(["atexit"]));
    assert_eq!(of(normal, "sys")["first_path"], "<built-in>");
    assert_eq!(of(killed, "json")["sources"], serde_json::json!(["ebpf"]));
    assert_eq!(
        of(old, "json")["sources"],
        serde_json::json!(["ebpf", "atexit"])
    );
    assert_eq!(
        r.status["preload"]["atexit"].as_u64().map(|n| n >= 1),
        Some(true)
    );
    let c = compare(&r.data, &r.data, &["--examples", "100000"]);
    assert_eq!(reason_of(&c, normal), None);
    // The hook's own `_socket` import at exit, seen by the kernel, is left out by compare.
    let own = c["package_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "kernel_only:imported by the hook itself at exit (left out)")
        .unwrap_or_else(|| panic!("{}", c["package_gaps"]));
    let needle = format!("_socket: testhost pid {normal} ");
    assert!(
        own["examples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with(&needle)),
        "{own}"
    );
    assert_eq!(reason_of(&c, killed).as_deref(), Some("signal:SIGKILL"));
    // The spool was never needed.
    assert!(!hook.spool.exists());
}
