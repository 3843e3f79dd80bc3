//! A [`State`] on disk: the `--partial` file of a shard and each `--cache` entry.
//!
//! Layout: the 8-byte magic [`MAGIC`] (which carries the format's version), then zstd of a
//! postcard encoding of [`Stored`]. A state carries its own names — only those its keys use —
//! because ids are private to one run; [`load`] maps them into the reading run's [`Names`].
//! The encoding is canonical: local ids are assigned in name order and every list is sorted,
//! so the same data gives the same bytes whatever the thread scheduling of the run that wrote
//! it (a cache entry or a partial can be compared with `cmp`).
//!
//! Why postcard + zstd, not Arrow IPC or Parquet: the state is a handful of tuple lists and
//! maps read back whole by this program only; serde derives them in one line each, and
//! postcard's varints plus zstd make them small (job ids and months repeat in runs). Nothing
//! read from a file is trusted: every id is checked against its name list before use.
use std::path::{Path, PathBuf};

use pyusage_record::atomic::{write_bytes_atomic, Durability, PathError};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{BKey, JKey, SKey, State, UKey};
use crate::counts::{CpuSums, SampleTotals, SampledSums};
use crate::model::{Interner, Names, MAX_NODES, NONE};

/// `PYUS` + `ST` + format version (two digits). A file of another version is refused, not
/// guessed at; a cache entry of another version is simply rebuilt.
pub const MAGIC: &[u8; 8] = b"PYUSST03";

/// A file's identity as the cache sees it: a changed size or mtime means changed content.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileStamp {
    /// File name within its partition directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
}

/// What a state was computed from, and how: merging states is only meaningful when their
/// rows were kept by the same rules and their partitions (or hosts) do not overlap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The dataset root, as given on the command line.
    pub dataset: String,
    /// Which rows were kept: `--filter`'s canonical text, or empty for the paper's defaults.
    pub filter: String,
    /// `--hosts`: the shard's host glob, if it is a host group.
    pub hosts: Option<String>,
    /// The `date=` partitions read, sorted.
    pub dates: Vec<String>,
    /// Cache entries: the files of the partition read (sorted by name). Empty in a partial.
    pub files: Vec<FileStamp>,
}

/// The encoded form: names local to the file, keys in those ids.
#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    meta: Meta,
    packages: Vec<String>,
    users: Vec<String>,
    /// `package\0version`.
    versions: Vec<String>,
    env_kinds: Vec<String>,
    blases: Vec<String>,
    odd_jobs: Vec<String>,
    rows: Vec<(u16, u64)>,
    processes: Vec<(u16, u32, u64, u64)>,
    env_kind_processes: Vec<(u16, u32, u64)>,
    /// (month, package, env kind, processes).
    package_env_processes: Vec<(u16, u32, u32, u64)>,
    /// (month, package, processes, CPU µs, split CPU ns).
    cpu: Vec<(u16, u32, u64, u64, u64)>,
    /// (month, sampled processes, their samples, as µs).
    sample_totals: Vec<(u16, u64, u64, u64)>,
    /// (month, package, sampled processes, self samples, inclusive samples, self µs).
    sampled: Vec<(u16, u32, u64, u64, u64, u64)>,
    /// (month, package, caller, samples).
    callers: Vec<(u16, u32, u32, u64)>,
    /// Sampled job keys (job, month, package, on the CPU).
    s: Vec<SKey>,
    u: Vec<UKey>,
    j: Vec<JKey>,
    b: Vec<BKey>,
}

