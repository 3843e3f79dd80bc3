//! The table driven by recorded event streams.
use tracer_common::user::{ExecInfo, OpenInfo};

use super::*;

struct NoFacts;
impl ProcFacts for NoFacts {
    fn cwd(&self, _: u32) -> Option<PathBuf> {
        Some("/work".into())
    }
    fn cgroup(&self, _: u32) -> Option<String> {
        None
    }
    fn fd_path(&self, _: u32, fd: i32) -> Option<PathBuf> {
        (fd == 7).then(|| "/opt/app".into())
    }
    fn exe(&self, _: u32) -> Option<PathBuf> {
        Some("/memfd:py (deleted)".into())
    }
    fn is_interpreter(&self, pid: u32, _: &mut crate::elf::ElfCache) -> Option<bool> {
        // pid 666 is `cat` reading a Python tree.
        Some(pid != 666)
    }
    fn identity(&self, pid: u32) -> Option<Identity> {
        // pid 999 has exited; pid 777 is another user's; the others are uid 1000's children
        // of pid 1, in the host's namespace.
        (pid != 999).then_some(Identity {
            ppid: 1,
            mnt_ns: 1,
            uid: if pid == 777 { 2000 } else { 1000 },
        })
    }
}

fn exec(tgid: u32, ppid: u32, file: &str, args: &str, env: &str, t: u64) -> Event {
    Event::Exec(ExecInfo {
        tgid,
        ppid,
        uid: 1000,
        gid: 1000,
        mnt_ns: 1,
        ktime_ns: t,
        filename: file.as_bytes().to_vec(),
        args: args.replace(' ', "\0").into_bytes(),
        env: env.replace(' ', "\0").into_bytes(),
        flags: 0,
        promoted: true,
        exe: None,
        groups: None,
    })
}

fn open_ret(tgid: u32, path: &str, t: u64, ret: i32) -> Event {
    Event::Open(OpenInfo {
        tgid,
        tid: tgid,
        ktime_ns: t,
        ret,
        dfd: -100,
        write: false,
        path: path.as_bytes().to_vec(),
        opened: None,
        opened_partial: false,
    })
}

/// A plain open (a read when it is a source file).
fn open(tgid: u32, path: &str, t: u64) -> Event {
    open_ret(tgid, path, t, 3)
}

/// What the import system does to import `path`: a source after a failed probe of its bytecode,
/// an extension module opened then mapped executable, anything else opened.
fn imp(t: &mut ProcTable, tgid: u32, path: &str, time: u64, f: &dyn ProcFacts) {
    if let Some(src) = path.strip_suffix(".py") {
        let (dir, stem) = src.rsplit_once('/').unwrap();
        let probe = format!("{dir}/__pycache__/{stem}.cpython-311.pyc");
        assert!(t.handle(open_ret(tgid, &probe, time, -2), f).is_none());
        assert!(t.handle(open(tgid, path, time), f).is_none());
    } else if path.ends_with(".so") {
        assert!(t.handle(open_ret(tgid, path, time, 9), f).is_none());
        let map = Event::MapExec {
            tgid,
            tid: tgid,
            fd: 9,
            ktime_ns: time,
        };
        assert!(t.handle(map, f).is_none());
    } else {
        assert!(t.handle(open(tgid, path, time), f).is_none());
    }
}

const NP: &str = "/v/lib/python3.11/site-packages/numpy/__init__.py";
const NP2: &str = "/v/lib/python3.11/site-packages/numpy/core/multiarray.py";
const JSON: &str = "/usr/lib/python3.11/json/__init__.py";

#[test]
fn sigkilled_process_keeps_packages_and_signal() {
    let mut t = ProcTable::new(1_000_000, 1);
    let f = &NoFacts;
    assert!(t
        .handle(
            exec(
                10,
                1,
                "/usr/bin/python3.11",
                "python3.11 run.py",
                "SLURM_JOB_ID=5 SLURM_PROCID=0",
                1000
            ),
            f
        )
        .is_none());
    imp(&mut t, 10, NP, 2000, f);
    imp(&mut t, 10, NP2, 3000, f);
    imp(&mut t, 10, JSON, 4000, f);
    imp(&mut t, 10, "/lib/x86_64-linux-gnu/libc.so.6", 4500, f);
    t.handle(
        open(
            10,
            "/v/lib/python3.11/site-packages/numpy.libs/libscipy_openblas64_-1.so",
            4600,
        ),
        f,
    );
    let fin = t
        .handle(
            Event::Exit {
                tgid: 10,
                exit_code: 9,
                cpu: Some(tracer_common::user::ExitCpu {
                    utime_ns: 30_000_000,
                    stime_ns: 10_000_000,
                    runtime_ns: 42_000_000,
                }),
                ktime_ns: 9000,
            },
            f,
        )
        .unwrap();
    assert_eq!(fin.ending, Ending::Signaled(9));
    assert_eq!(fin.end, Some(1_000_009));
    // The exit's CPU time reaches every record of the process.
    let cpu = crate::cputime::CpuTime {
        user_us: 31_500,
        sys_us: 10_500,
    };
    assert_eq!(fin.cpu, Some(cpu));
    let node = crate::records::Node {
        host: "n".into(),
        system: None,
        subsystem: None,
        is_compute: false,
        staff_group: None,
    };
    let recs = crate::records::build(&fin, &node, &mut crate::records::Users::new(None));
    assert_eq!(recs.len(), 2);
    assert!(recs
        .iter()
        .all(|r| (r.cpu_user_us, r.cpu_sys_us) == (Some(31_500), Some(10_500))));
    let p = &fin.process;
    assert_eq!(p.main.as_deref(), Some("/work/run.py"));
    assert_eq!(p.python_version.as_deref(), Some("3.11"));
    assert_eq!(p.attribution.job_id.as_deref(), Some("5"));
    assert_eq!(p.blas, Some("openblas"));
    let names: Vec<_> = p
        .packages
        .iter()
        .map(|s| (s.resolved.package.as_str(), s.n_files))
        .collect();
    assert_eq!(names, vec![("numpy", 2), ("json", 1)]);
    assert_eq!(p.packages[0].first_seen, 1_000_002);
    assert!(t.is_empty());
}

