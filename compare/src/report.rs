//! Stage 2: the two sides' processes, matched → the comparison's tables, as plain serialisable
//! data (the table, JSON and HTML forms render it). Every list has a total order (count
//! descending, then name), so the output is the same bytes for the same input.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use pyusage_record::{EnvKind, Micros, Record};
use serde::Serialize;

use crate::join::{
    hook_dir, match_processes, processes, why_atexit_only, why_kernel_only, why_package_gap,
    Evidence, KernelOnly, Proc, Side,
};

/// How to compare.
#[derive(Debug, Clone)]
pub struct Options {
    /// Start times of one process on the two sides may differ by this much (µs).
    pub skew_us: Micros,
    /// First month (`YYYY-MM`) of the kernel side in the stitched time series.
    pub cutover: Option<String>,
    /// Packages per ranking.
    pub top: usize,
    /// Rank standard-library packages too (by default they are left out of the rankings:
    /// the hook sees every built-in module, the kernel only modules with files).
    pub with_stdlib: bool,
    /// Jobs that ended at their time limit (`sacct` state TIMEOUT).
    pub timeouts: HashSet<String>,
    /// Examples kept per reason.
    pub examples: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            skew_us: 2_000_000,
            cutover: None,
            top: 20,
            with_stdlib: false,
            timeouts: HashSet::new(),
            examples: 3,
        }
    }
}

/// A reason, how often, and examples.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reason {
    /// Stable short name (`signal:SIGKILL`, `hook_not_loaded`, …).
    pub key: String,
    /// In words.
    pub words: String,
    /// Processes (or process-package pairs).
    pub count: u64,
    /// A few, as `host pid executable main job rank`.
    pub examples: Vec<String>,
}

/// Processes on each side.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ProcessCounts {
    /// Kernel side.
    pub kernel: u64,
    /// Atexit side.
    pub atexit: u64,
    /// Seen by both.
    pub matched: u64,
    /// Kernel side only.
    pub kernel_only: u64,
    /// Atexit side only.
    pub atexit_only: u64,
}

/// Slurm jobs on each side.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct JobCounts {
    /// Kernel side.
    pub kernel: u64,
    /// Atexit side.
    pub atexit: u64,
    /// Both.
    pub both: u64,
    /// Kernel side only.
    pub kernel_only: u64,
    /// Atexit side only.
    pub atexit_only: u64,
    /// Jobs on both sides for which the kernel side has packages the atexit side lacks.
    pub kernel_saw_more: u64,
    /// Jobs on both sides for which the atexit side has packages the kernel side lacks.
    pub atexit_saw_more: u64,
}

/// Users, jobs and processes of one package on one side.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Usage {
    /// Distinct users.
    pub users: u64,
    /// Distinct jobs.
    pub jobs: u64,
    /// Processes.
    pub processes: u64,
}

/// One package on both sides.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PackageRow {
    /// Package.
    pub package: String,
    /// Kernel side.
    pub kernel: Usage,
    /// Atexit side.
    pub atexit: Usage,
}

/// A package's place in one ranking on each side.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RankRow {
    /// Package.
    pub package: String,
    /// 1-based rank on the kernel side (none: not seen there).
    pub kernel_rank: Option<usize>,
    /// Its value there (users, or share of jobs).
    pub kernel: f64,
    /// Rank on the atexit side.
    pub atexit_rank: Option<usize>,
    /// Its value there.
    pub atexit: f64,
    /// `atexit_rank - kernel_rank`: how many places the old method had it lower (positive)
    /// or higher (negative).
    pub change: Option<i64>,
}

impl RankRow {
    /// A ranking's value as text: users as an integer, a share as a percentage.
    pub fn value_text(v: f64, share: bool) -> String {
        if share {
            format!("{:.1}%", v * 100.0)
        } else {
            format!("{v}")
        }
    }
}

/// Users per month of one package on both sides, and the stitched series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Series {
    /// Package.
    pub package: String,
    /// Distinct users per month, kernel side.
    pub kernel: Vec<u64>,
    /// Atexit side.
    pub atexit: Vec<u64>,
    /// Atexit before the cut-over, kernel from it on (empty without a cut-over).
    pub stitched: Vec<u64>,
    /// Kernel users / atexit users over the months both sides have: the step a stitched
    /// series takes at the cut-over.
    pub overlap_ratio: Option<f64>,
}

