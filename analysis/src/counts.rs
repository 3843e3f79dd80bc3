//! Stage 2's output, the contract between the back ends and the report: integer counts in
//! dense arrays, per period. Both back ends fill [`KindCounts`] with the same definitions
//! (below, per field); every floating-point number is derived from these counts afterwards by
//! [`pearson`] and [`share`], the only float code, shared — so back ends that agree on counts
//! print identical bytes.
use serde::Serialize;

use crate::model::{Interner, Names, MAX_NODES, NODE_BINS};

/// Period granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
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

impl PeriodKind {
    /// Every granularity, finest first.
    pub const ALL: [PeriodKind; 4] = [
        PeriodKind::Month,
        PeriodKind::Quarter,
        PeriodKind::Year,
        PeriodKind::All,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            PeriodKind::Month => "month",
            PeriodKind::Quarter => "quarter",
            PeriodKind::Year => "year",
            PeriodKind::All => "all",
        }
    }

    /// The bucket of a month (`year * 12 + month0`).
    pub fn bucket(self, month: u16) -> u32 {
        let (y, m0) = (month as u32 / 12, month as u32 % 12);
        match self {
            PeriodKind::Month => month as u32,
            PeriodKind::Quarter => y * 4 + m0 / 3,
            PeriodKind::Year => y,
            PeriodKind::All => 0,
        }
    }

    /// The label of a bucket: `2026-03`, `2026-Q1`, `2026` or `all`.
    pub fn label(self, bucket: u32) -> String {
        match self {
            PeriodKind::Month => format!("{}-{:02}", bucket / 12, bucket % 12 + 1),
            PeriodKind::Quarter => format!("{}-Q{}", bucket / 4, bucket % 4 + 1),
            PeriodKind::Year => format!("{bucket}"),
            PeriodKind::All => "all".into(),
        }
    }

    /// The buckets (sorted) of the months present, and each month's bucket index, as a
    /// lookup table indexed by `month - months[0]`.
    pub fn layout(self, months: &[u16]) -> (Vec<u32>, Vec<u32>) {
        let mut buckets: Vec<u32> = months.iter().map(|&m| self.bucket(m)).collect();
        buckets.sort_unstable();
        buckets.dedup();
        let (lo, hi) = match (months.first(), months.last()) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            _ => return (buckets, Vec::new()),
        };
        let lut = (lo..=hi)
            .map(|m| {
                buckets
                    .binary_search(&self.bucket(m))
                    .map(|i| i as u32)
                    .unwrap_or(u32::MAX)
            })
            .collect();
        (buckets, lut)
    }
}

/// Most packages in the pair-count rows of one bucket (one bit each in a 64-bit job mask).
pub const MAX_PAIR_ROWS: usize = 64;

/// Packages whose 1D correlation slices are reported (paper fig. 7).
pub const SLICES: &[&str] = &["mpi4py", "multiprocessing", "dask"];

/// Sizes of the dense arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Buckets.
    pub buckets: usize,
    /// Packages.
    pub packages: usize,
    /// (package, version) pairs.
    pub versions: usize,
    /// Environment kinds.
    pub env_kinds: usize,
    /// BLAS backends.
    pub blases: usize,
}

impl Dims {
    /// The sizes of `names` for `buckets` buckets.
    pub fn of(names: &Names, buckets: usize) -> Dims {
        let len = |i: &std::sync::Mutex<Interner>| i.lock().expect("interner lock").len();
        Dims {
            buckets,
            packages: len(&names.packages),
            versions: len(&names.versions),
            env_kinds: len(&names.env_kinds),
            blases: len(&names.blases),
        }
    }
}