#[test]
fn fork_child_gets_own_packages_and_root() {
    let mut t = ProcTable::new(0, 1);
    let f = &NoFacts;
    t.handle(exec(10, 1, "/usr/bin/python3", "python3 -c x", "", 1000), f);
    imp(&mut t, 10, JSON, 1500, f);
    t.handle(
        Event::Fork {
            parent: 10,
            child: 11,
            ktime_ns: 2000,
        },
        f,
    );
    imp(&mut t, 11, NP, 3000, f);
    let child = t
        .handle(
            Event::Exit {
                tgid: 11,
                exit_code: 3 << 8,
                cpu: None,
                ktime_ns: 4000,
            },
            f,
        )
        .unwrap();
    assert_eq!(child.ending, Ending::Exited(3));
    assert_eq!(
        (
            child.process.pid,
            child.process.ppid,
            child.process.root_pid
        ),
        (11, 10, 10)
    );
    assert_eq!(child.process.packages.len(), 1);
    assert_eq!(child.process.packages[0].resolved.package, "numpy");
    // A Python grandchild exec'd by the child of the root keeps the root.
    t.handle(
        Event::Fork {
            parent: 10,
            child: 12,
            ktime_ns: 5000,
        },
        f,
    );
    let replaced = t
        .handle(
            exec(12, 10, "/usr/bin/python3.11", "python3.11 -m pip", "", 6000),
            f,
        )
        .unwrap();
    assert_eq!(replaced.ending, Ending::Unknown);
    let gc = t
        .handle(
            Event::Exit {
                tgid: 12,
                exit_code: 0,
                cpu: None,
                ktime_ns: 7000,
            },
            f,
        )
        .unwrap();
    assert_eq!(
        (gc.process.root_pid, gc.process.main.as_deref()),
        (10, Some("-m pip"))
    );
    // Unknown pid exits are ignored; running snapshot keeps the process.
    assert!(t
        .handle(
            Event::Exit {
                tgid: 99,
                exit_code: 0,
                cpu: None,
                ktime_ns: 1
            },
            f
        )
        .is_none());
    assert_eq!(t.running(i64::MAX).len(), 1);
    assert_eq!(t.len(), 1);
}

#[test]
fn exit_code_decoding() {
    assert_eq!(Ending::from_exit_code(0), Ending::Exited(0));
    assert_eq!(Ending::from_exit_code(3 << 8), Ending::Exited(3));
    assert_eq!(Ending::from_exit_code(9), Ending::Signaled(9));
    assert_eq!(Ending::from_exit_code(11 | 0x80), Ending::Signaled(11));
    assert_eq!(Ending::from_exit_code(u32::MAX), Ending::Unknown);
}

fn exit(t: &mut ProcTable, tgid: u32, f: &dyn ProcFacts) -> Finished {
    t.handle(
        Event::Exit {
            tgid,
            exit_code: 0,
            cpu: None,
            ktime_ns: 99_000,
        },
        f,
    )
    .expect("process was tracked")
}

fn names(f: &Finished) -> Vec<&str> {
    f.process
        .packages
        .iter()
        .map(|p| p.resolved.package.as_str())
        .collect()
}

#[test]
fn reads_and_unmapped_shared_objects_are_not_imports() {
    let mut t = ProcTable::new(0, 1);
    let f = &NoFacts;
    t.handle(
        exec(20, 1, "/usr/bin/python3.11", "python3 lint.py", "", 1),
        f,
    );
    imp(&mut t, 20, JSON, 2, f);
    // A linter reading sources: no bytecode probe before them.
    for m in ["csv", "email/__init__", "decimal"] {
        t.handle(open(20, &format!("/usr/lib/python3.11/{m}.py"), 3), f);
    }
    // An extension module read as data: opened, never mapped.
    t.handle(
        open_ret(
            20,
            "/usr/lib/python3.11/lib-dynload/_csv.cpython-311-x86_64-linux-gnu.so",
            4,
            5,
        ),
        f,
    );
    let fin = exit(&mut t, 20, f);
    assert_eq!(names(&fin), vec!["json"]);
    let fid = t.fidelity();
    assert_eq!(fid.reads_not_imports, 3);
    assert_eq!(fid.so_not_mapped, 1);
}

#[test]
fn run_time_sys_path_relative_opens_and_archives() {
    let mut t = ProcTable::new(0, 1);
    let f = &NoFacts;
    t.handle(exec(21, 1, "/usr/bin/python3.11", "python3 -c x", "", 1), f);
    imp(&mut t, 21, "/x/plug/mypkg/__init__.py", 2, f);
    imp(&mut t, 21, "/x/plug/mypkg/sub/__init__.py", 3, f);
    imp(&mut t, 21, "/x/plug/mypkg/sub/m.py", 4, f);
    // `openat(dirfd, "mod.py")` with a descriptor of /opt/app (NoFacts: fd 7), and a path
    // relative to the current directory (/work).
    for (dfd, rel) in [(7, "mod"), (-100, "local")] {
        let probe = Event::Open(OpenInfo {
            tgid: 21,
            tid: 21,
            ktime_ns: 5,
            ret: -2,
            dfd,
            write: false,
            path: format!("__pycache__/{rel}.cpython-311.pyc").into_bytes(),
            opened: None,
            opened_partial: false,
        });
        t.handle(probe, f);
        let src = Event::Open(OpenInfo {
            tgid: 21,
            tid: 21,
            ktime_ns: 5,
            ret: 4,
            dfd,
            write: false,
            path: format!("{rel}.py").into_bytes(),
            opened: None,
            opened_partial: false,
        });
        t.handle(src, f);
    }
    // zipimport: the archive opened for its directory, then per module.
    t.handle(open(21, "/x/deps.zip", 6), f);
    t.handle(open(21, "/x/deps.zip", 7), f);
    t.handle(open(21, "/x/data.zip", 8), f);
    let fin = exit(&mut t, 21, f);
    assert_eq!(names(&fin), vec!["mypkg", "mod", "local", "deps.zip"]);
    let m = &fin.process.packages[0];
    assert_eq!(m.n_files, 3);
    assert_eq!(m.resolved.env_prefix.as_deref(), Some("/x/plug"));
    assert_eq!(fin.process.packages[1].first_path, "/opt/app/mod.py");
    assert_eq!(fin.process.packages[2].first_path, "/work/local.py");
    assert_eq!(t.fidelity().archive_single_opens, 1);
}

