//! Job, rank and user attribution from what the kernel captured at exec: the environment block
//! and argv. Only the documented variables are kept; the rest of the environment is dropped
//! here, before anything is stored.
//!
//! Capturing at exec (not from `/proc/<pid>/environ` later) is what makes this right for a
//! process that lives 2 ms or clears its own environment.
//!
//! The environment is the user's to write, so the job and step come from the scheduler's
//! cgroup whenever the process is in one, anchored where slurmstepd creates it (a user's
//! delegated subtree below the step cannot name another job). The environment is a fallback
//! outside Slurm's cgroups; when it names another job than the cgroup, every job field taken
//! from it (rank, QOS, account, partition, node count) is dropped as forged. `job_source` says
//! which one a record's job came from.
use std::path::PathBuf;

use pyusage_record::JobSource;

/// The job-related facts of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    /// Slurm job id (`<array>_<task>` for array jobs).
    pub job_id: Option<String>,
    /// Step (`0`, `batch`, …).
    pub step_id: Option<String>,
    /// MPI rank: launcher variables first, then `SLURM_PROCID`.
    pub rank: Option<i32>,
    /// Nodes in the job.
    pub num_nodes: Option<u32>,
    /// QOS.
    pub qos: Option<String>,
    /// Account.
    pub account: Option<String>,
    /// Partition.
    pub partition: Option<String>,
    /// `SLURM_CLUSTER_NAME`.
    pub cluster: Option<String>,
    /// `PYTHONPATH` entries (for the resolver).
    pub pythonpath: Vec<PathBuf>,
    /// `PYTHONPYCACHEPREFIX`: where bytecode lives instead of `__pycache__` (for the import
    /// signature).
    pub pycache_prefix: Option<PathBuf>,
    /// Container runtime detected from its variables.
    pub container_runtime: Option<String>,
    /// Where `job_id` came from: the scheduler's cgroup or the environment.
    pub job_source: Option<JobSource>,
    /// `SLURM_JOB_ID` as the environment gave it (an array task's own job id), to compare
    /// with the cgroup's.
    env_job: Option<String>,
}

/// The largest rank accepted from the environment (MPI worlds are far smaller).
pub const MAX_RANK: i32 = 16_777_215;

/// What [`Attribution::apply_cgroup`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupJob {
    /// Not in a Slurm job's cgroup: the environment, if any, stands.
    None,
    /// The cgroup's job; the environment agreed or named none.
    Confirmed,
    /// The environment named another job: its job fields were dropped.
    EnvForged,
}

/// Rank variables in priority order: under `mpirun` inside a batch step every rank has
/// `SLURM_PROCID=0`, so the launcher's own variables must win.
const RANK_VARS: &[&str] = &[
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "PMI_RANK",
    "MV2_COMM_WORLD_RANK",
    "SLURM_PROCID",
];

/// Variables that identify a container runtime.
const RUNTIME_VARS: &[(&str, &str)] = &[
    ("SHIFTER_RUNTIME", "shifter"),
    ("SHIFTER_IMAGEREQUEST", "shifter"),
    ("APPTAINER_CONTAINER", "apptainer"),
    ("SINGULARITY_CONTAINER", "apptainer"),
    ("PODMAN_CONTAINER", "podman"),
];

/// Iterates `KEY=VALUE` pairs of a NUL-separated environment block.
pub fn env_pairs(env: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    env.split(|&b| b == 0).filter_map(|kv| {
        let eq = kv.iter().position(|&b| b == b'=')?;
        Some((&kv[..eq], &kv[eq + 1..]))
    })
}

fn text(v: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(v).trim().to_owned();
    (!s.is_empty()).then_some(s)
}

