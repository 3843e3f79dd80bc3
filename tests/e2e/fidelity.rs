//! Fidelity: every interpreter however it is started, every import wherever the module lives,
//! and nothing that is not an import — checked against real interpreters, and against an
//! in-process oracle (`oracle/sitecustomize.py`, which dumps `sys.modules` at exit).
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::util::*;

fn pyenv(version_prefix: &str, exe: &str) -> PathBuf {
    let root = Path::new("/root/.pyenv/versions");
    let dir = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(version_prefix))
        })
        .max()
        .unwrap_or_else(|| panic!("no pyenv CPython {version_prefix}"));
    dir.join("bin").join(exe)
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn interpreters_are_recognised_by_what_they_open_not_their_name() {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let venv = fixtures().join("venv");
    // A user's console script with an absolute shebang, and pip's own generated entry point.
    let sim = t.join("run_sim");
    write_exec(
        &sim,
        &format!(
            "#!{}\nimport yaml\nprint('ok')\n",
            venv.join("bin/python").display()
        ),
    );
    let (sim_pid, out) = run(Command::new(&sim).env_clear().arg("--steps"));
    ok(&out);
    let (pip_pid, out) = run(Command::new(venv.join("bin/pip")).arg("--version"));
    ok(&out);
    // A symlinked pyenv interpreter and a copied Debian one.
    let snake = t.join("snake");
    std::os::unix::fs::symlink(pyenv("3.12", "python3.12"), &snake).unwrap();
    let (snake_pid, out) = run(&mut python(&snake, "import fractions"));
    ok(&out);
    let worker = t.join("worker");
    std::fs::copy(DEBIAN_PYTHON, &worker).unwrap();
    let (worker_pid, out) = run(&mut python(&worker, "import decimal"));
    ok(&out);
    // Renames itself before importing.
    let (prctl_pid, out) = run(&mut python(
        venv.join("bin/python"),
        "import ctypes; ctypes.CDLL(None).prctl(15, b'not-python', 0, 0, 0); import csv",
    ));
    ok(&out);
    // Run from a memfd, with an empty environment.
    let (memfd_pid, out) = run(&mut python(
        DEBIAN_PYTHON,
        "import os\nfd = os.memfd_create('interp')\nos.write(fd, open('/usr/bin/python3.11', 'rb').read())\nos.execve(f'/proc/self/fd/{fd}', ['py', '-c', 'import uuid'], {})",
    ));
    ok(&out);
    // Not Python, though named so; and a shell wrapper reading module sources.
    let fake = t.join("python3-fake");
    write_exec(
        &fake,
        &format!(
            "#!/bin/sh\ncat {}/lib/python3.11/site-packages/yaml/__init__.py > /dev/null\n",
            venv.display()
        ),
    );
    let (fake_pid, out) = run(&mut Command::new(&fake));
    ok(&out);
    // A reader of a Python tree, libpython included: it opens what an interpreter opens, but
    // never fails a probe or maps the library.
    let lib = std::fs::read_dir(pyenv("3.11", "python3.11").parent().unwrap().join("../lib"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libpython3.11.so")
        })
        .expect("pyenv's shared libpython");
    let pycs = venv.join("lib/python3.11/site-packages/yaml/__pycache__");
    let (cat_pid, out) = run(Command::new("sh").arg("-c").arg(format!(
        "exec cat {} {}/*.pyc {}/pyvenv.cfg > /dev/null",
        lib.display(),
        pycs.display(),
        venv.display()
    )));
    ok(&out);
    // An unprivileged user trying to hide: renamed, empty environment, `-I`, a copied
    // interpreter under a non-Python name in a directory of its own.
    let hide = tempfile::Builder::new()
        .prefix("hide")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(hide.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let disguised = hide.path().join("kworker");
    std::fs::copy(DEBIAN_PYTHON, &disguised).unwrap();
    let (nobody_pid, out) = run(as_nobody(&disguised)
        .args([
            "-I",
            "-c",
            "import ctypes; ctypes.CDLL(None).prctl(15, b'kworker/0:1', 0, 0, 0); import tarfile",
        ])
        .env_clear());
    ok(&out);
    let r = d.stop();

    let hidden = r.one(nobody_pid, "tarfile");
    assert_eq!(hidden["uid"], 65534);
    assert_eq!(hidden["executable"], disguised.to_str().unwrap());
    let sim_yaml = r.one(sim_pid, "yaml");
    assert_eq!(
        sim_yaml["executable"],
        venv.join("bin/python").to_str().unwrap()
    );
    assert_eq!(sim_yaml["main"], sim.to_str().unwrap());
    assert_eq!(sim_yaml["env_kind"], "venv");
    assert_eq!(sim_yaml["source"], "ebpf");
    let pip = r.one(pip_pid, "pip");
    assert_eq!(pip["main"], venv.join("bin/pip").to_str().unwrap());
    let shebang = std::fs::read_to_string(venv.join("bin/pip")).unwrap();
    let interp = shebang.lines().next().unwrap().trim_start_matches("#!");
    assert_eq!(pip["executable"], interp);
    assert_eq!(
        r.one(snake_pid, "fractions")["executable"],
        snake.to_str().unwrap()
    );
    assert_eq!(r.one(snake_pid, "fractions")["python_version"], "3.12");
    assert_eq!(
        r.one(worker_pid, "decimal")["executable"],
        worker.to_str().unwrap()
    );
    r.one(prctl_pid, "csv");
    let uuid = r.one(memfd_pid, "uuid");
    assert!(
        uuid["executable"]
            .as_str()
            .unwrap()
            .starts_with("/memfd:interp"),
        "{uuid}"
    );
    assert!(r.of(fake_pid).is_empty(), "{:?}", packages(&r.of(fake_pid)));
    assert!(r.of(cat_pid).is_empty(), "{:?}", packages(&r.of(cat_pid)));
    assert!(
        r.recs
            .iter()
            .all(|x| !x["executable"].as_str().unwrap().contains("python3-fake")),
        "a shell script named python3-fake was recorded"
    );
}

#[test]
fn imports_are_recorded_wherever_the_module_lives() {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // A package chain under a directory added at run time, a plugin dir from a .pth file
    // (site.addsitedir), a module with a non-identifier name, and a zip on sys.path.
    let plug = t.join("plugins/myplug/sub");
    std::fs::create_dir_all(&plug).unwrap();
    std::fs::write(t.join("plugins/myplug/__init__.py"), "").unwrap();
    std::fs::write(plug.join("__init__.py"), "").unwrap();
    std::fs::write(plug.join("impl.py"), "X = 1\n").unwrap();
    let extra = t.join("extra");
    std::fs::create_dir_all(extra.join("pthmod_dir")).unwrap();
    std::fs::write(extra.join("pthmod_dir/pthmod.py"), "").unwrap();
    std::fs::create_dir_all(t.join("site")).unwrap();
    std::fs::write(
        t.join("site/x.pth"),
        format!("{}\n", extra.join("pthmod_dir").display()),
    )
    .unwrap();
    std::fs::write(t.join("odd-name_x86_64-linux-gnu.py"), "").unwrap();
    let zsrc = t.join("zsrc/zpkg");
    std::fs::create_dir_all(&zsrc).unwrap();
    std::fs::write(zsrc.join("__init__.py"), "Z = 1\n").unwrap();
    ok(&Command::new(venv_python())
        .current_dir(t.join("zsrc"))
        .args(["-m", "zipfile", "-c", "../deps.zip", "zpkg"])
        .output()
        .unwrap());
    let code = format!(
        "import sys, site, importlib\n\
         sys.path.append({plugins:?}); import myplug.sub.impl\n\
         site.addsitedir({site:?}); import pthmod\n\
         sys.path.insert(0, {t:?}); importlib.import_module('odd-name_x86_64-linux-gnu')\n\
         sys.path.insert(0, {zip:?}); import zpkg\n\
         import sysconfig; sysconfig.get_config_vars()\n",
        plugins = t.join("plugins").to_str().unwrap(),
        site = t.join("site").to_str().unwrap(),
        t = t.to_str().unwrap(),
        zip = t.join("deps.zip").to_str().unwrap(),
    );
    let (pid, out) = run(&mut python(venv_python(), &code));
    ok(&out);
    // Relative opens: CPython 3.6 keeps a relative sys.path entry relative.
    std::fs::create_dir_all(t.join("rel")).unwrap();
    std::fs::write(t.join("rel/relmod.py"), "").unwrap();
    let (rel_pid, out) = run(python(
        pyenv("3.6", "python3.6"),
        "import sys; sys.path.insert(0, 'rel'); import relmod",
    )
    .current_dir(t));
    ok(&out);
    // A tree bind-mounted at /opt/… in another mount namespace, imported by path.
    let app = t.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("appmod.py"), "").unwrap();
    let mnt = format!("/opt/pyusage-e2e-{}", std::process::id());
    std::fs::create_dir_all(&mnt).unwrap();
    let (ns_pid, out) = run(Command::new("unshare").args(["-m", "sh", "-c"]).arg(format!(
        "mount --bind {} {mnt} && exec {DEBIAN_PYTHON} -c 'import sys; sys.path.insert(0, \"{mnt}\"); import appmod'",
        app.display()
    )));
    ok(&out);
    let _ = std::fs::remove_dir(&mnt);
    // Bytecode kept under PYTHONPYCACHEPREFIX: written by a first run, loaded by a second.
    std::fs::create_dir_all(t.join("pre")).unwrap();
    std::fs::write(t.join("pre/premod.py"), "").unwrap();
    let prefixed = || {
        let mut c = python(
            venv_python(),
            "import sys; sys.path.insert(0, sys.argv[1]); import premod",
        );
        c.arg(t.join("pre"))
            .env("PYTHONPYCACHEPREFIX", t.join("pyc"));
        run(&mut c)
    };
    let (pre1, out) = prefixed();
    ok(&out);
    let (pre2, out) = prefixed();
    ok(&out);
    assert!(t
        .join("pyc")
        .join(t.strip_prefix("/").unwrap())
        .join("pre")
        .exists());
    let r = d.stop();
    for pid in [pre1, pre2] {
        let p = r.one(pid, "premod");
        assert_eq!(p["env_prefix"], t.join("pre").to_str().unwrap(), "{p}");
    }

    let p = r.one(pid, "myplug");
    assert_eq!(p["n_files"], 3, "{p}");
    assert_eq!(p["env_prefix"], t.join("plugins").to_str().unwrap());
    assert_eq!(p["env_kind"], "unknown");
    r.one(pid, "pthmod");
    r.one(pid, "odd-name_x86_64-linux-gnu");
    assert_eq!(r.one(pid, "deps.zip")["env_kind"], "unknown");
    // sysconfig's data module has a non-identifier name.
    assert!(
        packages(&r.of(pid))
            .iter()
            .any(|p| p.starts_with("_sysconfigdata_")),
        "{:?}",
        packages(&r.of(pid))
    );
    assert_eq!(
        r.one(rel_pid, "relmod")["first_path"],
        t.join("rel/relmod.py").to_str().unwrap()
    );
    let a = r.one(ns_pid, "appmod");
    assert_eq!(a["in_container"], true);
    assert_eq!(a["first_path"], format!("{mnt}/appmod.py"));
}