#[test]
fn console_script_memfd_and_reexec_keep_interpreter_script_and_root() {
    let mut t = ProcTable::new(0, 1);
    let f = &NoFacts;
    // `./run_sim` with `#!/v/bin/python -u`: the kernel runs `/v/bin/python -u ./run_sim --n 3`.
    t.handle(
        exec(
            30,
            1,
            "./run_sim",
            "/v/bin/python -u ./run_sim --n 3",
            "",
            1,
        ),
        f,
    );
    imp(&mut t, 30, JSON, 2, f);
    // It execs a shell, which execs Python again (promoted from probation).
    let fin = t
        .handle(
            Event::ExecOther {
                tgid: 30,
                ktime_ns: 3,
            },
            f,
        )
        .unwrap();
    assert_eq!(fin.process.executable, "/v/bin/python");
    assert_eq!(fin.process.main.as_deref(), Some("/work/run_sim"));
    assert_eq!(fin.ending, Ending::Unknown);
    t.handle(exec(30, 1, "/dev/fd/3", "python3 -c pass", "", 4), f);
    imp(&mut t, 30, JSON, 5, f);
    let fin = exit(&mut t, 30, f);
    assert_eq!(fin.process.executable, "/memfd:py (deleted)");
    assert_eq!(fin.process.root_pid, 30);
}

#[test]
fn imports_after_py_compile_are_counted_as_ambiguous() {
    let mut t = ProcTable::new(0, 1);
    let f = &NoFacts;
    // `-q` takes no value, `-x` does; `../v` is relative to the cwd (/work).
    let args = "python3 -m compileall -q -x skip ../v";
    t.handle(exec(40, 1, "/usr/bin/python3.11", args, "", 1), f);
    imp(&mut t, 40, "/usr/lib/python3.11/py_compile.py", 2, f);
    // Bytecode of the tree it compiles: checked or loaded, it cannot tell; outside it: imported.
    imp(
        &mut t,
        40,
        "/work/../v/lib/python3.11/site-packages/numpy/__pycache__/x.cpython-311.pyc",
        3,
        f,
    );
    imp(&mut t, 40, JSON, 4, f);
    let fin = exit(&mut t, 40, f);
    assert_eq!(names(&fin), vec!["py_compile", "json"]);
    assert_eq!(t.fidelity().compile_ambiguous, 1);
}

#[test]
fn sources_compiled_by_an_installer_are_not_imports() {
    let mut t = ProcTable::new(0, 1);
    let f = &NoFacts;
    t.handle(
        exec(
            41,
            1,
            "/v/bin/python",
            "/v/bin/python /v/bin/pip install x",
            "",
            1,
        ),
        f,
    );
    imp(&mut t, 41, "/usr/lib/python3.11/py_compile.py", 2, f);
    // pip compiles what it installed: the source read after a probe, then its bytecode written.
    let src = "/v/lib/python3.11/site-packages/x/__init__.py";
    imp(&mut t, 41, src, 3, f);
    let mut w = open(
        41,
        "/v/lib/python3.11/site-packages/x/__pycache__/__init__.cpython-311.pyc.140",
        4,
    );
    if let Event::Open(o) = &mut w {
        o.write = true;
    }
    t.handle(w, f);
    // Then imports something for real.
    imp(&mut t, 41, JSON, 5, f);
    let fin = exit(&mut t, 41, f);
    assert_eq!(names(&fin), vec!["py_compile", "json"]);
    assert_eq!(t.fidelity().compiled_not_imported, 1);
}

#[test]
fn a_promoted_process_that_is_not_an_interpreter_is_dropped() {
    let mut t = ProcTable::new(0, 1);
    let f = &NoFacts;
    assert!(t
        .handle(exec(666, 1, "/bin/cat", "cat a.pyc", "", 1), f)
        .is_none());
    t.handle(
        open(
            666,
            "/v/lib/python3.11/site-packages/x/__pycache__/y.cpython-311.pyc",
            2,
        ),
        f,
    );
    assert!(t.is_empty());
    assert_eq!(t.fidelity().promotions_not_python, 1);
}

#[test]
fn files_of_one_directory_count_for_its_package_only_inside_the_package() {
    let mut t = ProcTable::new(0, 1);
    let f = &NoFacts;
    t.handle(exec(50, 1, "/usr/bin/python3.11", "python3 -c x", "", 1), f);
    let dynload = "/usr/lib/python3.11/lib-dynload";
    for m in ["_json", "_struct", "_csv"] {
        imp(
            &mut t,
            50,
            &format!("{dynload}/{m}.cpython-311-x86_64-linux-gnu.so"),
            2,
            f,
        );
    }
    imp(&mut t, 50, JSON, 3, f);
    imp(&mut t, 50, "/usr/lib/python3.11/json/decoder.py", 4, f);
    imp(&mut t, 50, "/usr/lib/python3.11/json/scanner.py", 5, f);
    let fin = exit(&mut t, 50, f);
    assert_eq!(names(&fin), vec!["_json", "_struct", "_csv", "json"]);
    assert_eq!(fin.process.packages[3].n_files, 3);
}

#[test]
fn a_reader_of_libpython_is_dropped_once_checked() {
    let mut t = ProcTable::new(0, 1);
    let f = &NoFacts;
    let mut e = exec(
        666,
        1,
        "/bin/cat",
        "cat libpython3.11.so.1.0 x.pyc",
        "",
        1_000,
    );
    if let Event::Exec(i) = &mut e {
        i.flags = tracer_common::EXEC_FLAG_LIBPYTHON;
    }
    assert!(t.handle(e, f).is_none());
    let pyc = "/v/lib/python3.11/site-packages/x/__pycache__/y.cpython-311.pyc";
    imp(&mut t, 666, pyc, 2_000, f);
    t.verify(50, f);
    assert_eq!(t.len(), 1, "checked only 100 ms after its promotion");
    t.verify(VERIFY_AFTER_US + 1, f);
    assert!(t.is_empty());
    assert_eq!(t.fidelity().promotions_not_python, 1);
    // One that exits before it can be checked: no records either, unless it mapped libpython.
    for (pid, maps) in [(667, false), (668, true)] {
        let mut e = exec(pid, 1, "/bin/x", "x", "", 1_000);
        if let Event::Exec(i) = &mut e {
            i.flags = tracer_common::EXEC_FLAG_LIBPYTHON;
        }
        t.handle(e, f);
        let lib = "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0";
        t.handle(open_ret(pid, lib, 1_500, 4), f);
        if maps {
            let m = Event::MapExec {
                tgid: pid,
                tid: pid,
                fd: 4,
                ktime_ns: 1_600,
            };
            t.handle(m, f);
        }
        imp(&mut t, pid, pyc, 2_000, f);
        let fin = t.handle(
            Event::Exit {
                tgid: pid,
                exit_code: 0,
                cpu: None,
                ktime_ns: 3_000,
            },
            f,
        );
        assert_eq!(fin.is_some(), maps, "pid {pid}");
    }
}