/// Reading or writing a state file failed; every error names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Reading it.
    #[error("{}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing it.
    #[error(transparent)]
    Write(#[from] PathError),
    /// Not a pyusage state file (or one of another format version).
    #[error("{}: not a pyusage analysis state of this version (expected it to start with {:?})", path.display(), String::from_utf8_lossy(MAGIC))]
    NotAState {
        /// The file.
        path: PathBuf,
    },
    /// Corrupt: it does not decompress or decode.
    #[error("{}: corrupt analysis state", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Decodes, but its contents are inconsistent (an id without a name, say).
    #[error("{}: inconsistent analysis state: {what}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Dense local ids for the global ids a state uses, assigned in name order.
struct Local {
    /// Global id → local id (`NONE` if unused).
    of: Vec<u32>,
    /// Local id → name.
    names: Vec<String>,
}

impl Local {
    fn new(interner: &std::sync::Mutex<Interner>, used: impl Iterator<Item = u32>) -> Local {
        let interner = interner.lock().expect("interner lock");
        let mut ids: Vec<u32> = used.filter(|&x| x != NONE).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.sort_by(|&a, &b| interner.name(a).cmp(interner.name(b)));
        let mut of = vec![NONE; interner.len()];
        for (l, &g) in ids.iter().enumerate() {
            of[g as usize] = l as u32;
        }
        let names = ids.iter().map(|&g| interner.name(g).to_owned()).collect();
        Local { of, names }
    }

    /// The local id of `g` (`NONE` stays `NONE`).
    fn get(&self, g: u32) -> u32 {
        if g == NONE {
            NONE
        } else {
            self.of[g as usize]
        }
    }
}

/// Bit that marks a job key as an interned (non-numeric) job id.
const ODD: u64 = 1 << 63;

/// Writes `state` (whose ids are `names`') with `meta` to `path`, atomically.
pub fn save(
    path: &Path,
    state: &State,
    names: &Names,
    meta: &Meta,
    durability: Durability,
) -> Result<(), StateFileError> {
    let packages = Local::new(
        &names.packages,
        state
            .u
            .iter()
            .map(|k| k.0)
            .chain(state.j.iter().map(|k| k.2))
            .chain(state.processes.keys().map(|k| k.1))
            .chain(state.package_envs.keys().map(|k| k.1))
            .chain(state.cpu.keys().map(|k| k.1))
            .chain(state.sampled.packages.keys().map(|k| k.1))
            .chain(state.sampled.callers.keys().flat_map(|k| [k.1, k.2]))
            .chain(state.sampled.jobs.iter().map(|k| k.2)),
    );
    let users = Local::new(&names.users, state.u.iter().map(|k| k.1));
    let versions = Local::new(&names.versions, state.u.iter().map(|k| k.3));
    let env_kinds = Local::new(
        &names.env_kinds,
        state
            .env_kinds
            .keys()
            .map(|k| k.1)
            .chain(state.package_envs.keys().map(|k| k.2)),
    );
    let blases = Local::new(&names.blases, state.b.iter().map(|k| k.2));
    let odd = |job: u64| (job & ODD != 0).then_some((job & !ODD) as u32);
    let odd_jobs = Local::new(
        &names.odd_jobs,
        state
            .j
            .iter()
            .filter_map(|k| odd(k.0))
            .chain(state.b.iter().filter_map(|k| odd(k.0)))
            .chain(state.sampled.jobs.iter().filter_map(|k| odd(k.0))),
    );
    let job = |j: u64| match odd(j) {
        Some(o) => ODD | odd_jobs.get(o) as u64,
        None => j,
    };
    let mut u: Vec<UKey> = state
        .u
        .iter()
        .map(|k| (packages.get(k.0), users.get(k.1), k.2, versions.get(k.3)))
        .collect();
    let mut j: Vec<JKey> = state
        .j
        .iter()
        .map(|k| (job(k.0), k.1, packages.get(k.2), k.3, k.4))
        .collect();
    let mut b: Vec<BKey> = state
        .b
        .iter()
        .map(|k| (job(k.0), k.1, blases.get(k.2)))
        .collect();
    let mut s: Vec<SKey> = state
        .sampled
        .jobs
        .iter()
        .map(|k| (job(k.0), k.1, packages.get(k.2), k.3))
        .collect();
    for v in [&mut u as &mut dyn SortDedup, &mut j, &mut b, &mut s] {
        v.sort_dedup();
    }
    let mut rows: Vec<(u16, u64)> = state.rows.iter().map(|(&m, &r)| (m, r)).collect();
    rows.sort_unstable();
    let mut processes: Vec<(u16, u32, u64, u64)> = state
        .processes
        .iter()
        .map(|(&(m, p), &(n, s))| (m, packages.get(p), n, s))
        .collect();
    processes.sort_unstable();
    let mut env_kind_processes: Vec<(u16, u32, u64)> = state
        .env_kinds
        .iter()
        .map(|(&(m, e), &n)| (m, env_kinds.get(e), n))
        .collect();
    env_kind_processes.sort_unstable();
    let mut package_env_processes: Vec<(u16, u32, u32, u64)> = state
        .package_envs
        .iter()
        .map(|(&(m, p, e), &n)| (m, packages.get(p), env_kinds.get(e), n))
        .collect();
    package_env_processes.sort_unstable();
    let mut cpu: Vec<(u16, u32, u64, u64, u64)> = state
        .cpu
        .iter()
        .map(|(&(m, p), s)| (m, packages.get(p), s.processes, s.us, s.split_ns))
        .collect();
    cpu.sort_unstable();
    let mut sample_totals: Vec<(u16, u64, u64, u64)> = state
        .sampled
        .totals
        .iter()
        .map(|(&m, t)| (m, t.processes, t.samples, t.us))
        .collect();
    sample_totals.sort_unstable();
    let mut sampled: Vec<(u16, u32, u64, u64, u64, u64)> = state
        .sampled
        .packages
        .iter()
        .map(|(&(m, p), x)| {
            let p = packages.get(p);
            (m, p, x.processes, x.own, x.inclusive, x.own_us)
        })
        .collect();
    sampled.sort_unstable();
    let mut callers: Vec<(u16, u32, u32, u64)> = state
        .sampled
        .callers
        .iter()
        .map(|(&(m, p, q), &n)| (m, packages.get(p), packages.get(q), n))
        .collect();
    callers.sort_unstable();
    let stored = Stored {
        meta: meta.clone(),
        packages: packages.names,
        users: users.names,
        versions: versions.names,
        env_kinds: env_kinds.names,
        blases: blases.names,
        odd_jobs: odd_jobs.names,
        rows,
        processes,
        env_kind_processes,
        package_env_processes,
        cpu,
        sample_totals,
        sampled,
        callers,
        s,
        u,
        j,
        b,
    };
    let encoded = postcard::to_allocvec(&stored).expect("a state always encodes");
    let mut bytes = MAGIC.to_vec();
    // Level 1: the state is written on every cache miss; higher levels gain ~10 % here.
    zstd::stream::copy_encode(&encoded[..], &mut bytes, 1).map_err(PathError::at(path))?;
    write_bytes_atomic(path, &bytes, durability)?;
    Ok(())
}

/// Sorting a key list of any of the four kinds (for the loop in [`save`]).
trait SortDedup {
    fn sort_dedup(&mut self);
}

impl<T: Ord> SortDedup for Vec<T> {
    fn sort_dedup(&mut self) {
        self.sort_unstable();
        self.dedup();
    }
}

/// Reads only the [`Meta`] of a state file (the cache's validity check), without mapping
/// its names. Still decodes the whole file: a corrupt entry is found here, not later.
pub fn load_meta(path: &Path) -> Result<Meta, StateFileError> {
    Ok(decode(path)?.meta)
}

/// Reads a state file and maps its names into `names`. The keys come back as stored (sorted
/// in the file's ids, so not in `names`' order): [`State::counts`] sorts them again.
pub fn load(path: &Path, names: &Names) -> Result<(State, Meta), StateFileError> {
    let s = decode(path)?;
    validate(path, &s)?;
    let map = |list: &[String], interner: &std::sync::Mutex<Interner>| -> Vec<u32> {
        let mut g = interner.lock().expect("interner lock");
        list.iter().map(|n| g.id(n)).collect()
    };
    let packages = map(&s.packages, &names.packages);
    let users = map(&s.users, &names.users);
    let versions = map(&s.versions, &names.versions);
    let env_kinds = map(&s.env_kinds, &names.env_kinds);
    let blases = map(&s.blases, &names.blases);
    let odd_jobs = map(&s.odd_jobs, &names.odd_jobs);
    let opt = |ids: &[u32], x: u32| if x == NONE { NONE } else { ids[x as usize] };
    let job = |j: u64| {
        if j & ODD != 0 {
            ODD | odd_jobs[(j & !ODD) as usize] as u64
        } else {
            j
        }
    };
    let mut state = State {
        months: s.rows.iter().map(|r| r.0).collect(),
        rows: s.rows.iter().copied().collect(),
        ..State::default()
    };
    let mut processes: FxHashMap<(u16, u32), (u64, u64)> = FxHashMap::default();
    for &(m, p, n, sig) in &s.processes {
        let e = processes.entry((m, packages[p as usize])).or_default();
        e.0 += n;
        e.1 += sig;
    }
    state.processes = processes;
    for &(m, e, n) in &s.env_kind_processes {
        *state
            .env_kinds
            .entry((m, env_kinds[e as usize]))
            .or_default() += n;
    }
    for &(m, p, e, n) in &s.package_env_processes {
        *state
            .package_envs
            .entry((m, packages[p as usize], env_kinds[e as usize]))
            .or_default() += n;
    }
    for &(m, p, processes, us, split_ns) in &s.cpu {
        state
            .cpu
            .entry((m, packages[p as usize]))
            .or_default()
            .add(CpuSums {
                processes,
                us,
                split_ns,
            });
    }
    for &(m, processes, samples, us) in &s.sample_totals {
        state
            .sampled
            .totals
            .entry(m)
            .or_default()
            .add(SampleTotals {
                processes,
                samples,
                us,
            });
    }
    for &(m, p, processes, own, inclusive, own_us) in &s.sampled {
        let sums = SampledSums {
            processes,
            own,
            inclusive,
            own_us,
        };
        let at = (m, packages[p as usize]);
        state.sampled.packages.entry(at).or_default().add(sums);
    }
    for &(m, p, q, n) in &s.callers {
        let at = (m, packages[p as usize], packages[q as usize]);
        *state.sampled.callers.entry(at).or_default() += n;
    }
    state.sampled.jobs =
        s.s.iter()
            .map(|k| (job(k.0), k.1, packages[k.2 as usize], k.3))
            .collect();
    state.u =
        s.u.iter()
            .map(|k| {
                (
                    packages[k.0 as usize],
                    users[k.1 as usize],
                    k.2,
                    opt(&versions, k.3),
                )
            })
            .collect();
    state.j =
        s.j.iter()
            .map(|k| (job(k.0), k.1, packages[k.2 as usize], k.3, k.4))
            .collect();
    state.b =
        s.b.iter()
            .map(|k| (job(k.0), k.1, opt(&blases, k.2)))
            .collect();
    Ok((state, s.meta))
}

/// Magic, zstd and postcard.
fn decode(path: &Path) -> Result<Stored, StateFileError> {
    let bytes = std::fs::read(path).map_err(|source| StateFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let Some(body) = bytes.strip_prefix(&MAGIC[..]) else {
        return Err(StateFileError::NotAState {
            path: path.to_path_buf(),
        });
    };
    let corrupt = |source: Box<dyn std::error::Error + Send + Sync>| StateFileError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let raw = zstd::stream::decode_all(body).map_err(|e| corrupt(e.into()))?;
    postcard::from_bytes(&raw).map_err(|e| corrupt(e.into()))
}

/// Every id in range, every node count below [`MAX_NODES`]: what the counting code indexes
/// arrays with must not come unchecked from a file.
fn validate(path: &Path, s: &Stored) -> Result<(), StateFileError> {
    let bad = |what: String| {
        Err(StateFileError::Invalid {
            path: path.to_path_buf(),
            what,
        })
    };
    let within = |x: u32, n: usize| (x as usize) < n;
    let opt_within = |x: u32, n: usize| x == NONE || within(x, n);
    let job_ok = |j: u64| j & ODD == 0 || (j & !ODD) < s.odd_jobs.len() as u64;
    let (np, nu, nv) = (s.packages.len(), s.users.len(), s.versions.len());
    if let Some(k) =
        s.u.iter()
            .find(|k| !within(k.0, np) || !within(k.1, nu) || !opt_within(k.3, nv))
    {
        return bad(format!("user key {k:?} refers to a name it does not carry"));
    }
    if let Some(k) =
        s.j.iter()
            .find(|k| !within(k.2, np) || !job_ok(k.0) || k.3 >= MAX_NODES)
    {
        return bad(format!("job key {k:?} out of range"));
    }
    if let Some(k) =
        s.b.iter()
            .find(|k| !job_ok(k.0) || !opt_within(k.2, s.blases.len()))
    {
        return bad(format!("BLAS key {k:?} out of range"));
    }
    if let Some(k) = s.processes.iter().find(|k| !within(k.1, np) || k.3 > k.2) {
        return bad(format!("process count {k:?} out of range"));
    }
    if let Some(k) = s
        .env_kind_processes
        .iter()
        .find(|k| !within(k.1, s.env_kinds.len()))
    {
        return bad(format!("environment kind count {k:?} out of range"));
    }
    if let Some(k) = s
        .package_env_processes
        .iter()
        .find(|k| !within(k.1, np) || !within(k.2, s.env_kinds.len()))
    {
        return bad(format!("package environment count {k:?} out of range"));
    }
    if let Some(k) = s
        .cpu
        .iter()
        .find(|k| !within(k.1, np) || k.4 > k.3.saturating_mul(1000))
    {
        return bad(format!("CPU time {k:?} out of range"));
    }
    if let Some(k) = s.sample_totals.iter().find(|k| k.1 == 0) {
        return bad(format!("sample totals {k:?} of no process"));
    }
    if let Some(k) = s
        .sampled
        .iter()
        .find(|k| !within(k.1, np) || k.2 == 0 || k.3 > k.4)
    {
        return bad(format!("sampled CPU {k:?} out of range"));
    }
    if let Some(k) = s
        .callers
        .iter()
        .find(|k| !within(k.1, np) || !within(k.2, np))
    {
        return bad(format!("caller {k:?} out of range"));
    }
    if let Some(k) = s.s.iter().find(|k| !within(k.2, np) || !job_ok(k.0)) {
        return bad(format!("sampled job key {k:?} out of range"));
    }
    let months: std::collections::BTreeSet<u16> = s.rows.iter().map(|r| r.0).collect();
    let keyed =
        s.u.iter()
            .map(|k| k.2)
            .chain(s.j.iter().map(|k| k.1))
            .chain(s.b.iter().map(|k| k.1))
            .chain(s.processes.iter().map(|k| k.0))
            .chain(s.env_kind_processes.iter().map(|k| k.0))
            .chain(s.package_env_processes.iter().map(|k| k.0))
            .chain(s.cpu.iter().map(|k| k.0))
            .chain(s.sample_totals.iter().map(|k| k.0))
            .chain(s.sampled.iter().map(|k| k.0))
            .chain(s.callers.iter().map(|k| k.0))
            .chain(s.s.iter().map(|k| k.1));
    for m in keyed {
        if !months.contains(&m) {
            return bad(format!("a key of month {m} but no rows in that month"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{flag, Chunk, RowSamples};

    /// A small state: two months, a numeric and an odd job, a version and a BLAS; two
    /// sampled processes, one with a caller.
    fn sample(names: &Names) -> State {
        let id = |i: &std::sync::Mutex<Interner>, s: &str| i.lock().unwrap().id(s);
        let (numpy, scipy) = (id(&names.packages, "numpy"), id(&names.packages, "scipy"));
        let ann = id(&names.users, "ann");
        let v = id(&names.versions, "numpy\x001.26");
        let conda = id(&names.env_kinds, "conda");
        let mkl = id(&names.blases, "mkl");
        let odd = 1 << 63 | id(&names.odd_jobs, "7_1") as u64;
        let xarray = id(&names.packages, "xarray");
        let samples = |total, own, callers| RowSamples {
            total,
            own,
            inclusive: own + 5,
            total_us: total * 100_000,
            own_us: own * 100_000,
            callers,
        };
        let mut c = Chunk {
            month: vec![24_312, 24_312, 24_313],
            package: vec![numpy, scipy, numpy],
            user: vec![ann; 3],
            job: vec![42, odd, 42],
            process: vec![0, 1, 2],
            nodes: vec![4, 1, 4],
            version: vec![v, NONE, v],
            env_kind: vec![conda; 3],
            blas: vec![mkl, NONE, mkl],
            flags: vec![flag::KEEP_JOB | flag::HAS_JOB | flag::NUMPYISH | flag::NON_STDLIB; 3],
            cpu_us: vec![5_000_000, crate::model::NO_CPU, 7_000_000],
            processes: 3,
            sample: vec![0, NONE, 1],
            samples: vec![samples(100, 40, (0, 1)), samples(20, 0, (1, 1))],
            callers: vec![(xarray, 30)],
        };
        for i in [0, 2] {
            c.flags[i] |= flag::SAMPLED;
        }
        State::of(&c)
    }

    fn meta() -> Meta {
        Meta {
            dataset: "/d".into(),
            filter: String::new(),
            hosts: None,
            dates: vec!["2026-01-05".into()],
            files: Vec::new(),
        }
    }

    #[test]
    fn round_trip_into_other_ids_and_canonical_bytes() {
        let t = tempfile::tempdir().unwrap();
        let names = Names::default();
        let s = sample(&names);
        let p = t.path().join("a");
        save(&p, &s, &names, &meta(), Durability::BestEffort).unwrap();
        // Another run, whose ids were assigned in another order.
        let other = Names::default();
        for n in ["zlib", "scipy"] {
            other.packages.lock().unwrap().id(n);
        }
        let (back, m) = load(&p, &other).unwrap();
        assert_eq!(m, meta());
        assert_eq!(back.rows(), 3);
        let (sp, sx) = (&s.sampled, &back.sampled);
        assert_eq!(sx.totals, sp.totals);
        assert_eq!((sx.packages.len(), sx.callers.len()), (2, 1));
        assert_eq!(sx.jobs.len(), 2);
        assert_eq!(sx.totals.values().map(|t| t.samples).sum::<u64>(), 120);
        let q = t.path().join("b");
        save(&q, &back, &other, &m, Durability::BestEffort).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap());
    }

    /// Writes `stored` as a state file, bypassing `save`'s own consistency.
    fn forge(path: &Path, stored: &Stored) {
        let mut bytes = MAGIC.to_vec();
        zstd::stream::copy_encode(&postcard::to_allocvec(stored).unwrap()[..], &mut bytes, 1)
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn hostile_or_damaged_files_are_refused_with_the_reason() {
        let t = tempfile::tempdir().unwrap();
        let names = Names::default();
        let p = t.path().join("s");
        save(&p, &sample(&names), &names, &meta(), Durability::BestEffort).unwrap();
        let good = decode(&p).unwrap();
        let reload = |s: &Stored| {
            forge(&p, s);
            load(&p, &Names::default()).unwrap_err().to_string()
        };
        let mut s = good.clone();
        s.u[0].0 = 99;
        assert!(reload(&s).contains("user key"), "{}", reload(&s));
        let mut s = good.clone();
        s.j[0].3 = MAX_NODES;
        assert!(reload(&s).contains("job key"), "{}", reload(&s));
        let mut s = good.clone();
        s.j[0].0 = ODD | 5;
        assert!(reload(&s).contains("job key"));
        let mut s = good.clone();
        s.b[0].2 = 7;
        assert!(reload(&s).contains("BLAS key"));
        let mut s = good.clone();
        s.processes[0].3 = s.processes[0].2 + 1;
        assert!(reload(&s).contains("process count"));
        let mut s = good.clone();
        s.sampled[0].3 = s.sampled[0].4 + 1;
        assert!(reload(&s).contains("sampled CPU"), "{}", reload(&s));
        let mut s = good.clone();
        s.callers[0].2 = 99;
        assert!(reload(&s).contains("caller"));
        let mut s = good.clone();
        s.s[0].2 = 99;
        assert!(reload(&s).contains("sampled job key"));
        let mut s = good.clone();
        s.sample_totals[0].1 = 0;
        assert!(reload(&s).contains("sample totals"));
        let mut s = good.clone();
        s.rows.retain(|r| r.0 != good.u[0].2);
        assert!(reload(&s).contains("no rows in that month"));
        // Truncated, bit-flipped, foreign.
        forge(&p, &good);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        assert!(matches!(
            load(&p, &names),
            Err(StateFileError::Corrupt { .. })
        ));
        std::fs::write(&p, b"PAR1....").unwrap();
        assert!(matches!(
            load(&p, &names),
            Err(StateFileError::NotAState { .. })
        ));
        forge(&p, &good);
        assert!(load(&p, &names).is_ok());
    }
}
