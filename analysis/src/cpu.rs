//! The CPU back end: multi-threaded (rayon), streaming. Each partition's chunk becomes a
//! [`State`] as soon as it is decoded and is then dropped, so memory is bounded by the
//! distinct month-level keys, not by rows; the counts come from the merged state
//! ([`State::counts`]).
use std::sync::Mutex;

use crate::{
    backend::{Backend, BackendError},
    counts::{KindCounts, PeriodKind},
    model::{Chunk, Names},
    state::{sort_dedup, State},
};

/// The CPU back end.
#[derive(Default)]
pub struct Cpu {
    inner: Mutex<Folded>,
}

/// The state so far, and each key list's length after its last de-duplication.
#[derive(Default)]
struct Folded {
    state: State,
    compact_at: [usize; 4],
}

/// Takes `v` out for sorting and de-duplication once it has doubled since the last time.
fn due<T>(v: &mut Vec<T>, at: usize) -> Option<Vec<T>> {
    (v.len() > at.max(1 << 20) * 2).then(|| std::mem::take(v))
}

/// `v`, sorted and de-duplicated.
fn sorted<T: Ord + Send>(v: Option<Vec<T>>) -> Option<Vec<T>> {
    v.map(|mut v| {
        sort_dedup(&mut v);
        v
    })
}

impl Cpu {
    /// Adds a partition's state, compacting key lists that have doubled.
    pub fn merge(&self, p: State) {
        let mut f = self.inner.lock().expect("cpu state");
        f.state.absorb(p);
        let Folded { state, compact_at } = &mut *f;
        let due = (
            due(&mut state.u, compact_at[0]),
            due(&mut state.j, compact_at[1]),
            due(&mut state.b, compact_at[2]),
            due(&mut state.sampled.jobs, compact_at[3]),
        );
        drop(f);
        // Sort outside the lock: a rayon thread waiting inside a parallel sort may steal
        // another partition's `add`, which must be able to take the lock.
        let (u, j, b, s) = (sorted(due.0), sorted(due.1), sorted(due.2), sorted(due.3));
        let mut f = self.inner.lock().expect("cpu state");
        if let Some(u) = u {
            f.compact_at[0] = u.len();
            f.state.u.extend(u);
        }
        if let Some(j) = j {
            f.compact_at[1] = j.len();
            f.state.j.extend(j);
        }
        if let Some(b) = b {
            f.compact_at[2] = b.len();
            f.state.b.extend(b);
        }
        if let Some(s) = s {
            f.compact_at[3] = s.len();
            f.state.sampled.jobs.extend(s);
        }
    }

    /// The state of everything added so far.
    pub fn into_state(self) -> State {
        self.inner.into_inner().expect("cpu state").state
    }
}

impl Backend for Cpu {
    fn name(&self) -> String {
        // No thread count: a report merged from shards must read the same as a single run.
        "cpu".into()
    }

    fn add(&self, c: Chunk) {
        self.merge(State::of(&c));
    }

    fn finish(
        self: Box<Self>,
        names: &Names,
        kinds: &[PeriodKind],
        top: usize,
    ) -> Result<Vec<(PeriodKind, KindCounts)>, BackendError> {
        Ok(self.into_state().counts(names, kinds, top, None))
    }
}