#[test]
fn in_package_is_the_package_directory_or_below_it() {
    let site = Path::new("/v/lib/python3.11/site-packages");
    assert!(super::in_package(
        Path::new("/v/lib/python3.11/site-packages/numpy"),
        site,
        "numpy"
    ));
    assert!(super::in_package(
        Path::new("/v/lib/python3.11/site-packages/numpy/core"),
        site,
        "numpy"
    ));
    assert!(!super::in_package(
        Path::new("/v/lib/python3.11/site-packages/numpyx"),
        site,
        "numpy"
    ));
    assert!(!super::in_package(
        Path::new("/v/lib/python3.11/site-packages"),
        site,
        "numpy"
    ));
    assert!(super::in_package(
        Path::new("/s/p/q"),
        Path::new("/s/"),
        "p"
    ));
}

#[test]
fn an_exec_event_in_flight_when_a_process_was_seeded_adopts_it() {
    let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
    let Event::Exec(info) = exec(10, 1, "/v/bin/python", "python -c x", "", 1_000) else {
        unreachable!()
    };
    t.seed(
        crate::seed::Seeded {
            info: ExecInfo {
                promoted: false,
                ..info.clone()
            },
            files: vec![NP.into()],
        },
        &f,
    );
    // The same image's exec event, stamped before the scan, read after it.
    assert!(
        t.handle(Event::Exec(info), &f).is_none(),
        "adopted, not ended"
    );
    assert_eq!(t.len(), 1);
    let done = exit(&mut t, 10, &f);
    assert_eq!(names(&done), ["numpy"]);
    assert!(!done.process.seeded, "seen starting after all");
}

mod preload {
    //! The preload library's messages, alone and together with the kernel's events.
    use super::*;
    use crate::preload::{Body, PreloadMsg};
    use pyusage_record::Source;

    /// A message of uid 1000's process `pid` on the connection of `conn_pid`'s Hello.
    fn msg(pid: u32, conn_pid: u32, t: u64, body: Body) -> PreloadMsg {
        PreloadMsg {
            pid,
            uid: 1000,
            gid: 1000,
            conn_pid,
            conn: u64::from(conn_pid),
            ktime_ns: t,
            body,
        }
    }

    fn hello(pid: u32, t: u64) -> PreloadMsg {
        let body = Body::Hello {
            program: b"/v/bin/tool".to_vec(),
            args: b"/v/bin/python\0/v/bin/tool\0-x".to_vec(),
            env: b"SLURM_JOB_ID=77\0SLURM_PROCID=3".to_vec(),
        };
        msg(pid, pid, t, body)
    }

    fn module(pid: u32, conn_pid: u32, path: &str, t: u64) -> PreloadMsg {
        msg(pid, conn_pid, t, Body::Module(path.as_bytes().to_vec()))
    }

    fn sources(f: &Finished) -> Vec<Vec<Source>> {
        let node = crate::records::Node {
            host: "h".into(),
            system: None,
            subsystem: None,
            is_compute: false,
            staff_group: None,
        };
        let mut users = crate::records::Users::new(None);
        crate::records::build(f, &node, &mut users)
            .into_iter()
            .map(|r| {
                assert_eq!(r.source, r.sources[0]);
                r.sources
            })
            .collect()
    }

