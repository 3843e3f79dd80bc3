//! What the preload library reports, applied to the table: a `Hello` starts (or marks) a
//! process, a module message is an import of that process, an open of an interpreter without
//! audit hooks is judged like the kernel's opens.
//!
//! The library's messages and the kernel's events reach the table by different roads (a
//! socket read at once; a ring buffer drained every 200 ms, or the process connector), so
//! either can come first. The rules that make one process out of both:
//! - a `Hello` for a process the kernel already tabled (same real uid) only marks it;
//! - a `Hello` for an unknown pid tables the process from what the `Hello` carries and what
//!   `/proc` says of the pid (parent, mount namespace, cgroup: only while `/proc` shows a live
//!   process of the sender's uid, else nothing of it), remembering when it was read and its
//!   command line; an exec event of the kernel up to that time, or with that command line, is
//!   of this same image and *adopts* it (`lifecycle::exec`), any other replaces it;
//! - every message is bound to its connection: a process takes messages only on the
//!   connection of its own `Hello` (a fork child: its parent's), from its own uid. A message
//!   from an unknown pid on such a connection is from a fork child writing on its parent's
//!   connection: the child is tabled as a fork, which the fork event, when it comes, keeps;
//! - a message for a process whose exit was already handled, or that fails these checks (a
//!   pid reused since the `Hello`, another user's connection passed over), is counted
//!   (`preload_late`), never turned into a process.
use std::hash::{Hash, Hasher};

use tracer_common::user::{ExecInfo, OpenInfo};

use super::{Ending, Finished, ProcFacts, ProcTable, Seen, Without};
use crate::{
    preload::{Body, PreloadMsg},
    resolver::path_from_bytes,
};

/// How long an ended process's pid is remembered against late `Hello`s (wall µs).
const REMEMBER_ENDS_US: i64 = 30_000_000;

/// A hash of a command line, as the kernel's exec event and the library's `Hello` both carry
/// it (each may cut it at its own length, and end it with a NUL or not): its first 1 KiB
/// without trailing NULs.
pub(super) fn command_line_hash(args: &[u8]) -> u64 {
    let cut = args.get(..1024).unwrap_or(args);
    let end = cut.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let mut h = std::hash::DefaultHasher::new();
    cut.get(..end).unwrap_or(cut).hash(&mut h);
    h.finish() | 1
}

impl ProcTable {
    /// Applies one message of the preload library; returns a process it ended (a `Hello` of a
    /// new image under a pid ends the previous one).
    pub fn preload(&mut self, m: PreloadMsg, facts: &dyn ProcFacts) -> Option<Finished> {
        match m.body {
            Body::Hello {
                ref program,
                ref args,
                ref env,
            } => {
                let info = ExecInfo {
                    tgid: m.pid,
                    ppid: 0,
                    uid: m.uid,
                    gid: m.gid,
                    mnt_ns: 0,
                    ktime_ns: m.ktime_ns,
                    filename: program.clone(),
                    args: args.clone(),
                    env: env.clone(),
                    flags: 0,
                    promoted: true,
                    exe: None,
                    groups: None,
                };
                self.hello(info, m.conn, facts)
            }
            Body::Module(ref path) => {
                if let Some(pid) = self.preload_process(&m, facts) {
                    let at = self.wall(m.ktime_ns);
                    if let Some(p) = self.procs.get_mut(&pid) {
                        let file = path_from_bytes(path);
                        Self::import(&mut self.shared, p, &file, at, Seen::Preload);
                    }
                }
                None
            }
            Body::Open {
                tid,
                ret,
                dfd,
                write,
                ref path,
            } => {
                if let Some(pid) = self.preload_process(&m, facts) {
                    let o = OpenInfo {
                        tgid: pid,
                        tid,
                        ktime_ns: m.ktime_ns,
                        ret,
                        dfd,
                        write,
                        path: path.clone(),
                        opened: None,
                        opened_partial: false,
                    };
                    self.open(o, facts, Seen::Preload);
                }
                None
            }
            Body::Atexit(ref modules) => {
                self.atexit(&m, modules, facts);
                None
            }
        }
    }

