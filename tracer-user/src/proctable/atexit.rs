//! The `sitecustomize` atexit hook's reports, applied to the table: the top-level modules a
//! process held in `sys.modules` at exit, each with its file. A package the process already
//! has (seen by the kernel or the library) is marked as named by the report too; any other is
//! added to the process as seen by the report alone (built-in and frozen modules, modules whose
//! files the collectors missed).
//!
//! # Whose report
//!
//! The hook opens a connection of its own and sends no `Hello`, so a report is not bound to a
//! connection: it is the sending pid's (from `SCM_CREDENTIALS`), taken by a process of that pid
//! only when it has the sender's uid. A pid the table does not hold is tabled from `/proc`, as
//! at daemon start, when a live process of the sender's uid holds it; otherwise the report is
//! counted (`atexit_late`) and dropped. A user can thus claim packages only for its own
//! processes, and every one it claims is marked `atexit`.
//!
//! # The race with the exit
//!
//! The hook sends its report and the process exits microseconds later. The exit reaches the
//! table by another road (the ring buffer; the process connector) and often first: the
//! listener holds what it read for up to 20 ms before handing it on, and a new Python process's
//! exec wakes the ring-buffer reader at once, with the exits before it. So a process ended by
//! its exit event is not handed on at once: it waits in `closing` for a grace
//! ([`ProcTable::set_exit_grace`], set when the preload socket listens) counted from when the
//! table handled the exit, and a report read meanwhile lands in it. The report was sent before
//! the exit, and the listener hands on what it read within some 25 ms, so a grace of ten times
//! that loses a report only when the daemon is starved for longer (it is then counted as
//! `atexit_late`). Without an atexit report nothing else changes: the same process is handed on
//! a moment later, with the same records. (A pid reused by a new process within the grace is
//! the new process's: a report goes to the live process of a pid first.)
//!
//! In preload-only mode the listener reads the process connector's events and the sockets in
//! order, accepting waiting connections before it hands an exit on, so the report comes first
//! anyway; the grace costs nothing there either.
use std::time::{Duration, Instant};

use tracer_common::preload::ModuleFile;

use super::{Finished, PackageSeen, ProcFacts, ProcTable, Process, Shared, ENTRY_BYTES};
use crate::{
    preload::PreloadMsg,
    resolver::{classify, path_from_bytes, Class, EnvKind, Resolved},
};

/// How long a process ended by its exit event waits for its atexit report when the preload
/// socket listens: ten times what the listener holds messages for.
pub const EXIT_GRACE: Duration = Duration::from_millis(250);

impl ProcTable {
    /// Makes processes ended by their exit event wait `grace` for their atexit report before
    /// [`ProcTable::closed`] hands them on (`None`, the default: handed on by `handle` at once).
    pub fn set_exit_grace(&mut self, grace: Option<Duration>) {
        self.exit_grace = grace;
    }

    /// Ended processes whose grace is over at `now` (and any ended before).
    pub fn closed(&mut self, now: Instant) -> Vec<Finished> {
        if !self.closing.is_empty() {
            let due: Vec<u32> = self
                .closing
                .iter()
                .filter(|(_, (_, until))| *until <= now)
                .map(|(&pid, _)| pid)
                .collect();
            for pid in due {
                if let Some((f, _)) = self.closing.remove(&pid) {
                    self.shared.release(&f.process);
                    self.closed.push(f);
                }
            }
        }
        std::mem::take(&mut self.closed)
    }

    /// Every ended process still waiting for its grace (daemon shutdown).
    pub(super) fn close_all(&mut self) -> Vec<Finished> {
        self.closed(Instant::now() + Duration::from_secs(3600))
    }