    #[test]
    fn preload_only_process_is_built_from_its_hello() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        assert!(t.preload(hello(10, 1_000), &f).is_none());
        assert!(t.preload(module(10, 10, NP, 2_000), &f).is_none());
        assert!(t.preload(module(10, 10, NP2, 3_000), &f).is_none());
        // The interpreter's own exec, reported by the process connector after the Hello.
        assert!(t
            .handle(
                Event::ExecOther {
                    tgid: 10,
                    ktime_ns: 500
                },
                &f
            )
            .is_none());
        let done = t
            .handle(
                Event::Exit {
                    tgid: 10,
                    exit_code: 9,
                    cpu: None,
                    ktime_ns: 9_000,
                },
                &f,
            )
            .expect("tracked from its Hello");
        assert_eq!(done.ending, Ending::Signaled(9));
        assert_eq!(names(&done), ["numpy"]);
        let p = &done.process;
        assert_eq!(p.packages[0].n_preload, 2);
        assert_eq!(p.packages[0].n_files, 0);
        // `#!` script: the interpreter from argv[0], the script as main.
        assert_eq!(p.executable, "/v/bin/python");
        assert_eq!(p.main.as_deref(), Some("/v/bin/tool"));
        assert_eq!(p.attribution.job_id.as_deref(), Some("77"));
        assert_eq!(p.attribution.rank, Some(3));
        assert_eq!(sources(&done), [vec![Source::Preload]]);
    }

    #[test]
    fn a_later_exec_ends_a_preload_only_process() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        t.preload(hello(10, 1_000), &f);
        t.preload(module(10, 10, NP, 2_000), &f);
        let done = t
            .handle(
                Event::ExecOther {
                    tgid: 10,
                    ktime_ns: 5_000,
                },
                &f,
            )
            .expect("exec of another program ends it");
        assert_eq!(done.ending, Ending::Unknown);
    }

    #[test]
    fn hello_read_before_the_exec_event_is_adopted_once() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        // The socket is read at once, the ring buffer later: Hello and a module first.
        t.preload(hello(10, 1_500), &f);
        t.preload(module(10, 10, NP, 1_600), &f);
        let e = exec(10, 1, "/v/bin/python", "python -c x", "", 1_000);
        assert!(t.handle(e, &f).is_none(), "adopted, not ended");
        imp(&mut t, 10, NP, 1_700, &f);
        imp(&mut t, 10, NP2, 1_800, &f);
        let done = exit(&mut t, 10, &f);
        assert_eq!(names(&done), ["numpy"]);
        let s = &done.process.packages[0];
        assert_eq!((s.n_files, s.n_preload), (2, 1));
        assert_eq!(
            done.process.executable, "/v/bin/python",
            "the kernel's account"
        );
        assert_eq!(sources(&done), [vec![Source::Ebpf, Source::Preload]]);
        assert!(t.is_empty());
    }

    #[test]
    fn hello_after_the_exec_event_marks_the_kernels_process() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        t.handle(exec(10, 1, "/v/bin/python", "python -c x", "", 1_000), &f);
        assert!(t.preload(hello(10, 1_500), &f).is_none());
        t.preload(module(10, 10, NP, 1_600), &f);
        imp(&mut t, 10, NP, 1_700, &f);
        // A package only the library saw (the kernel's events for it were lost).
        t.preload(
            module(
                10,
                10,
                "/v/lib/python3.11/site-packages/yaml/__init__.py",
                1_800,
            ),
            &f,
        );
        let done = exit(&mut t, 10, &f);
        assert_eq!(names(&done), ["numpy", "yaml"]);
        assert_eq!(
            sources(&done),
            [vec![Source::Ebpf, Source::Preload], vec![Source::Preload]]
        );
    }

    #[test]
    fn a_new_image_under_the_pid_after_a_hello_is_a_new_process() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        t.preload(hello(10, 1_000), &f);
        t.preload(module(10, 10, NP, 1_100), &f);
        // Python exec'd Python: the kernel's exec comes after the first Hello…
        let first = t
            .handle(exec(10, 1, "/v/bin/python", "python b.py", "", 2_000), &f)
            .expect("the first image ended");
        assert_eq!(names(&first), ["numpy"]);
        // …and a second Hello of the new image, read after it, only marks it.
        assert!(t.preload(hello(10, 2_500), &f).is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn fork_child_on_the_parents_connection_before_the_fork_event() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        t.preload(hello(10, 1_000), &f);
        t.preload(module(10, 10, NP, 1_100), &f);
        // The child (pid 11) writes on the inherited connection before its fork event; the
        // facts name pid 1 as its parent, which is not tabled, so the connection's is used.
        t.preload(
            module(
                11,
                10,
                "/v/lib/python3.11/site-packages/yaml/__init__.py",
                1_300,
            ),
            &f,
        );
        let fork = Event::Fork {
            parent: 10,
            child: 11,
            ktime_ns: 1_200,
        };
        assert!(
            t.handle(fork, &f).is_none(),
            "the fork event keeps the child"
        );
        let child = exit(&mut t, 11, &f);
        assert_eq!(names(&child), ["yaml"]);
        assert_eq!(child.process.root_pid, 10);
        let parent = exit(&mut t, 10, &f);
        assert_eq!(names(&parent), ["numpy"]);
    }

    #[test]
    fn a_fork_child_copied_before_its_parent_was_confirmed_is_confirmed_by_its_messages() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        // Promoted for opening libpython: not confirmed until it maps it.
        let mut e = exec(10, 1, "/v/bin/python", "python -c x", "", 1_000);
        if let Event::Exec(i) = &mut e {
            i.flags = tracer_common::EXEC_FLAG_LIBPYTHON;
        }
        t.handle(e, &f);
        t.preload(hello(10, 1_100), &f);
        // The child's message (on the parent's connection) comes before the mapping.
        t.preload(module(11, 10, NP, 1_300), &f);
        let child = exit(&mut t, 11, &f);
        assert_eq!(names(&child), ["numpy"]);
        // A late message of an ended child does not bring it back.
        t.preload(module(999, 10, NP, 1_400), &f);
        assert_eq!(names(&exit(&mut t, 999, &f)), ["numpy"]);
        t.preload(module(999, 10, NP2, 1_500), &f);
        assert_eq!(t.len(), 1);
        assert_eq!(t.fidelity().preload_late, 1);
    }

    fn lib_open(pid: u32, path: &str, ret: i32, t: u64) -> PreloadMsg {
        let body = Body::Open {
            tid: pid,
            ret,
            dfd: -100,
            write: false,
            path: path.as_bytes().to_vec(),
        };
        msg(pid, pid, t, body)
    }

    #[test]
    fn opens_of_an_interpreter_without_audit_hooks_follow_the_import_rules() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        t.preload(hello(10, 1_000), &f);
        // CPython 3.7: a failed bytecode probe, then its source: an import.
        let probe = "/v/lib/python3.7/site-packages/numpy/__pycache__/__init__.cpython-37.pyc";
        t.preload(lib_open(10, probe, -2, 1_100), &f);
        t.preload(
            lib_open(
                10,
                "/v/lib/python3.7/site-packages/numpy/__init__.py",
                3,
                1_200,
            ),
            &f,
        );
        // A bytecode file opened: an import, relative to the working directory (/work).
        t.preload(
            lib_open(10, "yaml/__pycache__/__init__.cpython-37.pyc", 4, 1_300),
            &f,
        );
        // A source read alone (a linter, `inspect`): not an import.
        t.preload(
            lib_open(10, "/v/lib/python3.7/site-packages/idle/x.py", 5, 1_400),
            &f,
        );
        let done = exit(&mut t, 10, &f);
        let mut got = names(&done);
        got.sort();
        assert_eq!(got, ["numpy", "yaml"]);
        assert!(done
            .process
            .packages
            .iter()
            .all(|s| s.n_preload == 1 && s.n_files == 0));
        assert_eq!(t.fidelity().reads_not_imports, 1);
    }

    #[test]
    fn messages_are_bound_to_their_connection_and_uid() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        t.preload(hello(10, 1_000), &f);
        // Another user's process writing on this connection (passed to it), and this
        // process's pid on another connection: neither is taken.
        let mut other_user = module(11, 10, NP, 1_100);
        other_user.uid = 2000;
        t.preload(other_user, &f);
        let mut other_conn = module(10, 10, NP, 1_200);
        other_conn.conn = 99;
        t.preload(other_conn, &f);
        assert_eq!(t.len(), 1);
        assert_eq!(t.fidelity().preload_late, 2);
        // A Hello whose pid another user's process holds now: nothing of /proc is used.
        t.preload(hello(777, 1_300), &f);
        let p = t.procs.get(&777).expect("tabled from the Hello alone");
        assert_eq!((p.ppid, p.uid), (0, 1000));
        let done = exit(&mut t, 10, &f);
        assert!(done.process.packages.is_empty());
    }

    #[test]
    fn an_exec_event_stamped_after_the_hello_is_the_same_image_by_its_command_line() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        t.preload(hello(10, 1_000), &f);
        t.preload(module(10, 10, NP, 1_100), &f);
        // Found by what it opened after its Hello was read: stamped later, same argv.
        let e = exec(
            10,
            1,
            "/v/bin/tool",
            "/v/bin/python /v/bin/tool -x",
            "",
            2_000,
        );
        assert!(t.handle(e, &f).is_none(), "adopted");
        let done = exit(&mut t, 10, &f);
        assert_eq!(names(&done), ["numpy"]);
    }

    #[test]
    fn made_up_paths_cannot_grow_the_table_without_bound() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        t.preload(hello(10, 1_000), &f);
        let long = "a".repeat(3_900);
        for i in 0..2_000 {
            let path = format!("/{long}/{i}/__init__.py");
            t.preload(module(10, 10, &path, 2_000 + i), &f);
        }
        let p = t.procs.get(&10).unwrap();
        assert!(p.bytes <= super::super::PROCESS_BYTES, "{}", p.bytes);
        assert!(p.init_dirs.len() < 300, "{}", p.init_dirs.len());
        assert!(t.fidelity().state_bounded > 1_000);
        // What it held is given back when it ends.
        exit(&mut t, 10, &f);
        assert!(t.shared.uid_bytes.is_empty());
    }

    /// The atexit hook's report of uid 1000's process `pid` (on a connection of its own).
    fn atexit(pid: u32, t: u64, modules: &[(&str, &str)]) -> PreloadMsg {
        let body = Body::Atexit(
            modules
                .iter()
                .map(|(p, f)| (p.to_string(), f.as_bytes().to_vec()))
                .collect(),
        );
        PreloadMsg {
            conn_pid: 0,
            conn: 1_000_000,
            ..msg(pid, pid, t, body)
        }
    }

    fn record_of<'a>(f: &'a Finished, package: &str) -> &'a PackageSeen {
        f.process
            .packages
            .iter()
            .find(|s| s.resolved.package == package)
            .unwrap_or_else(|| panic!("no {package} in {:?}", names(f)))
    }

    #[test]
    fn an_atexit_report_marks_the_kernels_packages_and_adds_the_others() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        t.handle(
            exec(10, 1, "/usr/bin/python3.11", "python -c x", "", 1_000),
            &f,
        );
        imp(&mut t, 10, JSON, 2_000, &f);
        let report = atexit(
            10,
            5_000,
            &[
                ("json", JSON),
                ("sys", "<built-in>"),
                ("zipimport", "<frozen>"),
                ("nspkg", ""),
            ],
        );
        assert!(t.preload(report, &f).is_none());
        let done = exit(&mut t, 10, &f);
        assert_eq!(names(&done), ["json", "sys", "zipimport", "nspkg"]);
        assert_eq!(
            sources(&done),
            [
                vec![Source::Ebpf, Source::Atexit],
                vec![Source::Atexit],
                vec![Source::Atexit],
                vec![Source::Atexit],
            ]
        );
        let json = record_of(&done, "json");
        assert_eq!(
            (json.n_files, json.first_seen),
            (1, 2),
            "the kernel's account kept"
        );
        let sys = record_of(&done, "sys");
        assert_eq!(sys.resolved.env_kind, crate::resolver::EnvKind::Stdlib);
        assert_eq!((sys.first_path.as_str(), sys.n_files), ("<built-in>", 0));
        assert_eq!(sys.first_seen, 5, "when the report was read");
        assert_eq!(record_of(&done, "zipimport").first_path, "<frozen>");
        let ns = record_of(&done, "nspkg");
        assert_eq!(ns.resolved.env_kind, crate::resolver::EnvKind::Unknown);
        assert_eq!(ns.first_path, "");
        assert!(t.shared.uid_bytes.is_empty());
    }

    #[test]
    fn an_atexit_only_package_with_a_file_is_classified_by_it() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        // A process only the library reported: the report adds to what it saw.
        t.preload(hello(10, 1_000), &f);
        t.preload(module(10, 10, NP, 1_100), &f);
        let yaml = "/v/lib/python3.11/site-packages/yaml/__init__.py";
        t.preload(atexit(10, 2_000, &[("numpy", NP), ("yaml", yaml)]), &f);
        let done = exit(&mut t, 10, &f);
        assert_eq!(
            sources(&done),
            [vec![Source::Preload, Source::Atexit], vec![Source::Atexit]]
        );
        // Classified as the library's file of the same site directory was.
        let (y, np) = (record_of(&done, "yaml"), record_of(&done, "numpy"));
        assert_eq!(y.resolved.env_kind, crate::resolver::EnvKind::System);
        assert_eq!(
            (y.resolved.env_kind, &y.resolved.env_prefix),
            (np.resolved.env_kind, &np.resolved.env_prefix)
        );
        assert!(y.resolved.env_prefix.is_some());
        assert_eq!((y.first_path.as_str(), y.n_files), (yaml, 0));
    }

    #[test]
    fn an_atexit_report_is_taken_only_by_a_process_of_the_senders_uid() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        t.handle(
            exec(10, 1, "/usr/bin/python3.11", "python -c x", "", 1_000),
            &f,
        );
        imp(&mut t, 10, JSON, 2_000, &f);
        // Another user claiming packages for pid 10.
        let mut forged = atexit(10, 3_000, &[("sys", "<built-in>"), ("json", JSON)]);
        forged.uid = 2000;
        t.preload(forged, &f);
        // A pid the table does not hold, whose /proc entry says nothing (NoFacts: no seed).
        t.preload(atexit(11, 3_100, &[("sys", "<built-in>")]), &f);
        assert_eq!(t.fidelity().atexit_late, 2);
        assert_eq!(t.len(), 1);
        let done = exit(&mut t, 10, &f);
        assert_eq!(sources(&done), [vec![Source::Ebpf]]);
    }

    #[test]
    fn an_atexit_report_read_after_the_exit_still_lands_within_the_grace() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        let grace = std::time::Duration::from_millis(250);
        t.set_exit_grace(Some(grace));
        let start = std::time::Instant::now();
        t.handle(
            exec(10, 1, "/usr/bin/python3.11", "python -c x", "", 1_000),
            &f,
        );
        imp(&mut t, 10, JSON, 2_000, &f);
        t.handle(
            exec(12, 1, "/usr/bin/python3.11", "python -c x", "", 1_000),
            &f,
        );
        imp(&mut t, 12, JSON, 2_000, &f);
        let exit_event = |tgid| Event::Exit {
            tgid,
            exit_code: 0,
            cpu: None,
            ktime_ns: 9_000,
        };
        // The exits are handled first (the ring buffer was drained before the listener's
        // batch came): the processes wait, still charged.
        assert!(t.handle(exit_event(10), &f).is_none());
        assert!(t.handle(exit_event(12), &f).is_none());
        assert!(t.closed(start).is_empty());
        assert!(!t.shared.uid_bytes.is_empty());
        t.preload(
            atexit(10, 9_500, &[("json", JSON), ("sys", "<built-in>")]),
            &f,
        );
        // A Hello or a module of the library after the exit is still late.
        t.preload(module(10, 10, NP, 9_600), &f);
        assert_eq!(t.fidelity().preload_late, 1);
        assert_eq!(t.fidelity().atexit_late, 0);
        let mut done = t.closed(std::time::Instant::now() + grace);
        done.sort_by_key(|d| d.process.pid);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].ending, Ending::Exited(0));
        assert_eq!(
            sources(&done[0]),
            [vec![Source::Ebpf, Source::Atexit], vec![Source::Atexit]]
        );
        // No report: the same records as without a grace.
        assert_eq!(sources(&done[1]), [vec![Source::Ebpf]]);
        assert!(t.shared.uid_bytes.is_empty(), "given back when handed on");
        // Past the grace, a report is late.
        t.preload(atexit(10, 20_000, &[("sys", "<built-in>")]), &f);
        assert_eq!(t.fidelity().atexit_late, 1);
        // Without a grace (no preload socket) the exit hands the process on at once.
        t.set_exit_grace(None);
        t.handle(
            exec(10, 1, "/usr/bin/python3.11", "python -c x", "", 30_000),
            &f,
        );
        assert!(t.handle(exit_event(10), &f).is_some());
    }

    #[test]
    fn messages_after_the_exit_are_counted_not_turned_into_a_process() {
        let (mut t, f) = (ProcTable::new(0, 1), NoFacts);
        t.handle(exec(999, 1, "/v/bin/python", "python -c x", "", 1_000), &f);
        exit(&mut t, 999, &f);
        assert!(t.preload(hello(999, 2_000), &f).is_none());
        t.preload(module(999, 999, NP, 2_100), &f);
        assert!(t.is_empty());
        assert_eq!(t.fidelity().preload_late, 2);
    }
}