#[test]
fn editable_installs_of_both_kinds_with_their_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let venv = t.join("v");
    ok(&Command::new(venv_python())
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .unwrap());
    let pip = |args: &[&str]| {
        ok(&Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--no-index", "--find-links"])
            .arg(fixtures().join("wheels"))
            .args(args)
            .output()
            .unwrap())
    };
    pip(&["-U", "setuptools", "wheel"]);
    // src layout: a `.pth` with the source directory; flat layout: an `__editable__` finder.
    let src = t.join("proj/src/edsrc");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("__init__.py"), "from . import core\n").unwrap();
    std::fs::write(src.join("core.py"), "").unwrap();
    std::fs::write(
        t.join("proj/pyproject.toml"),
        "[build-system]\nrequires=['setuptools']\nbuild-backend='setuptools.build_meta'\n\
         [project]\nname='edsrc'\nversion='0.3.1'\n[tool.setuptools.packages.find]\nwhere=['src']\n",
    )
    .unwrap();
    std::fs::create_dir_all(t.join("flat/edflat")).unwrap();
    std::fs::write(t.join("flat/edflat/__init__.py"), "").unwrap();
    std::fs::write(t.join("flat/helper.py"), "").unwrap();
    std::fs::write(
        t.join("flat/pyproject.toml"),
        "[build-system]\nrequires=['setuptools']\nbuild-backend='setuptools.build_meta'\n\
         [project]\nname='edflat'\nversion='1.2'\n[tool.setuptools]\npackages=['edflat']\n",
    )
    .unwrap();
    for proj in ["proj", "flat"] {
        pip(&["--no-build-isolation", "-e", t.join(proj).to_str().unwrap()]);
    }
    let site = venv.join("lib/python3.11/site-packages");
    assert!(
        std::fs::read_dir(&site).unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with("__editable___edflat")),
        "setuptools did not make an __editable__ finder"
    );
    let d = Daemon::start();
    let (pid, out) = run(&mut python(venv.join("bin/python"), "import edsrc, edflat"));
    ok(&out);
    let r = d.stop();
    let e = r.one(pid, "edsrc");
    assert_eq!(
        (&e["distribution"], &e["version"]),
        (&"edsrc".into(), &"0.3.1".into())
    );
    assert_eq!(e["n_files"], 2);
    assert_eq!(e["env_kind"], "venv");
    assert_eq!(e["env_prefix"], venv.to_str().unwrap());
    let f = r.one(pid, "edflat");
    assert_eq!(
        (&f["distribution"], &f["version"]),
        (&"edflat".into(), &"1.2".into())
    );
}