impl Attribution {
    /// Extracts the documented variables from an environment block.
    pub fn from_env(env: &[u8]) -> Attribution {
        let mut vars: std::collections::HashMap<&[u8], &[u8]> = Default::default();
        for (k, v) in env_pairs(env) {
            vars.entry(k).or_insert(v);
        }
        let get = |k: &str| vars.get(k.as_bytes()).and_then(|v| text(v));
        let job_id = match (get("SLURM_ARRAY_JOB_ID"), get("SLURM_ARRAY_TASK_ID")) {
            (Some(a), Some(t)) => Some(format!("{a}_{t}")),
            _ => get("SLURM_JOB_ID").or_else(|| get("SLURM_JOBID")),
        };
        let rank = RANK_VARS.iter().find_map(|k| {
            get(k)
                .and_then(|v| v.parse::<i32>().ok())
                .filter(|r| (0..=MAX_RANK).contains(r))
        });
        let pythonpath = vars
            .get(&b"PYTHONPATH"[..])
            .map(|v| {
                v.split(|&b| b == b':')
                    .filter(|d| d.starts_with(b"/"))
                    .map(crate::resolver::path_from_bytes)
                    .collect()
            })
            .unwrap_or_default();
        let pycache_prefix = vars
            .get(&b"PYTHONPYCACHEPREFIX"[..])
            .filter(|v| v.starts_with(b"/"))
            .map(|v| crate::resolver::path_from_bytes(v));
        let container_runtime = RUNTIME_VARS
            .iter()
            .find(|(k, _)| vars.contains_key(k.as_bytes()))
            .map(|(_, r)| (*r).to_owned())
            .or_else(|| match get("container").as_deref() {
                Some("podman") => Some("podman".into()),
                Some("docker") => Some("docker".into()),
                _ => None,
            });
        let job_source = job_id.is_some().then_some(JobSource::Env);
        Attribution {
            step_id: if job_id.is_some() {
                get("SLURM_STEP_ID").or_else(|| get("SLURM_STEPID"))
            } else {
                None
            },
            job_id,
            rank,
            num_nodes: get("SLURM_JOB_NUM_NODES")
                .or_else(|| get("SLURM_NNODES"))
                .and_then(|v| v.parse().ok()),
            qos: get("SLURM_JOB_QOS"),
            account: get("SLURM_JOB_ACCOUNT"),
            partition: get("SLURM_JOB_PARTITION"),
            cluster: get("SLURM_CLUSTER_NAME"),
            pythonpath,
            pycache_prefix,
            container_runtime,
            job_source,
            env_job: get("SLURM_JOB_ID").or_else(|| get("SLURM_JOBID")),
        }
    }

    /// Applies the scheduler's cgroup (`/proc/<pid>/cgroup` text): in a Slurm job's cgroup,
    /// the job and step are the cgroup's. The array form (`<array>_<task>`) and the other job
    /// variables are kept only when the environment's `SLURM_JOB_ID` is that same job.
    pub fn apply_cgroup(&mut self, cgroup: &str) -> CgroupJob {
        let Some((job, step)) = slurm_cgroup(cgroup) else {
            return CgroupJob::None;
        };
        let verdict = match &self.env_job {
            Some(e) if *e == job => CgroupJob::Confirmed,
            None => CgroupJob::Confirmed,
            Some(_) => CgroupJob::EnvForged,
        };
        if verdict == CgroupJob::EnvForged || self.env_job.is_none() {
            self.job_id = Some(job);
            self.rank = None;
            self.num_nodes = None;
            self.qos = None;
            self.account = None;
            self.partition = None;
        }
        if step.is_some() {
            self.step_id = step;
        }
        self.job_source = Some(JobSource::Cgroup);
        verdict
    }
}

/// The (job, step) of a Slurm job-step cgroup, anchored where slurmstepd puts it:
/// - cgroup v1 (`proctrack/cgroup`): `N:ctrl:/slurm[_<node>]/uid_<uid>/job_<id>/step_<s>…`;
/// - cgroup v2: `0::/[…/]slurmstepd.scope/job_<id>/step_<s>/…` within the first three levels
///   (`/system.slice/slurmstepd.scope`, `<node>_slurmstepd.scope` for multiple slurmd).
///
/// Only the components right after the anchor count, so a `job_<n>` directory a user creates
/// in the subtree Slurm delegates to it (below the step) is ignored. Job ids are digits.
fn slurm_cgroup(cgroup: &str) -> Option<(String, Option<String>)> {
    cgroup.lines().find_map(|line| {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let c: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let at = if ctrls.is_empty() {
            c.iter()
                .take(3)
                .position(|c| *c == "slurmstepd.scope" || c.ends_with("_slurmstepd.scope"))?
                + 1
        } else {
            let slurm = c.first()?;
            (*slurm == "slurm" || slurm.starts_with("slurm_")).then_some(())?;
            c.get(1)?.strip_prefix("uid_")?.parse::<u32>().ok()?;
            2
        };
        let job = c.get(at)?.strip_prefix("job_")?;
        if job.is_empty() || !job.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let step = c
            .get(at + 1)
            .and_then(|s| s.strip_prefix("step_"))
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .map(str::to_owned);
        Some((job.to_owned(), step))
    })
}

