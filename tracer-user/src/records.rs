//! Building import records from finished (or still running) processes: one record per
//! (process, top-level package). Pure apart from the cached user database look-up.
use std::collections::HashMap;

use nix::unistd::{Group, Uid, User};
use pyusage_record::{Exit, Record, Source};

use crate::proctable::{Ending, Finished, PackageSeen, Process};

/// Facts about this node, from configuration.
#[derive(Debug, Clone)]
pub struct Node {
    /// Short host name.
    pub host: String,
    /// Cluster name (else the job's `SLURM_CLUSTER_NAME`).
    pub system: Option<String>,
    /// Node class.
    pub subsystem: Option<String>,
    /// Compute node.
    pub is_compute: bool,
    /// Group whose members are staff.
    pub staff_group: Option<String>,
}

/// uid → (user name, is staff), cached: the user database can be slow (LDAP).
pub struct Users {
    staff_group: Option<String>,
    cache: HashMap<u32, (Option<String>, bool)>,
}

impl Users {
    /// A cache for the given staff group.
    pub fn new(staff_group: Option<String>) -> Users {
        Users {
            staff_group,
            cache: HashMap::new(),
        }
    }

    /// Name and staff flag of `uid`.
    pub fn lookup(&mut self, uid: u32) -> (Option<String>, bool) {
        let staff_group = self.staff_group.clone();
        self.cache
            .entry(uid)
            .or_insert_with(|| {
                let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
                let staff = match (&user, staff_group.as_deref()) {
                    (Some(u), Some(g)) => Group::from_name(g)
                        .ok()
                        .flatten()
                        .map(|grp| grp.gid == u.gid || grp.mem.contains(&u.name))
                        .unwrap_or(false),
                    _ => false,
                };
                (user.map(|u| u.name), staff)
            })
            .clone()
    }
}

/// Name of a signal number (`SIGKILL`), or `SIG<n>` for one nix does not know.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("SIG{sig}"))
}

/// Which collectors saw package `s` in process `p`: the kernel, the library, the atexit
/// report, in that order (the first is the record's `source`).
fn sources(p: &Process, s: &PackageSeen) -> Vec<Source> {
    let mut v = Vec::with_capacity(3);
    if s.n_files > 0 || (s.n_preload == 0 && !s.atexit) {
        v.push(if p.seeded {
            Source::EbpfSeeded
        } else {
            Source::Ebpf
        });
    }
    if s.n_preload > 0 {
        v.push(Source::Preload);
    }
    if s.atexit {
        v.push(Source::Atexit);
    }
    v
}

/// Records for one process; `seq` and `record_id` are assigned by the spool.
pub fn build(f: &Finished, node: &Node, users: &mut Users) -> Vec<Record> {
    let p = &f.process;
    let a = &p.attribution;
    let (username, is_staff) = users.lookup(p.uid);
    let (exit, exit_code, exit_signal) = match f.ending {
        Ending::Exited(c) => (Exit::Exited, Some(c), None),
        Ending::Signaled(s) => (Exit::Signaled, None, Some(signal_name(s))),
        Ending::Unknown => (Exit::Unknown, None, None),
        Ending::Running => (Exit::Running, None, None),
    };
    p.packages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s,
                p.samples.record_fields(i as u32, |c| {
                    p.packages
                        .get(c as usize)
                        .map(|x| x.resolved.package.clone())
                }),
            )
        })
        .map(|(s, sampled)| Record {
            record_id: String::new(),
            seq: 0,
            source: sources(p, s)[0],
            sources: sources(p, s),
            host: node.host.clone(),
            system: node.system.clone().or_else(|| a.cluster.clone()),
            subsystem: node.subsystem.clone(),
            is_compute: node.is_compute,
            pid: p.pid as i32,
            ppid: p.ppid as i32,
            root_pid: p.root_pid as i32,
            process_start: p.start,
            process_end: f.end,
            exit,
            exit_code,
            exit_signal: exit_signal.clone(),
            executable: p.executable.clone(),
            python_version: p.python_version.clone(),
            main: p.main.clone(),
            uid: p.uid,
            username: username.clone(),
            is_staff,
            in_container: p.in_container,
            container_runtime: a.container_runtime.clone(),
            blas: p.blas.map(str::to_owned),
            job_id: a.job_id.clone(),
            step_id: a.step_id.clone(),
            job_source: a.job_source,
            rank: a.rank,
            n_ranks: None,
            num_nodes: if a.job_id.is_some() {
                a.num_nodes.unwrap_or(1)
            } else {
                1
            },
            qos: a.qos.clone(),
            account: a.account.clone(),
            partition: a.partition.clone(),
            package: s.resolved.package.clone(),
            distribution: s.resolved.distribution.clone(),
            version: s.resolved.version.clone(),
            env_kind: s.resolved.env_kind,
            env_prefix: s.resolved.env_prefix.clone(),
            first_path: s.first_path.clone(),
            n_files: s.n_files.max(s.n_preload),
            first_seen: s.first_seen,
            cpu_user_us: f.cpu.map(|c| c.user_us),
            cpu_sys_us: f.cpu.map(|c| c.sys_us),
            // Filled by the CPU sampler (issue 14 part 2); not sampled until then.
            cpu_sampling: sampled.sampling,
            cpu_sample_hz: sampled.hz,
            cpu_samples_total: sampled.total,
            cpu_samples_self: sampled.self_samples,
            cpu_samples_inclusive: sampled.inclusive,
            cpu_samples_callers: sampled.callers,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(99), "SIG99");
    }

    #[test]
    fn root_resolves() {
        let mut u = Users::new(Some("root".into()));
        assert_eq!(u.lookup(0), (Some("root".into()), true));
        assert_eq!(u.lookup(4_000_000_000).0, None);
    }
}
