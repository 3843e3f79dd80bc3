//! The mergeable analysis state: month-level sets of distinct keys and month-level counts,
//! from which every table of every period is computed. It is what the CPU back end folds the
//! scan's chunks into, what `--partial` writes for one shard, what `analyze merge` combines,
//! and what `--cache` keeps per partition — one state, built once, used for all four.
//!
//! Why it merges exactly: distinct counts do not add up across shards, but sets of keys do,
//! so a state keeps the keys — (month, package, user, version), (month, job, package, nodes,
//! kept for job tables), (month, job, BLAS) — and only counts what is final within one
//! partition: process-level counts (a process lives in exactly one `date=` partition, the
//! daemon partitions by `process_start`) and rows. Two states of disjoint partitions (or of
//! disjoint hosts) merge by concatenating their keys and adding their counts; quarters, years
//! and `all` come from the month-level keys by mapping each month to its bucket and removing
//! duplicates again.
//!
//! Ids are those of one run's [`Names`]; [`file`] writes a state with its own names and maps
//! them back into another run's ids when it is read.
use std::collections::BTreeSet;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::{
    accounting::{Accounting, JobInfo, OUTCOMES},
    counts::{pair_rows, CpuSums, Dims, JobCounts, KindCounts, PeriodKind, MAX_PAIR_ROWS},
    model::{flag, node_bin, Chunk, Names, MAX_NODES, NODE_BINS, NONE, NO_CPU, NO_JOB},
};

pub mod file;
pub mod sampled;

pub use sampled::{SKey, Sampled};

/// (package, user, month, version): sorted, a (package, user) is one run of keys, so every
/// granularity's distinct users come from one pass (see [`State::counts`]).
pub type UKey = (u32, u32, u16, u32);
/// (job, month, package, nodes, kept for job tables): a job is one run, its months in order.
pub type JKey = (u64, u16, u32, u32, bool);
/// (job, month, BLAS).
pub type BKey = (u64, u16, u32);

/// Month-level keys and counts of some partitions (see the module's doc).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct State {
    /// Months with rows.
    pub(crate) months: BTreeSet<u16>,
    /// Month → kept rows.
    pub(crate) rows: FxHashMap<u16, u64>,
    /// User keys; sorted and unique when [`State::compact`]ed.
    pub(crate) u: Vec<UKey>,
    /// Job keys; idem.
    pub(crate) j: Vec<JKey>,
    /// BLAS keys; idem.
    pub(crate) b: Vec<BKey>,
    /// (month, package) → (processes, signaled processes).
    pub(crate) processes: FxHashMap<(u16, u32), (u64, u64)>,
    /// (month, env kind) → processes.
    pub(crate) env_kinds: FxHashMap<(u16, u32), u64>,
    /// (month, package, env kind) → processes.
    pub(crate) package_envs: FxHashMap<(u16, u32, u32), u64>,
    /// (month, package) → the CPU time of the processes that imported it (see [`CpuSums`]).
    pub(crate) cpu: FxHashMap<(u16, u32), CpuSums>,
    /// What the CPU sampler counted (see [`Sampled`]).
    pub(crate) sampled: Sampled,
}

/// Sorts and de-duplicates keys. A stable (merge) sort on purpose: keys arrive as sorted runs,
/// one per partition, and job ids grow with time, so the runs are nearly in order already —
/// what a run-detecting merge sort does in about one pass and pattern-defeating quicksort
/// does not (it was a third of a cached run's time).
pub(crate) fn sort_dedup<T: Ord + Send>(v: &mut Vec<T>) {
    v.par_sort();
    v.dedup();
}