    fn hello(&mut self, mut info: ExecInfo, conn: u64, facts: &dyn ProcFacts) -> Option<Finished> {
        let pid = info.tgid;
        if let Some(p) = self.procs.get_mut(&pid) {
            if p.uid != info.uid {
                // The pid is another user's process now: this Hello's sender is gone.
                self.fidelity.preload_late += 1;
                return None;
            }
            if !p.preload_seen {
                // The kernel's process: the library runs in it too, and the library's hook
                // runs only in CPython.
                p.preload_seen = true;
                p.verified = true;
                p.conn = Some(conn);
                return None;
            }
            // A second Hello under the pid: a new image (Python exec'd Python), read before
            // the kernel's exec event, if any.
        } else if self.recent_ends.contains_key(&pid) && facts.identity(pid).is_none() {
            // Its exit was handled first, and no new process holds the pid.
            self.fidelity.preload_late += 1;
            return None;
        }
        // What /proc says of the pid is the sender's only while a live process of the
        // sender's uid holds it; otherwise the Hello alone describes it (its exit, if still to
        // come, ends it; a lost one is found by the periodic check).
        let live = facts.identity(pid).filter(|id| id.uid == info.uid);
        let without = Without { inner: facts, pid };
        let facts: &dyn ProcFacts = match live {
            Some(id) => {
                info.ppid = id.ppid;
                info.mnt_ns = id.mnt_ns;
                facts
            }
            None => &without,
        };
        let at = self.wall(info.ktime_ns);
        let tabled_at = info.ktime_ns;
        let args = command_line_hash(&info.args);
        let prev = self.finish(pid, Ending::Unknown, at);
        let prev_root = prev
            .as_ref()
            .map(|f| f.process.root_pid)
            .or_else(|| self.replaced.remove(&pid));
        let mut p = self.new_process(info, prev_root, facts);
        p.tabled_at = Some(tabled_at);
        p.hello_args = args;
        p.preload_seen = true;
        p.conn = Some(conn);
        self.procs.insert(pid, p);
        prev
    }

    /// The tabled process a module or open message is about, confirmed as CPython; a fork
    /// child not yet tabled is tabled as a fork of its parent. `None` (counted) for a process
    /// that already ended or a message that is not its to send.
    fn preload_process(&mut self, m: &PreloadMsg, facts: &dyn ProcFacts) -> Option<u32> {
        let ours = |p: &super::Process| p.conn == Some(m.conn) && p.uid == m.uid;
        if !self.procs.contains_key(&m.pid) {
            let ended = self.recent_ends.contains_key(&m.pid) && facts.identity(m.pid).is_none();
            let parent_ok = m.pid != m.conn_pid && self.procs.get(&m.conn_pid).is_some_and(ours);
            if ended || !parent_ok {
                self.fidelity.preload_late += 1;
                return None;
            }
            // A fork child (or grandchild) of the connection's process.
            let parent = facts
                .identity(m.pid)
                .map(|id| id.ppid)
                .filter(|pp| self.procs.get(pp).is_some_and(ours))
                .unwrap_or(m.conn_pid);
            let _ = self.fork(parent, m.pid, m.ktime_ns);
            self.procs.get_mut(&m.pid)?.forked_by_preload = true;
        }
        let p = self.procs.get_mut(&m.pid)?;
        if !ours(p) {
            self.fidelity.preload_late += 1;
            return None;
        }
        p.preload_seen = true;
        // Only CPython runs the library's hook (a fork child of a process the kernel promoted
        // for opening libpython, copied before that was confirmed, is confirmed here).
        p.verified = true;
        Some(m.pid)
    }

    /// An exec event for an image tabled first from its `Hello` or from `/proc` (the event
    /// was in flight): the kernel's account of the process (its exec time, program as
    /// executed, command line) replaces theirs, and what was seen of it is kept.
    pub(super) fn adopt(&mut self, info: ExecInfo, facts: &dyn ProcFacts) {
        let tgid = info.tgid;
        let Some(old) = self.procs.remove(&tgid) else {
            return;
        };
        self.shared.release(&old);
        let mut p = self.new_process(info, Some(old.root_pid), facts);
        p.preload_seen = old.preload_seen;
        p.conn = old.conn;
        p.packages = old.packages;
        p.index = old.index;
        p.dirs = old.dirs;
        p.sites = old.sites;
        p.init_dirs = old.init_dirs;
        p.threads = old.threads;
        p.archives = old.archives;
        p.blas = p.blas.or(old.blas);
        // Its state moves with it (released just above, so this cannot fail).
        let _ = self.shared.charge(&mut p, old.bytes);
        // The library found the CPython API in it, or /proc showed it: it is an interpreter.
        p.verified = true;
        self.procs.insert(tgid, p);
    }

    /// Whether an exec event of `info` is the image whose `Hello` made the process tabled
    /// under its pid: read after the exec, or with the same command line (the kernel's event
    /// of an interpreter found by what it opened carries the time it was found, which can be
    /// after its `Hello`).
    pub(super) fn same_image(&self, info: &ExecInfo) -> bool {
        self.procs.get(&info.tgid).is_some_and(|p| {
            p.tabled_at.is_some_and(|h| {
                h >= info.ktime_ns || p.hello_args == command_line_hash(&info.args)
            }) && p.uid == info.uid
        })
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
