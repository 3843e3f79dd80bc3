//! Real Slurm (single node: munge + slurmctld + slurmd from scripts/services/slurm.sh) and
//! real Open MPI with Debian's mpi4py.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::util::*;

/// One Slurm for the whole test binary; tests that use it run one at a time.
static SLURM: Mutex<Option<PathBuf>> = Mutex::new(None);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services/slurm.sh")
}

fn with_slurm(f: impl FnOnce(&Path)) {
    let mut g = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = g.get_or_insert_with(|| {
        // A fixed place: `slurm.sh start` is idempotent, `scripts/test.sh` stops it at the end.
        let d = std::env::temp_dir().join("pyusage-slurm");
        let st = Command::new(script())
            .arg("start")
            .arg(&d)
            .status()
            .unwrap();
        assert!(st.success(), "starting Slurm failed");
        d
    });
    f(&dir.join("slurm.conf"));
}

fn slurm(conf: &Path, prog: &str) -> Command {
    let mut c = Command::new(prog);
    c.env("SLURM_CONF", conf);
    c
}

fn job_state(conf: &Path, job: &str) -> String {
    let out = slurm(conf, "squeue")
        .args(["-h", "-j", job, "-o", "%T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn wait_state(conf: &Path, job: &str, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while job_state(conf, job) != want {
        assert!(
            Instant::now() < deadline,
            "job {job} never {want:?} (now {:?})",
            job_state(conf, job)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn submit(conf: &Path, wrap: &str) -> String {
    submit_with(conf, wrap, &[])
}

/// `sbatch --wrap` with extra environment (the job inherits the submitter's); the job id.
fn submit_with(conf: &Path, wrap: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let out = output_ok(slurm(conf, "sbatch").envs(env.iter().copied()).args([
        "--parsable",
        "-o",
        "/dev/null",
        "--wrap",
        wrap,
    ]));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// Ends a running job's time limit now: Slurm kills it as at its wall-clock limit.
fn expire(conf: &Path, job: &str) {
    let st = slurm(conf, "scontrol")
        .args(["update", &format!("JobId={job}"), "TimeLimit=0"])
        .status()
        .unwrap();
    assert!(st.success());
}

/// SIGKILL to step 0 of a job.
fn kill_step(conf: &Path, job: &str) {
    let st = slurm(conf, "scancel")
        .args(["--signal=KILL", &format!("{job}.0")])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn srun_steps_time_limit_and_sigkill_are_attributed() {
    with_slurm(|conf| {
        let d = Daemon::start();
        let py = venv_python();
        // srun -n2 with an account: ranks 0 and 1 of one step.
        output_ok(
            slurm(conf, "srun")
                .args(["-n2", "--account=acct1"])
                .arg(&py)
                .args(["-c", "import yaml"]),
        );
        // A batch job killed at its time limit.
        let timed = submit(
            conf,
            &format!("{} -c 'import yaml, time; time.sleep(600)'", py.display()),
        );
        wait_state(conf, &timed, "RUNNING", 30);
        std::thread::sleep(Duration::from_secs(1));
        expire(conf, &timed);
        // A step killed with SIGKILL.
        let killed = submit(
            conf,
            &format!(
                "srun {} -c 'import yaml, time; time.sleep(600)'",
                py.display()
            ),
        );
        wait_state(conf, &killed, "RUNNING", 30);
        std::thread::sleep(Duration::from_secs(2));
        kill_step(conf, &killed);
        wait_state(conf, &timed, "", 90);
        wait_state(conf, &killed, "", 60);
        let r = d.stop();

        let srun: Vec<_> = r
            .recs
            .iter()
            .filter(|x| x["package"] == "yaml" && x["account"] == "acct1")
            .collect();
        let mut ranks: Vec<i64> = srun.iter().map(|x| x["rank"].as_i64().unwrap()).collect();
        ranks.sort();
        assert_eq!(ranks, vec![0, 1]);
        for x in &srun {
            assert_eq!(
                (&x["step_id"], &x["num_nodes"], &x["partition"]),
                (&"0".into(), &1.into(), &"debug".into())
            );
            assert_eq!(
                (&x["system"], &x["qos"]),
                (&"pytest".into(), &"normal".into())
            );
            assert!(x["job_id"].is_string());
        }
        let t: Vec<_> = r
            .recs
            .iter()
            .filter(|x| x["job_id"] == timed.as_str() && x["package"] == "yaml")
            .collect();
        assert_eq!(t.len(), 1, "time-limited job's python");
        assert_eq!(
            t[0]["step_id"], "batch",
            "from the cgroup path: batch steps have no SLURM_STEP_ID"
        );
        assert_eq!(t[0]["exit"], "signaled", "{}", t[0]);
        assert!(["SIGTERM", "SIGKILL"].contains(&t[0]["exit_signal"].as_str().unwrap()));
        let k: Vec<_> = r
            .recs
            .iter()
            .filter(|x| x["job_id"] == killed.as_str() && x["package"] == "yaml")
            .collect();
        assert_eq!(k.len(), 1);
        assert_eq!(
            (&k[0]["exit"], &k[0]["exit_signal"], &k[0]["step_id"]),
            (&"signaled".into(), &"SIGKILL".into(), &"0".into())
        );
    });
}

/// Preload-only mode (no eBPF): a batch job killed at its time limit and an `srun` step
/// killed with SIGKILL still have their imports, job, step and signal, from the library's
/// messages and the process connector's exits.
#[test]
fn preload_only_time_limit_and_sigkill_are_recorded() {
    with_slurm(|conf| {
        ensure_preload_config();
        let dir = shared_tempdir();
        let sock = dir.path().join("preload.sock");
        let d = Daemon::start_with(
            &["--no-ebpf", "--preload-socket", sock.to_str().unwrap()],
            &[],
        );
        let py = venv_python();
        let lib = preload_lib();
        let env = [
            ("LD_PRELOAD", lib.as_os_str()),
            ("PYUSAGE_PRELOAD_SOCKET", sock.as_os_str()),
        ];
        let submit_preloaded = |wrap: &str| submit_with(conf, wrap, &env);
        let sleeper = format!("{} -c 'import yaml, time; time.sleep(600)'", py.display());
        let timed = submit_preloaded(&sleeper);
        wait_state(conf, &timed, "RUNNING", 30);
        std::thread::sleep(Duration::from_secs(2));
        expire(conf, &timed);
        let killed = submit_preloaded(&format!("srun {sleeper}"));
        wait_state(conf, &killed, "RUNNING", 60);
        std::thread::sleep(Duration::from_secs(2));
        kill_step(conf, &killed);
        wait_state(conf, &timed, "", 90);
        wait_state(conf, &killed, "", 60);
        let r = d.stop();
        let of_job = |job: &str| -> Vec<&serde_json::Value> {
            r.recs
                .iter()
                .filter(|x| x["job_id"] == job && x["package"] == "yaml")
                .collect()
        };
        let t = of_job(&timed);
        assert_eq!(t.len(), 1, "time-limited job's python: {:?}", r.recs);
        assert_eq!(
            (&t[0]["source"], &t[0]["step_id"], &t[0]["exit"]),
            (&"preload".into(), &"batch".into(), &"signaled".into()),
            "{}",
            t[0]
        );
        assert!(["SIGTERM", "SIGKILL"].contains(&t[0]["exit_signal"].as_str().unwrap()));
        let k = of_job(&killed);
        assert_eq!(k.len(), 1, "{:?}", r.recs);
        assert_eq!(
            (&k[0]["exit"], &k[0]["exit_signal"], &k[0]["step_id"]),
            (&"signaled".into(), &"SIGKILL".into(), &"0".into())
        );
        assert_eq!(k[0]["job_source"], "cgroup");
    });
}

/// `mpirun -np 4` with Debian's mpi4py, as inside a batch job (SLURM_JOB_ID set, every rank
/// with SLURM_PROCID=0).
fn mpirun4(job: &str) {
    let out = Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "4",
            DEBIAN_PYTHON,
            "-c",
        ])
        .arg("from mpi4py import MPI; MPI.COMM_WORLD.Barrier()")
        .env("OMPI_MCA_plm", "isolated")
        .env("OMPI_MCA_ras", "^slurm")
        .env("OMPI_MCA_btl", "self,vader")
        .env("SLURM_JOB_ID", job)
        .env("SLURM_PROCID", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mpi4py_records<'a>(r: &'a Records, job: &str) -> Vec<&'a serde_json::Value> {
    r.recs
        .iter()
        .filter(|x| x["package"] == "mpi4py" && x["job_id"] == job)
        .collect()
}

#[test]
fn mpirun_ranks_and_rank_policies() {
    // --ranks all (default): ranks 0-3 from OMPI_COMM_WORLD_RANK, not SLURM_PROCID.
    let d = Daemon::start();
    mpirun4("603");
    let r = d.stop();
    let mut ranks: Vec<i64> = mpi4py_records(&r, "603")
        .iter()
        .map(|x| x["rank"].as_i64().unwrap())
        .collect();
    ranks.sort();
    assert_eq!(ranks, vec![0, 1, 2, 3]);
    assert!(mpi4py_records(&r, "603")
        .iter()
        .all(|x| x["env_kind"] == "system"));
    // --ranks per-node: one record per (job, step, package) with the count of ranks.
    let d = Daemon::start_with(&["--ranks", "per-node", "--rank-window-secs", "1"], &[]);
    mpirun4("601");
    std::thread::sleep(Duration::from_secs(3));
    let r = d.stop();
    let m = mpi4py_records(&r, "601");
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!((&m[0]["n_ranks"], &m[0]["rank"]), (&4.into(), &0.into()));
    assert!(r.status["rank_duplicates"].as_u64().unwrap() >= 3);
    // --ranks first: the first rank's record only.
    let d = Daemon::start_with(&["--ranks", "first"], &[]);
    mpirun4("602");
    let r = d.stop();
    let m = mpi4py_records(&r, "602");
    assert_eq!(m.len(), 1);
    assert!(m[0]["n_ranks"].is_null());
}

/// A process in a real job step that claims another job through its environment is recorded
/// under the job its cgroup names, with the forged job's variables dropped; outside Slurm the
/// environment is the (marked) fallback.
#[test]
fn the_environment_cannot_move_a_process_into_another_job() {
    with_slurm(|conf| {
        let d = Daemon::start();
        let py = venv_python();
        let out = output_ok(
            slurm(conf, "srun")
                .args(["-n1", "--account=acct1", "sh", "-c"])
                .arg(format!(
                "echo $SLURM_JOB_ID; SLURM_JOB_ID=999999 SLURM_JOB_ACCOUNT=stolen SLURM_PROCID=-1 \
                 exec {} -c 'import yaml'",
                py.display()
            )),
        );
        let real = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let (pid, _) = run(python(&py, "import yaml").env("SLURM_JOB_ID", "555"));
        let r = d.stop();
        let forged: Vec<_> = r
            .recs
            .iter()
            .filter(|x| x["package"] == "yaml" && x["job_id"] == "999999")
            .collect();
        assert!(forged.is_empty(), "a record in the forged job: {forged:?}");
        let mine: Vec<_> = r
            .recs
            .iter()
            .filter(|x| x["package"] == "yaml" && x["job_id"] == real.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "{:?}", r.recs);
        assert_eq!(
            (
                &mine[0]["job_source"],
                &mine[0]["step_id"],
                &mine[0]["account"],
                &mine[0]["rank"]
            ),
            (
                &"cgroup".into(),
                &"0".into(),
                &serde_json::Value::Null,
                &serde_json::Value::Null
            )
        );
        assert!(r.status["fidelity"]["job_env_rejected"].as_u64().unwrap() >= 1);
        let outside = r.one(pid, "yaml");
        assert_eq!(
            (&outside["job_id"], &outside["job_source"]),
            (&"555".into(), &"env".into())
        );
    });
}

/// The atexit hook beside the daemon in real Slurm jobs: an MPI job whose hook reports from
/// rank 0 only (the old tool's behaviour), and a job killed at its time limit; `pyusage
/// compare` names the reason for each process the hook did not report.
#[test]
fn atexit_comparison_of_an_mpi_job_and_a_time_limit() {
    use crate::atexit::{compare, reason_of, Hook};
    with_slurm(|conf| {
        let hook = Hook::install(&["--rank0-only"]);
        let host = short_hostname();
        let d = Daemon::start_with(&["--host", &host], &[]);
        let hook_env: &[(&str, &std::ffi::OsStr)] = &[
            ("PYTHONPATH", hook.dir.as_os_str()),
            ("OMPI_MCA_plm", "isolated".as_ref()),
            ("OMPI_MCA_ras", "^slurm".as_ref()),
            ("OMPI_MCA_btl", "self,vader".as_ref()),
        ];
        let mpi = submit_with(
            conf,
            &format!(
                "mpirun --allow-run-as-root --oversubscribe -np 4 {DEBIAN_PYTHON} -c \
                 'from mpi4py import MPI; MPI.COMM_WORLD.Barrier()'"
            ),
            hook_env,
        );
        let timed = submit_with(
            conf,
            &format!(
                "{} -c 'import json, time; time.sleep(600)'",
                venv_python().display()
            ),
            hook_env,
        );
        wait_state(conf, &timed, "RUNNING", 30);
        std::thread::sleep(Duration::from_secs(2));
        expire(conf, &timed);
        wait_state(conf, &mpi, "", 90);
        wait_state(conf, &timed, "", 90);
        let r = d.stop();
        // Accounting is off in the test Slurm: what `sacct -P -n -o JobID,State` would print.
        let sacct = hook.spool.with_file_name("sacct.txt");
        std::fs::write(
            &sacct,
            format!("{mpi}|COMPLETED\n{mpi}.batch|COMPLETED\n{timed}|TIMEOUT\n{timed}.batch|CANCELLED\n"),
        )
        .unwrap();
        let c = compare(&r.data, &hook.spool, &["--sacct", sacct.to_str().unwrap()]);
        let ranks: std::collections::BTreeMap<i64, u32> = r
            .recs
            .iter()
            .filter(|x| x["package"] == "mpi4py" && x["job_id"] == mpi.as_str())
            .map(|x| {
                (
                    x["rank"].as_i64().unwrap(),
                    x["pid"].as_u64().unwrap() as u32,
                )
            })
            .collect();
        assert_eq!(
            ranks.keys().copied().collect::<Vec<_>>(),
            [0, 1, 2, 3],
            "{}",
            r.log
        );
        assert_eq!(reason_of(&c, ranks[&0]), None, "rank 0 reported");
        for rank in 1..4 {
            assert_eq!(
                reason_of(&c, ranks[&rank]).as_deref(),
                Some("non_zero_rank"),
                "rank {rank}: {}",
                c["kernel_only"]
            );
        }
        let killed = r
            .recs
            .iter()
            .find(|x| x["job_id"] == timed.as_str() && x["package"] == "json")
            .expect("the timed-out job's python")["pid"]
            .as_u64()
            .unwrap() as u32;
        // Which signal is Slurm's (here the step's processes get SIGKILL).
        let why = reason_of(&c, killed).unwrap_or_default();
        assert!(
            why.starts_with("time_limit:SIG"),
            "{why}: {}",
            c["kernel_only"]
        );
        // By job: the hook reported the MPI job (rank 0) only, and both sides have it; the
        // kernel side also has the timed-out one (and other tests' jobs: the node is shared).
        assert_eq!(c["jobs"]["atexit"], 1, "{}", c["jobs"]);
        assert_eq!(c["jobs"]["both"], 1, "{}", c["jobs"]);
        assert!(
            c["jobs"]["kernel_only"].as_u64() >= Some(1),
            "{}",
            c["jobs"]
        );
    });
}

/// packaging/slurm/: four shards as a job array on the real Slurm, the merge after them
/// (afterok), and its report byte for byte the single run's.
#[test]
fn sharded_analysis_as_a_job_array_and_a_merge() {
    let t = shared_tempdir();
    let data = t.path().join("dataset");
    output_ok(
        Command::new(bin())
            .args(["synth", "--rows", "120000", "--seed", "11", "--out"])
            .arg(&data),
    );
    let single = t.path().join("single");
    output_ok(
        Command::new(bin())
            .args(["analyze", "--device", "cpu", "--format", "json", "--out"])
            .arg(&single)
            .arg(&data),
    );
    // Per quarter, the last open-ended (synthetic jobs run into the next year); a comment
    // and a blank line, as an administrator's file would have.
    let shards = t.path().join("shards.txt");
    std::fs::write(
        &shards,
        "# quarters\n--to 2026-03-31\n--from 2026-04-01 --to 2026-06-30\n\n\
         --from 2026-07-01 --to 2026-09-30\n--from 2026-10-01\n",
    )
    .unwrap();
    let (work, out) = (t.path().join("work"), t.path().join("merged"));
    let submit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/slurm/submit.sh");
    with_slurm(|conf| {
        let o = output_ok(
            slurm(conf, submit.to_str().unwrap())
                .env("PYUSAGE", bin())
                .arg(&shards)
                .arg(&data)
                .arg(&work)
                .arg(&out)
                .args(["--chdir", t.path().to_str().unwrap()]),
        );
        let ids = String::from_utf8_lossy(&o.stdout).to_string();
        let (array, merge) = ids.trim().split_once(' ').expect("two job ids");
        // Both leave the queue: the array's four tasks, then the merge.
        let deadline = Instant::now() + Duration::from_secs(180);
        while !(job_state(conf, array).is_empty() && job_state(conf, merge).is_empty()) {
            assert!(
                Instant::now() < deadline,
                "jobs {array} {merge} still queued"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let logs = |prefix: &str| -> String {
            std::fs::read_dir(t.path())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        };
        for n in 0..4 {
            assert!(
                work.join(format!("shard-{n}.state")).exists(),
                "shard {n} missing; logs:\n{}",
                logs("pyusage-shard")
            );
        }
        let merged = std::fs::read(out.join("report.json")).unwrap_or_else(|e| {
            panic!(
                "no merged report ({e}); merge log:\n{}",
                logs("pyusage-merge")
            )
        });
        assert!(
            logs("pyusage-merge").contains("from 4 partials"),
            "{}",
            logs("pyusage-merge")
        );
        let single = std::fs::read(single.join("report.json")).unwrap();
        assert!(single.len() > 10_000);
        assert!(
            merged == single,
            "the merged report differs from the single run's"
        );
    });
}

/// `analyze --jobs` with the accounting the real Slurm writes without slurmdbd: its job
/// completion log (`jobcomp/filetxt`). A job that completes and one that fails, both running
/// Python under the daemon: their packages' outcomes and node-hours come from Slurm.
#[test]
fn accounting_from_the_job_completion_log() {
    with_slurm(|conf| {
        let log = conf.parent().unwrap().join("jobcomp.log");
        let d = Daemon::start();
        let py = venv_python();
        let ok = submit(
            conf,
            &format!("{} -c 'import yaml, time; time.sleep(2)'", py.display()),
        );
        let failed = submit(conf, &format!("{} -c 'import yaml'; exit 3", py.display()));
        wait_state(conf, &ok, "", 60);
        wait_state(conf, &failed, "", 60);
        // slurmctld appends the completion line as the job ends.
        let deadline = Instant::now() + Duration::from_secs(20);
        let line = |job: &str| {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with(&format!("JobId={job} ")))
                .map(str::to_owned)
        };
        while line(&ok).is_none() || line(&failed).is_none() {
            assert!(
                Instant::now() < deadline,
                "no completion lines in {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let r = d.stop();
        assert!(r
            .recs
            .iter()
            .any(|x| x["job_id"] == ok.as_str() && x["package"] == "yaml"));
        let out = output_ok(
            Command::new(bin())
                .arg("analyze")
                .arg(&r.data)
                .args(["--device", "cpu", "--period", "all", "--jobs"])
                .arg(&log)
                .arg("--filter")
                .arg(format!("job_id == {ok} or job_id == {failed}")),
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let a = &report["periods"]["all"][0]["accounting"];
        assert_eq!(a["jobs_without_accounting"], 0, "{a}");
        let yaml = a["outcomes_by_package"]["yaml"].as_array().unwrap();
        let count = |o: &str| {
            yaml.iter()
                .find(|s| s["key"] == o)
                .map_or(0, |s| s["count"].as_u64().unwrap())
        };
        assert_eq!((count("COMPLETED"), count("FAILED")), (1, 1), "{a}");
        let hours = a["node_hours_by_package"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["package"] == "yaml")
            .unwrap()["node_hours"]
            .as_f64()
            .unwrap();
        // One node each; the first job slept 2 s.
        assert!((2.0 / 3600.0..0.05).contains(&hours), "{hours}");
    });
}
