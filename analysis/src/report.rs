//! Stage 3: the counts of every period → the report's tables, as plain serialisable data
//! (JSON, CSV and HTML render it). All floats come from [`pearson`] and [`share`]; every list
//! has a total order (count descending, then name), so both back ends print identical bytes.
use std::{collections::BTreeMap, path::PathBuf};

use serde::Serialize;

use crate::{
    backend::{select, Device},
    counts::{pearson, share, KindCounts, PeriodKind, MAX_PAIR_ROWS, SLICES},
    filter::Filter,
    model::{Interner, Names, MAX_NODES, NODE_BINS},
    scan::{scan, ScanError, Selection},
};

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
    /// `--from`/`--to`.
    pub range: (Option<String>, Option<String>),
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

/// Failures of a run.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// Reading the dataset.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The back end.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    /// Nothing to analyse.
    #[error("no records under {0} (after date range and filters)")]
    Empty(PathBuf),
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to read.
    pub selection: Selection,
    /// Back end.
    pub device: Device,
    /// Granularities (the month counts are always computed: they feed the monthly trends).
    pub kinds: Vec<PeriodKind>,
    /// Packages per top list (≤ 60, so pair rows fit a 64-bit job mask).
    pub top: usize,
}

/// Runs the analysis. `note` receives one-line messages (the CPU fallback); `progress` is
/// told the number of partitions, then once per partition read.
pub fn analyze(
    o: &Options,
    note: &dyn Fn(&str),
    progress: &(dyn Fn(Option<u64>) + Sync),
) -> Result<Analysis, AnalyzeError> {
    let (backend, fallback) = select(o.device)?;
    if let Some(line) = fallback {
        note(&line);
    }
    let names = Names::default();
    let parts = crate::scan::partitions(&o.selection)?;
    progress(Some(parts.len() as u64));
    let sink = |c| backend.add(c);
    scan(&o.selection, &parts, &names, &sink, &|| progress(None))?;
    let backend_name = backend.name();
    let mut kinds = vec![PeriodKind::Month];
    kinds.extend(o.kinds.iter().filter(|&&k| k != PeriodKind::Month));
    let top = o.top.clamp(1, MAX_PAIR_ROWS - SLICES.len());
    let counts = backend.finish(&names, &kinds, top)?;
    let months = &counts[0].1;
    let rows: u64 = months.rows.iter().sum();
    if rows == 0 {
        return Err(AnalyzeError::Empty(o.selection.root.clone()));
    }
    let n = Names2::new(&names);
    let periods = counts
        .iter()
        .filter(|(k, _)| o.kinds.contains(k))
        .map(|(kind, k)| {
            let reports = (0..k.buckets.len())
                .map(|b| period(&n, *kind, k, b, months, top))
                .collect();
            (kind.name().to_owned(), reports)
        })
        .collect();
    let mut filters = BTreeMap::new();
    match &o.selection.filter {
        None => {
            filters.insert("all tables".into(), Filter::PAPER.into());
            filters.insert(
                "job-based tables (job sizes, package x job size, correlations)".into(),
                "is_compute == true, in a job".into(),
            );
        }
        Some(f) => {
            filters.insert("all tables (--filter)".into(), f.to_string());
            filters.insert("job-based tables".into(), "in a job".into());
        }
    }
    Ok(Analysis {
        header: Header {
            dataset: o.selection.root.clone(),
            backend: backend_name,
            rows,
            range: (o.selection.from.clone(), o.selection.to.clone()),
            filters,
            top: o.top,
        },
        periods,
    })
}

/// Names out of their locks, with the (package, version) pairs split.
struct Names2 {
    packages: Vec<String>,
    versions: Vec<(String, String)>,
    env_kinds: Vec<String>,
    blases: Vec<String>,
}

impl Names2 {
    fn package_id(&self, name: &str) -> usize {
        self.packages
            .iter()
            .position(|x| x == name)
            .expect("a known package")
    }

