//! What the preload library reports, applied to the table: a `Hello` starts (or marks) a
//! process, a module message is an import of that process.
//!
//! The library's messages and the kernel's events reach the table by different roads (a
//! socket read at once; a ring buffer drained every 200 ms, or the process connector), so
//! either can come first. The rules that make one process out of both:
//! - a `Hello` for a process the kernel already tabled only marks it (`preload_seen`);
//! - a `Hello` for an unknown pid tables the process from what the `Hello` carries and what
//!   `/proc` says of the pid (its parent, its mount namespace), remembering when it was read;
//!   an exec event of the kernel up to that time is of this same image and *adopts* it
//!   (`lifecycle::exec`), any later exec replaces it;
//! - a module message from a pid the table does not know, on a connection whose `Hello` came
//!   from a tabled process, is from a fork child writing on its parent's connection: the child
//!   is tabled as a fork, which the fork event, when it comes, keeps;
//! - a `Hello` or message for a process whose exit was already handled is counted
//!   (`preload_late`), never turned into a second process.
use tracer_common::user::{ExecInfo, OpenInfo};

use super::{Ending, Finished, ProcFacts, ProcTable, Seen};
use crate::{
    preload::{Body, PreloadMsg},
    resolver::path_from_bytes,
};

/// How long an ended process's pid is remembered against late `Hello`s (wall µs).
const REMEMBER_ENDS_US: i64 = 30_000_000;

impl ProcTable {
    /// Applies one message of the preload library; returns a process it ended (a `Hello` of a
    /// new image under a pid ends the previous one).
    pub fn preload(&mut self, m: PreloadMsg, facts: &dyn ProcFacts) -> Option<Finished> {
        match m.body {
            Body::Hello { program, args, env } => {
                let info = ExecInfo {
                    tgid: m.pid,
                    ppid: 0,
                    uid: m.uid,
                    gid: m.gid,
                    mnt_ns: 0,
                    ktime_ns: m.ktime_ns,
                    filename: program,
                    args,
                    env,
                    flags: 0,
                    promoted: true,
                };
                self.hello(info, facts)
            }
            Body::Module(path) => {
                if let Some(p) = self.preload_process(m.pid, m.conn_pid, m.ktime_ns, facts) {
                    let at = self.wall(m.ktime_ns);
                    let p = self.procs.get_mut(&p).expect("just found");
                    Self::import(
                        &mut self.shared,
                        p,
                        &path_from_bytes(&path),
                        at,
                        Seen::Preload,
                    );
                }
                None
            }
            Body::Open {
                tid,
                ret,
                dfd,
                write,
                path,
            } => {
                if let Some(pid) = self.preload_process(m.pid, m.conn_pid, m.ktime_ns, facts) {
                    let o = OpenInfo {
                        tgid: pid,
                        tid,
                        ktime_ns: m.ktime_ns,
                        ret,
                        dfd,
                        write,
                        path,
                        opened: None,
                        opened_partial: false,
                    };
                    self.open(o, facts, Seen::Preload);
                }
                None
            }
        }
    }

    fn hello(&mut self, mut info: ExecInfo, facts: &dyn ProcFacts) -> Option<Finished> {
        let pid = info.tgid;
        if let Some(p) = self.procs.get_mut(&pid) {
            if !p.preload_seen {
                // The kernel's process: the library runs in it too, and the library's hook
                // runs only in CPython.
                p.preload_seen = true;
                p.verified = true;
                return None;
            }
            // A second Hello under the pid: a new image (Python exec'd Python), read before
            // the kernel's exec event, if any.
        } else if self.recent_ends.contains_key(&pid) && facts.parent_and_mnt_ns(pid).is_none() {
            // Its exit was handled first, and no new process holds the pid.
            self.fidelity.preload_late += 1;
            return None;
        }
        let Some((ppid, mnt_ns)) = facts.parent_and_mnt_ns(pid) else {
            // Gone before it could be placed (no parent, no namespace): its exit, still to
            // come or already handled, is what would end it; without /proc there is no
            // telling which process held the pid.
            self.fidelity.preload_late += 1;
            return None;
        };
        info.ppid = ppid;
        info.mnt_ns = mnt_ns;
        let at = self.wall(info.ktime_ns);
        let hello_at = info.ktime_ns;
        let prev = self.finish(pid, Ending::Unknown, at);
        let prev_root = prev
            .as_ref()
            .map(|f| f.process.root_pid)
            .or_else(|| self.replaced.remove(&pid));
        let mut p = self.new_process(info, prev_root, facts);
        p.hello_at = Some(hello_at);
        p.preload_seen = true;
        self.procs.insert(pid, p);
        prev
    }

    /// The tabled process a message of `pid` (on the connection of `conn_pid`'s `Hello`) is
    /// about, confirmed as CPython; a fork child not yet tabled is tabled as a fork of its
    /// parent. `None` for a process that already ended (counted).
    fn preload_process(
        &mut self,
        pid: u32,
        conn_pid: u32,
        ktime_ns: u64,
        facts: &dyn ProcFacts,
    ) -> Option<u32> {
        if !self.procs.contains_key(&pid) {
            let ended =
                self.recent_ends.contains_key(&pid) && facts.parent_and_mnt_ns(pid).is_none();
            if pid == conn_pid || !self.procs.contains_key(&conn_pid) || ended {
                self.fidelity.preload_late += 1;
                return None;
            }
            // A fork child (or grandchild) of the connection's process.
            let parent = facts
                .parent_and_mnt_ns(pid)
                .map(|(pp, _)| pp)
                .filter(|pp| self.procs.contains_key(pp))
                .unwrap_or(conn_pid);
            let _ = self.fork(parent, pid, ktime_ns);
            self.procs.get_mut(&pid)?.forked_by_preload = true;
        }
        let p = self.procs.get_mut(&pid)?;
        p.preload_seen = true;
        // Only CPython runs the library's hook (a fork child of a process the kernel promoted
        // for opening libpython, copied before that was confirmed, is confirmed here).
        p.verified = true;
        Some(pid)
    }

    /// An exec event for an image whose `Hello` was read first: the kernel's account of the
    /// process (its exec time, program as executed, command line) replaces the `Hello`'s,
    /// and what the library reported is kept.
    pub(super) fn adopt(&mut self, info: ExecInfo, facts: &dyn ProcFacts) {
        let tgid = info.tgid;
        let Some(old) = self.procs.remove(&tgid) else {
            return;
        };
        let mut p = self.new_process(info, Some(old.root_pid), facts);
        p.preload_seen = true;
        p.packages = old.packages;
        p.index = old.index;
        p.dirs = old.dirs;
        p.sites = old.sites;
        p.init_dirs = old.init_dirs;
        p.blas = p.blas.or(old.blas);
        if !p.verified {
            // The library found the CPython API in it: it is an interpreter.
            p.verified = true;
        }
        self.procs.insert(tgid, p);
    }

    /// Remembers that `pid` ended at `at` (wall µs) on an exit event; forgets old ones.
    pub(super) fn ended(&mut self, pid: u32, at: i64) {
        if self.recent_ends.len() >= 4096 {
            self.recent_ends
                .retain(|_, &mut t| at - t < REMEMBER_ENDS_US);
        }
        self.recent_ends.insert(pid, at);
    }
}