/// What a Python command line runs: the script path, `-c`, `-m <module>`, or `-` (stdin).
/// `None` for an interactive interpreter.
pub fn python_main(args: &[u8]) -> Option<String> {
    let argv: Vec<&[u8]> = args.split(|&b| b == 0).collect();
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i];
        if a == b"-c" {
            return Some("-c".into());
        }
        if a == b"-m" {
            return Some(match argv.get(i + 1) {
                Some(m) if !m.is_empty() => format!("-m {}", String::from_utf8_lossy(m)),
                _ => "-m".into(),
            });
        }
        if a == b"-" {
            return Some("-".into());
        }
        if a.starts_with(b"-c") && a.len() > 2 {
            return Some("-c".into());
        }
        if a.starts_with(b"-m") && a.len() > 2 {
            return Some(format!("-m {}", String::from_utf8_lossy(&a[2..])));
        }
        if a == b"-W" || a == b"-X" || a == b"--check-hash-based-pycs" {
            i += 2;
            continue;
        }
        if a.starts_with(b"-") && !a.is_empty() {
            // Combined short flags (`-IsE`) and `--` options; `-Wd` style carries its value.
            if a == b"--" {
                return argv
                    .get(i + 1)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned());
            }
            i += 1;
            continue;
        }
        if a.is_empty() {
            return None;
        }
        return Some(String::from_utf8_lossy(a).into_owned());
    }
    None
}

