//! Stage 3: the counts of every period → the report's tables, as plain serialisable data
//! (JSON, CSV and HTML render it). Built from counts and names only: reading the data and
//! choosing a back end are [`crate::run`]'s. All floats come from [`pearson`] and [`share`]; every list
//! has a total order (count descending, then name), so both back ends print identical bytes.
use std::{collections::BTreeMap, path::PathBuf};

use serde::Serialize;

use crate::{
    accounting::OUTCOMES,
    counts::{
        cpu_hours, cpu_hours_ns, node_hours, pearson, share, CpuSums, KindCounts, PeriodKind,
        MAX_PAIR_ROWS, SLICES,
    },
    model::{Interner, Names, MAX_NODES, NODE_BINS},
};

/// A package and a count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    /// Package.
    pub package: String,
    /// Count.
    pub count: u64,
}

/// One package's distinct users, jobs and processes in a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageCount {
    /// Package.
    pub package: String,
    /// Distinct users.
    pub users: u64,
    /// Distinct jobs (over all kept rows in a job, as the top list by job).
    pub jobs: u64,
    /// Distinct processes.
    pub processes: u64,
}

/// The CPU time of the processes that imported a package (records with `cpu_user_us` and
/// `cpu_sys_us`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuRow {
    /// Package.
    pub package: String,
    /// Processes with a known CPU time that imported it.
    pub processes: u64,
    /// Their whole CPU time: an upper bound of the package's own.
    pub cpu_hours: f64,
    /// Their CPU time split equally over each process's non-stdlib packages: what importing
    /// alone can attribute (not a measurement of use; see the sampled CPU).
    pub cpu_hours_split: f64,
}

/// The processes the CPU sampler walked in a period: the whole that the sampled tables'
/// shares are of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampledTotal {
    /// Sampled processes (`cpu_sampling = sampled`).
    pub processes: u64,
    /// Their samples (`cpu_samples_total`).
    pub samples: u64,
    /// Their samples as CPU time (samples / rate).
    pub cpu_hours: f64,
}

/// What the CPU sampler counted in a package, over the sampled processes that imported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampledCpuRow {
    /// Package.
    pub package: String,
    /// Sampled processes that imported it.
    pub processes: u64,
    /// Distinct jobs with such a process.
    pub jobs: u64,
    /// Samples in its own code (innermost frame, or a native library it owns).
    pub self_samples: u64,
    /// Samples with it anywhere on the stack.
    pub inclusive_samples: u64,
    /// `self_samples` / all samples of the period's sampled processes.
    pub self_share: Option<f64>,
    /// `inclusive_samples` / all samples of the period's sampled processes.
    pub inclusive_share: Option<f64>,
    /// The self samples as CPU time: Σ self / rate, in hours (an estimate: sampling).
    pub cpu_hours_self: f64,
}

/// A package imported in jobs and how often it ran at all there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotOnCpuRow {
    /// Package.
    pub package: String,
    /// Jobs in which a sampled process imported it.
    pub jobs: u64,
    /// Of those, jobs in which a sampled process had it on the CPU (an inclusive sample).
    pub jobs_on_cpu: u64,
    /// `(jobs - jobs_on_cpu) / jobs`: imported, never seen on the CPU.
    pub share_never_on_cpu: Option<f64>,
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
    /// Fig. 5: package → node-count bin → jobs; a bin is named by its largest node count
    /// (`4` holds jobs of 3–4 nodes, `2^k` holds (2^(k-1), 2^k]).
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
    /// Every package with rows in the period (users descending, then name): what the top
    /// lists cut, so that any package can be looked up — and followed month by month.
    pub package_counts: Vec<PackageCount>,
    /// For the top packages by process: processes per environment kind, and their share of
    /// the package's processes.
    pub package_env_kinds: BTreeMap<String, Vec<Share>>,
    /// CPU-hours by package, the top N by split CPU-hours (non-stdlib packages; processes
    /// whose records carry a CPU time).
    pub cpu_by_package: Vec<CpuRow>,
    /// The processes the CPU sampler walked (`cpu_sampling = sampled`) and their samples.
    pub sampled_cpu: SampledTotal,
    /// Sampled CPU by package, the top N by self samples (non-stdlib packages imported by a
    /// sampled process).
    pub sampled_cpu_by_package: Vec<SampledCpuRow>,
    /// The top N packages by jobs that imported them (in a sampled process), with the jobs
    /// in which they never ran.
    pub imported_not_on_cpu: Vec<NotOnCpuRow>,
    /// For the packages of `sampled_cpu_by_package` with self samples: the other packages
    /// further out on the stack (the top N), as a share of the package's self samples (each
    /// process's record lists its 8 largest callers, so shares are lower bounds).
    pub package_callers: BTreeMap<String, Vec<Share>>,
    /// With `--jobs`: the jobs joined to the scheduler's accounting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounting: Option<AccountingTables>,
}