impl State {
    /// The state of one partition's chunk: its keys sorted and unique, its process-level
    /// counts final (a process lives in one chunk).
    pub fn of(c: &Chunk) -> State {
        let n = c.len();
        let mut u: Vec<UKey> = (0..n)
            .map(|i| (c.package[i], c.user[i], c.month[i], c.version[i]))
            .collect();
        u.sort_unstable();
        u.dedup();
        let mut j: Vec<JKey> = (0..n)
            .filter(|&i| c.job[i] != NO_JOB)
            .map(|i| {
                let kj = c.flags[i] & flag::KEEP_JOB != 0;
                (c.job[i], c.month[i], c.package[i], c.nodes[i], kj)
            })
            .collect();
        j.sort_unstable();
        j.dedup();
        let mut b: Vec<BKey> = (0..n)
            .filter(|&i| c.job[i] != NO_JOB && c.flags[i] & flag::NUMPYISH != 0)
            .map(|i| (c.job[i], c.month[i], c.blas[i]))
            .collect();
        b.sort_unstable();
        b.dedup();
        let mut rows: FxHashMap<u16, u64> = FxHashMap::default();
        for &m in &c.month {
            *rows.entry(m).or_default() += 1;
        }
        let ProcessCounts {
            processes,
            env_kinds,
            package_envs,
            cpu,
        } = process_counts(c);
        State {
            months: rows.keys().copied().collect(),
            rows,
            u,
            j,
            b,
            processes,
            env_kinds,
            package_envs,
            cpu,
            sampled: Sampled::of(c),
        }
    }

    /// Kept rows in all months.
    pub fn rows(&self) -> u64 {
        self.rows.values().sum()
    }

    /// Adds `other`'s counts and appends its keys (not de-duplicated: see [`State::compact`]).
    /// Both must use the same [`Names`] and come from disjoint partitions or hosts.
    pub fn absorb(&mut self, other: State) {
        self.months.extend(other.months);
        for (m, r) in other.rows {
            *self.rows.entry(m).or_default() += r;
        }
        for (k, v) in other.processes {
            let e = self.processes.entry(k).or_default();
            e.0 += v.0;
            e.1 += v.1;
        }
        for (k, v) in other.env_kinds {
            *self.env_kinds.entry(k).or_default() += v;
        }
        for (k, v) in other.package_envs {
            *self.package_envs.entry(k).or_default() += v;
        }
        for (k, v) in other.cpu {
            self.cpu.entry(k).or_default().add(v);
        }
        self.sampled.absorb(other.sampled);
        self.u.extend(other.u);
        self.j.extend(other.j);
        self.b.extend(other.b);
    }

    /// Sorts the key lists and removes duplicates (in parallel).
    pub fn compact(&mut self) {
        sort_dedup(&mut self.u);
        sort_dedup(&mut self.j);
        sort_dedup(&mut self.b);
        self.sampled.compact();
    }

