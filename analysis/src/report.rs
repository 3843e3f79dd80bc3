//! Every table of one analysis run, for every period requested (all permutations in one run,
//! as the paper did), as plain serialisable data. The CLI prints it; the HTML report (to come)
//! renders it.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    counts::{
        blas_in_numpy_jobs, co_occurrence, env_kinds, job_sizes, monthly_users,
        package_by_job_size, share, signaled, top_packages, versions, Dedup,
    },
    table::Table,
};

/// Period granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PeriodKind {
    /// Calendar months.
    Month,
    /// Calendar quarters.
    Quarter,
    /// Calendar years.
    Year,
    /// The whole range.
    All,
}

/// The label and bucket of a month (`year * 12 + month0`) for a granularity.
pub fn bucket(kind: PeriodKind, month: u32) -> (u32, String) {
    let (y, m0) = (month / 12, month % 12);
    match kind {
        PeriodKind::Month => (month, format!("{y}-{:02}", m0 + 1)),
        PeriodKind::Quarter => (y * 4 + m0 / 3, format!("{y}-Q{}", m0 / 3 + 1)),
        PeriodKind::Year => (y, format!("{y}")),
        PeriodKind::All => (0, "all".into()),
    }
}

/// A package and a count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    /// Package.
    pub package: String,
    /// Count.
    pub count: u64,
}

/// Pearson correlations among the top packages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Correlation {
    /// Jobs considered.
    pub jobs: u64,
    /// Row/column packages.
    pub packages: Vec<String>,
    /// Row-major matrix; null where undefined (a package in every job or none).
    pub matrix: Vec<Vec<Option<f64>>>,
    /// The paper's clip view.
    pub clip_view: [f64; 2],
}

/// The tables of one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodReport {
    /// `2026-03`, `2026-Q1`, `2026` or `all`.
    pub period: String,
    /// Rows in the period after filters.
    pub rows: u64,
    /// Fig. 3 and variants.
    pub top_packages_by_user: Vec<Count>,
    /// By job.
    pub top_packages_by_job: Vec<Count>,
    /// By process.
    pub top_packages_by_process: Vec<Count>,
    /// Fig. 4: jobs by node count.
    pub job_sizes: BTreeMap<u32, u64>,
    /// Fig. 5: package → node count → jobs.
    pub package_by_job_size: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Fig. 6.
    pub correlation: Correlation,
    /// Fig. 7: for each chosen package, the others by correlation, strongest first.
    pub correlation_slices: BTreeMap<String, Vec<(String, f64)>>,
    /// For the top packages by user: users per version and their share of the package's users.
    pub versions: BTreeMap<String, Vec<Share>>,
    /// Processes importing non-stdlib packages, by environment kind.
    pub env_kinds: Vec<Share>,
    /// Jobs using numpy or scipy, by BLAS backend.
    pub blas_in_numpy_jobs: Vec<Share>,
    /// For the top packages by process: processes that ended by a signal.
    pub signaled: Vec<Share>,
    /// For the top packages by user: distinct users per month.
    pub monthly_users: BTreeMap<String, BTreeMap<String, u64>>,
}

/// A count, its whole and the share derived from both (by [`share`], shared by back ends).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    /// What is counted (a version, an environment kind, a BLAS, a package).
    pub key: String,
    /// Count.
    pub count: u64,
    /// Of how many.
    pub of: u64,
    /// `count / of`.
    pub share: Option<f64>,
}