/// What the scheduler's accounting (`--jobs`) adds: which packages consume the machine and how
/// their jobs end. Over jobs with job rows (the job-based tables' filter) that the accounting
/// knows; a job running over two periods counts in both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountingTables {
    /// Jobs with job rows the accounting file does not list.
    pub jobs_without_accounting: u64,
    /// Packages by the node-hours of the jobs using them, most first.
    pub node_hours_by_package: Vec<NodeHours>,
    /// For the same packages: their accounted jobs by outcome (COMPLETED, TIMEOUT, FAILED,
    /// OUT_OF_MEMORY, CANCELLED, OTHER).
    pub outcomes_by_package: BTreeMap<String, Vec<Share>>,
    /// Accounts by node-hours of their jobs with Python, most first, with outcomes.
    pub by_account: Vec<AccountRow>,
}

/// Node-hours of the jobs that used a package (or of an account's jobs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeHours {
    /// Package.
    pub package: String,
    /// Accounted jobs.
    pub jobs: u64,
    /// Nodes × elapsed hours.
    pub node_hours: f64,
}

/// One account's jobs with Python.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountRow {
    /// Account (`""`: none given).
    pub account: String,
    /// Accounted jobs.
    pub jobs: u64,
    /// Nodes × elapsed hours.
    pub node_hours: f64,
    /// Jobs by outcome.
    pub outcomes: Vec<Share>,
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

/// What was analysed and how: the report's header.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    /// Dataset root.
    pub dataset: PathBuf,
    /// Back end that computed the counts.
    pub backend: String,
    /// Rows kept by the filters.
    pub rows: u64,
    /// The first and last `date=` partitions read (within `--from`/`--to`): what the data
    /// covers, the same for a single run and for the merge of its shards.
    pub dates: (Option<String>, Option<String>),
    /// Filters, in words.
    pub filters: BTreeMap<String, String>,
    /// Packages per top list.
    pub top: usize,
}

/// The whole analysis: header and the tables of each period of each granularity requested.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Header.
    #[serde(flatten)]
    pub header: Header,
    /// Granularity → periods.
    pub periods: BTreeMap<String, Vec<PeriodReport>>,
}

/// The reports of the `requested` granularities, each period's tables from `counts` (one
/// entry per granularity computed, the months among them: they feed every period's monthly
/// trend). `top` is the length of the top lists, already clamped to what pair rows hold.
pub fn periods(
    names: &Names,
    counts: &[(PeriodKind, KindCounts)],
    requested: &[PeriodKind],
    top: usize,
    accounts: Option<&[String]>,
) -> BTreeMap<String, Vec<PeriodReport>> {
    let months = counts
        .iter()
        .find(|(kind, _)| *kind == PeriodKind::Month)
        .map(|(_, k)| k)
        .expect("the month counts are always computed");
    let names = NameTables::new(names);
    counts
        .iter()
        .filter(|(k, _)| requested.contains(k))
        .map(|(kind, k)| {
            let reports = (0..k.buckets.len())
                .map(|b| {
                    let p = Period {
                        names: &names,
                        kind: *kind,
                        k,
                        b,
                        months,
                        top,
                        accounts,
                    };
                    p.report()
                })
                .collect();
            (kind.name().to_owned(), reports)
        })
        .collect()
}

/// Every interned name, indexed by id and out of its lock (the report reads them many times),
/// with each (package, version) pair split in two.
struct NameTables {
    packages: Vec<String>,
    versions: Vec<(String, String)>,
    env_kinds: Vec<String>,
    blases: Vec<String>,
}

impl NameTables {
    fn package_id(&self, name: &str) -> usize {
        self.packages
            .iter()
            .position(|x| x == name)
            .expect("a known package")
    }