    fn new(n: &Names) -> Names2 {
        let all = |i: &std::sync::Mutex<Interner>| {
            let i = i.lock().expect("lock");
            (0..i.len() as u32)
                .map(|x| i.name(x).to_owned())
                .collect::<Vec<_>>()
        };
        Names2 {
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

fn period(
    n: &Names2,
    kind: PeriodKind,
    k: &KindCounts,
    b: usize,
    months: &KindCounts,
    top: usize,
) -> PeriodReport {
    let np = n.packages.len();
    let row = |v: &[u64], w: usize| v[b * w..(b + 1) * w].to_vec();
    let by = |v: &[u64]| {
        let mut r = ranked(&n.packages, &row(v, np));
        r.truncate(top);
        r
    };
    let top_by_user = by(&k.by_user);
    let top_by_process = by(&k.by_process);
    let singles = row(&k.job_packages, np);
    let jobs = k.jobs[b];
    let pair_rows = &k.pair_rows[b];
    let pair = |r: usize, q: usize| k.pairs[(b * MAX_PAIR_ROWS + r) * np + q];
    let corr =
        |r: usize, q: usize| pearson(jobs, singles[pair_rows[r] as usize], singles[q], pair(r, q));
    // Fig. 6: the top packages by job (job-based filter) are the first pair rows; the
    // slice packages follow them when they are not among the top.
    let shown: Vec<usize> = (0..pair_rows.len().min(top)).collect();
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
            v.truncate(top);
            Some((s.to_string(), v))
        })
        .collect();
    let versions = top_by_user
        .iter()
        .map(|c| {
            let p = n.package_id(&c.package);
            let of = k.versioned_users[b * np + p];
            let by: BTreeMap<String, u64> = n
                .versions
                .iter()
                .enumerate()
                .filter(|(v, (pk, _))| {
                    *pk == c.package && k.version_users[b * n.versions.len() + v] > 0
                })
                .map(|(v, (_, ver))| (ver.clone(), k.version_users[b * n.versions.len() + v]))
                .collect();
            (c.package.clone(), shares(by, Some(of)))
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let signaled = top_by_process
        .iter()
        .map(|c| {
            let p = n.package_id(&c.package);
            let count = k.signaled[b * np + p];
            Share {
                key: c.package.clone(),
                count,
                of: c.count,
                share: share(count, c.count),
            }
        })
        .collect();
    let env_kinds = shares(
        n.env_kinds
            .iter()
            .enumerate()
            .map(|(e, name)| (name.clone(), k.env_kinds[b * n.env_kinds.len() + e]))
            .filter(|(_, c)| *c > 0)
            .collect(),
        None,
    );
    let w = n.blases.len() + 1;
    let blas_in_numpy_jobs = shares(
        (0..w)
            .map(|x| {
                let name = if x == 0 {
                    "unknown".to_owned()
                } else {
                    n.blases[x - 1].clone()
                };
                (name, k.blas[b * w + x])
            })
            .filter(|(_, c)| *c > 0)
            .collect(),
        None,
    );
    // Per-month trend: the month counts of this period's months.
    let bucket = k.buckets[b];
    let in_period: Vec<usize> = (0..months.buckets.len())
        .filter(|&m| kind.bucket(months.buckets[m] as u16) == bucket)
        .collect();
    let monthly_users = top_by_user
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
        .collect();
    let job_sizes = (0..MAX_NODES as usize)
        .filter(|&x| k.job_sizes[b * MAX_NODES as usize + x] > 0)
        .map(|x| (x as u32, k.job_sizes[b * MAX_NODES as usize + x]))
        .collect();
    let nb = NODE_BINS as usize;
    let package_by_job_size = (0..np)
        .filter(|&p| singles[p] > 0)
        .map(|p| {
            let bins = (0..nb)
                .filter(|&x| k.package_sizes[(b * np + p) * nb + x] > 0)
                .map(|x| (1u32 << x, k.package_sizes[(b * np + p) * nb + x]))
                .collect();
            (n.packages[p].clone(), bins)
        })
        .collect();
    PeriodReport {
        period: kind.label(bucket),
        rows: k.rows[b],
        top_packages_by_job: by(&k.by_job),
        top_packages_by_user: top_by_user,
        top_packages_by_process: top_by_process,
        job_sizes,
        package_by_job_size,
        correlation: Correlation {
            jobs,
            packages: shown
                .iter()
                .map(|&r| n.packages[pair_rows[r] as usize].clone())
                .collect(),
            matrix,
            clip_view: [0.6, 0.8],
        },
        correlation_slices,
        versions,
        env_kinds,
        blas_in_numpy_jobs,
        signaled,
        monthly_users,
    }
}