/// The integer counts of one period granularity. `[b][x]` is stored at `b * width + x`. All
/// counts are over the rows kept by the filter; "job rows" are those also kept for job-based
/// tables (`KEEP_JOB`) that belong to a job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KindCounts {
    /// Bucket values (see [`PeriodKind::bucket`]), sorted.
    pub buckets: Vec<u32>,
    /// `[b]`: kept rows.
    pub rows: Vec<u64>,
    /// `[b][package]`: distinct users (fig. 3).
    pub by_user: Vec<u64>,
    /// `[b][package]`: distinct jobs, over all kept rows in a job.
    pub by_job: Vec<u64>,
    /// `[b][package]`: distinct processes.
    pub by_process: Vec<u64>,
    /// `[b][package]`: distinct processes that ended by a signal.
    pub signaled: Vec<u64>,
    /// `[b][package]`: distinct users among rows with a known version.
    pub versioned_users: Vec<u64>,
    /// `[b][version]`: distinct users per (package, version).
    pub version_users: Vec<u64>,
    /// `[b][env kind]`: distinct processes per environment kind, `stdlib` rows excluded.
    pub env_kinds: Vec<u64>,
    /// `[b][package][env kind]`: distinct processes per package and environment kind.
    pub package_env_kinds: Vec<u64>,
    /// `[b][package]`: the CPU time of the processes that imported each non-stdlib package.
    pub cpu: CpuCounts,
    /// The CPU sampler's counts (processes it sampled).
    pub sampled: SampledCounts,
    /// `[b]`: distinct jobs among job rows.
    pub jobs: Vec<u64>,
    /// `[b][nodes]` (`MAX_NODES` wide): distinct jobs among job rows by node count (fig. 4).
    pub job_sizes: Vec<u64>,
    /// `[b][package]`: distinct jobs among job rows (the correlations' marginals).
    pub job_packages: Vec<u64>,
    /// `[b][package][node bin]`: distinct jobs among job rows (fig. 5).
    pub package_sizes: Vec<u64>,
    /// `[b][0 = none seen | 1 + blas]`: distinct jobs with numpy/scipy rows, by the BLAS
    /// backends seen in them (a job with two counts under both).
    pub blas: Vec<u64>,
    /// `[b]`: the packages of the pair-count rows, from [`pair_rows`].
    pub pair_rows: Vec<Vec<u32>>,
    /// `[b][row < MAX_PAIR_ROWS][package]`: distinct jobs among job rows using both.
    pub pairs: Vec<u64>,
    /// With `--jobs` (empty otherwise): the scheduler's accounting of the jobs with job rows.
    pub accounting: JobCounts,
}

/// The CPU time of the processes with a known CPU time that imported a (non-stdlib) package.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuSums {
    /// Processes.
    pub processes: u64,
    /// Their whole CPU time, µs: an upper bound of what the package itself used.
    pub us: u64,
    /// Their CPU time split equally over each process's non-stdlib packages, in ns (µs × 1000
    /// / packages, rounded down per process: integers, so both back ends add the same).
    pub split_ns: u64,
}

impl CpuSums {
    /// Adds `o`.
    pub fn add(&mut self, o: CpuSums) {
        self.processes += o.processes;
        self.us += o.us;
        self.split_ns += o.split_ns;
    }
}

/// `[b][package]`: [`CpuSums`] as three arrays.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuCounts {
    /// Processes with a known CPU time.
    pub processes: Vec<u64>,
    /// Their CPU time, µs.
    pub us: Vec<u64>,
    /// Their CPU time split over their packages, ns.
    pub split_ns: Vec<u64>,
}

impl CpuCounts {
    /// Zeroed arrays of `n` entries.
    pub fn zeroed(n: usize) -> CpuCounts {
        CpuCounts {
            processes: vec![0; n],
            us: vec![0; n],
            split_ns: vec![0; n],
        }
    }

    /// Adds `s` at index `at`.
    pub fn add_at(&mut self, at: usize, s: CpuSums) {
        self.processes[at] += s.processes;
        self.us[at] += s.us;
        self.split_ns[at] += s.split_ns;
    }

    /// The sums at index `at`.
    pub fn at(&self, at: usize) -> CpuSums {
        CpuSums {
            processes: self.processes[at],
            us: self.us[at],
            split_ns: self.split_ns[at],
        }
    }
}

/// What the CPU sampler counted in the processes it sampled (`cpu_sampling = sampled`) that
/// imported a (non-stdlib) package; process-level, each process's largest count per record
/// field (its final record's; a running snapshot's so far).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SampledSums {
    /// Sampled processes that imported the package.
    pub processes: u64,
    /// Their samples in the package's own code (`cpu_samples_self`).
    pub own: u64,
    /// Their samples with the package on the stack (`cpu_samples_inclusive`).
    pub inclusive: u64,
    /// The self samples as CPU time, µs: each process's `self × 10⁶ / hz`, rounded down.
    pub own_us: u64,
}

