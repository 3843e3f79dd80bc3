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
    counts::{pair_rows, Dims, KindCounts, PeriodKind, MAX_PAIR_ROWS},
    model::{flag, node_bin, Chunk, Names, MAX_NODES, NODE_BINS, NONE, NO_JOB},
};

pub mod file;

/// (month, package, user, version).
pub type UKey = (u16, u32, u32, u32);
/// (month, job, package, nodes, kept for job tables).
pub type JKey = (u16, u64, u32, u32, bool);
/// (month, job, BLAS).
pub type BKey = (u16, u64, u32);

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
}

pub(crate) fn sort_dedup<T: Ord + Send>(v: &mut Vec<T>) {
    v.par_sort_unstable();
    v.dedup();
}

impl State {
    /// The state of one partition's chunk: its keys sorted and unique, its process-level
    /// counts final (a process lives in one chunk).
    pub fn of(c: &Chunk) -> State {
        let n = c.len();
        let mut u: Vec<UKey> = (0..n)
            .map(|i| (c.month[i], c.package[i], c.user[i], c.version[i]))
            .collect();
        u.sort_unstable();
        u.dedup();
        let mut j: Vec<JKey> = (0..n)
            .filter(|&i| c.job[i] != NO_JOB)
            .map(|i| {
                let kj = c.flags[i] & flag::KEEP_JOB != 0;
                (c.month[i], c.job[i], c.package[i], c.nodes[i], kj)
            })
            .collect();
        j.sort_unstable();
        j.dedup();
        let mut b: Vec<BKey> = (0..n)
            .filter(|&i| c.job[i] != NO_JOB && c.flags[i] & flag::NUMPYISH != 0)
            .map(|i| (c.month[i], c.job[i], c.blas[i]))
            .collect();
        b.sort_unstable();
        b.dedup();
        let mut rows: FxHashMap<u16, u64> = FxHashMap::default();
        for &m in &c.month {
            *rows.entry(m).or_default() += 1;
        }
        State {
            months: rows.keys().copied().collect(),
            rows,
            u,
            j,
            b,
            processes: process_counts(c),
            env_kinds: env_kind_counts(c),
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
        self.u.extend(other.u);
        self.j.extend(other.j);
        self.b.extend(other.b);
    }

    /// Sorts the key lists and removes duplicates (in parallel).
    pub fn compact(&mut self) {
        sort_dedup(&mut self.u);
        sort_dedup(&mut self.j);
        sort_dedup(&mut self.b);
    }

    /// The counts of each granularity in `kinds`; `top` sizes the pair-count rows.
    pub fn counts(
        mut self,
        names: &Names,
        kinds: &[PeriodKind],
        top: usize,
    ) -> Vec<(PeriodKind, KindCounts)> {
        self.compact();
        let s = self;
        let months: Vec<u16> = s.months.iter().copied().collect();
        // Sizes first: `Dims::of` takes the interner locks that `packages` then holds.
        let base = Dims::of(names, 0);
        let packages = names.packages.lock().expect("lock");
        let mut out = Vec::new();
        for &kind in kinds {
            let (buckets, lut) = kind.layout(&months);
            let d = Dims {
                buckets: buckets.len(),
                ..base
            };
            let p = Periods {
                kind,
                first: months.first().copied().unwrap_or(0),
                lut,
            };
            let mut k = KindCounts::zeroed(buckets, d);
            s.process_counts(&p, d, &mut k);
            s.user_counts(&p, d, &mut k);
            let j = remap(&s.j, kind, |x| (p.bucket(x.0), x.1, x.2, x.3, x.4));
            job_counts(&j, d, &mut k);
            for b in 0..d.buckets {
                let np = d.packages;
                k.pair_rows[b] = pair_rows(&k.job_packages[b * np..(b + 1) * np], &packages, top);
            }
            pair_counts(&j, d, &mut k);
            s.blas_counts(&p, d, &mut k);
            out.push((kind, k));
        }
        out
    }
}

/// (month, package) → (processes, signalled processes): distinct (process, package) in a chunk.
fn process_counts(c: &Chunk) -> FxHashMap<(u16, u32), (u64, u64)> {
    let mut pp: Vec<(u32, u32, u16, bool)> = (0..c.len())
        .map(|i| {
            let sig = c.flags[i] & flag::SIGNALED != 0;
            (c.process[i], c.package[i], c.month[i], sig)
        })
        .collect();
    pp.sort_unstable();
    let mut processes: FxHashMap<(u16, u32), (u64, u64)> = FxHashMap::default();
    for g in pp.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let e = processes.entry((g[0].2, g[0].1)).or_default();
        e.0 += 1;
        e.1 += g.iter().any(|x| x.3) as u64;
    }
    processes
}

