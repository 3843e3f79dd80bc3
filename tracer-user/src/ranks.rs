//! Volume control across MPI ranks without bias: the same job step importing the same package
//! on every rank of a node need not make one record per rank. Not a package allowlist: every
//! package still produces a record.
//!
//! - `all`: every rank's record (default).
//! - `first`: the first record of each (uid, job, step, package) on this node; the rest are
//!   counted (`rank_duplicates` in status).
//! - `per-node`: one record per (uid, job, step, package) on this node, the lowest rank's, with
//!   `n_ranks` = ranks that imported it; emitted `window` after the last of them ended (and at
//!   shutdown).
//!
//! Under `first` and `per-node`, `running` snapshots of rank processes are not emitted (each
//! rank would otherwise add one per flush).
use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use pyusage_record::{Exit, Record};

/// The policy.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum RankPolicy {
    /// Every rank.
    #[default]
    All,
    /// First record per (job, step, package).
    First,
    /// One aggregated record per (job, step, package) with a count of ranks.
    PerNode,
}

/// (uid, job, step, package): the uid too, so that one user's processes with a forged rank in
/// another user's job cannot stand for, or hide, that user's ranks.
type Key = (u32, String, Option<String>, String);

struct Held {
    record: Record,
    ranks: HashSet<i32>,
    last: Instant,
}

/// State of the policy.
pub struct Ranks {
    policy: RankPolicy,
    window: Duration,
    seen: HashSet<Key>,
    order: VecDeque<Key>,
    held: HashMap<Key, Held>,
    /// Records not emitted because another rank's stands for them.
    pub duplicates: u64,
}

/// Keys remembered by `first` before the oldest are forgotten.
const FIRST_MEMORY: usize = 100_000;

impl Ranks {
    /// A policy with its aggregation window.
    pub fn new(policy: RankPolicy, window: Duration) -> Ranks {
        Ranks {
            policy,
            window,
            seen: HashSet::new(),
            order: VecDeque::new(),
            held: HashMap::new(),
            duplicates: 0,
        }
    }

    /// Filters freshly built records; returns those to spool now.
    pub fn apply(&mut self, records: Vec<Record>, now: Instant) -> Vec<Record> {
        if self.policy == RankPolicy::All {
            return records;
        }
        let mut out = Vec::new();
        for r in records {
            let (Some(job), Some(rank)) = (r.job_id.clone(), r.rank) else {
                out.push(r);
                continue;
            };
            if r.exit == Exit::Running {
                self.duplicates += 1;
                continue;
            }
            let key = (r.uid, job, r.step_id.clone(), r.package.clone());
            match self.policy {
                RankPolicy::All => unreachable!("handled above"),
                RankPolicy::First => {
                    if self.seen.insert(key.clone()) {
                        self.order.push_back(key);
                        if self.order.len() > FIRST_MEMORY {
                            if let Some(old) = self.order.pop_front() {
                                self.seen.remove(&old);
                            }
                        }
                        out.push(r);
                    } else {
                        self.duplicates += 1;
                    }
                }
                RankPolicy::PerNode => match self.held.get_mut(&key) {
                    Some(h) => {
                        if h.ranks.insert(rank) && r.rank < h.record.rank {
                            h.record = r;
                        }
                        self.duplicates += 1;
                        h.last = now;
                    }
                    None => {
                        self.held.insert(
                            key,
                            Held {
                                record: r,
                                ranks: HashSet::from([rank]),
                                last: now,
                            },
                        );
                    }
                },
            }
        }
        out
    }

    /// Whether no aggregate is held (nothing for [`Self::expire`] to write).
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Aggregates whose window has passed (all of them with `now = None`, at shutdown).
    pub fn expire(&mut self, now: Option<Instant>) -> Vec<Record> {
        let window = self.window;
        let done: Vec<Key> = self
            .held
            .iter()
            .filter(|(_, h)| now.is_none_or(|n| n.duration_since(h.last) >= window))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<Record> = done
            .into_iter()
            .filter_map(|k| self.held.remove(&k))
            .map(|h| {
                let mut r = h.record;
                r.n_ranks = Some(h.ranks.len() as u32);
                r
            })
            .collect();
        out.sort_by_key(|r| r.first_seen);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(rank: Option<i32>, pkg: &str, job: Option<&str>) -> Record {
        let mut r = Record::example();
        (r.exit, r.exit_code) = (Exit::Exited, Some(0));
        r.step_id = Some("0".into());
        r.rank = rank;
        r.package = pkg.into();
        r.job_id = job.map(str::to_owned);
        r
    }

    #[test]
    fn per_node_aggregates_ranks_and_keeps_the_lowest() {
        let t0 = Instant::now();
        let mut p = Ranks::new(RankPolicy::PerNode, Duration::from_secs(5));
        let batch = vec![
            rec(Some(2), "numpy", Some("7")),
            rec(Some(0), "numpy", Some("7")),
            rec(None, "numpy", None),
        ];
        let now = p.apply(batch, t0);
        assert_eq!(now.len(), 1, "records outside a job pass through");
        assert!(p
            .apply(
                vec![
                    rec(Some(1), "numpy", Some("7")),
                    rec(Some(1), "numpy", Some("7"))
                ],
                t0
            )
            .is_empty());
        assert!(p.expire(Some(t0 + Duration::from_secs(4))).is_empty());
        let out = p.expire(Some(t0 + Duration::from_secs(5)));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].rank, out[0].n_ranks), (Some(0), Some(3)));
        assert_eq!(p.duplicates, 3);
    }

    #[test]
    fn another_users_forged_rank_neither_stands_for_nor_hides_a_users_ranks() {
        let t0 = Instant::now();
        for policy in [RankPolicy::First, RankPolicy::PerNode] {
            let mut p = Ranks::new(policy, Duration::ZERO);
            let mut attacker = rec(Some(0), "numpy", Some("7"));
            attacker.uid = 666;
            let victim = rec(Some(0), "numpy", Some("7"));
            let mut out = p.apply(vec![attacker, victim], t0);
            out.extend(p.expire(None));
            let mut uids: Vec<u32> = out.iter().map(|r| r.uid).collect();
            uids.sort();
            assert_eq!(uids, vec![0, 666], "{policy:?}");
        }
    }

    #[test]
    fn first_and_all() {
        let mut p = Ranks::new(RankPolicy::First, Duration::ZERO);
        let out = p.apply(
            vec![
                rec(Some(3), "a", Some("1")),
                rec(Some(0), "a", Some("1")),
                rec(Some(0), "b", Some("1")),
                rec(Some(0), "a", Some("2")),
            ],
            Instant::now(),
        );
        assert_eq!(out.len(), 3);
        assert_eq!(p.duplicates, 1);
        let mut all = Ranks::new(RankPolicy::All, Duration::ZERO);
        assert_eq!(
            all.apply(
                vec![rec(Some(0), "a", Some("1")), rec(Some(1), "a", Some("1"))],
                Instant::now()
            )
            .len(),
            2
        );
    }
}