    /// The counts of each granularity in `kinds`; `top` sizes the pair-count rows.
    ///
    /// One sort of each key list, then one parallel pass per table family for all
    /// granularities at once: keys are grouped by (package, user) or by job, and a group's
    /// keys of one bucket (a month, quarter, year or `all`) are de-duplicated inside the
    /// group — a handful of keys, in cache — instead of re-sorting every key list per
    /// granularity.
    pub fn counts(
        mut self,
        names: &Names,
        kinds: &[PeriodKind],
        top: usize,
        accounting: Option<&Accounting>,
    ) -> Vec<(PeriodKind, KindCounts)> {
        let acct = accounting.map(|a| (a.by_key(names), a.accounts.len()));
        let accounts = acct.as_ref().map(|a| a.1);
        let acct = acct.as_ref().map(|a| &a.0);
        self.compact();
        let mut s = self;
        let months: Vec<u16> = s.months.iter().copied().collect();
        // Sizes first: `Dims::of` takes the interner locks that `packages` then holds.
        let base = Dims::of(names, 0);
        let sampled = s.sampled.counts(&months, kinds, base.packages);
        let periods: Vec<Periods> = kinds
            .iter()
            .map(|&kind| {
                let (buckets, lut) = kind.layout(&months);
                Periods {
                    first: months.first().copied().unwrap_or(0),
                    lut,
                    dims: Dims {
                        buckets: buckets.len(),
                        ..base
                    },
                    buckets,
                }
            })
            .collect();
        let mut out: Vec<KindCounts> = periods
            .iter()
            .map(|p| KindCounts::zeroed(p.buckets.clone(), p.dims))
            .collect();
        for (p, k) in periods.iter().zip(&mut out) {
            s.process_counts(p, k);
        }
        let zero = |pass| -> Vec<KindCounts> {
            periods
                .iter()
                .map(|p| pass_zero(pass, p, accounts))
                .collect()
        };
        let users = in_parallel(
            &s.u,
            |a, b| (a.0, a.1) == (b.0, b.1),
            &|| zero(Pass::Users),
            |g, acc| user_group(g, &periods, acc),
        );
        let jobs = in_parallel(
            &s.j,
            |a, b| a.0 == b.0,
            &|| zero(Pass::Jobs),
            |g, acc| job_group(g, &periods, acc, acct),
        );
        let blas = in_parallel(
            &s.b,
            |a, b| a.0 == b.0,
            &|| zero(Pass::Blas),
            |g, acc| blas_group(g, &periods, acc),
        );
        for part in [users, jobs, blas] {
            for (k, x) in out.iter_mut().zip(part) {
                add(k, &x);
            }
        }
        let packages = names.packages.lock().expect("lock");
        for (p, k) in periods.iter().zip(&mut out) {
            let np = p.dims.packages;
            for b in 0..p.dims.buckets {
                k.pair_rows[b] = pair_rows(&k.job_packages[b * np..(b + 1) * np], &packages, top);
            }
        }
        drop(packages);
        let rows: Vec<Vec<u8>> = periods
            .iter()
            .zip(&out)
            .map(|(p, k)| row_index(p, k))
            .collect();
        let pairs = in_parallel(
            &s.j,
            |a, b| a.0 == b.0,
            &|| zero(Pass::Pairs),
            |g, acc| pair_group(g, &periods, &rows, acc),
        );
        for (k, x) in out.iter_mut().zip(pairs) {
            add(k, &x);
        }
        for (k, x) in out.iter_mut().zip(sampled) {
            k.sampled = x;
        }
        kinds.iter().copied().zip(out).collect()
    }

    /// Rows, processes (all and signalled) and environment kinds: sums of month counts.
    fn process_counts(&self, p: &Periods, k: &mut KindCounts) {
        let d = p.dims;
        let np = d.packages;
        for (&m, &r) in &self.rows {
            k.rows[p.bucket(m) as usize] += r;
        }
        for (&(m, pk), &(n, sig)) in &self.processes {
            let at = p.bucket(m) as usize * np + pk as usize;
            k.by_process[at] += n;
            k.signaled[at] += sig;
        }
        for (&(m, e), &n) in &self.env_kinds {
            k.env_kinds[p.bucket(m) as usize * d.env_kinds + e as usize] += n;
        }
        for (&(m, pk), s) in &self.cpu {
            k.cpu.add_at(p.bucket(m) as usize * np + pk as usize, *s);
        }
        let ne = d.env_kinds;
        for (&(m, pk, e), &n) in &self.package_envs {
            k.package_env_kinds[(p.bucket(m) as usize * np + pk as usize) * ne + e as usize] += n;
        }
    }
}

/// The rows of each process of a chunk: `order` lists row indices process by process, and
/// process `p`'s rows are `order[start[p]..start[p + 1]]`. A counting sort on the dense
/// process ids — linear, where sorting (process, package) tuples was a fifth of a cold run;
/// the daemon writes a process's records together, so usually `order` is just 0..n.
struct ByProcess {
    order: Vec<u32>,
    start: Vec<u32>,
}