impl SampledSums {
    /// Adds `o`.
    pub fn add(&mut self, o: SampledSums) {
        self.processes += o.processes;
        self.own += o.own;
        self.inclusive += o.inclusive;
        self.own_us += o.own_us;
    }
}

/// The sampled processes of a month (or bucket): the whole the shares are of.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SampleTotals {
    /// Sampled processes.
    pub processes: u64,
    /// Their samples (`cpu_samples_total`).
    pub samples: u64,
    /// Their samples as CPU time, µs (`total × 10⁶ / hz` per process, rounded down).
    pub us: u64,
}

impl SampleTotals {
    /// Adds `o`.
    pub fn add(&mut self, o: SampleTotals) {
        self.processes += o.processes;
        self.samples += o.samples;
        self.us += o.us;
    }
}

/// The sampled CPU of one granularity (the tables `sampled_cpu_by_package`,
/// `imported_not_on_cpu` and `package_callers`). Both back ends fill it from the same host
/// code (`state::sampled`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SampledCounts {
    /// `[b]`: the sampled processes and their samples.
    pub totals: Vec<SampleTotals>,
    /// `[b][package]`: processes, self and inclusive samples, self CPU time.
    pub processes: Vec<u64>,
    /// See [`SampledSums::own`].
    pub own: Vec<u64>,
    /// See [`SampledSums::inclusive`].
    pub inclusive: Vec<u64>,
    /// See [`SampledSums::own_us`].
    pub own_us: Vec<u64>,
    /// `[b][package]`: distinct jobs in which a sampled process imported the package.
    pub jobs: Vec<u64>,
    /// `[b][package]`: distinct jobs in which a sampled process had it on the CPU (inclusive
    /// samples above 0).
    pub jobs_on_cpu: Vec<u64>,
    /// (bucket index, package, caller) → the package's self samples with the caller further
    /// out on the stack (sparse: a few callers per package).
    pub callers: std::collections::BTreeMap<(u32, u32, u32), u64>,
}

impl SampledCounts {
    /// Zeroed arrays for `buckets` × `packages`.
    pub fn zeroed(buckets: usize, packages: usize) -> SampledCounts {
        let z = || vec![0u64; buckets * packages];
        SampledCounts {
            totals: vec![SampleTotals::default(); buckets],
            processes: z(),
            own: z(),
            inclusive: z(),
            own_us: z(),
            jobs: z(),
            jobs_on_cpu: z(),
            callers: Default::default(),
        }
    }

    /// Adds `s` at index `at` (`[b][package]`).
    pub fn add_at(&mut self, at: usize, s: SampledSums) {
        self.processes[at] += s.processes;
        self.own[at] += s.own;
        self.inclusive[at] += s.inclusive;
        self.own_us[at] += s.own_us;
    }
}

/// CPU-hours from µs and from ns — the one place these floats are made, shared by every output.
pub fn cpu_hours(us: u64) -> f64 {
    us as f64 / 3.6e9
}

/// CPU-hours from ns (the split sums).
pub fn cpu_hours_ns(ns: u64) -> f64 {
    ns as f64 / 3.6e12
}

/// Counts over the jobs with job rows joined to the scheduler's accounting (`--jobs`), per
/// bucket; a job spanning two periods counts in both. Empty arrays: no accounting given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobCounts {
    /// `[b]`: jobs the accounting does not know.
    pub unaccounted: Vec<u64>,
    /// `[b][package]`: accounted jobs using the package.
    pub jobs: Vec<u64>,
    /// `[b][package]`: their nodes × elapsed seconds (jobs with a known elapsed time).
    pub node_seconds: Vec<u64>,
    /// `[b][package][outcome]` (see [`crate::accounting::OUTCOMES`]).
    pub outcomes: Vec<u64>,
    /// `[b][account]`: accounted jobs.
    pub account_jobs: Vec<u64>,
    /// `[b][account]`: nodes × elapsed seconds.
    pub account_node_seconds: Vec<u64>,
    /// `[b][account][outcome]`.
    pub account_outcomes: Vec<u64>,
}