/// Shares of `of` (the sum of the counts when `None`), largest first.
fn shares(m: BTreeMap<String, u64>, of: Option<u64>) -> Vec<Share> {
    let of = of.unwrap_or_else(|| m.values().sum());
    let mut v: Vec<Share> = m
        .into_iter()
        .map(|(key, count)| Share {
            key,
            count,
            of,
            share: share(count, of),
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    v
}

/// Packages whose 1D correlation slices are reported (paper fig. 7).
pub const SLICES: &[&str] = &["mpi4py", "multiprocessing", "dask"];

/// Computes every table for each period of `kind` present in `t`, rows kept by `keep`.
pub fn run(
    t: &Table,
    kind: PeriodKind,
    top: usize,
    keep: impl Fn(usize) -> bool + Sync,
) -> Vec<PeriodReport> {
    let mut buckets: BTreeMap<u32, String> = BTreeMap::new();
    for &m in &t.month {
        let (b, label) = bucket(kind, m);
        buckets.entry(b).or_insert(label);
    }
    buckets
        .into_iter()
        .map(|(b, label)| {
            let f = |row: usize| bucket(kind, t.month[row]).0 == b && keep(row);
            period(t, label, top, &f)
        })
        .collect()
}

fn period(t: &Table, label: String, top: usize, f: &dyn Fn(usize) -> bool) -> PeriodReport {
    let counts = |by| -> Vec<Count> {
        top_packages(t, by, f)
            .into_iter()
            .take(top)
            .map(|(package, count)| Count { package, count })
            .collect()
    };
    let co = co_occurrence(t, f);
    let r = co.correlations();
    let n = co.packages.len();
    let idx = |p: &str| co.packages.iter().position(|x| x == p);
    let top_by_job = counts(Dedup::Job);
    let names: Vec<String> = top_by_job.iter().map(|c| c.package.clone()).collect();
    let matrix = names
        .iter()
        .map(|p| {
            names
                .iter()
                .map(|q| r[idx(p).expect("known") * n + idx(q).expect("known")])
                .collect()
        })
        .collect();
    let correlation_slices = SLICES
        .iter()
        .filter_map(|p| idx(p).map(|i| (p, i)))
        .map(|(p, i)| {
            let mut v: Vec<(String, f64)> = (0..n)
                .filter(|&j| j != i)
                .filter_map(|j| r[i * n + j].map(|c| (co.packages[j].clone(), c)))
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(top);
            (p.to_string(), v)
        })
        .collect();
    let top_users = counts(Dedup::User);
    let top_user_names: Vec<String> = top_users.iter().map(|c| c.package.clone()).collect();
    let top_procs = counts(Dedup::Process);
    let mut vers = versions(t, f);
    let versions = top_user_names
        .iter()
        .filter_map(|p| {
            vers.remove(p)
                .map(|(of, by)| (p.clone(), shares(by, Some(of))))
        })
        .collect();
    let sig = signaled(t, f);
    let signaled = top_procs
        .iter()
        .filter_map(|c| {
            sig.get(&c.package).map(|&(of, count)| Share {
                key: c.package.clone(),
                count,
                of,
                share: share(count, of),
            })
        })
        .collect();
    let monthly_users = monthly_users(t, &top_user_names, f)
        .into_iter()
        .map(|(p, m)| {
            (
                p,
                m.into_iter()
                    .map(|(k, v)| (bucket(PeriodKind::Month, k).1, v))
                    .collect(),
            )
        })
        .collect();
    PeriodReport {
        versions,
        env_kinds: shares(env_kinds(t, f), None),
        blas_in_numpy_jobs: shares(blas_in_numpy_jobs(t, f), None),
        signaled,
        monthly_users,
        period: label,
        rows: (0..t.len()).filter(|&i| f(i)).count() as u64,
        top_packages_by_user: top_users,
        top_packages_by_process: top_procs,
        top_packages_by_job: top_by_job,
        job_sizes: job_sizes(t, f),
        package_by_job_size: package_by_job_size(t, f),
        correlation: Correlation {
            jobs: co.jobs,
            packages: names,
            matrix,
            clip_view: [0.6, 0.8],
        },
        correlation_slices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{generate, Params};

    #[test]
    fn periods_partition_the_rows() {
        let t = Table::from_records(&generate(Params {
            rows: 30_000,
            seed: 2,
            users: 300,
        }));
        let all = run(&t, PeriodKind::All, 10, |_| true);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].rows, t.len() as u64);
        let months = run(&t, PeriodKind::Month, 10, |_| true);
        assert_eq!(months.len(), 12);
        assert_eq!(months.iter().map(|p| p.rows).sum::<u64>(), t.len() as u64);
        assert_eq!(months[0].period, "2026-01");
        let quarters = run(&t, PeriodKind::Quarter, 10, |_| true);
        assert_eq!(
            quarters
                .iter()
                .map(|q| q.period.as_str())
                .collect::<Vec<_>>(),
            ["2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4"]
        );
        // Distinct users per package in a quarter never exceed the year's.
        let year = &run(&t, PeriodKind::Year, 10, |_| true)[0];
        for q in &quarters {
            for c in &q.top_packages_by_user {
                let y = year
                    .top_packages_by_user
                    .iter()
                    .find(|x| x.package == c.package)
                    .map(|x| x.count)
                    .unwrap_or(u64::MAX);
                assert!(c.count <= y);
            }
        }
        assert_eq!(bucket(PeriodKind::Month, 2026 * 12 + 11).1, "2026-12");
        // Beyond the paper: the synthetic MKL share (users with uid % 6 == 0) shows up.
        let blas = &year.blas_in_numpy_jobs;
        let mkl = blas.iter().find(|s| s.key == "mkl").unwrap().share.unwrap();
        assert!((0.08..0.30).contains(&mkl), "mkl share {mkl}");
        let sig = year
            .signaled
            .iter()
            .find(|s| s.key == "numpy")
            .unwrap()
            .share
            .unwrap();
        assert!(
            (0.02..0.10).contains(&sig),
            "5% of synthetic processes are killed: {sig}"
        );
        assert_eq!(year.monthly_users["numpy"].len(), 12);
    }
}