/// A process gone from `/proc` is ended as `unknown` only when it is still gone at the next
/// reap: its exit event may be on its way (in the ring until the next drain), and then ends
/// it as it ended.
#[test]
fn a_process_just_gone_waits_one_reap_for_its_exit_event() {
    let mut t = ProcTable::new(1_000_000, 1);
    let f = &NoFacts;
    for pid in [10, 11] {
        t.handle(
            exec(pid, 1, "/usr/bin/python3.11", "python3.11 x.py", "", 1000),
            f,
        );
        imp(&mut t, pid, JSON, 2000, f);
    }
    let gone = |_: u32| false;
    assert!(t.reap(gone, 5).is_empty(), "ended at the first reap");
    let fin = exit(&mut t, 10, f);
    assert_eq!(fin.ending, Ending::Exited(0));
    let lost = t.reap(gone, 6);
    assert_eq!(lost.len(), 1);
    assert_eq!((lost[0].process.pid, lost[0].ending), (11, Ending::Unknown));
    assert!(t.is_empty());
}

/// A worker's inspection answered after its process ended (the pid now another Python
/// process's, not inspected yet) counts for neither: the pid's entry, which the late answer may
/// have overwritten, is removed and the new process inspected again; its own answers count it
/// once.
#[test]
fn an_inspection_answered_after_its_process_ended_reinspects_the_pids_new_process() {
    let f = NoFacts;
    let mut t = ProcTable::new(0, 0);
    t.set_sampler(crate::sampler::Sampler::new(None, 19, None));
    let interp = interpreter(0x5000);
    let (old, new) = pid_reused(&mut t, &f);
    assert_ne!(old, new);
    t.to_inspect.clear();
    t.inspected(100, old, Ok(interp.clone()), 0, true);
    let queued: Vec<(u32, i64)> = t.to_inspect.iter().map(|&(p, s, _, _)| (p, s)).collect();
    assert_eq!(queued, [(100, new)]);
    assert_eq!(t.procs[&100].samples.status, samples::Status::Off);
    assert_eq!(t.sampler_counts().unwrap().processes_sampled, 0);
    // Its first answer and the second inspection's: sampled, counted once.
    for _ in 0..2 {
        t.inspected(100, new, Ok(interp.clone()), 0, true);
    }
    assert_eq!(t.procs[&100].samples.status, samples::Status::Sampled);
    assert_eq!(t.sampler_counts().unwrap().processes_sampled, 1);
    // A late answer for a pid no process holds now queues nothing.
    t.to_inspect.clear();
    t.inspected(4242, 7, Ok(interp), 0, true);
    assert!(t.to_inspect.is_empty());
}

