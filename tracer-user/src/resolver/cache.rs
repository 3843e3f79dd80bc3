//! Stage three of resolving: the [`Resolver`], which caches each site directory's metadata per
//! (mount namespace, site directory), hands reads to worker threads and waits for them at most
//! a deadline, and answers with the package's distribution and environment (including editable
//! installs).
//!
//! Separate because it is the record path's side: it owns the cache and the waiting, never
//! reads a user's file itself.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    metadata::Found,
    site::{read_site, ByInode, CachedIndex, Job, Outcome},
    EnvKind, Location, Resolved, Root,
};
use crate::{
    untrusted::{Creds, Refusals},
    workers::Workers,
};

/// (mount namespace, site directory as the process names it).
pub(super) type Key = (u32, PathBuf);

/// Threads reading metadata (see [`Workers`]).
const WORKERS: usize = 4;
/// Jobs queued for the workers at most (past it a job is dropped and counted).
const JOBS_QUEUED: usize = 256;
/// How long the record path waits for one site directory's metadata.
pub const DEADLINE: Duration = Duration::from_millis(300);
/// A site directory read longer ago than this is checked for changes (its mtime) again.
pub(super) const RECHECK_AFTER: Duration = Duration::from_secs(1);
/// Site directories remembered at most (the oldest checked is forgotten first).
pub(super) const MAX_INDEXES: usize = 4096;

/// Resolves locations to packages with distributions, caching per (mount namespace, site
/// directory). Every read of a user's files happens on worker threads (see
/// [`untrusted`](crate::untrusted)).
pub struct Resolver {
    indexes: HashMap<Key, CachedIndex>,
    /// Jobs in flight, since when.
    pending: HashMap<Key, Instant>,
    workers: Workers<Job, (Key, Outcome)>,
    /// Refusals by cause, shared with the workers.
    pub refusals: Arc<Refusals>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new()
    }
}

impl Resolver {
    /// A resolver with its worker threads.
    pub fn new() -> Resolver {
        let refusals = Arc::new(Refusals::default());
        let count = refusals.clone();
        let shared = Arc::new(Mutex::new(ByInode::new()));
        Resolver {
            indexes: HashMap::new(),
            pending: HashMap::new(),
            workers: Workers::new("resolver", WORKERS, JOBS_QUEUED, move |job: Job| {
                (job.key.clone(), read_site(job, &count, &shared))
            }),
            refusals,
        }
    }

    fn take(&mut self, (key, outcome): (Key, Outcome)) {
        self.pending.remove(&key);
        match outcome {
            Outcome::Read(c) => {
                if self.indexes.len() >= MAX_INDEXES && !self.indexes.contains_key(&key) {
                    if let Some(old) = self
                        .indexes
                        .iter()
                        .min_by_key(|(_, c)| c.checked)
                        .map(|(k, _)| k.clone())
                    {
                        self.indexes.remove(&old);
                    }
                }
                self.indexes.insert(key, c);
            }
            Outcome::Unchanged => {
                if let Some(c) = self.indexes.get_mut(&key) {
                    c.checked = Instant::now();
                }
            }
        }
    }

    /// The site directory's metadata: cached, or read by a worker within the deadline.
    fn index(&mut self, loc: &Location, root: &Root) -> Option<&CachedIndex> {
        while let Some(r) = self.workers.try_recv() {
            self.take(r);
        }
        let key = (root.ns, loc.site_dir.clone());
        let stale = self
            .indexes
            .get(&key)
            .is_none_or(|c| c.checked.elapsed() >= RECHECK_AFTER);
        if stale {
            let since = match self.pending.get(&key) {
                Some(&t) => t,
                None => {
                    let job = Job {
                        key: key.clone(),
                        site: root.read_path(&loc.site_dir),
                        prefix: loc.prefix.as_deref().map(|p| root.read_path(p)),
                        kind: loc.kind,
                        known_mtime: self.indexes.get(&key).and_then(|c| c.mtime),
                    };
                    if self.workers.submit(job).is_err() {
                        Refusals::bump(&self.refusals.queue_full);
                        return self.indexes.get(&key);
                    }
                    let t = Instant::now();
                    self.pending.insert(key.clone(), t);
                    t
                }
            };
            // Wait only what is left of the job's own deadline, and not at all while every
            // worker is stuck: a hung file system costs the record path one deadline, not
            // one per process.
            let until = if self.workers.stuck(DEADLINE) {
                since
            } else {
                since + DEADLINE
            };
            while self.pending.contains_key(&key) {
                match self.workers.recv_until(until) {
                    Some(r) => self.take(r),
                    None => {
                        Refusals::bump(&self.refusals.deadline_missed);
                        break;
                    }
                }
            }
        }
        self.indexes.get(&key)
    }

    /// Resolves one module file of a process whose files are read through `root`, with what
    /// its user (`creds`) could read; `in_container` turns a system location into
    /// [`EnvKind::Container`].
    pub fn resolve(
        &mut self,
        loc: &Location,
        file: &Path,
        root: &Root,
        in_container: bool,
        creds: &Creds,
    ) -> Resolved {
        let (mut kind, mut distribution, mut version) = (loc.kind, None, None);
        if kind != EnvKind::Stdlib {
            let refusals = self.refusals.clone();
            if let Some(c) = self.index(loc, root) {
                kind = c.kind;
                let sub = file
                    .strip_prefix(&loc.site_dir)
                    .ok()
                    .and_then(|r| r.components().nth(1))
                    .map(|c| c.as_os_str().to_string_lossy().into_owned());
                match c.index.lookup(&loc.package, sub.as_deref(), creds) {
                    Found::Dist(d, v) => (distribution, version) = (Some(d), v),
                    Found::NotPermitted => Refusals::bump(&refusals.not_permitted),
                    Found::None => {}
                }
            }
        }
        if kind == EnvKind::System && in_container {
            kind = EnvKind::Container;
        }
        Resolved {
            package: loc.package.clone(),
            distribution,
            version,
            env_kind: kind,
            env_prefix: loc
                .prefix
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
        }
    }

    /// For a module outside every known layout: the distribution that declares it in one of the
    /// site directories the process already imported from (an editable install), with that
    /// directory's environment. `sites` are (site directory, resolved environment) pairs.
    pub fn editable(
        &self,
        package: &str,
        sites: &[(PathBuf, Resolved)],
        root: &Root,
        creds: &Creds,
    ) -> Option<Resolved> {
        sites.iter().find_map(|(site, env)| {
            let key = (root.ns, site.clone());
            let Found::Dist(d, v) = self.indexes.get(&key)?.index.declared(package, creds) else {
                return None;
            };
            Some(Resolved {
                package: package.to_owned(),
                distribution: Some(d),
                version: v,
                env_kind: env.env_kind,
                env_prefix: env.env_prefix.clone(),
            })
        })
    }
}