    /// A process ended by its exit event: handed back at once without a grace, else kept in
    /// `closing` (its state still charged to its uid) for its atexit report.
    pub(super) fn close(&mut self, mut f: Finished) -> Option<Finished> {
        let Some(grace) = self.exit_grace else {
            return Some(f);
        };
        let pid = f.process.pid;
        let held = std::mem::take(&mut f.process.bytes);
        let Shared {
            uid_bytes,
            state_bounded,
            ..
        } = &mut self.shared;
        // Given back by `finish` just before: it fits again.
        let _ = Shared::charge_parts(
            uid_bytes,
            state_bounded,
            &mut f.process.bytes,
            f.process.uid,
            held,
        );
        if let Some((prev, _)) = self.closing.insert(pid, (f, Instant::now() + grace)) {
            // The pid's previous process ended within the grace too: it waits no longer.
            self.shared.release(&prev.process);
            self.closed.push(prev);
        }
        None
    }

    /// Applies an atexit report of `m`'s sender: `modules` as the listener took them.
    pub(super) fn atexit(
        &mut self,
        m: &PreloadMsg,
        modules: &[(String, Vec<u8>)],
        facts: &dyn ProcFacts,
    ) {
        let at = self.wall(m.ktime_ns);
        let known = self.procs.contains_key(&m.pid) || self.closing.contains_key(&m.pid);
        if !known {
            // Missed by the table (started before a restart, or not known as Python): from
            // /proc, while a live process of the sender's uid holds the pid.
            match facts.seed(m.pid, &mut self.shared.elf) {
                Some(s) if s.info.uid == m.uid => self.seed(s, facts),
                _ => {
                    self.fidelity.atexit_late += 1;
                    return;
                }
            }
        }
        let p = match self.procs.get_mut(&m.pid) {
            Some(p) => p,
            None => match self.closing.get_mut(&m.pid) {
                Some((f, _)) => &mut f.process,
                None => return,
            },
        };
        if p.uid != m.uid {
            self.fidelity.atexit_late += 1;
            return;
        }
        // Python code sent it: the process is an interpreter.
        p.verified = true;
        for (package, file) in modules {
            if let Some(file) = ModuleFile::parse(file) {
                Self::named_at_exit(&mut self.shared, p, package, file, at);
            }
        }
    }

    /// One (package, file) of a report: the process's package marked, or a new one added.
    fn named_at_exit(ctx: &mut Shared, p: &mut Process, package: &str, file: ModuleFile, at: i64) {
        if let Some(&i) = p.index.get(package) {
            p.packages[i].atexit = true;
            return;
        }
        let text = file.as_bytes();
        let n = text.len() + 2 * package.len() + 4 * ENTRY_BYTES;
        let Shared {
            resolver,
            uid_bytes,
            state_bounded,
            ..
        } = ctx;
        if !Shared::charge_parts(uid_bytes, state_bounded, &mut p.bytes, p.uid, n) {
            return;
        }
        let bare = |env_kind| Resolved {
            package: package.to_owned(),
            distribution: None,
            version: None,
            env_kind,
            env_prefix: None,
        };
        let resolved = match file {
            ModuleFile::BuiltIn | ModuleFile::Frozen => bare(EnvKind::Stdlib),
            ModuleFile::Unknown => bare(EnvKind::Unknown),
            ModuleFile::Path(path) => {
                let path = path_from_bytes(path);
                match classify(&path, &p.view) {
                    Class::Module(loc) => {
                        let r = resolver.resolve(&loc, &path, &p.root(), p.in_container, &p.creds);
                        if loc.package == package {
                            r
                        } else {
                            // Another name than its file's package (an alias in
                            // `sys.modules`): where it lives, not whose distribution.
                            Resolved {
                                env_prefix: r.env_prefix,
                                ..bare(r.env_kind)
                            }
                        }
                    }
                    _ => bare(EnvKind::Unknown),
                }
            }
        };
        p.index.insert(package.to_owned(), p.packages.len());
        p.packages.push(PackageSeen {
            resolved,
            first_path: String::from_utf8_lossy(text).into_owned(),
            n_files: 0,
            n_preload: 0,
            first_seen: at,
            atexit: true,
        });
    }
}