impl ByProcess {
    fn of(c: &Chunk) -> ByProcess {
        let n = c.len();
        let procs = c.process.iter().map(|&p| p as usize + 1).max().unwrap_or(0);
        let mut start = vec![0u32; procs + 1];
        for &p in &c.process {
            start[p as usize + 1] += 1;
        }
        for p in 0..procs {
            start[p + 1] += start[p];
        }
        let order = if c.process.is_sorted() {
            (0..n as u32).collect()
        } else {
            let mut next = start.clone();
            let mut order = vec![0u32; n];
            for (i, &p) in c.process.iter().enumerate() {
                order[next[p as usize] as usize] = i as u32;
                next[p as usize] += 1;
            }
            order
        };
        ByProcess { order, start }
    }

    /// Each process's row indices.
    fn groups(&self) -> impl Iterator<Item = &[u32]> {
        self.start
            .windows(2)
            .map(|w| &self.order[w[0] as usize..w[1] as usize])
            .filter(|g| !g.is_empty())
    }
}

/// The process-level counts of a chunk (final within it: a process lives in one partition).
#[derive(Debug, Default, PartialEq, Eq)]
struct ProcessCounts {
    /// (month, package) → (processes, signalled processes): distinct (process, package).
    processes: FxHashMap<(u16, u32), (u64, u64)>,
    /// (month, env kind) → processes with non-stdlib rows: distinct (process, env kind).
    env_kinds: FxHashMap<(u16, u32), u64>,
    /// (month, package, env kind) → processes: distinct (process, package, env kind).
    package_envs: FxHashMap<(u16, u32, u32), u64>,
    /// (month, package) → CPU time of the processes that imported it (non-stdlib packages).
    cpu: FxHashMap<(u16, u32), CpuSums>,
}

fn process_counts(c: &Chunk) -> ProcessCounts {
    let mut out = ProcessCounts::default();
    let (mut pk, mut ek, mut own) = (Vec::new(), Vec::new(), Vec::new());
    for g in ByProcess::of(c).groups() {
        // A process has one start, so one month.
        let month = c.month[g[0] as usize];
        pk.clear();
        ek.clear();
        own.clear();
        let mut cpu = None;
        for &i in g {
            let i = i as usize;
            pk.push((
                c.package[i],
                c.env_kind[i],
                c.flags[i] & flag::SIGNALED != 0,
            ));
            if c.flags[i] & flag::NON_STDLIB != 0 {
                ek.push(c.env_kind[i]);
                own.push(c.package[i]);
            }
            if c.cpu_us[i] != NO_CPU {
                cpu = cpu.max(Some(c.cpu_us[i]));
            }
        }
        if let Some(us) = cpu {
            cpu_shares(month, us, &mut own, &mut out.cpu);
        }
        pk.sort_unstable();
        for pg in pk.chunk_by(|a, b| a.0 == b.0) {
            let e = out.processes.entry((month, pg[0].0)).or_default();
            e.0 += 1;
            e.1 += pg.iter().any(|x| x.2) as u64;
            for pe in pg.chunk_by(|a, b| a.1 == b.1).filter(|pe| pe[0].1 != NONE) {
                *out.package_envs
                    .entry((month, pe[0].0, pe[0].1))
                    .or_default() += 1;
            }
        }
        ek.sort_unstable();
        ek.dedup();
        for &e in &ek {
            *out.env_kinds.entry((month, e)).or_default() += 1;
        }
    }
    out
}

/// The CPU-time counts of a chunk alone (for the GPU back end, which counts everything else
/// on the device: these are per-process sums, done here the same way as on the CPU).
pub(crate) fn chunk_cpu(c: &Chunk) -> FxHashMap<(u16, u32), CpuSums> {
    process_counts(c).cpu
}