/// The per-month time series.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Monthly {
    /// First kernel month of the stitched series.
    pub cutover: Option<String>,
    /// `YYYY-MM`, ascending.
    pub months: Vec<String>,
    /// For the top packages.
    pub series: Vec<Series>,
}

/// Errors the hooks counted.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct HookHealth {
    /// Processes whose hook recorded an error.
    pub processes_with_errors: u64,
    /// Errors.
    pub errors: u64,
    /// Reports cut at the time budget.
    pub budget_exceeded: u64,
    /// Spool records dropped for claiming another user than their file's owner.
    pub forged_records: u64,
    /// Spool lines that were not records (torn writes, edits): skipped, the rest kept.
    pub bad_lines: u64,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    /// Kernel-side data.
    pub kernel_data: String,
    /// Atexit-side data.
    pub atexit_data: String,
    /// Start-time tolerance used, seconds.
    pub skew_s: f64,
    /// Processes.
    pub processes: ProcessCounts,
    /// Why the hook did not report processes the kernel saw.
    pub kernel_only: Vec<Reason>,
    /// Why the kernel side lacks processes the hook reported.
    pub atexit_only: Vec<Reason>,
    /// Jobs.
    pub jobs: JobCounts,
    /// Every package, by kernel-side users.
    pub packages: Vec<PackageRow>,
    /// In processes both saw: process-package pairs on one side only, by reason.
    pub package_gaps: Vec<Reason>,
    /// Packages the hook never reported, by reason (examples: package names).
    pub never_on_atexit_side: Vec<Reason>,
    /// Packages only the hook reported, by kind (examples: package names).
    pub never_on_kernel_side: Vec<Reason>,
    /// The paper's ranking, top packages by users, on each side.
    pub ranking_users: Vec<RankRow>,
    /// Top packages by share of jobs, on each side.
    pub ranking_job_share: Vec<RankRow>,
    /// Users per month.
    pub monthly: Monthly,
    /// The hooks' own errors.
    pub hook_health: HookHealth,
    /// Files or lines that could not be read (the rest was compared).
    pub unreadable: Vec<String>,
}

/// Counts reasons with examples, in a total order.
#[derive(Default)]
struct Tally(BTreeMap<String, (String, u64, Vec<String>)>);

impl Tally {
    fn add(&mut self, key: String, words: String, example: impl FnOnce() -> String, max: usize) {
        let e = self.0.entry(key).or_insert((words, 0, Vec::new()));
        e.1 += 1;
        if e.2.len() < max {
            e.2.push(example());
        }
    }

    fn into_reasons(self) -> Vec<Reason> {
        let mut v: Vec<Reason> = self
            .0
            .into_iter()
            .map(|(key, (words, count, examples))| Reason {
                key,
                words,
                count,
                examples,
            })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        v
    }
}

/// Distinct users, jobs and processes per package over `procs`; `stdlib`: packages whose
/// records said `stdlib`.
fn usage(procs: &[Proc]) -> (BTreeMap<String, Usage>, HashSet<String>) {
    let mut users: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut jobs: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut n: HashMap<&str, u64> = HashMap::new();
    let mut stdlib = HashSet::new();
    for p in procs {
        for (name, pkg) in &p.packages {
            users.entry(name).or_default().insert(&p.user);
            if let Some(j) = &p.job_id {
                jobs.entry(name).or_default().insert(j);
            }
            *n.entry(name).or_default() += 1;
            if pkg.env_kind == EnvKind::Stdlib {
                stdlib.insert(name.clone());
            }
        }
    }
    let out = n
        .into_iter()
        .map(|(name, processes)| {
            let u = Usage {
                users: users.get(name).map_or(0, |s| s.len() as u64),
                jobs: jobs.get(name).map_or(0, |s| s.len() as u64),
                processes,
            };
            (name.to_owned(), u)
        })
        .collect();
    (out, stdlib)
}