/// Runs `cmd` with the oracle `sitecustomize` first on `PYTHONPATH`; returns its pid.
fn with_oracle(cmd: &mut Command, out_dir: &Path) -> u32 {
    let oracle = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/oracle");
    let (pid, out) = run(cmd
        .env("PYTHONPATH", oracle)
        .env("PYUSAGE_ORACLE_DIR", out_dir)
        .stdin(Stdio::null()));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pid
}

/// Top-level packages of the file-backed modules the oracle found in `sys.modules`.
fn oracle(out_dir: &Path, pid: u32) -> BTreeSet<String> {
    let f = out_dir.join(format!("{pid}.jsonl"));
    let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|m| {
            m["module"]
                .as_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn reads_compiles_and_lints_are_not_imports() {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let venv = fixtures().join("venv");
    // 200+ module sources read as text, inspect.getsource, linecache: nothing imported by it.
    let reader = with_oracle(
        &mut python(
            venv_python(),
            "import glob, sys, inspect, linecache, json\n\
             files = sorted(glob.glob(sys.base_prefix + '/lib/python3.11/*.py'))[:220]\n\
             files += glob.glob(sys.prefix + '/lib/python3.11/site-packages/numpy/**/*.py', recursive=True)[:50]\n\
             assert len(files) >= 200, len(files)\n\
             n = sum(len(open(f).read()) for f in files)\n\
             inspect.getsource(json)\n\
             linecache.getline(sys.base_prefix + '/lib/python3.11/ftplib.py', 10)\n",
        ),
        out,
    );
    // compileall over a venv: fresh bytecode (checked, not loaded).
    let compile = with_oracle(
        Command::new(venv_python())
            .args(["-m", "compileall", "-q"])
            .arg(venv.join("lib")),
        out,
    );
    // Sources without bytecode: each is probed, read and its bytecode written (compiled).
    let copy = out.join("yamlcopy");
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(venv.join("lib/python3.11/site-packages/yaml"))
        .unwrap()
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "py") {
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
    }
    let forced = with_oracle(
        Command::new(venv_python())
            .args(["-m", "compileall", "-q"])
            .arg(&copy),
        out,
    );
    let r = d.stop();
    for pid in [reader, compile, forced] {
        let recorded: BTreeSet<String> = packages(&r.of(pid)).into_iter().collect();
        let truth = oracle(out, pid);
        let extra: Vec<_> = recorded.difference(&truth).collect();
        let missed: Vec<_> = truth.difference(&recorded).collect();
        assert!(
            extra.is_empty(),
            "pid {pid}: recorded but not imported: {extra:?}"
        );
        assert!(
            missed.is_empty(),
            "pid {pid}: imported but not recorded: {missed:?}"
        );
        for p in ["numpy", "yaml", "ftplib", "smtplib"] {
            assert!(!recorded.contains(p), "pid {pid} recorded {p}");
        }
    }
    let f = &r.status["fidelity"];
    assert!(f["reads_not_imports"].as_u64().unwrap() >= 200, "{f}");
    assert!(f["compile_ambiguous"].as_u64().unwrap() > 0, "{f}");
    assert!(f["compiled_not_imported"].as_u64().unwrap() > 0, "{f}");
}

#[test]
fn recall_and_precision_against_an_in_process_oracle() {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let venv = fixtures().join("venv");
    let workloads: Vec<(&str, Command)> = vec![
        // A tool that walks every module it can find: imports packages, reads sources.
        ("pydoc -k (pyenv)", {
            let mut c = Command::new(venv_python());
            c.args(["-m", "pydoc", "-k", "zzzpyusage"]);
            c
        }),
        ("pydoc -k (Debian)", {
            let mut c = Command::new(DEBIAN_PYTHON);
            c.args(["-m", "pydoc", "-k", "zzzpyusage"]);
            c
        }),
        // Real test suites of real packages.
        ("unittest test.test_json", {
            let mut c = Command::new(venv_python());
            c.args(["-m", "unittest", "-q", "test.test_json", "test.test_csv"]);
            c
        }),
        // A large console-script application.
        ("pip list", {
            let mut c = Command::new(venv.join("bin/pip"));
            c.args(["list", "--no-index"]);
            c
        }),
        ("numpy + yaml", {
            let mut c = Command::new(venv_python());
            c.args(["-c", "import numpy, yaml; numpy.linalg.inv(numpy.eye(3))"]);
            c
        }),
    ];
    let mut pids = Vec::new();
    for (name, mut cmd) in workloads {
        pids.push((name, with_oracle(&mut cmd, out)));
    }
    let r = d.stop();
    for (name, pid) in pids {
        let recorded: BTreeSet<String> = packages(&r.of(pid)).into_iter().collect();
        let truth = oracle(out, pid);
        let hit = recorded.intersection(&truth).count() as f64;
        let recall = hit / truth.len() as f64;
        let precision = hit / recorded.len() as f64;
        println!(
            "oracle {name}: {} imported, {} recorded, recall {:.4}, precision {:.4}",
            truth.len(),
            recorded.len(),
            recall,
            precision
        );
        let missed: Vec<_> = truth.difference(&recorded).collect();
        let extra: Vec<_> = recorded.difference(&truth).collect();
        assert_eq!(recall, 1.0, "{name}: missed {missed:?}");
        assert!(precision >= 0.99, "{name}: extra {extra:?}");
    }
    println!("oracle fidelity counters: {}", r.status["fidelity"]);
}

/// A process whose events are handled only after it has exited (the daemon stopped while it
/// ran, its events waiting in the kernel's ring): nothing of it can be read from `/proc` any
/// more. A script run by a relative path, with a package beside it, is recorded with its
/// package by the package's own structure, never named after the first component of its path
/// (the script's directory is unknown without the working directory), and `main` as given.
/// The same run handled live names the script by its absolute path.
#[test]
fn a_process_handled_after_it_exited_keeps_its_packages_right() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("proj");
    std::fs::create_dir_all(proj.join("localpkg")).unwrap();
    std::fs::write(proj.join("localpkg/__init__.py"), "X = 1\n").unwrap();
    std::fs::write(proj.join("run.py"), "import localpkg, json\n").unwrap();
    let d = Daemon::start();
    let script = || {
        let (pid, out) = run(Command::new(venv_python())
            .arg("run.py")
            .current_dir(&proj)
            .env_clear());
        ok(&out);
        pid
    };
    let live = script();
    d.signal("-STOP");
    let gone = script();
    d.signal("-CONT");
    let r = d.stop();
    for pid in [live, gone] {
        let rec = r.one(pid, "localpkg");
        assert!(
            rec["first_path"]
                .as_str()
                .unwrap()
                .contains("/proj/localpkg/"),
            "{rec}"
        );
        r.one(pid, "json");
        let names = packages(&r.of(pid));
        let top = tmp.path().components().nth(1).unwrap();
        let top = top.as_os_str().to_str().unwrap();
        assert!(
            !names.iter().any(|n| n == top),
            "named after {top}: {names:?}"
        );
    }
    assert_eq!(
        r.one(live, "localpkg")["main"],
        proj.join("run.py").to_str().unwrap()
    );
    assert_eq!(r.one(gone, "localpkg")["main"], "run.py");
}

#[test]
fn a_process_started_before_the_daemon_is_seeded_and_followed() {
    let mut child = Command::new(venv_python())
        .args([
            "-c",
            "import sys, numpy; print('ready', flush=True); sys.stdin.readline(); import yaml",
        ])
        .env_clear()
        .env("SLURM_JOB_ID", "4242")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let d = Daemon::start();
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    let r = d.stop();
    let pid = child.id();
    let np = r.one(pid, "numpy");
    assert_eq!(np["source"], "ebpf-seeded");
    assert_eq!(np["exit"], "exited");
    assert_eq!(np["job_id"], "4242");
    assert_eq!(np["distribution"], "numpy");
    let y = r.one(pid, "yaml");
    assert_eq!(y["exit"], "exited");
    assert_eq!(y["main"], "-c");
    assert!(r.status["fidelity"]["seeded_processes"].as_u64().unwrap() >= 1);
}
