//! The table driven by recorded event streams.
use super::*;

struct NoFacts;
impl ProcFacts for NoFacts {
    fn cwd(&self, _: u32) -> Option<PathBuf> {
        Some("/work".into())
    }
    fn cgroup(&self, _: u32) -> Option<String> {
        None
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
        promoted: false,
    })
}

fn open(tgid: u32, path: &str, t: u64) -> Event {
    Event::Open {
        tgid,
        ktime_ns: t,
        path: path.as_bytes().to_vec(),
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
    t.handle(open(10, NP, 2000), f);
    t.handle(open(10, NP2, 3000), f);
    t.handle(open(10, JSON, 4000), f);
    t.handle(open(10, "/lib/x86_64-linux-gnu/libc.so.6", 4500), f);
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
                ktime_ns: 9000,
            },
            f,
        )
        .unwrap();
    assert_eq!(fin.ending, Ending::Signaled(9));
    assert_eq!(fin.end, Some(1_000_009));
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
    t.handle(open(10, JSON, 1500), f);
    t.handle(
        Event::Fork {
            parent: 10,
            child: 11,
            ktime_ns: 2000,
        },
        f,
    );
    t.handle(open(11, NP, 3000), f);
    let child = t
        .handle(
            Event::Exit {
                tgid: 11,
                exit_code: 3 << 8,
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