/// A Python process at pid 100 that ends, and another Python process under the same pid: their
/// starts.
fn pid_reused(t: &mut ProcTable, f: &NoFacts) -> (i64, i64) {
    t.handle(exec(100, 1, "/usr/bin/python3", "python3", "", 1_000), f);
    let old = t.procs[&100].start;
    exit(t, 100, f);
    t.handle(
        exec(100, 1, "/usr/bin/python3", "python3", "", 2_000_000),
        f,
    );
    (old, t.procs[&100].start)
}

/// A 3.11 interpreter found at `runtime`, as a sampler worker answers.
fn interpreter(runtime: u64) -> Arc<crate::cpython::Interpreter> {
    use crate::cpython::{layout, object_layout, Interpreter, LayoutSource, Version};
    Arc::new(Interpreter {
        pid: 100,
        version: Version {
            major: 3,
            minor: 11,
            patch: None,
        },
        image: "/usr/lib/libpython3.11.so".into(),
        in_executable: false,
        text: (0x1000, 0x2000),
        runtime,
        layout: layout(3, 11).unwrap(),
        objects: object_layout(3, 11).unwrap(),
        source: LayoutSource::Table,
        code_type: 0,
        str_type: 0,
    })
}

/// What the kernel walks, in a real BPF hash map as the daemon's `PYPROCS` (root): a pid's
/// entry that a worker wrote for a process that has ended since is left to the process now
/// under the pid. Rewritten with its interpreter when that one is sampled, removed when it is
/// not sampled yet (it is then inspected again) or when no process has the pid; a fork child
/// of a sampled process has its parent's. A wrong entry would have the kernel walk another
/// process's memory with the ended one's `_PyRuntime`.
#[test]
fn a_late_inspection_leaves_the_pids_kernel_entry_to_the_process_now_under_it() {
    use std::os::fd::AsFd;

    use aya::maps::{HashMap as BpfHashMap, IterableMap, Map, MapData};
    use tracer_common::sampling::PyProc;
    let map = BpfHashMap::<MapData, u32, PyProc>::create(64, 0)
        .expect("creating a BPF hash map (needs root and BPF)");
    let fd = map.map().fd().as_fd().try_clone_to_owned().unwrap();
    let view: BpfHashMap<MapData, u32, PyProc> =
        BpfHashMap::try_from(Map::from_map_data(MapData::from_fd(fd).unwrap()).unwrap()).unwrap();
    let entry = |pid: u32| view.get(&pid, 0).ok().map(|p| p.runtime);
    let f = NoFacts;
    let mut t = ProcTable::new(0, 0);
    t.set_sampler(crate::sampler::Sampler::new(Some(map), 19, None));
    let (ended, now) = (interpreter(0x5000), interpreter(0x9000));
    // What a worker does: writes the entry, then answers.
    let worker_writes = |t: &mut ProcTable, pid: u32, i: &crate::cpython::Interpreter| {
        assert!(t.sampler.as_mut().unwrap().enable(pid, i));
    };

    // The pid's new process not inspected yet: the ended one's entry is removed.
    let (old, new) = pid_reused(&mut t, &f);
    worker_writes(&mut t, 100, &ended);
    assert_eq!(entry(100), Some(0x5000));
    t.to_inspect.clear();
    t.inspected(100, old, Ok(ended.clone()), 0, true);
    assert_eq!(entry(100), None, "the ended process's entry stays");
    assert_eq!(t.to_inspect.len(), 1);

    // The new one sampled first, then the ended one's late write and answer: the new one's.
    worker_writes(&mut t, 100, &now);
    t.inspected(100, new, Ok(now.clone()), 0, true);
    assert_eq!(t.procs[&100].samples.status, samples::Status::Sampled);
    worker_writes(&mut t, 100, &ended);
    assert_eq!(entry(100), Some(0x5000));
    t.inspected(100, old, Ok(ended.clone()), 0, true);
    assert_eq!(entry(100), Some(0x9000), "not the sampled process's entry");

    // A fork child of the sampled process: its parent's entry (the kernel copies it only for
    // a fork after the write).
    t.handle(
        Event::Fork {
            parent: 100,
            child: 101,
            ktime_ns: 3_000_000,
        },
        &f,
    );
    assert_eq!(entry(101), Some(0x9000));

    // No process under the pid: removed.
    worker_writes(&mut t, 4242, &ended);
    t.inspected(4242, 7, Ok(ended), 0, true);
    assert_eq!(entry(4242), None);
    assert_eq!(entry(100), Some(0x9000));
}

