//! Integer counting kernels over a [`Table`] (the CPU back end). Pure functions: the same
//! inputs give the same counts on every back end; floats are derived from counts elsewhere.
use std::collections::{BTreeMap, HashSet};

use crate::table::{Table, NO_JOB};

/// What "distinct" means for a top-N count (paper fig. 3 de-duplicates by user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dedup {
    /// Distinct users per package.
    User,
    /// Distinct jobs per package.
    Job,
    /// Distinct processes per package.
    Process,
}

/// Default filters of the paper: staff excluded; job-based figures only on compute nodes.
pub fn paper_filter(t: &Table, row: usize) -> bool {
    !t.is_staff[row]
}

/// `(package, count)`, count descending, then name ascending (a total order, so output is
/// identical whatever the back end's iteration order).
pub fn top_packages(t: &Table, by: Dedup, keep: impl Fn(usize) -> bool) -> Vec<(String, u64)> {
    let mut pairs: HashSet<(u32, u32)> = HashSet::new();
    for row in 0..t.len() {
        if !keep(row) {
            continue;
        }
        let key = match by {
            Dedup::User => t.user[row],
            Dedup::Job if t.job[row] == NO_JOB => continue,
            Dedup::Job => t.job[row],
            Dedup::Process => t.process[row],
        };
        pairs.insert((t.package[row], key));
    }
    let mut counts = vec![0u64; t.packages.len()];
    for (p, _) in pairs {
        counts[p as usize] += 1;
    }
    let mut out: Vec<(String, u64)> = counts
        .into_iter()
        .enumerate()
        .filter(|(_, c)| *c > 0)
        .map(|(p, c)| (t.packages.name(p as u32).to_owned(), c))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// Job-size histogram (paper fig. 4): distinct jobs by node count, compute nodes only.
pub fn job_sizes(t: &Table, keep: impl Fn(usize) -> bool) -> BTreeMap<u32, u64> {
    let mut seen = HashSet::new();
    let mut hist = BTreeMap::new();
    for row in 0..t.len() {
        if t.job[row] == NO_JOB || !t.is_compute[row] || !keep(row) {
            continue;
        }
        if seen.insert(t.job[row]) {
            *hist.entry(t.num_nodes[row]).or_insert(0) += 1;
        }
    }
    hist
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{generate, Params};

    fn t() -> Table {
        let mut rs = generate(Params {
            rows: 8,
            seed: 1,
            users: 3,
        });
        // Hand-made: 3 users, 2 jobs, 4 processes.
        let spec = [
            ("numpy", "alice", Some("1"), 10, 2),
            ("numpy", "alice", Some("1"), 11, 2), // second rank of job 1
            ("scipy", "alice", Some("1"), 10, 2),
            ("numpy", "bob", Some("2"), 20, 1),
            ("yaml", "bob", None, 21, 1),
            ("numpy", "staff1", Some("3"), 30, 8),
        ];
        rs.truncate(spec.len());
        for (r, (pkg, user, job, pid, nodes)) in rs.iter_mut().zip(spec) {
            r.package = pkg.into();
            r.username = Some(user.into());
            r.is_staff = user.starts_with("staff");
            r.job_id = job.map(str::to_owned);
            r.pid = pid;
            r.process_start = 0;
            r.host = "h".into();
            r.num_nodes = nodes;
            r.is_compute = true;
        }
        Table::from_records(&rs)
    }

    #[test]
    fn hand_computed_top_n_and_job_sizes() {
        let t = t();
        let f = |row| paper_filter(&t, row);
        assert_eq!(
            top_packages(&t, Dedup::User, f),
            vec![("numpy".into(), 2), ("scipy".into(), 1), ("yaml".into(), 1)]
        );
        assert_eq!(
            top_packages(&t, Dedup::Job, f),
            vec![("numpy".into(), 2), ("scipy".into(), 1)]
        );
        assert_eq!(
            top_packages(&t, Dedup::Process, f),
            vec![("numpy".into(), 3), ("scipy".into(), 1), ("yaml".into(), 1)]
        );
        assert_eq!(
            top_packages(&t, Dedup::User, |_| true)[0],
            ("numpy".into(), 3)
        );
        assert_eq!(job_sizes(&t, f), BTreeMap::from([(1, 1), (2, 1)]));
    }
}