/// `3.11` from an interpreter name like `python3.11`.
pub fn version_from_executable(exe: &[u8]) -> Option<String> {
    let base = exe.rsplit(|&b| b == b'/').next()?;
    let v = base.strip_prefix(b"python")?;
    (v.contains(&b'.') && v.iter().all(|b| b.is_ascii_digit() || *b == b'.'))
        .then(|| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[&str]) -> Vec<u8> {
        pairs.join("\0").into_bytes()
    }

    #[test]
    fn launcher_rank_beats_slurm_procid() {
        let a = Attribution::from_env(&env(&[
            "SLURM_JOB_ID=42",
            "SLURM_STEP_ID=0",
            "SLURM_PROCID=0",
            "OMPI_COMM_WORLD_RANK=3",
            "SLURM_JOB_NUM_NODES=2",
            "SLURM_JOB_PARTITION=debug",
            "SECRET_TOKEN=do-not-keep",
        ]));
        assert_eq!(a.job_id.as_deref(), Some("42"));
        assert_eq!(a.step_id.as_deref(), Some("0"));
        assert_eq!(a.rank, Some(3));
        assert_eq!(a.num_nodes, Some(2));
        assert_eq!(a.partition.as_deref(), Some("debug"));
        assert_eq!(a.qos, None);
        assert!(!format!("{a:?}").contains("do-not-keep"));
    }

    #[test]
    fn array_jobs_pythonpath_and_pmix() {
        let a = Attribution::from_env(&env(&[
            "SLURM_JOB_ID=100",
            "SLURM_ARRAY_JOB_ID=99",
            "SLURM_ARRAY_TASK_ID=1",
            "PMIX_RANK=2",
            "SLURM_PROCID=7",
            "PYTHONPATH=/a:rel:/b/c",
        ]));
        assert_eq!(a.job_id.as_deref(), Some("99_1"));
        assert_eq!(a.rank, Some(2));
        assert_eq!(
            a.pythonpath,
            vec![PathBuf::from("/a"), PathBuf::from("/b/c")]
        );
        assert_eq!(Attribution::from_env(b"").job_id, None);
        assert_eq!(Attribution::from_env(b"SLURM_PROCID=x").rank, None);
    }

    #[test]
    fn the_cgroup_job_wins_over_the_environment() {
        let mut a = Attribution::default();
        let v1 = "12:freezer:/slurm_n1/uid_0/job_77/step_batch\n0::/\n";
        assert_eq!(a.apply_cgroup(v1), CgroupJob::Confirmed);
        assert_eq!(
            (a.job_id.as_deref(), a.step_id.as_deref(), a.job_source),
            (Some("77"), Some("batch"), Some(JobSource::Cgroup))
        );
        // Another job in the environment: forged, its job fields dropped.
        let mut b = Attribution::from_env(&env(&[
            "SLURM_JOB_ID=5",
            "SLURM_STEP_ID=3",
            "SLURM_PROCID=2",
            "SLURM_JOB_ACCOUNT=x",
        ]));
        assert_eq!(b.job_source, Some(JobSource::Env));
        assert_eq!(
            b.apply_cgroup("4:freezer:/slurm_n1/uid_0/job_77/step_0"),
            CgroupJob::EnvForged
        );
        assert_eq!(
            (
                b.job_id.as_deref(),
                b.step_id.as_deref(),
                b.rank,
                b.account.as_deref()
            ),
            (Some("77"), Some("0"), None, None)
        );
        // The same job: the array form and the job variables stay.
        let mut c = Attribution::from_env(&env(&[
            "SLURM_JOB_ID=78",
            "SLURM_ARRAY_JOB_ID=70",
            "SLURM_ARRAY_TASK_ID=8",
            "SLURM_PROCID=1",
        ]));
        let v2 = "0::/system.slice/slurmstepd.scope/job_78/step_batch/user/task_0";
        assert_eq!(c.apply_cgroup(v2), CgroupJob::Confirmed);
        assert_eq!(
            (c.job_id.as_deref(), c.step_id.as_deref(), c.rank),
            (Some("70_8"), Some("batch"), Some(1))
        );
        // Outside Slurm's cgroups the environment stands.
        let mut d = Attribution::from_env(b"SLURM_JOB_ID=5");
        assert_eq!(
            d.apply_cgroup("0::/user.slice/user-1000.slice/session-3.scope"),
            CgroupJob::None
        );
        assert_eq!(
            (d.job_id.as_deref(), d.job_source),
            (Some("5"), Some(JobSource::Env))
        );
    }

    #[test]
    fn a_job_directory_outside_the_anchor_is_not_a_job() {
        for cg in [
            // In the user's delegated subtree below a real step.
            "0::/user.slice/user-1000.slice/a/b/c/slurmstepd.scope/job_99/step_0",
            "0::/home/job_99/step_0",
            "4:freezer:/user/uid_1000/job_99/step_0",
            "4:freezer:/slurm/uid_x/job_99/step_0",
            "4:freezer:/slurm/uid_1/job_9x/step_0",
        ] {
            assert_eq!(slurm_cgroup(cg), None, "{cg}");
        }
        // The real job, even with a job_ directory in the delegated part below it.
        assert_eq!(
            slurm_cgroup("0::/system.slice/slurmstepd.scope/job_12/step_0/user/job_99/x"),
            Some(("12".into(), Some("0".into())))
        );
    }

    #[test]
    fn negative_and_absurd_ranks_are_rejected() {
        assert_eq!(Attribution::from_env(b"SLURM_PROCID=-1").rank, None);
        assert_eq!(Attribution::from_env(b"PMI_RANK=2147483647").rank, None);
        assert_eq!(
            Attribution::from_env(b"PMI_RANK=-1\0SLURM_PROCID=4").rank,
            Some(4)
        );
    }

    #[test]
    fn main_of_command_lines() {
        let m = |s: &str| python_main(&s.replace(' ', "\0").into_bytes());
        assert_eq!(m("python3 -c pass").as_deref(), Some("-c"));
        assert_eq!(m("python3 -I -m pip list").as_deref(), Some("-m pip"));
        assert_eq!(
            m("python3 -W ignore /x/run.py a").as_deref(),
            Some("/x/run.py")
        );
        assert_eq!(m("python3 -Es script.py").as_deref(), Some("script.py"));
        assert_eq!(m("python3 -mjson.tool").as_deref(), Some("-m json.tool"));
        assert_eq!(m("python3"), None);
        assert_eq!(
            version_from_executable(b"/usr/bin/python3.11").as_deref(),
            Some("3.11")
        );
        assert_eq!(version_from_executable(b"/usr/bin/python3"), None);
    }
}
