//! Integer counting kernels over a [`Table`] (the CPU back end). Pure functions: the same
//! inputs give the same counts on every back end; floats are derived from counts elsewhere.
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::table::{Table, NONE, NO_JOB};

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

/// Distinct (job, package) pairs, each package 0/1 per job: the input of figs. 5–7.
fn job_packages(
    t: &Table,
    keep: &impl Fn(usize) -> bool,
) -> (HashSet<(u32, u32)>, BTreeMap<u32, u32>) {
    let mut pairs = HashSet::new();
    let mut nodes = BTreeMap::new();
    for row in 0..t.len() {
        if t.job[row] == NO_JOB || !t.is_compute[row] || !keep(row) {
            continue;
        }
        pairs.insert((t.job[row], t.package[row]));
        nodes.insert(t.job[row], t.num_nodes[row]);
    }
    (pairs, nodes)
}

/// Package × job-size 2D histogram (paper fig. 5), de-duplicated by (job, package): for each
/// package, jobs using it by node count.
pub fn package_by_job_size(
    t: &Table,
    keep: impl Fn(usize) -> bool,
) -> BTreeMap<String, BTreeMap<u32, u64>> {
    let (pairs, nodes) = job_packages(t, &keep);
    let mut out: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
    for (job, pkg) in pairs {
        *out.entry(t.packages.name(pkg).to_owned())
            .or_default()
            .entry(nodes[&job])
            .or_insert(0) += 1;
    }
    out
}

/// Integer inputs of the Pearson correlation between packages within jobs: the number of jobs
/// `n`, jobs per package, and jobs per pair of packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoOccurrence {
    /// Package names, in id order of the matrices.
    pub packages: Vec<String>,
    /// Jobs considered.
    pub jobs: u64,
    /// Jobs using package i.
    pub single: Vec<u64>,
    /// Jobs using both i and j (symmetric, row-major `packages.len()²`).
    pub pair: Vec<u64>,
}

/// Co-occurrence counts of packages within jobs (the integer part of paper fig. 6).
pub fn co_occurrence(t: &Table, keep: impl Fn(usize) -> bool) -> CoOccurrence {
    let (pairs, nodes) = job_packages(t, &keep);
    let n = t.packages.len();
    let mut by_job: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (job, pkg) in pairs {
        by_job.entry(job).or_default().push(pkg);
    }
    let mut single = vec![0u64; n];
    let mut pair = vec![0u64; n * n];
    for pkgs in by_job.values() {
        for &a in pkgs {
            single[a as usize] += 1;
            for &b in pkgs {
                pair[a as usize * n + b as usize] += 1;
            }
        }
    }
    CoOccurrence {
        packages: (0..n as u32)
            .map(|i| t.packages.name(i).to_owned())
            .collect(),
        jobs: nodes.len() as u64,
        single,
        pair,
    }
}

/// Pearson correlation of two 0/1 variables over `n` jobs from integer counts — the one
/// floating-point function every back end shares, so their outputs are bit-identical.
/// `None` when either variable is constant (correlation undefined).
pub fn pearson(n: u64, a: u64, b: u64, ab: u64) -> Option<f64> {
    let (n, a, b, ab) = (n as f64, a as f64, b as f64, ab as f64);
    let cov = n * ab - a * b;
    let var = (n * a - a * a) * (n * b - b * b);
    (var > 0.0).then(|| cov / var.sqrt())
}