/// One process's CPU time (`us`, the largest its records give: the final record's, or the
/// last snapshot's) charged to each of its non-stdlib `packages` (whole, and split equally).
/// Shared by both back ends, so their integers agree.
pub(crate) fn cpu_shares(
    month: u16,
    us: u64,
    packages: &mut Vec<u32>,
    out: &mut FxHashMap<(u16, u32), CpuSums>,
) {
    packages.sort_unstable();
    packages.dedup();
    let n = packages.len() as u64;
    for &p in packages.iter() {
        out.entry((month, p)).or_default().add(CpuSums {
            processes: 1,
            us,
            split_ns: us.saturating_mul(1000) / n,
        });
    }
}

/// The buckets of one granularity: `lut[month - first]` is a month's bucket index.
struct Periods {
    first: u16,
    lut: Vec<u32>,
    dims: Dims,
    buckets: Vec<u32>,
}

impl Periods {
    fn bucket(&self, m: u16) -> u32 {
        self.lut[(m - self.first) as usize]
    }
}

/// The table families counted in one parallel pass over one key list.
#[derive(Clone, Copy)]
enum Pass {
    Users,
    Jobs,
    Blas,
    Pairs,
}

/// Zeroed arrays for the counts one `pass` writes, the others left empty: every thread of a
/// pass has its own, and zeroing the large arrays no pass writes (job sizes are 65,536 wide
/// per bucket) cost more than the pass.
fn pass_zero(pass: Pass, p: &Periods, accounts: Option<usize>) -> KindCounts {
    let (d, b) = (p.dims, p.dims.buckets);
    let z = |n: usize| vec![0u64; b * n];
    let mut k = KindCounts {
        buckets: p.buckets.clone(),
        ..KindCounts::default()
    };
    match pass {
        Pass::Users => {
            k.by_user = z(d.packages);
            k.versioned_users = z(d.packages);
            k.version_users = z(d.versions);
        }
        Pass::Jobs => {
            k.by_job = z(d.packages);
            k.job_packages = z(d.packages);
            k.package_sizes = z(d.packages * NODE_BINS as usize);
            k.jobs = z(1);
            k.job_sizes = z(MAX_NODES as usize);
            if let Some(n) = accounts {
                k.accounting = JobCounts::zeroed(b, d.packages, n);
            }
        }
        Pass::Blas => k.blas = z(d.blases + 1),
        Pass::Pairs => k.pairs = z(MAX_PAIR_ROWS * d.packages),
    }
    k
}

/// Runs `each` over the groups of `keys` (runs of keys `same` says belong together) on all
/// threads, each thread into its own counts (from `zero`), and returns their sum. A group is
/// never split between threads.
fn in_parallel<T: Sync>(
    keys: &[T],
    same: impl Fn(&T, &T) -> bool + Sync,
    zero: &(dyn Fn() -> Vec<KindCounts> + Sync),
    each: impl Fn(&[T], &mut [KindCounts]) + Sync,
) -> Vec<KindCounts> {
    let pieces = split(keys, rayon::current_num_threads() * 4, &same);
    pieces
        .into_par_iter()
        .fold(zero, |mut acc, piece| {
            for g in piece.chunk_by(&same) {
                each(g, &mut acc);
            }
            acc
        })
        .reduce(zero, |mut a, b| {
            for (x, y) in a.iter_mut().zip(&b) {
                add(x, y);
            }
            a
        })
}

/// `keys` cut into about `n` slices, each cut moved forward to a group boundary.
fn split<'k, T>(keys: &'k [T], n: usize, same: &impl Fn(&T, &T) -> bool) -> Vec<&'k [T]> {
    let step = keys.len().div_ceil(n.max(1)).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < keys.len() {
        let mut end = (start + step).min(keys.len());
        while end < keys.len() && same(&keys[end - 1], &keys[end]) {
            end += 1;
        }
        out.push(&keys[start..end]);
        start = end;
    }
    out
}