impl JobCounts {
    /// Zeroed arrays for `buckets`, `packages` and `accounts`.
    pub fn zeroed(buckets: usize, packages: usize, accounts: usize) -> JobCounts {
        let z = |n: usize| vec![0u64; buckets * n];
        let o = crate::accounting::OUTCOMES.len();
        JobCounts {
            unaccounted: z(1),
            jobs: z(packages),
            node_seconds: z(packages),
            outcomes: z(packages * o),
            account_jobs: z(accounts),
            account_node_seconds: z(accounts),
            account_outcomes: z(accounts * o),
        }
    }

    /// Whether accounting was given.
    pub fn is_empty(&self) -> bool {
        self.unaccounted.is_empty()
    }
}

/// Node-hours from node-seconds — the one place this float is made, shared by every output.
pub fn node_hours(node_seconds: u64) -> f64 {
    node_seconds as f64 / 3600.0
}

impl KindCounts {
    /// Zeroed arrays for `d`.
    pub fn zeroed(buckets: Vec<u32>, d: Dims) -> KindCounts {
        let b = d.buckets;
        let z = |n: usize| vec![0u64; b * n];
        KindCounts {
            buckets,
            rows: z(1),
            by_user: z(d.packages),
            by_job: z(d.packages),
            by_process: z(d.packages),
            signaled: z(d.packages),
            versioned_users: z(d.packages),
            version_users: z(d.versions),
            env_kinds: z(d.env_kinds),
            package_env_kinds: z(d.packages * d.env_kinds),
            cpu: CpuCounts::zeroed(b * d.packages),
            sampled: SampledCounts::zeroed(b, d.packages),
            jobs: z(1),
            job_sizes: z(MAX_NODES as usize),
            job_packages: z(d.packages),
            package_sizes: z(d.packages * NODE_BINS as usize),
            blas: z(d.blases + 1),
            pair_rows: vec![Vec::new(); b],
            pairs: z(MAX_PAIR_ROWS * d.packages),
            accounting: JobCounts::default(),
        }
    }
}

/// The packages whose pairs are counted in bucket `b`: the `top` packages by jobs (count
/// descending, then name, a total order) followed by the [`SLICES`] packages present. Shared
/// by both back ends, so they count the same pairs.
pub fn pair_rows(job_packages: &[u64], packages: &Interner, top: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..job_packages.len() as u32)
        .filter(|&p| job_packages[p as usize] > 0)
        .collect();
    ids.sort_by(|&a, &b| {
        job_packages[b as usize]
            .cmp(&job_packages[a as usize])
            .then_with(|| packages.name(a).cmp(packages.name(b)))
    });
    let mut rows: Vec<u32> = ids.iter().copied().take(top).collect();
    for s in SLICES {
        if let Some(p) = packages.get(s) {
            if job_packages.get(p as usize).is_some_and(|&c| c > 0) && !rows.contains(&p) {
                rows.push(p);
            }
        }
    }
    rows.truncate(MAX_PAIR_ROWS);
    rows
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

/// `part / whole` — the one place a share is computed from integer counts, so every back end
/// prints the same digits. `None` for an empty whole.
pub fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(share(1, 4), Some(0.25));
        assert_eq!(share(1, 0), None);
    }

    #[test]
    fn period_layout_and_labels() {
        let m = |y: u16, mo: u16| y * 12 + mo - 1;
        let months = [m(2025, 12), m(2026, 1), m(2026, 4)];
        let (b, lut) = PeriodKind::Quarter.layout(&months);
        assert_eq!(
            b.iter()
                .map(|&x| PeriodKind::Quarter.label(x))
                .collect::<Vec<_>>(),
            ["2025-Q4", "2026-Q1", "2026-Q2"]
        );
        assert_eq!(lut.len(), 5);
        assert_eq!((lut[0], lut[1], lut[4]), (0, 1, 2));
        assert_eq!(PeriodKind::Month.label(m(2026, 12) as u32), "2026-12");
        assert_eq!(PeriodKind::All.layout(&months).0, [0]);
    }
}