    fn new(n: &Names) -> NameTables {
        let all = |i: &std::sync::Mutex<Interner>| {
            let i = i.lock().expect("lock");
            (0..i.len() as u32)
                .map(|x| i.name(x).to_owned())
                .collect::<Vec<_>>()
        };
        NameTables {
            packages: all(&n.packages),
            versions: all(&n.versions)
                .into_iter()
                .map(|pv| {
                    let (p, v) = pv.split_once('\0').unwrap_or((&pv, ""));
                    (p.to_owned(), v.to_owned())
                })
                .collect(),
            env_kinds: all(&n.env_kinds),
            blases: all(&n.blases),
        }
    }
}

/// `(name, count)` of the non-zero entries, count descending then name.
fn ranked(names: &[String], counts: &[u64]) -> Vec<Count> {
    let mut v: Vec<Count> = counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(i, &c)| Count {
            package: names[i].clone(),
            count: c,
        })
        .collect();
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.package.cmp(&b.package))
    });
    v
}

/// One period's view of the counts: bucket `b` of granularity `kind`, one method per table.
struct Period<'a> {
    names: &'a NameTables,
    kind: PeriodKind,
    k: &'a KindCounts,
    b: usize,
    /// The month counts, for the monthly trend of any period.
    months: &'a KindCounts,
    top: usize,
    /// `--jobs`: the accounts' names.
    accounts: Option<&'a [String]>,
}