/// Adds every count of `y` to `x` (same granularity, same dimensions; an empty array is an
/// array not counted into yet — see [`Pass::zero`]).
fn add(x: &mut KindCounts, y: &KindCounts) {
    let sum = |a: &mut Vec<u64>, b: &Vec<u64>| {
        if a.is_empty() {
            a.clone_from(b);
            return;
        }
        for (a, b) in a.iter_mut().zip(b) {
            *a += b;
        }
    };
    sum(&mut x.rows, &y.rows);
    sum(&mut x.by_user, &y.by_user);
    sum(&mut x.by_job, &y.by_job);
    sum(&mut x.by_process, &y.by_process);
    sum(&mut x.signaled, &y.signaled);
    sum(&mut x.versioned_users, &y.versioned_users);
    sum(&mut x.version_users, &y.version_users);
    sum(&mut x.env_kinds, &y.env_kinds);
    sum(&mut x.package_env_kinds, &y.package_env_kinds);
    sum(&mut x.cpu.processes, &y.cpu.processes);
    sum(&mut x.cpu.us, &y.cpu.us);
    sum(&mut x.cpu.split_ns, &y.cpu.split_ns);
    sum(&mut x.jobs, &y.jobs);
    sum(&mut x.job_sizes, &y.job_sizes);
    sum(&mut x.job_packages, &y.job_packages);
    sum(&mut x.package_sizes, &y.package_sizes);
    sum(&mut x.blas, &y.blas);
    sum(&mut x.pairs, &y.pairs);
    let (a, b) = (&mut x.accounting, &y.accounting);
    sum(&mut a.unaccounted, &b.unaccounted);
    sum(&mut a.jobs, &b.jobs);
    sum(&mut a.node_seconds, &b.node_seconds);
    sum(&mut a.outcomes, &b.outcomes);
    sum(&mut a.account_jobs, &b.account_jobs);
    sum(&mut a.account_node_seconds, &b.account_node_seconds);
    sum(&mut a.account_outcomes, &b.account_outcomes);
}

/// One (package, user), months ascending: the user counts once per bucket it appears in, as
/// a versioned user once per bucket with a known version, and per (bucket, version).
fn user_group(g: &[UKey], periods: &[Periods], acc: &mut [KindCounts]) {
    let (p, mut versions) = (g[0].0 as usize, Vec::new());
    for (pe, k) in periods.iter().zip(acc) {
        let (np, nv) = (pe.dims.packages, pe.dims.versions);
        let (mut last, mut last_versioned) = (u32::MAX, u32::MAX);
        versions.clear();
        for x in g {
            let b = pe.bucket(x.2);
            if b != last {
                last = b;
                k.by_user[b as usize * np + p] += 1;
            }
            if x.3 != NONE {
                if b != last_versioned {
                    last_versioned = b;
                    k.versioned_users[b as usize * np + p] += 1;
                }
                versions.push((b, x.3));
            }
        }
        versions.sort_unstable();
        versions.dedup();
        for &(b, v) in &versions {
            k.version_users[b as usize * nv + v as usize] += 1;
        }
    }
}

/// The distinct (package, nodes, kept) of one job in one bucket, each granularity in turn:
/// `f(bucket, keys)` with `keys` sorted and unique. Months are ascending in `g`, so a bucket's
/// keys are one run; in a month run they are sorted and unique already.
fn per_bucket(
    g: &[JKey],
    pe: &Periods,
    scratch: &mut Vec<(u32, u32, bool)>,
    mut f: impl FnMut(usize, &[(u32, u32, bool)]),
) {
    for run in g.chunk_by(|a, b| pe.bucket(a.1) == pe.bucket(b.1)) {
        scratch.clear();
        scratch.extend(run.iter().map(|x| (x.2, x.3, x.4)));
        if run.first().map(|x| x.1) != run.last().map(|x| x.1) {
            scratch.sort_unstable();
            scratch.dedup();
        }
        f(pe.bucket(run[0].1) as usize, scratch);
    }
}