/// A sampled process whose samples in the interpreter's own code never find a thread state (a
/// wrong `_PyRuntime` or layout: its packages would look never used) is inspected again; when
/// that does not help either, its record says `unsupported:no-thread-state` with no counts. The
/// samples walked with the replaced entry (taken before the new answer) do not count against the
/// new one, and one sample that finds a thread settles the process as sampled.
#[test]
fn a_process_whose_threads_are_never_found_is_inspected_again_then_said_unsupported() {
    use tracer_common::{sampling::SAMPLE_FLAG_NO_THREAD, user::SampleInfo};
    let f = NoFacts;
    let mut t = ProcTable::new(0, 0);
    t.set_sampler(crate::sampler::Sampler::new(None, 19, None));
    let interp = interpreter(0x5000);
    let (text, elsewhere) = (interp.text.0 + 0x10, 0x7f00_0000_0000);
    let sample = |pid: u32, ip: u64, flags: u32, ktime_ns: u64| {
        Event::Sample(SampleInfo {
            tgid: pid,
            tid: pid,
            ktime_ns,
            user_ip: ip,
            frames: Vec::new(),
            flags,
        })
    };
    let now = crate::clock::boot_ns;
    for pid in [100, 200] {
        t.handle(exec(pid, 1, "/usr/bin/python3", "python3", "", 1_000), &f);
        let start = t.procs[&pid].start;
        t.inspected(pid, start, Ok(interp.clone()), 0, true);
    }
    t.to_inspect.clear();
    let status = |t: &ProcTable, pid: u32| t.procs[&pid].samples.status.clone();
    // Process 200 finds a thread once: its threadless samples never count.
    t.handle(sample(200, text, 0, now()), &f);
    for _ in 0..40 {
        t.handle(sample(200, text, SAMPLE_FLAG_NO_THREAD, now()), &f);
    }
    assert_eq!(status(&t, 200), samples::Status::Sampled);
    // Process 100: threadless samples outside the interpreter's code (a BLAS thread) are fine.
    for _ in 0..40 {
        t.handle(sample(100, elsewhere, SAMPLE_FLAG_NO_THREAD, now()), &f);
    }
    assert!(t.to_inspect.is_empty());
    // In its code: inspected again after 8; more walked before the answer do not count.
    for _ in 0..30 {
        t.handle(sample(100, text, SAMPLE_FLAG_NO_THREAD, now()), &f);
    }
    let queued: Vec<u32> = t.to_inspect.iter().map(|&(p, ..)| p).collect();
    assert_eq!(queued, [100]);
    assert_eq!(status(&t, 100), samples::Status::Sampled);
    let before_answer = now() - 1_000_000;
    let start = t.procs[&100].start;
    t.inspected(100, start, Ok(interp.clone()), 0, true);
    for _ in 0..30 {
        t.handle(sample(100, text, SAMPLE_FLAG_NO_THREAD, before_answer), &f);
    }
    assert_eq!(status(&t, 100), samples::Status::Sampled);
    // After it, 8 more: given up, and counted.
    for _ in 0..8 {
        t.handle(sample(100, text, SAMPLE_FLAG_NO_THREAD, now()), &f);
    }
    assert_eq!(
        status(&t, 100),
        samples::Status::Unsupported("no-thread-state".into())
    );
    assert_eq!(t.sampler_counts().unwrap().processes_threadless, 1);
    let fields = t.procs[&100].samples.record_fields(0, |_| None);
    assert_eq!(
        fields.sampling.as_deref(),
        Some("unsupported:no-thread-state")
    );
    assert_eq!(fields.total, None);
}