/// (month, env kind) → processes: distinct (process, env kind) in a chunk, `stdlib` excluded.
fn env_kind_counts(c: &Chunk) -> FxHashMap<(u16, u32), u64> {
    let mut pe: Vec<(u32, u32, u16)> = (0..c.len())
        .filter(|&i| c.flags[i] & flag::NON_STDLIB != 0)
        .map(|i| (c.process[i], c.env_kind[i], c.month[i]))
        .collect();
    pe.sort_unstable();
    pe.dedup_by_key(|x| (x.0, x.1));
    let mut env_kinds: FxHashMap<(u16, u32), u64> = FxHashMap::default();
    for (_, e, m) in pe {
        *env_kinds.entry((m, e)).or_default() += 1;
    }
    env_kinds
}

/// The buckets of one granularity: `lut[month - first]` is a month's bucket index.
struct Periods {
    kind: PeriodKind,
    first: u16,
    lut: Vec<u32>,
}

impl Periods {
    fn bucket(&self, m: u16) -> u32 {
        self.lut[(m - self.first) as usize]
    }
}

impl State {
    /// Rows, processes (all and signalled) and environment kinds: sums of month counts.
    fn process_counts(&self, p: &Periods, d: Dims, k: &mut KindCounts) {
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
    }

    /// Users and versions: runs of (bucket, package, user).
    fn user_counts(&self, p: &Periods, d: Dims, k: &mut KindCounts) {
        let np = d.packages;
        let u = remap(&self.u, p.kind, |x| (p.bucket(x.0), x.1, x.2, x.3));
        for g in u.chunk_by(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2)) {
            let at = g[0].0 as usize * np + g[0].1 as usize;
            k.by_user[at] += 1;
            let mut versioned = false;
            for x in g.iter().filter(|x| x.3 != NONE) {
                k.version_users[x.0 as usize * d.versions + x.3 as usize] += 1;
                versioned = true;
            }
            k.versioned_users[at] += versioned as u64;
        }
    }

    /// BLAS among numpy/scipy jobs.
    fn blas_counts(&self, p: &Periods, d: Dims, k: &mut KindCounts) {
        let bl = remap(&self.b, p.kind, |x| (p.bucket(x.0), x.1, x.2));
        let w = d.blases + 1;
        for g in bl.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            let b = g[0].0 as usize;
            let known: Vec<u32> = g.iter().map(|x| x.2).filter(|&x| x != NONE).collect();
            if known.is_empty() {
                k.blas[b * w] += 1;
            }
            for x in known {
                k.blas[b * w + 1 + x as usize] += 1;
            }
        }
    }
}

/// Job keys with months mapped to buckets: (bucket, job, package, nodes, kept for job tables).
type BucketJKey = (u32, u64, u32, u32, bool);

/// Jobs: groups of (bucket, job), packages ascending within.
fn job_counts(j: &[BucketJKey], d: Dims, k: &mut KindCounts) {
    let np = d.packages;
    let mut nodes = Vec::new();
    for g in j.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let b = g[0].0 as usize;
        for pg in g.chunk_by(|a, b| a.2 == b.2) {
            k.by_job[b * np + pg[0].2 as usize] += 1;
            let kept: Vec<_> = pg.iter().filter(|x| x.4).collect();
            if kept.is_empty() {
                continue;
            }
            k.job_packages[b * np + pg[0].2 as usize] += 1;
            let mut last = u32::MAX;
            for x in kept {
                nodes.push(x.3);
                let bin = node_bin(x.3);
                if bin != last {
                    last = bin;
                    let at = (b * np + x.2 as usize) * NODE_BINS as usize + bin as usize;
                    k.package_sizes[at] += 1;
                }
            }
        }
        if !nodes.is_empty() {
            k.jobs[b] += 1;
            nodes.sort_unstable();
            nodes.dedup();
            for &n in &nodes {
                k.job_sizes[b * MAX_NODES as usize + n as usize] += 1;
            }
            nodes.clear();
        }
    }
}

/// Pairs among job rows, for the shared choice of rows (`k.pair_rows`, set by the caller).
fn pair_counts(j: &[BucketJKey], d: Dims, k: &mut KindCounts) {
    let np = d.packages;
    let mut rindex = vec![u8::MAX; d.buckets * np];
    for b in 0..d.buckets {
        for (r, &p) in k.pair_rows[b].iter().enumerate() {
            rindex[b * np + p as usize] = r as u8;
        }
    }
    let mut set = Vec::new();
    for g in j.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let b = g[0].0 as usize;
        set.clear();
        set.extend(g.iter().filter(|x| x.4).map(|x| x.2));
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
    }
}

/// `keys` (sorted, unique) with months mapped to buckets: still sorted and unique for months
/// (the map is monotone and one-to-one), sorted and de-duplicated again otherwise.
fn remap<K: Sync, T: Ord + Send>(
    keys: &[K],
    kind: PeriodKind,
    f: impl Fn(&K) -> T + Sync + Send,
) -> Vec<T> {
    let mut v: Vec<T> = keys.par_iter().map(f).collect();
    if kind != PeriodKind::Month {
        sort_dedup(&mut v);
    }
    v
}