/// One job: its packages (all rows), and among job rows its packages, node counts and node
/// bins, per bucket; with `acct`, its node-hours and outcome by package and account.
fn job_group(
    g: &[JKey],
    periods: &[Periods],
    acc: &mut [KindCounts],
    acct: Option<&FxHashMap<u64, JobInfo>>,
) {
    let (mut scratch, mut nodes, mut kept_packages) = (Vec::new(), Vec::new(), Vec::new());
    let info = acct.map(|a| a.get(&g[0].0));
    for (pe, k) in periods.iter().zip(acc) {
        let np = pe.dims.packages;
        per_bucket(g, pe, &mut scratch, |b, keys| {
            kept_packages.clear();
            for pg in keys.chunk_by(|a, b| a.0 == b.0) {
                let p = pg[0].0 as usize;
                k.by_job[b * np + p] += 1;
                let mut kept = pg.iter().filter(|x| x.2).peekable();
                if kept.peek().is_none() {
                    continue;
                }
                k.job_packages[b * np + p] += 1;
                kept_packages.push(p);
                let mut last = u32::MAX;
                for x in kept {
                    nodes.push(x.1);
                    let bin = node_bin(x.1);
                    if bin != last {
                        last = bin;
                        k.package_sizes[(b * np + p) * NODE_BINS as usize + bin as usize] += 1;
                    }
                }
            }
            if !nodes.is_empty() {
                match info {
                    Some(Some(i)) => account(&mut k.accounting, b, np, &kept_packages, i),
                    Some(None) => k.accounting.unaccounted[b] += 1,
                    None => {}
                }
                k.jobs[b] += 1;
                nodes.sort_unstable();
                nodes.dedup();
                for &n in &nodes {
                    k.job_sizes[b * MAX_NODES as usize + n as usize] += 1;
                }
                nodes.clear();
            }
        });
    }
}

/// One accounted job with job rows in bucket `b`, using `packages`.
fn account(a: &mut JobCounts, b: usize, np: usize, packages: &[usize], i: &JobInfo) {
    let no = OUTCOMES.len();
    let na = a.account_jobs.len() / a.unaccounted.len();
    let (o, acc) = (i.outcome as usize, i.account as usize);
    let secs = i.node_seconds.unwrap_or(0);
    for &p in packages {
        a.jobs[b * np + p] += 1;
        a.node_seconds[b * np + p] += secs;
        a.outcomes[(b * np + p) * no + o] += 1;
    }
    a.account_jobs[b * na + acc] += 1;
    a.account_node_seconds[b * na + acc] += secs;
    a.account_outcomes[(b * na + acc) * no + o] += 1;
}

/// `[bucket][package]` → the package's pair row in that bucket, or `u8::MAX`.
fn row_index(p: &Periods, k: &KindCounts) -> Vec<u8> {
    let np = p.dims.packages;
    let mut rindex = vec![u8::MAX; p.dims.buckets * np];
    for b in 0..p.dims.buckets {
        for (r, &pk) in k.pair_rows[b].iter().enumerate() {
            rindex[b * np + pk as usize] = r as u8;
        }
    }
    rindex
}

/// One job's pairs among its job-row packages, per bucket, for the pair rows chosen.
fn pair_group(g: &[JKey], periods: &[Periods], rows: &[Vec<u8>], acc: &mut [KindCounts]) {
    let (mut scratch, mut set) = (Vec::new(), Vec::new());
    for ((pe, rindex), k) in periods.iter().zip(rows).zip(acc) {
        let np = pe.dims.packages;
        per_bucket(g, pe, &mut scratch, |b, keys| {
            set.clear();
            set.extend(keys.iter().filter(|x| x.2).map(|x| x.0));
            set.dedup();
            let mut mask = 0u64;
            for &p in &set {
                let r = rindex[b * np + p as usize];
                if r != u8::MAX {
                    mask |= 1 << r;
                }
            }
            while mask != 0 {
                let r = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                for &p in &set {
                    k.pairs[(b * MAX_PAIR_ROWS + r) * np + p as usize] += 1;
                }
            }
        });
    }
}