impl CoOccurrence {
    /// The correlation matrix (row-major), `None` where undefined.
    pub fn correlations(&self) -> Vec<Option<f64>> {
        let n = self.packages.len();
        (0..n * n)
            .map(|k| {
                pearson(
                    self.jobs,
                    self.single[k / n],
                    self.single[k % n],
                    self.pair[k],
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod correlation_tests {
    use super::*;
    use crate::synth::{generate, Params};

    #[test]
    fn pearson_matches_hand_values() {
        // 4 jobs: A in {1,2}, B in {1,2}: perfectly correlated.
        assert_eq!(pearson(4, 2, 2, 2), Some(1.0));
        // A in {1,2}, B in {3,4}: anti-correlated.
        assert_eq!(pearson(4, 2, 2, 0), Some(-1.0));
        // A in {1,2}, B in {1,3}: independent.
        assert_eq!(pearson(4, 2, 2, 1), Some(0.0));
        // A in every job: undefined.
        assert_eq!(pearson(4, 4, 2, 2), None);
        // A in {1,2,3}, B in {1}: r = (4*1-3*1)/sqrt((12-9)*(4-1)) = 1/3.
        assert!((pearson(4, 3, 1, 1).unwrap() - 1.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn synthetic_correlations_show_the_planted_ones() {
        let recs = generate(Params {
            rows: 60_000,
            seed: 11,
            users: 500,
        });
        let t = Table::from_records(&recs);
        let co = co_occurrence(&t, |_| true);
        let n = co.packages.len();
        let idx = |p: &str| co.packages.iter().position(|x| x == p).unwrap();
        let r = co.correlations();
        let xd = r[idx("xarray") * n + idx("dask")].unwrap();
        let xs = r[idx("xarray") * n + idx("seaborn")].unwrap();
        assert!(xd > 0.5, "xarray→dask planted: {xd}");
        assert!(xs.abs() < 0.1, "unrelated: {xs}");
        assert_eq!(r[idx("numpy") * n + idx("numpy")], Some(1.0));
        let hist = package_by_job_size(&t, |_| true);
        let mpi_big: u64 = hist["mpi4py"]
            .iter()
            .filter(|(k, _)| **k >= 1024)
            .map(|(_, v)| v)
            .sum();
        assert!(mpi_big >= 1, "thousand-node jobs are mpi4py jobs");
    }
}

/// `part / whole` — the one place a share is computed from integer counts, so every back end
/// prints the same digits. `None` for an empty whole.
pub fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Versions in use: for each package, distinct users per version (and of the package).
pub fn versions(
    t: &Table,
    keep: impl Fn(usize) -> bool,
) -> BTreeMap<String, (u64, BTreeMap<String, u64>)> {
    let mut by_version: HashSet<(u32, u32, u32)> = HashSet::new();
    let mut by_package: HashSet<(u32, u32)> = HashSet::new();
    for row in 0..t.len() {
        if !keep(row) || t.version[row] == NONE {
            continue;
        }
        by_version.insert((t.package[row], t.version[row], t.user[row]));
        by_package.insert((t.package[row], t.user[row]));
    }
    let mut out: BTreeMap<String, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    for (p, _) in by_package {
        out.entry(t.packages.name(p).to_owned()).or_default().0 += 1;
    }
    for (p, v, _) in by_version {
        *out.entry(t.packages.name(p).to_owned())
            .or_default()
            .1
            .entry(t.versions.name(v).to_owned())
            .or_insert(0) += 1;
    }
    out
}

/// Environment kinds: distinct processes importing a non-stdlib package from each kind.
pub fn env_kinds(t: &Table, keep: impl Fn(usize) -> bool) -> BTreeMap<String, u64> {
    let mut seen: HashSet<(u32, u32)> = HashSet::new();
    for row in 0..t.len() {
        if keep(row) && t.env_kinds.name(t.env_kind[row]) != "stdlib" {
            seen.insert((t.env_kind[row], t.process[row]));
        }
    }
    let mut out = BTreeMap::new();
    for (k, _) in seen {
        *out.entry(t.env_kinds.name(k).to_owned()).or_insert(0) += 1;
    }
    out
}

/// BLAS backends among jobs that use numpy or scipy: distinct jobs per backend (`unknown` when
/// no BLAS library was seen in the job's numpy/scipy processes).
pub fn blas_in_numpy_jobs(t: &Table, keep: impl Fn(usize) -> bool) -> BTreeMap<String, u64> {
    let wanted: Vec<u32> = ["numpy", "scipy"]
        .iter()
        .filter_map(|p| (0..t.packages.len() as u32).find(|&i| t.packages.name(i) == *p))
        .collect();
    let mut job_blas: BTreeMap<u32, Option<u32>> = BTreeMap::new();
    for row in 0..t.len() {
        if !keep(row) || t.job[row] == NO_JOB || !wanted.contains(&t.package[row]) {
            continue;
        }
        let e = job_blas.entry(t.job[row]).or_insert(None);
        if e.is_none() && t.blas[row] != NONE {
            *e = Some(t.blas[row]);
        }
    }
    let mut out = BTreeMap::new();
    for b in job_blas.values() {
        let name = b
            .map(|b| t.blases.name(b).to_owned())
            .unwrap_or_else(|| "unknown".into());
        *out.entry(name).or_insert(0) += 1;
    }
    out
}

/// Per package: distinct processes, and those that ended by a signal — what atexit-based
/// tools never saw.
pub fn signaled(t: &Table, keep: impl Fn(usize) -> bool) -> BTreeMap<String, (u64, u64)> {
    let mut seen: HashSet<(u32, u32, bool)> = HashSet::new();
    for row in 0..t.len() {
        if keep(row) {
            seen.insert((t.package[row], t.process[row], t.signaled[row]));
        }
    }
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (p, _, sig) in seen {
        let e = out.entry(t.packages.name(p).to_owned()).or_default();
        e.0 += 1;
        e.1 += sig as u64;
    }
    out
}

/// Distinct users per month for the given packages: the per-month trend of the top packages.
pub fn monthly_users(
    t: &Table,
    packages: &[String],
    keep: impl Fn(usize) -> bool,
) -> BTreeMap<String, BTreeMap<u32, u64>> {
    let ids: HashMap<u32, &String> = packages
        .iter()
        .filter_map(|p| {
            (0..t.packages.len() as u32)
                .find(|&i| t.packages.name(i) == p)
                .map(|i| (i, p))
        })
        .collect();
    let mut seen: HashSet<(u32, u32, u32)> = HashSet::new();
    for row in 0..t.len() {
        if keep(row) && ids.contains_key(&t.package[row]) {
            seen.insert((t.package[row], t.month[row], t.user[row]));
        }
    }
    let mut out: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
    for (p, m, _) in seen {
        *out.entry(ids[&p].to_string())
            .or_default()
            .entry(m)
            .or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod beyond_tests {
    use super::*;
    use crate::synth::{generate, Params};

    #[test]
    fn hand_checked_beyond_the_paper_tables() {
        let mut rs = generate(Params {
            rows: 4,
            seed: 1,
            users: 3,
        });
        // Two users of numpy: alice with 1.0 (job 1, openblas, signaled), bob with 2.0 (job 2, no BLAS seen).
        let spec = [
            (
                "numpy",
                "alice",
                "1",
                10,
                Some("1.0"),
                Some("openblas"),
                "signaled",
                "conda",
            ),
            (
                "scipy",
                "alice",
                "1",
                10,
                Some("1.1"),
                None,
                "signaled",
                "conda",
            ),
            ("numpy", "bob", "2", 20, Some("2.0"), None, "exited", "venv"),
            ("json", "bob", "2", 20, None, None, "exited", "stdlib"),
        ];
        for (r, (pkg, user, job, pid, ver, blas, exit, env)) in rs.iter_mut().zip(spec) {
            r.package = pkg.into();
            r.username = Some(user.into());
            r.job_id = Some(job.into());
            r.pid = pid;
            r.process_start = 0;
            r.host = "h".into();
            r.version = ver.map(str::to_owned);
            r.blas = blas.map(str::to_owned);
            r.exit = exit.into();
            r.env_kind = env.into();
        }
        let t = Table::from_records(&rs);
        let v = versions(&t, |_| true);
        assert_eq!(
            v["numpy"],
            (2, BTreeMap::from([("1.0".into(), 1), ("2.0".into(), 1)]))
        );
        assert_eq!(share(v["numpy"].1["1.0"], v["numpy"].0), Some(0.5));
        assert_eq!(
            env_kinds(&t, |_| true),
            BTreeMap::from([("conda".into(), 1), ("venv".into(), 1)])
        );
        assert_eq!(
            blas_in_numpy_jobs(&t, |_| true),
            BTreeMap::from([("openblas".into(), 1), ("unknown".into(), 1)])
        );
        let s = signaled(&t, |_| true);
        assert_eq!((s["numpy"], s["json"]), ((2, 1), (1, 0)));
        let m = monthly_users(&t, &["numpy".to_string()], |_| true);
        assert_eq!(m["numpy"].values().sum::<u64>(), 2);
        assert_eq!(share(1, 0), None);
    }
}
