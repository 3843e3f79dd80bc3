//! The table's upkeep outside the event stream: checking processes promoted for opening
//! `libpython`, seeding processes that ran before the daemon, periodic snapshots of running
//! ones, and ending processes whose exit was lost or that outlive the daemon.
//!
//! Separate because the daemon's timers and start/stop drive these, not events.
use super::{Ending, Finished, ProcFacts, ProcTable, VERIFY_AFTER_US};

impl ProcTable {
    /// Checks processes promoted for opening `libpython` at least [`VERIFY_AFTER_US`] ago: one
    /// that neither calls CPython's entry points nor maps a `libpython` that defines them (a
    /// program that read the library as data) is dropped without records. A process that has
    /// exited can no longer be checked and is kept.
    pub fn verify(&mut self, now: i64, facts: &dyn ProcFacts) {
        let due: Vec<(u32, i64)> = self
            .unverified
            .iter()
            .copied()
            .filter(|&(_, start)| now - start >= VERIFY_AFTER_US)
            .collect();
        self.unverified
            .retain(|&(_, start)| now - start < VERIFY_AFTER_US);
        for (pid, start) in due {
            if !self
                .procs
                .get(&pid)
                .is_some_and(|p| p.start == start && !p.verified)
            {
                continue;
            }
            match facts.is_interpreter(pid, &mut self.shared.elf) {
                Some(false) => {
                    if let Some(p) = self.procs.remove(&pid) {
                        self.shared.release(&p);
                    }
                    self.fidelity.promotions_not_python += 1;
                }
                Some(true) => {
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.verified = true;
                    }
                }
                None => {}
            }
        }
    }

    /// Adds a process that was running before the daemon started, with what it had loaded.
    pub fn seed(&mut self, s: crate::seed::Seeded, facts: &dyn ProcFacts) {
        let at = self.wall(s.info.ktime_ns);
        let tgid = s.info.tgid;
        let mut p = self.new_process(s.info, None, facts);
        // Its exec event may still be in flight (it started as the daemon attached).
        p.tabled_at = Some(crate::clock::boot_ns());
        self.inspect_later(tgid, p.start);
        self.procs.insert(tgid, p);
        self.fidelity.seeded_processes += 1;
        let p = self.procs.get_mut(&tgid).expect("just inserted");
        for f in s.files {
            let name = f.file_name().map(|n| n.as_encoded_bytes()).unwrap_or(b"");
            if let Some(b) = crate::resolver::blas_kind(name) {
                p.blas.get_or_insert(b);
            } else {
                Self::import(&mut self.shared, p, &f, at, super::Seen::Kernel);
            }
        }
    }

    /// Snapshots of processes that have been running since before `older_than` (wall µs) and
    /// have packages, for periodic `running` records; their CPU time is left to the caller
    /// (`/proc`, outside the table).
    pub fn running(&self, older_than: i64) -> Vec<Finished> {
        self.procs
            .values()
            .filter(|p| p.start < older_than && p.verified && !p.packages.is_empty())
            .map(|p| Finished {
                process: p.clone(),
                ending: Ending::Running,
                end: None,
                cpu: None,
            })
            .collect()
    }

    /// Ends processes for which `alive` said no at this reap and the one before, with the same
    /// start (their exit event was lost: the ring buffer was full when they exited); they are
    /// reported with [`Ending::Unknown`]. Once only is not enough: a process that just exited
    /// has its exit event still on its way (in the ring until the next drain, or queued).
    pub fn reap(&mut self, alive: impl Fn(u32) -> bool, now: i64) -> Vec<Finished> {
        self.replaced.retain(|&p, _| alive(p));
        self.unverified.retain(|&(p, _)| alive(p));
        let dead: Vec<(u32, i64)> = self
            .procs
            .iter()
            .filter(|(&p, _)| !alive(p))
            .map(|(&p, proc)| (p, proc.start))
            .collect();
        let suspects = std::mem::take(&mut self.reap_suspects);
        let mut out = Vec::new();
        for (pid, start) in dead {
            if suspects.contains(&(pid, start)) {
                out.extend(self.finish(pid, Ending::Unknown, now));
            } else {
                self.reap_suspects.insert((pid, start));
            }
        }
        out
    }

    /// Ends every process (daemon shutdown): live ones are reported as still running, ended
    /// ones waiting for their atexit report as they ended.
    pub fn drain(&mut self) -> Vec<Finished> {
        let mut out = self.close_all();
        out.extend(self.procs.drain().map(|(_, process)| Finished {
            process,
            ending: Ending::Running,
            end: None,
            cpu: None,
        }));
        out
    }
}