/// One job's BLAS backends among its numpy/scipy rows, per bucket: "none seen" when no row
/// names one, else once per backend named.
fn blas_group(g: &[BKey], periods: &[Periods], acc: &mut [KindCounts]) {
    let mut known = Vec::new();
    for (pe, k) in periods.iter().zip(acc) {
        let w = pe.dims.blases + 1;
        for run in g.chunk_by(|a, b| pe.bucket(a.1) == pe.bucket(b.1)) {
            let b = pe.bucket(run[0].1) as usize;
            known.clear();
            known.extend(run.iter().map(|x| x.2).filter(|&x| x != NONE));
            known.sort_unstable();
            known.dedup();
            if known.is_empty() {
                k.blas[b * w] += 1;
            }
            for &x in &known {
                k.blas[b * w + 1 + x as usize] += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of processes 0, 1, 2 interleaved: packages 5 and 6, process 1 signalled, process 2
    /// all stdlib.
    fn chunk(order: &[usize]) -> Chunk {
        let process = [0, 1, 0, 2, 1, 0];
        let package = [5, 5, 6, 5, 5, 5];
        let flags = [
            flag::NON_STDLIB,
            flag::NON_STDLIB | flag::SIGNALED,
            flag::NON_STDLIB,
            0,
            flag::SIGNALED,
            flag::NON_STDLIB,
        ];
        let env = [1, 1, 2, 0, 1, 1];
        let cpu = [100, 50, 120, NO_CPU, 60, NO_CPU];
        Chunk {
            month: vec![7; order.len()],
            package: order.iter().map(|&i| package[i]).collect(),
            user: vec![0; order.len()],
            job: vec![NO_JOB; order.len()],
            process: order.iter().map(|&i| process[i]).collect(),
            nodes: vec![1; order.len()],
            version: vec![NONE; order.len()],
            env_kind: order.iter().map(|&i| env[i]).collect(),
            blas: vec![NONE; order.len()],
            flags: order.iter().map(|&i| flags[i]).collect(),
            cpu_us: order.iter().map(|&i| cpu[i]).collect(),
            processes: 3,
            ..Chunk::default()
        }
    }

    #[test]
    fn process_counts_do_not_depend_on_row_order() {
        let interleaved = process_counts(&chunk(&[0, 1, 2, 3, 4, 5]));
        let grouped = process_counts(&chunk(&[0, 2, 5, 1, 4, 3]));
        assert_eq!(interleaved, grouped);
        let (p, e, pe) = (grouped.processes, grouped.env_kinds, grouped.package_envs);
        // Package 5: processes 0, 1, 2 (1 signalled); package 6: process 0.
        assert_eq!(p[&(7, 5)], (3, 1));
        assert_eq!(p[&(7, 6)], (1, 0));
        // Env kind 1: processes 0 and 1; kind 2: process 0; process 2 is stdlib only.
        assert_eq!(e[&(7, 1)], 2);
        assert_eq!(e[&(7, 2)], 1);
        assert_eq!(e.len(), 2);
        // Package 5 from env kind 1 in processes 0 and 1, from kind 0 (stdlib) in process 2;
        // package 6 from kind 2 in process 0.
        assert_eq!(pe[&(7, 5, 1)], 2);
        assert_eq!(pe[&(7, 5, 0)], 1);
        assert_eq!(pe[&(7, 6, 2)], 1);
        assert_eq!(pe.len(), 3);
        // CPU: process 0 (its largest record, 120 µs) split over its non-stdlib packages 5
        // and 6; process 1 (60 µs) has only package 5 as non-stdlib; process 2 unknown.
        let cpu = grouped.cpu;
        let sums = |processes, us, split_ns| CpuSums {
            processes,
            us,
            split_ns,
        };
        assert_eq!(cpu[&(7, 5)], sums(2, 180, 60_000 + 60_000));
        assert_eq!(cpu[&(7, 6)], sums(1, 120, 60_000));
        assert_eq!(cpu.len(), 2);
    }
}
