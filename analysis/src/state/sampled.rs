//! The sampled CPU's part of the state: what the CPU sampler counted in the processes it
//! sampled, and which jobs had which package on the CPU. Shared by both back ends: the CPU
//! one keeps it in its [`State`](super::State), the GPU one builds it on the host as chunks
//! arrive (per-process maxima and sparse caller lists are no work for a device) and counts it
//! with the same [`Sampled::counts`].
//!
//! Process-level sums are final within a partition (a process lives in one); the job keys
//! `(job, month, package, on CPU)` are kept, like the state's other job keys, so that jobs
//! over several partitions, shards or months count once per bucket.
//!
//! Only rows of non-stdlib packages count per package (as `cpu_by_package`); the totals, the
//! whole each share is of, are over every sampled process.
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::{sort_dedup, split, ByProcess};
use crate::{
    counts::{PeriodKind, SampleTotals, SampledCounts, SampledSums},
    model::{flag, Chunk, NO_JOB},
};

/// (job, month, package, on the CPU): a sampled process of the job imported the package, and
/// had it on the stack in some sample (inclusive samples above 0) or not.
pub type SKey = (u64, u16, u32, bool);

/// The sampled CPU of some partitions (see the module's doc).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sampled {
    /// Month → the sampled processes and their samples.
    pub(crate) totals: FxHashMap<u16, SampleTotals>,
    /// (month, package) → what the sampled processes that imported it counted.
    pub(crate) packages: FxHashMap<(u16, u32), SampledSums>,
    /// (month, package, caller) → the package's self samples under the caller.
    pub(crate) callers: FxHashMap<(u16, u32, u32), u64>,
    /// Job keys; sorted and unique when compacted.
    pub(crate) jobs: Vec<SKey>,
}

impl Sampled {
    /// The sampled CPU of one partition's chunk: each process's largest counts (its final
    /// record's), its job keys sorted and unique.
    pub fn of(c: &Chunk) -> Sampled {
        let mut out = Sampled::default();
        if c.samples.is_empty() {
            return out;
        }
        // (package, self, inclusive, self µs) and (package, caller, samples) of one process.
        let (mut own, mut calls) = (Vec::new(), Vec::new());
        for g in ByProcess::of(c).groups() {
            let month = c.month[g[0] as usize];
            let mut totals: Option<SampleTotals> = None;
            own.clear();
            calls.clear();
            for &i in g {
                let i = i as usize;
                let Some(s) = c.samples_of(i) else {
                    continue;
                };
                let t = totals.get_or_insert_with(|| SampleTotals {
                    processes: 1,
                    ..SampleTotals::default()
                });
                t.samples = t.samples.max(s.total);
                t.us = t.us.max(s.total_us);
                if c.flags[i] & flag::NON_STDLIB == 0 {
                    continue;
                }
                let p = c.package[i];
                own.push((p, s.own, s.inclusive, s.own_us));
                calls.extend(c.callers_of(s).iter().map(|&(q, n)| (p, q, n)));
                if c.job[i] != NO_JOB {
                    out.jobs.push((c.job[i], month, p, s.inclusive > 0));
                }
            }
            let Some(t) = totals else {
                continue;
            };
            out.totals.entry(month).or_default().add(t);
            own.sort_unstable();
            for pg in own.chunk_by(|a, b| a.0 == b.0) {
                let max = |f: fn(&(u32, u64, u64, u64)) -> u64| pg.iter().map(f).max();
                out.packages
                    .entry((month, pg[0].0))
                    .or_default()
                    .add(SampledSums {
                        processes: 1,
                        own: max(|x| x.1).unwrap_or(0),
                        inclusive: max(|x| x.2).unwrap_or(0),
                        own_us: max(|x| x.3).unwrap_or(0),
                    });
            }
            calls.sort_unstable();
            for cg in calls.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
                let n = cg.iter().map(|x| x.2).max().unwrap_or(0);
                *out.callers.entry((month, cg[0].0, cg[0].1)).or_default() += n;
            }
        }
        out.jobs.sort_unstable();
        out.jobs.dedup();
        out
    }

    /// Adds `other`'s counts and appends its keys (not de-duplicated: see
    /// [`Sampled::compact`]). Both must use the same names and come from disjoint partitions
    /// or hosts.
    pub fn absorb(&mut self, other: Sampled) {
        for (m, t) in other.totals {
            self.totals.entry(m).or_default().add(t);
        }
        for (k, s) in other.packages {
            self.packages.entry(k).or_default().add(s);
        }
        for (k, n) in other.callers {
            *self.callers.entry(k).or_default() += n;
        }
        self.jobs.extend(other.jobs);
    }

    /// Sorts the job keys and removes duplicates.
    pub fn compact(&mut self) {
        sort_dedup(&mut self.jobs);
    }

    /// The counts of each granularity in `kinds`, with the buckets of `months` (every month
    /// with rows, sorted: the layout of the other tables) and `packages` packages.
    pub fn counts(
        &mut self,
        months: &[u16],
        kinds: &[PeriodKind],
        packages: usize,
    ) -> Vec<SampledCounts> {
        self.compact();
        let first = months.first().copied().unwrap_or(0);
        let layouts: Vec<(Vec<u32>, Vec<u32>)> = kinds.iter().map(|k| k.layout(months)).collect();
        let bucket = |lut: &[u32], m: u16| lut[(m - first) as usize];
        let zero = || -> Vec<SampledCounts> {
            layouts
                .iter()
                .map(|(b, _)| SampledCounts::zeroed(b.len(), packages))
                .collect()
        };
        let np = packages;
        // Jobs: one job's keys are one run (months ascending), a bucket's keys a run in it.
        let pieces = split(
            &self.jobs,
            rayon::current_num_threads() * 4,
            &|a: &SKey, b: &SKey| a.0 == b.0,
        );
        let mut out = pieces
            .into_par_iter()
            .fold(zero, |mut acc, piece| {
                let mut set: Vec<(u32, bool)> = Vec::new();
                for g in piece.chunk_by(|a, b| a.0 == b.0) {
                    for ((_, lut), k) in layouts.iter().zip(&mut acc) {
                        for run in g.chunk_by(|a, b| bucket(lut, a.1) == bucket(lut, b.1)) {
                            let b = bucket(lut, run[0].1) as usize;
                            set.clear();
                            set.extend(run.iter().map(|x| (x.2, x.3)));
                            set.sort_unstable();
                            for pg in set.chunk_by(|a, b| a.0 == b.0) {
                                let at = b * np + pg[0].0 as usize;
                                k.jobs[at] += 1;
                                k.jobs_on_cpu[at] += u64::from(pg.iter().any(|x| x.1));
                            }
                        }
                    }
                }
                acc
            })
            .reduce(zero, |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    for (s, t) in [(&mut x.jobs, y.jobs), (&mut x.jobs_on_cpu, y.jobs_on_cpu)] {
                        for (s, t) in s.iter_mut().zip(t) {
                            *s += t;
                        }
                    }
                }
                a
            });
        for ((_, lut), k) in layouts.iter().zip(&mut out) {
            for (&m, &t) in &self.totals {
                k.totals[bucket(lut, m) as usize].add(t);
            }
            for (&(m, p), &s) in &self.packages {
                k.add_at(bucket(lut, m) as usize * np + p as usize, s);
            }
            for (&(m, p, q), &n) in &self.callers {
                *k.callers.entry((bucket(lut, m), p, q)).or_default() += n;
            }
        }
        out
    }
}