impl Period<'_> {
    fn report(&self) -> PeriodReport {
        let top_by_user = self.top_by(&self.k.by_user);
        let top_by_process = self.top_by(&self.k.by_process);
        let (correlation, correlation_slices) = self.correlations();
        let sampled_cpu_by_package = self.sampled_cpu_by_package();
        PeriodReport {
            period: self.kind.label(self.k.buckets[self.b]),
            rows: self.k.rows[self.b],
            top_packages_by_job: self.top_by(&self.k.by_job),
            job_sizes: self.job_sizes(),
            package_by_job_size: self.package_by_job_size(),
            correlation,
            correlation_slices,
            versions: self.versions(&top_by_user),
            env_kinds: self.env_kinds(),
            blas_in_numpy_jobs: self.blas_in_numpy_jobs(),
            signaled: self.signaled(&top_by_process),
            monthly_users: self.monthly_users(&top_by_user),
            package_counts: self.package_counts(),
            package_env_kinds: self.package_env_kinds(&top_by_process),
            cpu_by_package: self.cpu_by_package(),
            sampled_cpu: self.sampled_total(),
            package_callers: self.package_callers(&sampled_cpu_by_package),
            sampled_cpu_by_package,
            imported_not_on_cpu: self.imported_not_on_cpu(),
            accounting: self.accounting(),
            top_packages_by_user: top_by_user,
            top_packages_by_process: top_by_process,
        }
    }

    /// Row `b` of a `[bucket][x]` array `w` wide.
    fn row<'v>(&self, v: &'v [u64], w: usize) -> &'v [u64] {
        &v[self.b * w..(self.b + 1) * w]
    }

    /// The top packages of a `[bucket][package]` array.
    fn top_by(&self, v: &[u64]) -> Vec<Count> {
        let np = self.names.packages.len();
        let mut r = ranked(&self.names.packages, self.row(v, np));
        r.truncate(self.top);
        r
    }

    /// Fig. 6 (the matrix) and fig. 7 (the slices).
    fn correlations(&self) -> (Correlation, BTreeMap<String, Vec<(String, f64)>>) {
        let (n, k, b) = (self.names, self.k, self.b);
        let np = n.packages.len();
        let singles = self.row(&k.job_packages, np);
        let jobs = k.jobs[b];
        let pair_rows = &k.pair_rows[b];
        let pair = |r: usize, q: usize| k.pairs[(b * MAX_PAIR_ROWS + r) * np + q];
        let corr = |r: usize, q: usize| {
            pearson(jobs, singles[pair_rows[r] as usize], singles[q], pair(r, q))
        };
        // Fig. 6: the top packages by job (job-based filter) are the first pair rows; the
        // slice packages follow them when they are not among the top.
        let shown: Vec<usize> = (0..pair_rows.len().min(self.top)).collect();
        let matrix = shown
            .iter()
            .map(|&r| {
                shown
                    .iter()
                    .map(|&c| corr(r, pair_rows[c] as usize))
                    .collect()
            })
            .collect();
        let correlation_slices = SLICES
            .iter()
            .filter_map(|s| {
                let r = pair_rows
                    .iter()
                    .position(|&p| n.packages[p as usize] == *s)?;
                let mut v: Vec<(String, f64)> = (0..np)
                    .filter(|&q| q != pair_rows[r] as usize && singles[q] > 0)
                    .filter_map(|q| corr(r, q).map(|c| (n.packages[q].clone(), c)))
                    .collect();
                v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                v.truncate(self.top);
                Some((s.to_string(), v))
            })
            .collect();
        let correlation = Correlation {
            jobs,
            packages: shown
                .iter()
                .map(|&r| n.packages[pair_rows[r] as usize].clone())
                .collect(),
            matrix,
            clip_view: [0.6, 0.8],
        };
        (correlation, correlation_slices)
    }

    /// Users per version of each of the top packages by user.
    fn versions(&self, top_by_user: &[Count]) -> BTreeMap<String, Vec<Share>> {
        let (n, k, b) = (self.names, self.k, self.b);
        let (np, nv) = (n.packages.len(), n.versions.len());
        top_by_user
            .iter()
            .map(|c| {
                let p = n.package_id(&c.package);
                let of = k.versioned_users[b * np + p];
                let by: BTreeMap<String, u64> = n
                    .versions
                    .iter()
                    .enumerate()
                    .filter(|(v, (pk, _))| *pk == c.package && k.version_users[b * nv + v] > 0)
                    .map(|(v, (_, ver))| (ver.clone(), k.version_users[b * nv + v]))
                    .collect();
                (c.package.clone(), shares(by, Some(of)))
            })
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    /// Signalled processes of each of the top packages by process.
    fn signaled(&self, top_by_process: &[Count]) -> Vec<Share> {
        let np = self.names.packages.len();
        top_by_process
            .iter()
            .map(|c| {
                let p = self.names.package_id(&c.package);
                let count = self.k.signaled[self.b * np + p];
                Share {
                    key: c.package.clone(),
                    count,
                    of: c.count,
                    share: share(count, c.count),
                }
            })
            .collect()
    }

    /// Users, jobs and processes of every package with rows.
    fn package_counts(&self) -> Vec<PackageCount> {
        let np = self.names.packages.len();
        let (users, jobs, processes) = (
            self.row(&self.k.by_user, np),
            self.row(&self.k.by_job, np),
            self.row(&self.k.by_process, np),
        );
        let mut v: Vec<PackageCount> = (0..np)
            .filter(|&p| users[p] > 0 || processes[p] > 0)
            .map(|p| PackageCount {
                package: self.names.packages[p].clone(),
                users: users[p],
                jobs: jobs[p],
                processes: processes[p],
            })
            .collect();
        v.sort_by(|a, b| {
            b.users
                .cmp(&a.users)
                .then_with(|| a.package.cmp(&b.package))
        });
        v
    }

    /// The top packages by split CPU time.
    fn cpu_by_package(&self) -> Vec<CpuRow> {
        let np = self.names.packages.len();
        let mut v: Vec<(usize, CpuSums)> = (0..np)
            .map(|p| (p, self.k.cpu.at(self.b * np + p)))
            .filter(|(_, s)| s.processes > 0)
            .collect();
        let name = |p: usize| &self.names.packages[p];
        v.sort_by(|a, b| {
            b.1.split_ns
                .cmp(&a.1.split_ns)
                .then_with(|| name(a.0).cmp(name(b.0)))
        });
        v.truncate(self.top);
        v.into_iter()
            .map(|(p, s)| CpuRow {
                package: name(p).clone(),
                processes: s.processes,
                cpu_hours: cpu_hours(s.us),
                cpu_hours_split: cpu_hours_ns(s.split_ns),
            })
            .collect()
    }

    /// The period's sampled processes.
    fn sampled_total(&self) -> SampledTotal {
        let t = self.k.sampled.totals[self.b];
        SampledTotal {
            processes: t.processes,
            samples: t.samples,
            cpu_hours: cpu_hours(t.us),
        }
    }

    /// The top packages by self samples.
    fn sampled_cpu_by_package(&self) -> Vec<SampledCpuRow> {
        let (np, s) = (self.names.packages.len(), &self.k.sampled);
        let all = s.totals[self.b].samples;
        let at = |p: usize| self.b * np + p;
        let name = |p: usize| &self.names.packages[p];
        let mut v: Vec<usize> = (0..np).filter(|&p| s.processes[at(p)] > 0).collect();
        v.sort_by(|&a, &b| {
            s.own[at(b)]
                .cmp(&s.own[at(a)])
                .then_with(|| name(a).cmp(name(b)))
        });
        v.truncate(self.top);
        v.into_iter()
            .map(|p| SampledCpuRow {
                package: name(p).clone(),
                processes: s.processes[at(p)],
                jobs: s.jobs[at(p)],
                self_samples: s.own[at(p)],
                inclusive_samples: s.inclusive[at(p)],
                self_share: share(s.own[at(p)], all),
                inclusive_share: share(s.inclusive[at(p)], all),
                cpu_hours_self: cpu_hours(s.own_us[at(p)]),
            })
            .collect()
    }

    /// The top packages by jobs importing them in a sampled process, and how many of those
    /// jobs had them on the CPU.
    fn imported_not_on_cpu(&self) -> Vec<NotOnCpuRow> {
        let (np, s) = (self.names.packages.len(), &self.k.sampled);
        let (jobs, on) = (self.row(&s.jobs, np), self.row(&s.jobs_on_cpu, np));
        let mut v: Vec<Count> = ranked(&self.names.packages, jobs);
        v.truncate(self.top);
        v.into_iter()
            .map(|c| {
                let p = self.names.package_id(&c.package);
                NotOnCpuRow {
                    share_never_on_cpu: share(c.count - on[p], c.count),
                    package: c.package,
                    jobs: c.count,
                    jobs_on_cpu: on[p],
                }
            })
            .collect()
    }

    /// The callers of each package of `top` with self samples, as shares of those.
    fn package_callers(&self, top: &[SampledCpuRow]) -> BTreeMap<String, Vec<Share>> {
        let callers = &self.k.sampled.callers;
        let b = self.b as u32;
        top.iter()
            .filter(|r| r.self_samples > 0)
            .filter_map(|r| {
                let p = self.names.package_id(&r.package) as u32;
                let by: BTreeMap<String, u64> = callers
                    .range((b, p, 0)..=(b, p, u32::MAX))
                    .filter(|(_, &n)| n > 0)
                    .map(|(&(_, _, q), &n)| (self.names.packages[q as usize].clone(), n))
                    .collect();
                let mut v = shares(by, Some(r.self_samples));
                v.truncate(self.top);
                (!v.is_empty()).then(|| (r.package.clone(), v))
            })
            .collect()
    }

    /// Processes per environment kind of each of the top packages by process.
    fn package_env_kinds(&self, top_by_process: &[Count]) -> BTreeMap<String, Vec<Share>> {
        let n = self.names;
        let (np, ne) = (n.packages.len(), n.env_kinds.len());
        top_by_process
            .iter()
            .map(|c| {
                let p = n.package_id(&c.package);
                let at = (self.b * np + p) * ne;
                let by: BTreeMap<String, u64> = (0..ne)
                    .map(|e| (n.env_kinds[e].clone(), self.k.package_env_kinds[at + e]))
                    .filter(|(_, x)| *x > 0)
                    .collect();
                (c.package.clone(), shares(by, Some(c.count)))
            })
            .collect()
    }

    fn env_kinds(&self) -> Vec<Share> {
        let n = &self.names.env_kinds;
        shares(
            n.iter()
                .enumerate()
                .map(|(e, name)| (name.clone(), self.k.env_kinds[self.b * n.len() + e]))
                .filter(|(_, c)| *c > 0)
                .collect(),
            None,
        )
    }

    /// Column 0 is "no BLAS seen", column `1 + id` a BLAS.
    fn blas_in_numpy_jobs(&self) -> Vec<Share> {
        let blases = &self.names.blases;
        let w = blases.len() + 1;
        shares(
            (0..w)
                .map(|x| {
                    let name = if x == 0 {
                        "unknown".to_owned()
                    } else {
                        blases[x - 1].clone()
                    };
                    (name, self.k.blas[self.b * w + x])
                })
                .filter(|(_, c)| *c > 0)
                .collect(),
            None,
        )
    }

    /// Per-month trend: the month counts of this period's months.
    fn monthly_users(&self, top_by_user: &[Count]) -> BTreeMap<String, BTreeMap<String, u64>> {
        let (n, months) = (self.names, self.months);
        let np = n.packages.len();
        let bucket = self.k.buckets[self.b];
        let in_period: Vec<usize> = (0..months.buckets.len())
            .filter(|&m| self.kind.bucket(months.buckets[m] as u16) == bucket)
            .collect();
        top_by_user
            .iter()
            .map(|c| {
                let p = n.package_id(&c.package);
                let per: BTreeMap<String, u64> = in_period
                    .iter()
                    .map(|&m| {
                        (
                            PeriodKind::Month.label(months.buckets[m]),
                            months.by_user[m * np + p],
                        )
                    })
                    .collect();
                (c.package.clone(), per)
            })
            .collect()
    }

    /// With `--jobs`: node-hours and outcomes by package and by account.
    fn accounting(&self) -> Option<AccountingTables> {
        let (accounts, a) = (self.accounts?, &self.k.accounting);
        if a.is_empty() {
            return None;
        }
        let (np, na, no) = (self.names.packages.len(), accounts.len(), OUTCOMES.len());
        let b = self.b;
        let outcomes = |v: &[u64], at: usize, of: u64| -> Vec<Share> {
            shares(
                OUTCOMES
                    .iter()
                    .enumerate()
                    .map(|(o, name)| (name.to_string(), v[at * no + o]))
                    .filter(|(_, c)| *c > 0)
                    .collect(),
                Some(of),
            )
        };
        let mut by_package: Vec<(usize, u64, u64)> = (0..np)
            .map(|p| (p, a.jobs[b * np + p], a.node_seconds[b * np + p]))
            .filter(|x| x.1 > 0)
            .collect();
        by_package.sort_by(|x, y| {
            y.2.cmp(&x.2)
                .then_with(|| self.names.packages[x.0].cmp(&self.names.packages[y.0]))
        });
        by_package.truncate(self.top);
        let mut by_account: Vec<(usize, u64, u64)> = (0..na)
            .map(|x| {
                (
                    x,
                    a.account_jobs[b * na + x],
                    a.account_node_seconds[b * na + x],
                )
            })
            .filter(|x| x.1 > 0)
            .collect();
        by_account.sort_by(|x, y| {
            y.2.cmp(&x.2)
                .then_with(|| accounts[x.0].cmp(&accounts[y.0]))
        });
        by_account.truncate(self.top);
        Some(AccountingTables {
            jobs_without_accounting: a.unaccounted[b],
            outcomes_by_package: by_package
                .iter()
                .map(|&(p, jobs, _)| {
                    (
                        self.names.packages[p].clone(),
                        outcomes(&a.outcomes, b * np + p, jobs),
                    )
                })
                .collect(),
            node_hours_by_package: by_package
                .iter()
                .map(|&(p, jobs, secs)| NodeHours {
                    package: self.names.packages[p].clone(),
                    jobs,
                    node_hours: node_hours(secs),
                })
                .collect(),
            by_account: by_account
                .iter()
                .map(|&(x, jobs, secs)| AccountRow {
                    account: accounts[x].clone(),
                    jobs,
                    node_hours: node_hours(secs),
                    outcomes: outcomes(&a.account_outcomes, b * na + x, jobs),
                })
                .collect(),
        })
    }

    /// Fig. 4.
    fn job_sizes(&self) -> BTreeMap<u32, u64> {
        let sizes = self.row(&self.k.job_sizes, MAX_NODES as usize);
        (0..sizes.len())
            .filter(|&x| sizes[x] > 0)
            .map(|x| (x as u32, sizes[x]))
            .collect()
    }

    /// Fig. 5.
    fn package_by_job_size(&self) -> BTreeMap<String, BTreeMap<u32, u64>> {
        let (n, k, b) = (self.names, self.k, self.b);
        let np = n.packages.len();
        let singles = self.row(&k.job_packages, np);
        let nb = NODE_BINS as usize;
        (0..np)
            .filter(|&p| singles[p] > 0)
            .map(|p| {
                let bins = (0..nb)
                    .filter(|&x| k.package_sizes[(b * np + p) * nb + x] > 0)
                    .map(|x| (1u32 << x, k.package_sizes[(b * np + p) * nb + x]))
                    .collect();
                (n.packages[p].clone(), bins)
            })
            .collect()
    }
}
