//! Job, rank and user attribution from what the kernel captured at exec: the environment block
//! and argv. Only the documented variables are kept; the rest of the environment is dropped
//! here, before anything is stored.
//!
//! Capturing at exec (not from `/proc/<pid>/environ` later) is what makes this right for a
//! process that lives 2 ms or clears its own environment. The cgroup path
//! (`…/job_<id>/step_<n>`) is a fallback for a process whose environment lacks the job.
use std::path::PathBuf;

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
        let rank = RANK_VARS
            .iter()
            .find_map(|k| get(k).and_then(|v| v.parse::<i32>().ok()));
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
        }
    }

    /// Fills a missing job or step from a `/proc/<pid>/cgroup` text (`…/job_<id>/step_<n>`).
    pub fn fill_from_cgroup(&mut self, cgroup: &str) {
        for line in cgroup.lines() {
            let path = line.rsplit(':').next().unwrap_or("");
            let mut job = None;
            let mut step = None;
            for part in path.split('/') {
                if let Some(j) = part.strip_prefix("job_") {
                    job = Some(j.to_owned());
                } else if let Some(s) = part.strip_prefix("step_") {
                    step = Some(s.to_owned());
                }
            }
            if let Some(j) = job {
                // The environment wins; the cgroup fills gaps (batch steps carry no
                // SLURM_STEP_ID) only when it names the same job.
                match &self.job_id {
                    None => self.job_id = Some(j),
                    Some(env_job) if *env_job != j => return,
                    Some(_) => {}
                }
                if self.step_id.is_none() {
                    self.step_id = step;
                }
                return;
            }
        }
    }
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
    fn cgroup_fallback() {
        let mut a = Attribution::default();
        a.fill_from_cgroup("12:freezer:/slurm_n1/uid_0/job_77/step_batch\n0::/\n");
        assert_eq!(
            (a.job_id.as_deref(), a.step_id.as_deref()),
            (Some("77"), Some("batch"))
        );
        let mut b = Attribution::from_env(b"SLURM_JOB_ID=5");
        b.fill_from_cgroup("4:freezer:/slurm_n1/uid_0/job_77/step_0");
        assert_eq!(
            (b.job_id.as_deref(), b.step_id.as_deref()),
            (Some("5"), None)
        );
        let mut c = Attribution::from_env(b"SLURM_JOB_ID=5");
        c.fill_from_cgroup("4:freezer:/slurm_n1/uid_0/job_5/step_batch");
        assert_eq!(
            (c.job_id.as_deref(), c.step_id.as_deref()),
            (Some("5"), Some("batch"))
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