/// Ranks by `value`, descending, ties sharing a rank (1 + how many rank strictly higher: a
/// rank change is then a change of the data, never of the order of names); the rows of both
/// sides' top `top`.
fn ranking(
    kernel: &BTreeMap<String, f64>,
    atexit: &BTreeMap<String, f64>,
    top: usize,
) -> Vec<RankRow> {
    let ranks = |m: &BTreeMap<String, f64>| -> HashMap<String, usize> {
        let mut v: Vec<(&String, &f64)> = m.iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let mut out = HashMap::new();
        let mut rank = 0;
        for (i, (k, val)) in v.iter().enumerate() {
            if i == 0 || val.total_cmp(v[i - 1].1).is_ne() {
                rank = i + 1;
            }
            out.insert((*k).clone(), rank);
        }
        out
    };
    let (rk, ra) = (ranks(kernel), ranks(atexit));
    let mut names: BTreeSet<&String> = BTreeSet::new();
    names.extend(rk.iter().filter(|(_, &r)| r <= top).map(|(k, _)| k));
    names.extend(ra.iter().filter(|(_, &r)| r <= top).map(|(k, _)| k));
    let mut rows: Vec<RankRow> = names
        .into_iter()
        .map(|p| {
            let (k, a) = (rk.get(p).copied(), ra.get(p).copied());
            RankRow {
                package: p.clone(),
                kernel_rank: k,
                kernel: kernel.get(p).copied().unwrap_or(0.0),
                atexit_rank: a,
                atexit: atexit.get(p).copied().unwrap_or(0.0),
                change: k.zip(a).map(|(k, a)| a as i64 - k as i64),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        (
            a.kernel_rank.unwrap_or(usize::MAX),
            a.atexit_rank.unwrap_or(usize::MAX),
        )
            .cmp(&(
                b.kernel_rank.unwrap_or(usize::MAX),
                b.atexit_rank.unwrap_or(usize::MAX),
            ))
            .then_with(|| a.package.cmp(&b.package))
    });
    rows
}

/// `YYYY-MM` from `first` to `last`, both included.
fn every_month(first: Option<&String>, last: Option<&String>) -> Vec<String> {
    let parse = |s: &String| {
        let (y, m) = s.split_once('-')?;
        Some((y.parse::<i32>().ok()?, m.parse::<u32>().ok()?))
    };
    let (Some((mut y, mut m)), Some(end)) = (first.and_then(parse), last.and_then(parse)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while (y, m) <= end && out.len() < 12 * 200 {
        out.push(format!("{y:04}-{m:02}"));
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }
    out
}

fn month(us: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m").to_string())
        .unwrap_or_default()
}

/// Users per month of the top packages, both sides, and the stitched series.
fn monthly(
    kernel: &[Proc],
    atexit: &[Proc],
    packages: &[String],
    cutover: Option<&str>,
) -> Monthly {
    let wanted: HashSet<&str> = packages.iter().map(String::as_str).collect();
    let per = |procs: &'_ [Proc]| {
        let mut m: BTreeMap<(String, String), HashSet<String>> = BTreeMap::new();
        for p in procs {
            for name in p.packages.keys().filter(|n| wanted.contains(n.as_str())) {
                m.entry((month(p.start), name.clone()))
                    .or_default()
                    .insert(p.user.clone());
            }
        }
        m
    };
    let (k, a) = (per(kernel), per(atexit));
    // Every month from the first to the last, those without data too (a gap shows as 0).
    let seen: BTreeSet<String> = kernel
        .iter()
        .chain(atexit)
        .map(|p| month(p.start))
        .collect();
    let months = every_month(seen.first(), seen.last());
    let count = |m: &BTreeMap<(String, String), HashSet<String>>, mo: &str, pkg: &str| {
        m.get(&(mo.to_owned(), pkg.to_owned()))
            .map_or(0, |s| s.len() as u64)
    };
    let series = packages
        .iter()
        .map(|pkg| {
            let kv: Vec<u64> = months.iter().map(|mo| count(&k, mo, pkg)).collect();
            let av: Vec<u64> = months.iter().map(|mo| count(&a, mo, pkg)).collect();
            let stitched = cutover.map_or_else(Vec::new, |c| {
                months
                    .iter()
                    .zip(kv.iter().zip(&av))
                    .map(|(mo, (k, a))| if mo.as_str() < c { *a } else { *k })
                    .collect()
            });
            let (ks, as_) = kv
                .iter()
                .zip(&av)
                .filter(|(k, a)| **k > 0 && **a > 0)
                .fold((0u64, 0u64), |(x, y), (k, a)| (x + k, y + a));
            Series {
                package: pkg.clone(),
                kernel: kv,
                atexit: av,
                stitched,
                overlap_ratio: (as_ > 0).then(|| ks as f64 / as_ as f64),
            }
        })
        .collect();
    Monthly {
        cutover: cutover.map(str::to_owned),
        months,
        series,
    }
}

/// The comparison of `kernel_records` against `atexit_records` (the same slice twice for one
/// merged dataset).
pub fn compare(
    kernel_records: &[Record],
    atexit_records: &[Record],
    names: (String, String),
    hook_health: HookHealth,
    errored: HashSet<(String, i32, u32)>,
    unreadable: Vec<String>,
    o: &Options,
) -> Comparison {
    let mut kernel = processes(kernel_records, Side::Kernel);
    let atexit = processes(atexit_records, Side::Atexit);
    let m = match_processes(&kernel, &atexit, o.skew_us);
    // What the hook itself imported at exit (after its snapshot of sys.modules) the kernel
    // saw as the process's: left out, and counted.
    let mut gaps = Tally::default();
    for &(i, j) in &m.pairs {
        let Some(t) = kernel[i].hook_ran_at else {
            continue;
        };
        let k = &mut kernel[i];
        let own: Vec<String> = k
            .packages
            .iter()
            .filter(|(n, p)| p.first_seen >= t && !atexit[j].packages.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for name in own {
            k.packages.remove(&name);
            let ex = || format!("{name}: {}", k.describe());
            let why = "imported by the hook itself at exit (left out)";
            gaps.add(format!("kernel_only:{why}"), why.into(), ex, o.examples);
        }
    }
    let mut ev = Evidence {
        timeouts: o.timeouts.clone(),
        errored,
        ..Evidence::default()
    };
    for (i, p) in kernel.iter().enumerate() {
        ev.by_pid
            .entry((p.host.as_str(), p.pid))
            .or_default()
            .push(i);
    }
    // Where the hook lives: its own report names its sitecustomize.
    ev.hooks = atexit
        .iter()
        .filter_map(|a| a.packages.get("sitecustomize"))
        .map(|p| hook_dir(&p.first_path).to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    // Jobs whose rank 0 reported and no other rank did.
    let mut ranks: HashMap<&str, (bool, bool)> = HashMap::new();
    for a in &atexit {
        if let (Some(j), Some(r)) = (&a.job_id, a.rank) {
            let e = ranks.entry(j.as_str()).or_default();
            e.0 |= r == 0;
            e.1 |= r > 0;
        }
    }
    ev.rank0_jobs = ranks
        .into_iter()
        .filter(|(_, (zero, other))| *zero && !*other)
        .map(|(j, _)| j.to_owned())
        .collect();
    let mut t = Tally::default();
    // Each kernel-side process's reason, for the packages found only in such processes.
    let mut reason_of: Vec<Option<KernelOnly>> = vec![None; kernel.len()];
    for &i in &m.kernel_only {
        let why = why_kernel_only(&kernel, i, &ev);
        t.add(why.key(), why.words(), || kernel[i].describe(), o.examples);
        reason_of[i] = Some(why);
    }
    let kernel_only = t.into_reasons();
    let hosts: HashSet<&str> = kernel.iter().map(|p| p.host.as_str()).collect();
    let mut t = Tally::default();
    for &j in &m.atexit_only {
        let why = why_atexit_only(&atexit[j], &hosts);
        t.add(why.into(), why.into(), || atexit[j].describe(), o.examples);
    }
    let atexit_only = t.into_reasons();

    for &(i, j) in &m.pairs {
        let (k, a) = (&kernel[i], &atexit[j]);
        for name in k.packages.keys().filter(|n| !a.packages.contains_key(*n)) {
            let why = why_package_gap(true, k, a, name);
            let ex = || format!("{name}: {}", k.describe());
            gaps.add(format!("kernel_only:{why}"), why.into(), ex, o.examples);
        }
        for name in a.packages.keys().filter(|n| !k.packages.contains_key(*n)) {
            let why = why_package_gap(false, k, a, name);
            let ex = || format!("{name}: {}", a.describe());
            gaps.add(format!("atexit_only:{why}"), why.into(), ex, o.examples);
        }
    }

    // Jobs' package sets, of packages with files (the kernel cannot see built-in modules:
    // that difference is the package gaps' to show, not a job's).
    let jobs_of = |procs: &[Proc]| -> BTreeMap<String, BTreeSet<String>> {
        let mut j: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in procs {
            if let Some(id) = &p.job_id {
                let files = p.packages.iter().filter(|(_, k)| !k.fileless());
                j.entry(id.clone())
                    .or_default()
                    .extend(files.map(|(n, _)| n.clone()));
            }
        }
        j
    };
    let (kj, aj) = (jobs_of(&kernel), jobs_of(&atexit));
    let mut jobs = JobCounts {
        kernel: kj.len() as u64,
        atexit: aj.len() as u64,
        ..Default::default()
    };
    for (id, kp) in &kj {
        match aj.get(id) {
            Some(ap) => {
                jobs.both += 1;
                jobs.kernel_saw_more += u64::from(kp.difference(ap).next().is_some());
                jobs.atexit_saw_more += u64::from(ap.difference(kp).next().is_some());
            }
            None => jobs.kernel_only += 1,
        }
    }
    jobs.atexit_only = aj.keys().filter(|id| !kj.contains_key(*id)).count() as u64;

    let (ku, kstd) = usage(&kernel);
    let (au, astd) = usage(&atexit);
    let names_all: BTreeSet<&String> = ku.keys().chain(au.keys()).collect();
    let mut packages: Vec<PackageRow> = names_all
        .iter()
        .map(|p| PackageRow {
            package: (*p).clone(),
            kernel: ku.get(*p).cloned().unwrap_or_default(),
            atexit: au.get(*p).cloned().unwrap_or_default(),
        })
        .collect();
    packages.sort_by(|a, b| {
        (b.kernel.users, b.atexit.users)
            .cmp(&(a.kernel.users, a.atexit.users))
            .then_with(|| a.package.cmp(&b.package))
    });
    // Packages one side never saw, by why: for the kernel side's, the reason most of the
    // processes holding them went unreported (a package only multiprocessing workers import:
    // `fork_child`), or that processes both saw held it but not at exit; for the hook's, what
    // kind of module it was.
    // One pass over the processes: for each package the hook never reported, its processes'
    // reasons (and whether a process both saw held it).
    type Whys = (BTreeMap<String, (String, usize)>, bool);
    let mut whys: HashMap<&str, Whys> = HashMap::new();
    for (i, p) in kernel.iter().enumerate() {
        for name in p.packages.keys().filter(|n| !au.contains_key(*n)) {
            let (why, in_matched) = whys.entry(name.as_str()).or_default();
            match &reason_of[i] {
                Some(r) => why.entry(r.key()).or_insert((r.words(), 0)).1 += 1,
                None => *in_matched = true,
            }
        }
    }
    let mut never = Tally::default();
    let mut unreported: Vec<&str> = whys.keys().copied().collect();
    unreported.sort_unstable();
    for name in unreported {
        let (why, in_matched) = whys.remove(name).unwrap_or_default();
        let (key, words) = match why
            .into_iter()
            .max_by_key(|(k, (_, n))| (*n, std::cmp::Reverse(k.clone())))
        {
            Some((k, (w, _))) if !in_matched => (
                format!("kernel_only:{k}"),
                format!("only in processes the hook did not report, mostly: {w}"),
            ),
            _ => (
                "kernel_only:not_at_exit".to_owned(),
                "in processes both saw, never in sys.modules at exit".to_owned(),
            ),
        };
        never.add(key, words, || name.to_owned(), o.examples);
    }
    let mut never_k = Tally::default();
    for name in au.keys().filter(|p| !ku.contains_key(*p)) {
        let fileless = atexit
            .iter()
            .any(|a| a.packages.get(name).is_some_and(|p| p.fileless()));
        let (key, words) = if fileless {
            (
                "atexit_only:fileless",
                "built-in or frozen module (no file to open)",
            )
        } else {
            (
                "atexit_only:missed",
                "a module the kernel side never recorded",
            )
        };
        never_k.add(key.into(), words.into(), || name.clone(), o.examples);
    }
    let never_on_atexit_side = never.into_reasons();
    let never_on_kernel_side = never_k.into_reasons();

    // Rankings leave out the hook itself, modules without files (the kernel cannot see a
    // built-in module: ranking them would only show that) and, unless asked, the standard
    // library.
    // Both decided by the kernel side where it saw the package (the daemon's resolver, not
    // what a user's hook said): one spool line calling numpy "stdlib" or "<built-in>" must
    // not take it out of the rankings.
    let fileless: HashSet<&str> = atexit
        .iter()
        .flat_map(|a| a.packages.iter())
        .filter(|(n, p)| p.fileless() && !ku.contains_key(*n))
        .map(|(n, _)| n.as_str())
        .collect();
    let stdlib = |p: &str| {
        if ku.contains_key(p) {
            kstd.contains(p)
        } else {
            astd.contains(p)
        }
    };
    let rankable = |p: &str| {
        p != "sitecustomize"
            && p != "__main__"
            && !fileless.contains(p)
            && (o.with_stdlib || !stdlib(p))
    };
    let values = |u: &BTreeMap<String, Usage>, f: &dyn Fn(&Usage) -> f64| {
        u.iter()
            .filter(|(p, _)| rankable(p))
            .map(|(p, u)| (p.clone(), f(u)))
            .collect::<BTreeMap<String, f64>>()
    };
    let ranking_users = ranking(
        &values(&ku, &|u| u.users as f64),
        &values(&au, &|u| u.users as f64),
        o.top,
    );
    let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    let ranking_job_share = ranking(
        &values(&ku, &|u| share(u.jobs, jobs.kernel)),
        &values(&au, &|u| share(u.jobs, jobs.atexit)),
        o.top,
    );
    let series_pkgs: Vec<String> = ranking_users
        .iter()
        .filter(|r| {
            r.kernel_rank.is_some_and(|k| k <= 10) || r.atexit_rank.is_some_and(|a| a <= 10)
        })
        .map(|r| r.package.clone())
        .collect();
    let monthly = monthly(&kernel, &atexit, &series_pkgs, o.cutover.as_deref());

    Comparison {
        kernel_data: names.0,
        atexit_data: names.1,
        skew_s: o.skew_us as f64 / 1e6,
        processes: ProcessCounts {
            kernel: kernel.len() as u64,
            atexit: atexit.len() as u64,
            matched: m.pairs.len() as u64,
            kernel_only: m.kernel_only.len() as u64,
            atexit_only: m.atexit_only.len() as u64,
        },
        kernel_only,
        atexit_only,
        jobs,
        packages,
        package_gaps: gaps.into_reasons(),
        never_on_atexit_side,
        never_on_kernel_side,
        ranking_users,
        ranking_job_share,
        monthly,
        hook_health,
        unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyusage_record::{Exit, Source};

    fn rec(pid: i32, user: &str, job: &str, pkg: &str, src: &[Source]) -> Record {
        let mut r = Record::example();
        r.pid = pid;
        r.username = Some(user.into());
        // Users are told apart by uid.
        r.uid = user.bytes().map(u32::from).sum();
        r.job_id = Some(job.into());
        r.package = pkg.into();
        r.source = src[0];
        r.sources = src.to_vec();
        r.exit = Exit::Exited;
        r.exit_code = Some(0);
        r.env_kind = EnvKind::Venv;
        r
    }

    #[test]
    fn monthly_series_are_stitched_at_the_cutover() {
        use Source::{Atexit as A, Ebpf as E};
        let at =
            |month: &str| pyusage_record::parse_micros(&format!("{month}-15T00:00:00Z")).unwrap();
        let mut v = Vec::new();
        // 2026-01: atexit only (old data); 2026-02: both (kernel 3 users, atexit 2); 2026-03:
        // none; 2026-04: kernel only.
        for (pid, month, user, src) in [
            (1, "2026-01", "a", A),
            (2, "2026-01", "b", A),
            (3, "2026-02", "a", E),
            (4, "2026-02", "b", E),
            (5, "2026-02", "c", E),
            (6, "2026-02", "a", A),
            (7, "2026-02", "b", A),
            (8, "2026-04", "a", E),
        ] {
            let mut r = rec(pid, user, "j", "numpy", &[src]);
            r.process_start = at(month);
            v.push(r);
        }
        let m = monthly(
            &processes(&v, Side::Kernel),
            &processes(&v, Side::Atexit),
            &["numpy".to_string()],
            Some("2026-02"),
        );
        assert_eq!(m.months, ["2026-01", "2026-02", "2026-03", "2026-04"]);
        let s = &m.series[0];
        assert_eq!(
            (&s.kernel[..], &s.atexit[..]),
            (&[0, 3, 0, 1][..], &[2, 2, 0, 0][..])
        );
        assert_eq!(s.stitched, [2, 3, 0, 1]);
        assert_eq!(s.overlap_ratio, Some(1.5));
    }

    #[test]
    fn rankings_gaps_and_jobs() {
        use Source::{Atexit as A, Ebpf as E};
        let mut v = vec![
            rec(1, "u1", "j1", "numpy", &[E, A]),
            rec(1, "u1", "j1", "sitecustomize", &[E, A]),
            rec(1, "u1", "j1", "scipy", &[E]),
            rec(2, "u2", "j2", "numpy", &[E]),
            rec(2, "u2", "j2", "sitecustomize", &[E]),
            rec(3, "u3", "j3", "numpy", &[E]),
            rec(3, "u3", "j3", "sitecustomize", &[E]),
        ];
        let mut sys = rec(1, "u1", "j1", "sys", &[A]);
        sys.first_path = "<built-in>".into();
        sys.env_kind = EnvKind::Stdlib;
        v.push(sys);
        v.iter_mut()
            .filter(|r| r.pid == 2)
            .for_each(|r| (r.exit, r.exit_signal) = (Exit::Signaled, Some("SIGKILL".into())));
        let c = compare(
            &v,
            &v,
            ("d".into(), "d".into()),
            HookHealth::default(),
            HashSet::new(),
            vec![],
            &Options::default(),
        );
        assert_eq!((c.processes.matched, c.processes.kernel_only), (1, 2));
        let keys: Vec<(&str, u64)> = c
            .kernel_only
            .iter()
            .map(|r| (r.key.as_str(), r.count))
            .collect();
        assert_eq!(keys, [("os_exit:0", 1), ("signal:SIGKILL", 1)]);
        let gaps: Vec<(&str, u64)> = c
            .package_gaps
            .iter()
            .map(|r| (r.key.as_str(), r.count))
            .collect();
        assert_eq!(
            gaps,
            [
                ("atexit_only:built-in module (no file to open)", 1),
                (
                    "kernel_only:not in sys.modules at exit (failed import, or removed)",
                    1
                )
            ]
        );
        let numpy = &c.ranking_users[0];
        assert_eq!(
            (
                numpy.package.as_str(),
                numpy.kernel,
                numpy.atexit,
                numpy.change
            ),
            ("numpy", 3.0, 1.0, Some(0))
        );
        assert!(c
            .ranking_users
            .iter()
            .all(|r| r.package != "sys" && r.package != "sitecustomize"));
        assert_eq!(
            (c.jobs.both, c.jobs.kernel_only, c.jobs.kernel_saw_more),
            (1, 2, 1)
        );
        assert_eq!(c.never_on_kernel_side[0].examples, ["sys"]);
        assert_eq!(c.never_on_kernel_side[0].key, "atexit_only:fileless");
        let never: Vec<(&str, &[String])> = c
            .never_on_atexit_side
            .iter()
            .map(|r| (r.key.as_str(), &r.examples[..]))
            .collect();
        assert_eq!(
            never,
            [("kernel_only:not_at_exit", &["scipy".to_string()][..])]
        );
    }
}
