//! Capture core: every package a Python process imports, however it ends.
use std::{ffi::OsStr, os::unix::ffi::OsStrExt, path::PathBuf, process::Command};

use crate::util::*;

#[test]
fn venv_numpy_and_yaml_with_distribution_names_and_versions() {
    let d = Daemon::start();
    let venv = fixtures().join("venv");
    let (pid, out) = run(&mut python(venv_python(), "import numpy, yaml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = d.stop();
    // setuptools' `distutils-precedence.pth` makes `site` import `_distutils_hack` in every venv.
    assert_eq!(r.third_party(pid), vec!["_distutils_hack", "numpy", "yaml"]);
    assert_eq!(r.one(pid, "_distutils_hack")["distribution"], "setuptools");
    let np = r.one(pid, "numpy");
    assert_eq!(np["distribution"], "numpy");
    assert_eq!(np["version"], venv_version("numpy"));
    assert_eq!(np["env_kind"], "venv");
    assert_eq!(
        np["env_prefix"],
        venv.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(np["blas"], "openblas", "numpy wheels bundle OpenBLAS");
    assert!(
        np["n_files"].as_u64().unwrap() > 20,
        "numpy opens many module files: {np}"
    );
    let y = r.one(pid, "yaml");
    assert_eq!(
        (&y["distribution"], &y["version"]),
        (&"PyYAML".into(), &venv_version("PyYAML").into())
    );
    assert_eq!(y["exit"], "exited");
    assert_eq!(y["exit_code"], 0);
    assert_eq!(y["main"], "-c");
    assert_eq!(y["python_version"], "3.11");
    assert_eq!(y["source"], "ebpf");
    assert_eq!(y["host"], "testhost");
    assert_eq!(y["num_nodes"], 1);
    assert_eq!(y["job_id"], serde_json::Value::Null);
    assert_eq!(y["username"], "root");
    assert_eq!(y["in_container"], false);
    assert!(
        y["executable"]
            .as_str()
            .unwrap()
            .ends_with("venv/bin/python"),
        "{y}"
    );
    // Standard library modules are recorded too, as such.
    assert_eq!(r.one(pid, "re")["env_kind"], "stdlib");
    // Every record got a distinct record_id and a seq without gaps.
    let mut seqs: Vec<u64> = r.recs.iter().map(|x| x["seq"].as_u64().unwrap()).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (seqs[0]..seqs[0] + seqs.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(r.status["counters"]["ring_full"], 0);
    // The analysis reads the daemon's own dataset.
    let out = output_ok(
        Command::new(bin())
            .args([
                "analyze", "--period", "all", "--top", "60", "--device", "cpu",
            ])
            .arg(&r.data),
    );
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = &a["periods"]["all"][0];
    let by_process = all["top_packages_by_process"].as_array().unwrap();
    assert!(
        by_process
            .iter()
            .any(|c| c["package"] == "numpy" && c["count"].as_u64() >= Some(1)),
        "{all}"
    );
    assert_eq!(a["rows"].as_u64().unwrap(), r.recs.len() as u64);
    // And the full report: one self-contained HTML file plus JSON and CSV of every table.
    let report = tempfile::tempdir().unwrap();
    let out = output_ok(
        Command::new(bin())
            .arg("analyze")
            .arg(&r.data)
            .args(["--top", "60", "--out"])
            .arg(report.path()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrote 19 files"), "{stderr}");
    let html = std::fs::read_to_string(report.path().join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("numpy"));
    assert!(
        !html.contains("<link") && !html.contains(" src="),
        "self-contained"
    );
    let csv = std::fs::read_to_string(report.path().join("top_packages.csv")).unwrap();
    assert!(csv.starts_with("granularity,period,by,rank,package,count\n"));
    assert!(csv.contains(",numpy,"), "{csv}");
}

#[test]
fn pyenv_shim_and_debian_interpreter() {
    let d = Daemon::start();
    // `python3` on PATH is pyenv's bash shim, which execs the real interpreter.
    let (shim_pid, out) = run(&mut python("python3", "import json"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (deb_pid, out) = run(&mut python(DEBIAN_PYTHON, "import mpi4py, json"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = d.stop();
    let j = r.one(shim_pid, "json");
    let exe = j["executable"].as_str().unwrap();
    assert!(
        exe.contains("/.pyenv/versions/") && !exe.contains("/shims/"),
        "real interpreter, not the shim: {exe}"
    );
    assert_eq!(j["python_version"], "3.11");
    let m = r.one(deb_pid, "mpi4py");
    assert_eq!(m["executable"], DEBIAN_PYTHON);
    assert_eq!(
        (&m["env_kind"], &m["env_prefix"]),
        (&"system".into(), &"/usr".into())
    );
    assert_eq!(m["distribution"], "mpi4py");
    assert!(m["version"].as_str().unwrap().starts_with("3."), "{m}");
    assert_eq!(r.one(deb_pid, "json")["env_prefix"], "/usr");
}

#[test]
fn isolated_mode_and_multiprocessing_child() {
    let d = Daemon::start();
    let (iso, out) = run(Command::new(venv_python())
        .env_clear()
        .args(["-I", "-c", "import yaml"]));
    assert!(out.status.success());
    let code = "import multiprocessing as mp, os\n\
                def child():\n    import yaml\n    print(os.getpid(), flush=True)\n\
                p = mp.get_context('fork').Process(target=child); p.start(); p.join()\n";
    let (parent, out) = run(&mut python(venv_python(), code));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let r = d.stop();
    assert_eq!(r.third_party(iso), vec!["_distutils_hack", "yaml"]);
    assert_eq!(r.one(iso, "yaml")["main"], "-c");
    // The child imported yaml; the parent never did.
    assert_eq!(r.third_party(child), vec!["yaml"]);
    let y = r.one(child, "yaml");
    assert_eq!(
        (&y["ppid"], &y["root_pid"]),
        (&parent.into(), &parent.into())
    );
    assert_eq!(y["exit"], "exited");
    assert!(!r.third_party(parent).contains(&"yaml".to_string()));
    assert!(r
        .of(parent)
        .iter()
        .any(|x| x["package"] == "multiprocessing"));
}

#[test]
fn sigkill_timeout_and_os_exit_are_recorded_with_their_packages() {
    let d = Daemon::start();
    let (killed, _) = run(&mut python(
        venv_python(),
        "import numpy, os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    ));
    let (t_pid, out) = run(Command::new("timeout")
        .args(["-s", "TERM", "2"])
        .arg(venv_python())
        .args([
            "-c",
            "import yaml, time; print('go', flush=True); time.sleep(60)",
        ]));
    assert_eq!(out.status.code(), Some(124), "timeout fired");
    let (exit3, out) = run(&mut python(venv_python(), "import yaml, os; os._exit(3)"));
    assert_eq!(out.status.code(), Some(3));
    let (segv, _) = run(&mut python(
        venv_python(),
        "import yaml, ctypes; ctypes.string_at(0)",
    ));
    let r = d.stop();
    let np = r.one(killed, "numpy");
    assert_eq!(
        (&np["exit"], &np["exit_signal"], &np["exit_code"]),
        (
            &"signaled".into(),
            &"SIGKILL".into(),
            &serde_json::Value::Null
        )
    );
    assert!(np["process_end"].is_string());
    let under_timeout: Vec<_> = r
        .recs
        .iter()
        .filter(|x| x["ppid"] == t_pid && x["package"] == "yaml")
        .collect();
    assert_eq!(under_timeout.len(), 1, "python under timeout");
    assert_eq!(under_timeout[0]["exit_signal"], "SIGTERM");
    let y = r.one(exit3, "yaml");
    assert_eq!((&y["exit"], &y["exit_code"]), (&"exited".into(), &3.into()));
    let s = r.one(segv, "yaml");
    assert_eq!(
        (&s["exit"], &s["exit_signal"]),
        (&"signaled".into(), &"SIGSEGV".into())
    );
    assert!(r.of(segv).iter().any(|x| x["package"] == "ctypes"));
}

#[test]
fn job_attribution_is_captured_at_exec() {
    let d = Daemon::start();
    // A very short process (no site, one stdlib import).
    let (short, out) = run(Command::new(DEBIAN_PYTHON)
        .env_clear()
        .envs([
            ("SLURM_JOB_ID", "4242"),
            ("SLURM_PROCID", "1"),
            ("SLURM_JOB_NUM_NODES", "8"),
            ("SLURM_JOB_PARTITION", "debug"),
        ])
        .args(["-S", "-c", "import json"]));
    assert!(out.status.success());
    // A process that clears its environment before importing.
    let (cleared, out) = run(python(
        venv_python(),
        "import os\nfor k in list(os.environ): del os.environ[k]\nimport yaml",
    )
    .envs([
        ("SLURM_JOB_ID", "77"),
        ("SLURM_STEP_ID", "0"),
        ("SLURM_JOB_QOS", "normal"),
        ("SLURM_JOB_ACCOUNT", "m1234"),
    ]));
    assert!(out.status.success());
    // mpirun inside a batch step: every rank has SLURM_PROCID=0; the launcher's rank wins.
    let (ranked, out) = run(python(venv_python(), "import yaml").envs([
        ("SLURM_JOB_ID", "9"),
        ("SLURM_PROCID", "0"),
        ("OMPI_COMM_WORLD_RANK", "3"),
    ]));
    assert!(out.status.success());
    let r = d.stop();
    let j = r.one(short, "json");
    assert_eq!(
        (&j["job_id"], &j["rank"], &j["num_nodes"], &j["partition"]),
        (&"4242".into(), &1.into(), &8.into(), &"debug".into())
    );
    let c = r.one(cleared, "yaml");
    assert_eq!(
        (&c["job_id"], &c["step_id"], &c["qos"], &c["account"]),
        (&"77".into(), &"0".into(), &"normal".into(), &"m1234".into())
    );
    assert_eq!(r.one(ranked, "yaml")["rank"], 3);
}

#[test]
fn odd_paths_long_paths_non_utf8_and_spaces() {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    // A venv under a path with spaces and non-ASCII letters.
    let spaced = fixtures().join("vénv with spaces");
    let (sp_pid, out) = run(&mut python(spaced.join("bin/python"), "import yaml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A non-UTF-8 directory on PYTHONPATH.
    let mut raw = tmp.path().as_os_str().as_bytes().to_vec();
    raw.extend_from_slice(b"/caf\xe9-lib");
    let weird = PathBuf::from(OsStr::from_bytes(&raw));
    std::fs::create_dir_all(&weird).unwrap();
    std::fs::write(weird.join("weirdmod.py"), "X = 1\n").unwrap();
    // A module path of ~3 KiB: 28 nested packages with 100-character names.
    let deep_root = tmp.path().join("deep_pp");
    let mut dir = deep_root.join("deeppkg");
    let mut dotted = String::from("deeppkg");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("__init__.py"), "").unwrap();
    for i in 0..28 {
        let name = format!("d{i:02}{}", "x".repeat(97));
        dir = dir.join(&name);
        dotted.push('.');
        dotted.push_str(&name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("__init__.py"), "").unwrap();
    }
    let deepest = dir.join("__init__.py");
    assert!(
        deepest.as_os_str().len() > 2850,
        "{}",
        deepest.as_os_str().len()
    );
    let mut pp = raw.clone();
    pp.push(b':');
    pp.extend_from_slice(deep_root.as_os_str().as_bytes());
    let (pp_pid, out) = run(python(venv_python(), &format!("import weirdmod, {dotted}"))
        .env("PYTHONPATH", OsStr::from_bytes(&pp)));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = d.stop();
    let y = r.one(sp_pid, "yaml");
    assert_eq!(y["env_kind"], "venv");
    assert_eq!(y["env_prefix"], spaced.to_str().unwrap());
    assert_eq!(y["distribution"], "PyYAML");
    let w = r.one(pp_pid, "weirdmod");
    assert_eq!(w["env_kind"], "pythonpath");
    assert_eq!(w["env_prefix"], String::from_utf8_lossy(&raw).as_ref());
    let deep = r.one(pp_pid, "deeppkg");
    assert_eq!(deep["env_kind"], "pythonpath");
    assert_eq!(
        deep["n_files"], 29,
        "every level's __init__.py, the deepest ~3 KiB long: {deep}"
    );
    assert_eq!(r.status["counters"]["read_failed"], 0);
}

#[test]
fn non_python_processes_are_not_recorded() {
    let d = Daemon::start();
    let module = fixtures().join("venv/lib/python3.11/site-packages/yaml/__init__.py");
    let (cat, out) = run(Command::new("cat").arg(&module));
    assert!(out.status.success());
    let r = d.stop();
    assert!(
        r.of(cat).is_empty(),
        "cat produced records: {:?}",
        r.of(cat)
    );
    assert!(r
        .recs
        .iter()
        .all(|x| x["first_path"] != module.to_str().unwrap() || x["executable"] != "cat"));
}

#[test]
fn embedded_interpreter_found_through_libpython() {
    // pyenv's CPython links libpython dynamically: under a name that is not `python*` it is
    // only recognisable by mapping libpython.
    let d = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let real = std::fs::canonicalize(fixtures().join("venv/bin/python")).unwrap();
    let ldd = Command::new("ldd").arg(&real).output().unwrap();
    assert!(
        String::from_utf8_lossy(&ldd.stdout).contains("libpython"),
        "fixture interpreter must be linked against libpython: {}",
        real.display()
    );
    let alias = tmp.path().join("embedded-app");
    std::os::unix::fs::symlink(&real, &alias).unwrap();
    let (pid, out) = run(&mut python(&alias, "import json"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = d.stop();
    let j = r.one(pid, "json");
    assert_eq!(j["env_kind"], "stdlib");
    // Named as executed, like `sys.executable`: the alias, not the file it points to.
    assert_eq!(j["executable"], alias.to_str().unwrap());
}

#[test]
fn long_running_process_is_flushed_while_running_then_finalised() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let d = Daemon::start_with(
        &["--flush-secs", "1"],
        &[("NOTIFY_SOCKET", sock_path.as_os_str())],
    );
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("sd_notify message");
    assert_eq!(&buf[..n], b"READY=1\n");
    let mut child = python(venv_python(), "import yaml, time; time.sleep(4)")
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait for a `running` snapshot to reach the spool while the process lives.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let spool = d.data().join("spool");
    loop {
        let text: String = std::fs::read_dir(&spool)
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        if text.lines().any(|l| {
            l.contains(&format!("\"pid\":{pid},"))
                && l.contains("\"exit\":\"running\"")
                && l.contains("\"package\":\"yaml\"")
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no running snapshot for {pid}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "snapshot taken while the process still runs"
    );
    assert!(child.wait().unwrap().success());
    let r = d.stop();
    // `show` de-duplicates by key: the final record replaces the snapshots.
    let ys: Vec<_> = r
        .of(pid)
        .into_iter()
        .filter(|x| x["package"] == "yaml")
        .collect();
    assert_eq!(ys.len(), 1);
    assert_eq!(
        (&ys[0]["exit"], &ys[0]["exit_code"]),
        (&"exited".into(), &0.into())
    );
}

#[test]
fn process_in_another_mount_namespace_is_in_container() {
    let d = Daemon::start();
    let (unshare, out) = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(venv_python())
        .args(["-c", "import yaml"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = d.stop();
    // unshare execs python in place: same pid, new mount namespace.
    let y = r.one(unshare, "yaml");
    assert_eq!(y["in_container"], true);
    // Resolved through /proc/<pid>/root: still the venv, with its distribution.
    assert_eq!(
        (&y["env_kind"], &y["distribution"]),
        (&"venv".into(), &"PyYAML".into())
    );
    assert_eq!(r.one(unshare, "re")["in_container"], true);
}
