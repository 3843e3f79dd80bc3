//! `pyusage synth`: a realistic, deterministic dataset in the record schema for tests and
//! benchmarks, made to exercise every path of the analysis:
//! - ~3,000 packages: real names in popularity order, then a generated long tail (`pkg0001`…).
//!   Each user has a personal set drawn from a Zipf-like adoption (numpy for most users, the
//!   20th package for a few percent, most of the tail for one or two), and each job imports a
//!   few packages of its user's set, now and then a one-off rare package;
//! - users with a heavy-tailed activity, a few staff, a few without a resolved username (uid
//!   only), each with an environment kind (conda, system, venv, container; `user` site for
//!   tail packages, `stdlib` for the standard library), a BLAS, versions that change over time;
//! - jobs with a heavy-tailed node count (mean ~2.4, a few thousand-node mpi4py jobs), steps
//!   that start hours or days apart — so some jobs span months, and some the new year: the
//!   synthetic year is 2026 plus the first week of 2027 — array tasks (`123_4`) and
//!   heterogeneous components (`123+1`);
//! - login-node processes (`is_compute` false, most without a job), a few compute-node
//!   processes outside any job, and a few login-node processes of a compute job;
//! - periodic `running` snapshots followed by the final record of the same process (host,
//!   pid, process start) and package, a later `seq` and its own `record_id`; a few processes
//!   still running when the data ends (a snapshot only); MPI ranks on different nodes with the
//!   same pid and start;
//! - correlated packages (xarray → dask, mpi4py ↔ astropy), 5% of processes killed;
//! - CPU time per process, and the CPU sampler's fields ([`samples`]): most processes sampled
//!   at 19 Hz, a few unsupported, those without a CPU time not sampled; numpy's time called
//!   from xarray, dask and pandas; many imported packages never on the CPU.
//!
//! Rows come in independently seeded blocks: the same seed gives the same dataset however
//! many threads generate it.
use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::properties::WriterProperties,
};
use pyusage_record::{
    atomic::{write_atomic, Durability},
    dataset::WriteError,
    EnvKind, Exit, JobSource, Record, Source,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub mod samples;

/// Real packages in popularity order (rank 1 = most used): import name and distribution
/// (`None`: the standard library).
pub const PACKAGES: &[(&str, Option<&str>)] = &[
    ("numpy", Some("numpy")),
    ("scipy", Some("scipy")),
    ("matplotlib", Some("matplotlib")),
    ("pandas", Some("pandas")),
    ("mpi4py", Some("mpi4py")),
    ("multiprocessing", None),
    ("h5py", Some("h5py")),
    ("yaml", Some("PyYAML")),
    ("astropy", Some("astropy")),
    ("sklearn", Some("scikit-learn")),
    ("numba", Some("numba")),
    ("xarray", Some("xarray")),
    ("dask", Some("dask")),
    ("netCDF4", Some("netCDF4")),
    ("torch", Some("torch")),
    ("tensorflow", Some("tensorflow")),
    ("requests", Some("requests")),
    ("tqdm", Some("tqdm")),
    ("sympy", Some("sympy")),
    ("seaborn", Some("seaborn")),
    ("numexpr", Some("numexpr")),
    ("concurrent", None),
    ("cython", Some("Cython")),
    ("jax", Some("jax")),
    ("cupy", Some("cupy")),
    ("PIL", Some("Pillow")),
    ("click", Some("click")),
    ("jinja2", Some("Jinja2")),
    ("psutil", Some("psutil")),
    ("tables", Some("tables")),
    ("fitsio", Some("fitsio")),
    ("healpy", Some("healpy")),
    ("sqlite3", None),
    ("ctypes", None),
    ("asyncio", None),
    ("mpl_toolkits", Some("matplotlib")),
    ("IPython", Some("ipython")),
    ("joblib", Some("joblib")),
    ("statsmodels", Some("statsmodels")),
    ("numcodecs", Some("numcodecs")),
    ("zarr", Some("zarr")),
    ("pyarrow", Some("pyarrow")),
    ("networkx", Some("networkx")),
    ("shapely", Some("shapely")),
    ("cartopy", Some("Cartopy")),
    ("pyproj", Some("pyproj")),
    ("lmfit", Some("lmfit")),
    ("emcee", Some("emcee")),
    ("corner", Some("corner")),
    ("camb", Some("camb")),
];

/// Generated package names after [`PACKAGES`] (`pkg0001`…): the long tail of rare packages.
pub const TAIL: usize = 2950;

const SECOND_US: i64 = 1_000_000;
const HOUR_US: i64 = 3600 * SECOND_US;
const DAY_US: i64 = 24 * HOUR_US;
/// 2026-01-01T00:00:00Z.
const YEAR_START_US: i64 = 1_767_225_600_000_000;
/// The synthetic year: 2026 and the first week of 2027, so that jobs run over the new year.
const SPAN_US: i64 = 372 * DAY_US;
/// Compute and login nodes.
const COMPUTE_NODES: usize = 4000;
const LOGIN_NODES: usize = 12;

/// Parameters of the generator.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Records to produce.
    pub rows: usize,
    /// Seed: the same seed gives the same dataset.
    pub seed: u64,
    /// Distinct users.
    pub users: u32,
}

/// Rows per independently seeded block: blocks can be generated in parallel and still give
/// the same dataset for a seed.
pub const BLOCK: usize = 1_000_000;

/// Number of blocks of `p`.
pub fn blocks(p: Params) -> usize {
    p.rows.div_ceil(BLOCK)
}

/// Block `k` of `p`: rows `[k * BLOCK, (k + 1) * BLOCK)`, with its own random stream and its
/// own ranges of job ids and pids.
pub fn block(p: Params, k: usize) -> Synth {
    block_of(p, k, BLOCK)
}

/// Block `k` of `p` with blocks of `size` rows.
fn block_of(p: Params, k: usize, size: usize) -> Synth {
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    rng.set_stream(k as u64);
    let first = k * size;
    Synth {
        p,
        world: World::new(p),
        rng,
        emitted: first,
        end: ((k + 1) * size).min(p.rows),
        job: 1_000_000 + first as u64,
        pid: first as u64,
        boundary: 0,
        pending: VecDeque::new(),
    }
}

/// All records of `p`, block after block, in bounded memory.
pub fn stream(p: Params) -> impl Iterator<Item = Record> {
    (0..blocks(p)).flat_map(move |k| block(p, k))
}

/// Generates all records in memory (tests, small inputs).
pub fn generate(p: Params) -> Vec<Record> {
    stream(p).collect()
}

/// What every block knows of a package.
struct Package {
    name: String,
    dist: Option<String>,
    stdlib: bool,
    /// A generated tail package.
    tail: bool,
    /// Versions over time (the environments upgrade now and then).
    versions: [String; 4],
    /// Share of users who have it in their set.
    adoption: f64,
    /// Chance that a job of such a user imports it.
    per_job: f64,
}

/// The package universe: [`PACKAGES`] then the [`TAIL`], in popularity order.
fn universe() -> &'static [Package] {
    static U: OnceLock<Vec<Package>> = OnceLock::new();
    U.get_or_init(|| {
        let tail = (1..=TAIL).map(|i| (format!("pkg{i:04}"), true));
        PACKAGES
            .iter()
            .map(|&(n, _)| (n.to_owned(), false))
            .chain(tail)
            .enumerate()
            .map(|(k, (name, tail))| {
                let dist = if tail {
                    Some(name.replace("pkg", "pkg-"))
                } else {
                    PACKAGES[k].1.map(str::to_owned)
                };
                let rank = (k + 1) as f64;
                let major = 1 + k % 3;
                Package {
                    stdlib: dist.is_none(),
                    dist,
                    tail,
                    versions: std::array::from_fn(|v| {
                        format!("{major}.{}.{}", 10 + k % 9 + v, k % 4)
                    }),
                    adoption: 0.85 / rank,
                    per_job: 0.25 + 0.45 / rank.sqrt(),
                    name,
                }
            })
            .collect()
    })
}

/// Index of a real package.
fn pk(name: &str) -> u32 {
    PACKAGES
        .iter()
        .position(|p| p.0 == name)
        .expect("a package of the list") as u32
}

/// Host names: compute nodes, then login nodes.
fn hosts() -> &'static [String] {
    static H: OnceLock<Vec<String>> = OnceLock::new();
    H.get_or_init(|| {
        (0..COMPUTE_NODES)
            .map(|i| format!("nid{i:06}"))
            .chain((1..=LOGIN_NODES).map(|i| format!("login{i:02}")))
            .collect()
    })
}

/// A user's fixed traits.
struct User {
    uid: u32,
    /// `None`: the uid did not resolve.
    name: Option<String>,
    staff: bool,
    env: EnvKind,
    prefix: String,
    python: &'static str,
    executable: String,
    main: String,
    account: String,
    blas: &'static str,
    /// Packages (indices into [`universe`]), ascending.
    packages: Vec<u32>,
}

/// The users, the same in every block (drawn from the seed alone).
struct World {
    users: Vec<User>,
    /// Cumulative activity weights (heavy-tailed: a few users run most jobs).
    activity: Vec<f64>,
}

impl World {
    fn new(p: Params) -> World {
        let n = p.users.max(1) as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        rng.set_stream(u64::MAX);
        let uni = universe();
        // Per package, its users by geometric skips: as if each user drew each package.
        let mut sets: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (k, pkg) in uni.iter().enumerate() {
            let q = pkg.adoption;
            let mut u = 0usize;
            loop {
                let x: f64 = rng.random();
                u += ((1.0 - x).ln() / (1.0 - q).ln()) as usize;
                if u >= n {
                    break;
                }
                sets[u].push(k as u32);
                u += 1;
            }
        }
        let mut rank: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            rank.swap(i, rng.random_range(0..=i));
        }
        let mut acc = 0.0;
        let activity = rank
            .iter()
            .map(|&r| {
                acc += 1.0 / (r as f64 + 10.0);
                acc
            })
            .collect();
        let staff = (n / 100).max(1);
        let users = sets
            .into_iter()
            .enumerate()
            .map(|(u, mut packages)| {
                if packages.is_empty() {
                    packages.push(0);
                }
                let uid = 10_000 + u as u32;
                let env = match u {
                    _ if u % 3 == 0 => EnvKind::Conda,
                    _ if u % 7 == 1 => EnvKind::Venv,
                    _ if u % 23 == 5 => EnvKind::Container,
                    _ => EnvKind::System,
                };
                let python = ["3.11", "3.10", "3.12", "3.11", "3.9"][u % 5];
                let prefix = match env {
                    EnvKind::Conda => format!("/global/common/software/m{:04}/envs/u{u}", u % 400),
                    EnvKind::Venv => format!("/home/user{u:04}/venv"),
                    _ => "/usr".to_owned(),
                };
                User {
                    uid,
                    name: (u % 50 != 7).then(|| format!("user{u:04}")),
                    staff: u < staff,
                    env,
                    executable: format!("{prefix}/bin/python{python}"),
                    prefix,
                    python,
                    main: format!("/home/user{u:04}/run.py"),
                    account: format!("m{:04}", u % 400),
                    blas: if u % 6 == 0 { "mkl" } else { "openblas" },
                    packages,
                }
            })
            .collect();
        World { users, activity }
    }

    /// A user, by activity.
    fn user(&self, rng: &mut ChaCha8Rng) -> usize {
        let x = rng.random::<f64>() * self.activity[self.activity.len() - 1];
        self.activity
            .partition_point(|&c| c < x)
            .min(self.users.len() - 1)
    }
}

/// Heavy-tailed node count with mean ~2.4: mostly 1, geometric tail, rare huge jobs.
fn node_count(rng: &mut ChaCha8Rng) -> u32 {
    let u: f64 = rng.random();
    if u < 0.0003 {
        return 1024 << rng.random_range(0..3); // 1024, 2048 or 4096 nodes
    }
    let mut n = 1;
    while rng.random::<f64>() < 0.3 && n < 512 {
        n *= 2;
    }
    n
}

/// A 64-bit mix (splitmix64's finaliser): versions from (seed, user, package, epoch) with no
/// random stream, so they agree between blocks.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The records of one block, job by job. Jobs start in time order over the year (with up to an
/// hour of jitter; later steps hours or days later), so consecutive records fall into the same
/// few `date=` partitions and files stay large.
pub struct Synth {
    p: Params,
    world: World,
    rng: ChaCha8Rng,
    emitted: usize,
    end: usize,
    job: u64,
    pid: u64,
    /// Index of the next month boundary that a job of this block is made to straddle.
    boundary: usize,
    pending: VecDeque<Record>,
}

impl Iterator for Synth {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.emitted >= self.end {
            return None;
        }
        while self.pending.is_empty() {
            self.next_unit();
        }
        self.emitted += 1;
        self.pending.pop_front()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.saturating_sub(self.emitted);
        (n, Some(n))
    }
}

/// The month starts of the synthetic year after its first: 2026-02-01 … 2027-01-01.
fn month_boundaries() -> [i64; 12] {
    const DAYS: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut at = YEAR_START_US;
    DAYS.map(|d| {
        at += d * DAY_US;
        at
    })
}

/// Where and as what a process runs.
#[derive(Clone)]
struct Proc<'a> {
    user: usize,
    job: Option<&'a str>,
    step: Option<String>,
    host: usize,
    compute: bool,
    rank: Option<i32>,
    nodes: u32,
    qos: Option<&'static str>,
    partition: Option<&'static str>,
    pid: i32,
    start: i64,
}

impl Synth {
    /// Queues the records of one unit of work: a job (an array of them, or a heterogeneous
    /// pair), a login-node session, or a compute-node process outside any job.
    fn next_unit(&mut self) {
        let rows = self.p.rows.max(1);
        let progress = (self.emitted + self.pending.len()) as f64 / rows as f64;
        let start =
            YEAR_START_US + (progress * SPAN_US as f64) as i64 + self.rng.random_range(0..HOUR_US);
        let user = self.world.user(&mut self.rng);
        // A month boundary just ahead: this job runs over it (each block, each boundary).
        let window = DAY_US.max(3 * SPAN_US / (rows as i64 / 8).max(1));
        let cut = month_boundaries();
        while self.boundary < cut.len() && cut[self.boundary] <= start {
            self.boundary += 1;
        }
        let straddle =
            (self.boundary < cut.len() && cut[self.boundary] - start < window).then(|| {
                self.boundary += 1;
                cut[self.boundary - 1]
            });
        let u: f64 = self.rng.random();
        if straddle.is_none() && u < 0.08 {
            return self.login_session(user, start);
        }
        if straddle.is_none() && u < 0.085 {
            let pkgs = self.job_packages(user, 1);
            let host = self.rng.random_range(0..COMPUTE_NODES);
            let pid = self.next_pid(1);
            let p = Proc {
                user,
                job: None,
                step: None,
                host,
                compute: true,
                rank: None,
                nodes: 1,
                qos: None,
                partition: None,
                pid,
                start,
            };
            return self.process(&p, &pkgs);
        }
        let mut nodes = node_count(&mut self.rng);
        self.job += 1;
        let id = self.job;
        if u < 0.125 {
            // An array job: small tasks of the same script, started minutes apart.
            nodes = nodes.min(8);
            let pkgs = self.job_packages(user, nodes);
            let tasks = self.rng.random_range(2..=16);
            let mut t = start;
            for task in 0..tasks {
                let s = straddle.filter(|_| task == 0);
                self.job(&format!("{id}_{task}"), user, nodes, &pkgs, t, s);
                t += self.rng.random_range(0..10 * 60 * SECOND_US);
            }
            return;
        }
        let pkgs = self.job_packages(user, nodes);
        if u < 0.135 {
            // A heterogeneous job: two components, each its own job id.
            self.job(&format!("{id}+0"), user, nodes, &pkgs, start, straddle);
            let n1 = node_count(&mut self.rng);
            self.job(&format!("{id}+1"), user, n1, &pkgs, start, None);
        } else {
            self.job(&id.to_string(), user, nodes, &pkgs, start, straddle);
        }
    }

    /// `n` consecutive pids (wrapping below Linux's largest).
    fn next_pid(&mut self, n: u64) -> i32 {
        let pid = 1000 + (self.pid % 4_190_000) as i32;
        self.pid += n;
        pid
    }

    /// One job: its steps, one process per rank (at most 4) on consecutive nodes.
    fn job(
        &mut self,
        id: &str,
        user: usize,
        nodes: u32,
        pkgs: &[u32],
        start: i64,
        straddle: Option<i64>,
    ) {
        let rng = &mut self.rng;
        // A few week-long campaigns, some multi-step jobs, most of one step.
        let campaign = straddle.is_none() && rng.random::<f64>() < 0.01;
        let steps = match straddle {
            Some(_) => 2,
            None if campaign => rng.random_range(3..=8),
            None if rng.random::<f64>() < 0.15 => rng.random_range(2..=4),
            None => 1,
        };
        let base = rng.random_range(0..COMPUTE_NODES);
        let ranks = nodes.min(4) as usize;
        let qos = ["regular", "regular", "regular", "debug", "premium"][rng.random_range(0..5)];
        let gpu = pkgs
            .iter()
            .any(|&k| (pk("torch")..=pk("cupy")).contains(&k));
        let mut t = start;
        for s in 0..steps {
            if s > 0 {
                t += match straddle {
                    Some(cut) => (cut - t).max(0) + self.rng.random_range(SECOND_US..6 * HOUR_US),
                    None if campaign => self.rng.random_range(0..24 * HOUR_US),
                    None if self.rng.random::<f64>() < 0.05 => {
                        self.rng.random_range(0..36 * HOUR_US)
                    }
                    // Exponential, 2 hours on average.
                    None => (-(1.0 - self.rng.random::<f64>()).ln() * 2.0 * HOUR_US as f64) as i64,
                };
            }
            // On a fresh allocation the ranks often get the same pid at the same µs.
            let same = ranks > 1 && self.rng.random::<f64>() < 0.1;
            let pid = self.next_pid(ranks as u64);
            for r in 0..ranks {
                let p = Proc {
                    user,
                    job: Some(id),
                    step: Some(s.to_string()),
                    host: (base + r) % COMPUTE_NODES,
                    compute: true,
                    rank: Some(r as i32),
                    nodes,
                    qos: Some(qos),
                    partition: Some(if gpu { "gpu" } else { "cpu" }),
                    pid: if same { pid } else { pid + r as i32 },
                    start: if same {
                        t
                    } else {
                        t + self.rng.random_range(0..2 * SECOND_US)
                    },
                };
                self.process(&p, pkgs);
            }
        }
        if self.rng.random::<f64>() < 0.03 {
            // A process of the job on a login node (the job's environment leaked there).
            let pid = self.next_pid(1);
            let p = Proc {
                user,
                job: Some(id),
                step: None,
                host: COMPUTE_NODES + user % LOGIN_NODES,
                compute: false,
                rank: None,
                nodes,
                qos: None,
                partition: None,
                pid,
                start: start + self.rng.random_range(0..HOUR_US),
            };
            self.process(&p, pkgs);
        }
    }

    /// One or two processes on the user's login node; most outside any job.
    fn login_session(&mut self, user: usize, start: i64) {
        let pkgs = self.job_packages(user, 1);
        let id = (self.rng.random::<f64>() < 0.15).then(|| {
            self.job += 1;
            self.job.to_string()
        });
        let n = self.rng.random_range(1..=2);
        let mut t = start;
        for _ in 0..n {
            let pid = self.next_pid(1);
            let p = Proc {
                user,
                job: id.as_deref(),
                step: None,
                host: COMPUTE_NODES + user % LOGIN_NODES,
                compute: false,
                rank: None,
                nodes: 1,
                qos: None,
                partition: None,
                pid,
                start: t,
            };
            self.process(&p, &pkgs);
            t += self.rng.random_range(0..30 * 60 * SECOND_US);
        }
    }

    /// A job's package set (indices into [`universe`], ascending): some of its user's, now
    /// and then a one-off rare package, and the planted correlations.
    fn job_packages(&mut self, user: usize, nodes: u32) -> Vec<u32> {
        let (uni, rng) = (universe(), &mut self.rng);
        let set = &self.world.users[user].packages;
        let mut pkgs: Vec<u32> = set
            .iter()
            .copied()
            .filter(|&k| rng.random::<f64>() < uni[k as usize].per_job)
            .collect();
        if pkgs.is_empty() {
            pkgs.push(set[rng.random_range(0..set.len())]);
        }
        if rng.random::<f64>() < 0.03 {
            pkgs.push(rng.random_range(PACKAGES.len()..uni.len()) as u32);
        }
        if nodes >= 1024 {
            pkgs.push(pk("mpi4py")); // the thousand-node jobs are mpi4py jobs
        }
        if pkgs.contains(&pk("xarray")) && rng.random::<f64>() < 0.8 {
            pkgs.push(pk("dask")); // xarray → dask
        }
        if pkgs.contains(&pk("mpi4py")) && user.is_multiple_of(4) && rng.random::<f64>() < 0.8 {
            pkgs.push(pk("astropy")); // mpi4py ↔ astropy, among the astronomers
        }
        pkgs.sort_unstable();
        pkgs.dedup();
        pkgs
    }

    /// The records of one process: one per package, after a `running` snapshot of the
    /// packages seen by then for some processes (and only the snapshot for a few).
    fn process(&mut self, p: &Proc<'_>, pkgs: &[u32]) {
        let rng = &mut self.rng;
        let x: f64 = rng.random();
        let (exit, signal) = match x {
            _ if x < 0.035 => (Exit::Signaled, Some("SIGKILL")),
            _ if x < 0.045 => (Exit::Signaled, Some("SIGTERM")),
            _ if x < 0.05 => (Exit::Signaled, Some("SIGSEGV")),
            _ if x < 0.053 => (Exit::Unknown, None),
            _ => (Exit::Exited, None),
        };
        let code = (exit == Exit::Exited).then(|| i32::from(rng.random::<f64>() < 0.05));
        let snapshot = rng.random::<f64>() < 0.08;
        let seen = if snapshot {
            rng.random_range(1..=pkgs.len())
        } else {
            0
        };
        let finished = !(snapshot && rng.random::<f64>() < 0.06);
        let end = p.start + rng.random_range(SECOND_US..2 * HOUR_US);
        let blas_lost = rng.random::<f64>() < 0.03;
        let (user, sys) = cpu_of(p.pid, p.start, false);
        let h = mix(self.p.seed ^ mix(p.pid as u64 ^ (p.start as u64).rotate_left(23)));
        let sampled = samples::of_process(h, user.zip(sys).map(|(u, s)| u + s), pkgs);
        for (i, &k) in pkgs[..seen].iter().enumerate() {
            let s = sampled.fields(i, true);
            self.record(p, k, Exit::Running, None, None, None, blas_lost, s);
        }
        if finished {
            for (i, &k) in pkgs.iter().enumerate() {
                let s = sampled.fields(i, false);
                self.record(p, k, exit, code, signal, Some(end), blas_lost, s);
            }
        }
    }

    /// Queues one record of process `p` and package `k`.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        p: &Proc<'_>,
        k: u32,
        exit: Exit,
        code: Option<i32>,
        signal: Option<&str>,
        end: Option<i64>,
        blas_lost: bool,
        sampled: samples::Fields,
    ) {
        let (pkg, u) = (&universe()[k as usize], &self.world.users[p.user]);
        let running = exit == Exit::Running;
        let env = match (pkg.stdlib, pkg.tail, u.env) {
            (true, _, _) => EnvKind::Stdlib,
            (_, true, EnvKind::System) => EnvKind::User,
            (_, _, e) => e,
        };
        let epoch = ((p.start - YEAR_START_US) / (100 * DAY_US)) as u64;
        let h = mix(self.p.seed ^ mix((p.user as u64) << 32 | k as u64) ^ epoch);
        let version = (!pkg.stdlib && !h.is_multiple_of(50)).then(|| {
            // Mostly one version per user and period, skewed to the newest.
            pkg.versions[[3, 3, 3, 2, 2, 1, 0][(h >> 8) as usize % 7]].clone()
        });
        let first_path = match env {
            EnvKind::Stdlib => format!("/usr/lib/python{}/{}/__init__.py", u.python, pkg.name),
            EnvKind::User => format!(
                "/home/user{:04}/.local/lib/python{}/site-packages/{}/__init__.py",
                p.user, u.python, pkg.name
            ),
            _ => format!(
                "{}/lib/python{}/site-packages/{}/__init__.py",
                u.prefix, u.python, pkg.name
            ),
        };
        let numpyish = k < 2;
        let n = self.emitted + self.pending.len();
        let (cpu_user_us, cpu_sys_us) = cpu_of(p.pid, p.start, running);
        let container = u.env == EnvKind::Container;
        self.pending.push_back(Record {
            record_id: format!("synth-{}-{n}", self.p.seed),
            seq: n as u64 + 1,
            source: Source::Ebpf,
            sources: vec![Source::Ebpf],
            host: hosts()[p.host].clone(),
            system: Some("synth".into()),
            subsystem: Some(if p.compute { "cpu" } else { "login" }.into()),
            is_compute: p.compute,
            pid: p.pid,
            ppid: 1,
            root_pid: p.pid,
            process_start: p.start,
            process_end: end,
            exit,
            exit_code: code,
            exit_signal: signal.map(str::to_owned),
            executable: u.executable.clone(),
            python_version: Some(u.python.into()),
            main: Some(if p.compute {
                u.main.clone()
            } else {
                "-c".into()
            }),
            uid: u.uid,
            username: u.name.clone(),
            is_staff: u.staff,
            in_container: container,
            container_runtime: container.then(|| "podman".into()),
            // A snapshot may come before BLAS is loaded.
            blas: (numpyish && !blas_lost && !(running && k == 1)).then(|| u.blas.into()),
            job_id: p.job.map(str::to_owned),
            step_id: p.step.clone(),
            job_source: p.job.map(|_| {
                if p.compute {
                    JobSource::Cgroup
                } else {
                    JobSource::Env
                }
            }),
            rank: p.rank,
            n_ranks: None,
            num_nodes: p.nodes,
            qos: p.qos.map(str::to_owned),
            account: p.job.map(|_| u.account.clone()),
            partition: p.partition.map(str::to_owned),
            package: pkg.name.clone(),
            distribution: pkg.dist.clone(),
            version,
            env_kind: env,
            env_prefix: Some(u.prefix.clone()),
            first_path,
            n_files: if running { 1 } else { 1 + k % 7 },
            first_seen: p.start + SECOND_US + k as i64 * 1000,
            cpu_user_us,
            cpu_sys_us,
            cpu_sampling: sampled.status,
            cpu_sample_hz: sampled.hz,
            cpu_samples_total: sampled.counts.map(|c| c.0),
            cpu_samples_self: sampled.counts.map(|c| c.1),
            cpu_samples_inclusive: sampled.counts.map(|c| c.2),
            cpu_samples_callers: sampled.callers,
        });
    }
}

/// A process's CPU time, a function of the process alone (every record of it agrees): from
/// 0.1 s to about an hour, 90 % user; a running snapshot has half of it; one process in 20
/// has none (as on a node without the exit's CPU time).
fn cpu_of(pid: i32, start: i64, running: bool) -> (Option<u64>, Option<u64>) {
    let h = (pid as u64 ^ (start as u64).rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    if (h >> 59) == 0 {
        return (None, None);
    }
    let total = 100_000 + (h >> 20) % 3_600_000_000;
    let total = if running { total / 2 } else { total };
    let user = total / 10 * 9;
    (Some(user), Some(total - user))
}

/// Writes `records` as [`pyusage_record::dataset::write`] does — one file per `date=`
/// partition of `process_start`, named by its first record's host and its lowest `seq`,
/// zstd-compressed with dictionary-encoded strings, renamed into place — but skips the `fsync`
/// (generated data is made again from its seed) and copies no record: what keeps `pyusage
/// synth` quick at 100 M rows.
pub fn write(root: &Path, records: &[Record]) -> Result<Vec<PathBuf>, WriteError> {
    let mut by_day: BTreeMap<i64, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_day
            .entry(r.process_start.div_euclid(DAY_US))
            .or_default()
            .push(r);
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_dictionary_enabled(true)
        .build();
    let mut written = Vec::new();
    for (day, recs) in by_day {
        let date = chrono::DateTime::from_timestamp_micros(day * DAY_US)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "1970-01-01".into());
        let dir = root.join(format!("date={date}"));
        std::fs::create_dir_all(&dir).map_err(|source| WriteError::Io {
            path: dir.clone(),
            source,
        })?;
        let first = recs.iter().map(|r| r.seq).min().unwrap_or(0);
        let path = dir.join(format!("{}-{first:020}.parquet", recs[0].host));
        let batch =
            pyusage_record::dataset::batch_of(&recs).map_err(|source| WriteError::Arrow {
                path: path.clone(),
                source,
            })?;
        let pq = |source| WriteError::Parquet {
            path: path.clone(),
            source,
        };
        write_atomic(&path, Durability::BestEffort, |file| {
            let mut w =
                ArrowWriter::try_new(file, batch.schema(), Some(props.clone())).map_err(pq)?;
            w.write(&batch).map_err(pq)?;
            w.into_inner().map_err(pq)
        })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use super::*;

    fn sample() -> (Params, Vec<Record>) {
        let p = Params {
            rows: 60_000,
            seed: 7,
            users: 2500,
        };
        (p, generate(p))
    }

    fn month(us: i64) -> u16 {
        crate::model::month_of(us)
    }

    #[test]
    fn deterministic_popular_numpy_and_mean_nodes() {
        let (p, a) = sample();
        assert_eq!(a.len(), 60_000);
        assert_eq!(a, generate(p), "same seed, same data");
        assert_ne!(a, generate(Params { seed: 8, ..p }));
        let count = |n: &str| a.iter().filter(|r| r.package == n).count();
        assert!(count("numpy") > count("scipy") && count("scipy") > count("healpy"));
        // Mean node count over jobs.
        let mut jobs = HashMap::new();
        for r in a.iter().filter(|r| r.job_id.is_some()) {
            jobs.insert(r.job_id.clone(), r.num_nodes);
        }
        let mean = jobs.values().map(|&n| n as f64).sum::<f64>() / jobs.len() as f64;
        assert!((1.8..3.2).contains(&mean), "mean nodes {mean}");
        let ids: BTreeSet<&str> = a.iter().map(|r| r.record_id.as_str()).collect();
        assert_eq!(ids.len(), a.len(), "record ids are unique");
    }

    #[test]
    fn batches_and_files_match_the_dataset_writer() {
        let (_, a) = sample();
        let some = &a[..5_000];
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut w1 = write(d1.path(), some).unwrap();
        let mut w2 = pyusage_record::dataset::write(d2.path(), some).unwrap();
        w1.sort();
        w2.sort();
        let rel = |d: &Path, w: &[PathBuf]| -> Vec<PathBuf> {
            w.iter()
                .map(|p| p.strip_prefix(d).unwrap().to_owned())
                .collect()
        };
        assert_eq!(rel(d1.path(), &w1), rel(d2.path(), &w2));
        for (x, y) in w1.iter().zip(&w2) {
            assert_eq!(
                std::fs::read(x).unwrap(),
                std::fs::read(y).unwrap(),
                "{x:?}"
            );
        }
    }

    #[test]
    fn blocks_do_not_depend_on_each_other() {
        let p = Params {
            rows: 25_000,
            seed: 3,
            users: 300,
        };
        let size = 6_000;
        let n = p.rows.div_ceil(size);
        let serial: Vec<Record> = (0..n).flat_map(|k| block_of(p, k, size)).collect();
        // In parallel, in reverse order.
        let parallel: Vec<Vec<Record>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..n)
                .rev()
                .map(|k| s.spawn(move || block_of(p, k, size).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().rev().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(serial, parallel.concat());
        assert_eq!(serial.len(), p.rows);
    }

    #[test]
    fn jobs_span_months_and_the_new_year() {
        let (_, a) = sample();
        let mut months: HashMap<&str, BTreeSet<u16>> = HashMap::new();
        for r in &a {
            if let Some(j) = &r.job_id {
                months.entry(j).or_default().insert(month(r.process_start));
            }
        }
        let spanning = months.values().filter(|m| m.len() > 1).count();
        assert!(spanning >= 11, "jobs over a month boundary: {spanning}");
        let dec = 2026 * 12 + 11;
        assert!(
            months
                .values()
                .any(|m| m.contains(&dec) && m.contains(&(dec + 1))),
            "a job over the new year"
        );
        let all: BTreeSet<u16> = a.iter().map(|r| month(r.process_start)).collect();
        assert_eq!(all.len(), 13, "2026 and January 2027");
    }

    #[test]
    fn login_rows_and_jobless_rows() {
        let (_, a) = sample();
        let login = |r: &&Record| !r.is_compute;
        let n = a.iter().filter(login).count();
        assert!(n > a.len() / 50 && n < a.len() / 5, "login rows {n}");
        assert!(a.iter().filter(login).all(|r| r.host.starts_with("login")));
        assert!(a.iter().filter(login).any(|r| r.job_id.is_none()));
        assert!(a.iter().filter(login).any(|r| r.job_id.is_some()));
        assert!(a.iter().any(|r| r.is_compute && r.job_id.is_none()));
    }

    #[test]
    fn running_snapshots_then_final_records() {
        let (_, a) = sample();
        let mut by: HashMap<(&str, i32, i64, &str), Vec<&Record>> = HashMap::new();
        for r in &a {
            by.entry((&r.host, r.pid, r.process_start, &r.package))
                .or_default()
                .push(r);
        }
        let mut pairs = 0;
        let mut only_running = 0;
        for v in by.values() {
            let (run, fin): (Vec<&&Record>, Vec<&&Record>) =
                v.iter().partition(|r| r.exit == Exit::Running);
            assert!(run.len() <= 1 && fin.len() <= 1, "{v:?}");
            for r in &run {
                assert!(r.process_end.is_none() && r.exit_code.is_none());
                assert!(r.exit_signal.is_none());
            }
            match (run.first(), fin.first()) {
                (Some(s), Some(f)) => {
                    pairs += 1;
                    assert!(f.seq > s.seq && f.record_id != s.record_id);
                    assert!(f.process_end.is_some() && f.supersedes(s));
                }
                (Some(_), None) => only_running += 1,
                _ => {}
            }
        }
        assert!(pairs > 500, "snapshot + final pairs: {pairs}");
        assert!(only_running > 10, "still running: {only_running}");
        assert!(a
            .iter()
            .any(|r| r.exit == Exit::Signaled && r.exit_signal.is_some()));
    }

    #[test]
    fn odd_job_ids_and_null_usernames() {
        let (_, a) = sample();
        let array: BTreeSet<&str> = a
            .iter()
            .filter_map(|r| r.job_id.as_deref())
            .filter(|j| j.contains('_'))
            .collect();
        let het: BTreeSet<&str> = a
            .iter()
            .filter_map(|r| r.job_id.as_deref())
            .filter(|j| j.contains('+'))
            .collect();
        assert!(
            array.len() > 200 && het.len() > 20,
            "{} {}",
            array.len(),
            het.len()
        );
        assert!(array.iter().all(|j| j
            .split_once('_')
            .is_some_and(|(a, t)| a.parse::<u64>().is_ok() && t.parse::<u32>().is_ok())));
        let nameless = a.iter().filter(|r| r.username.is_none()).count();
        assert!(nameless > 0 && nameless < a.len() / 10, "{nameless}");
        // A user without a name has none in every record: one uid, one user.
        let uids: BTreeSet<u32> = a
            .iter()
            .filter(|r| r.username.is_none())
            .map(|r| r.uid)
            .collect();
        assert!(a
            .iter()
            .filter(|r| uids.contains(&r.uid))
            .all(|r| r.username.is_none()));
        // Ranks with the same pid on different hosts are different processes.
        let mut pid_hosts: HashMap<(i32, i64), BTreeSet<&str>> = HashMap::new();
        for r in &a {
            pid_hosts
                .entry((r.pid, r.process_start))
                .or_default()
                .insert(&r.host);
        }
        assert!(pid_hosts.values().any(|h| h.len() > 1));
        let kinds: BTreeSet<&str> = a.iter().map(|r| r.env_kind.as_str()).collect();
        for k in ["conda", "system", "stdlib", "venv", "user"] {
            assert!(kinds.contains(k), "{k} in {kinds:?}");
        }
    }

    #[test]
    fn sampled_cpu_is_consistent_and_realistic() {
        let (_, a) = sample();
        let (mut sampled, mut unsupported, mut off) = (0, 0, 0);
        let mut totals: HashMap<(&str, i32, i64, bool), u64> = HashMap::new();
        let (mut imported, mut on_cpu) = (BTreeSet::new(), BTreeSet::new());
        let mut numpy_callers: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &a {
            match r.cpu_sampling.as_deref() {
                None => {
                    off += 1;
                    assert!(r.cpu_sample_hz.is_none());
                }
                Some("sampled") => sampled += 1,
                Some(s) => {
                    unsupported += 1;
                    assert!(pyusage_record::sampling::is_valid(s), "{s}");
                    assert_eq!(r.cpu_sample_hz, Some(samples::HZ));
                }
            }
            let counts = [
                r.cpu_samples_total,
                r.cpu_samples_self,
                r.cpu_samples_inclusive,
            ];
            if !r.is_sampled() {
                assert!(counts.iter().all(Option::is_none) && r.cpu_samples_callers.is_empty());
                continue;
            }
            assert_eq!(r.cpu_sample_hz, Some(samples::HZ));
            let [Some(total), Some(own), Some(incl)] = counts else {
                panic!("{r:?}")
            };
            assert!(own <= incl && incl <= total, "{r:?}");
            // Samples are the CPU time at 19 Hz, ±2 %.
            let cpu = r.cpu_user_us.unwrap() + r.cpu_sys_us.unwrap();
            let exact = cpu as f64 * 19.0 / 1e6;
            assert!((total as f64 - exact).abs() <= exact * 0.02 + 2.0, "{r:?}");
            let running = r.exit == Exit::Running;
            let key = (r.host.as_str(), r.pid, r.process_start, running);
            assert_eq!(*totals.entry(key).or_insert(total), total, "one total");
            let c = &r.cpu_samples_callers;
            assert!(c.len() <= 8);
            for (i, x) in c.iter().enumerate() {
                assert!(x.samples >= 1 && x.samples <= own && x.package != r.package);
                if i > 0 {
                    let prev = &c[i - 1];
                    assert!((prev.samples, &x.package) > (x.samples, &prev.package));
                }
            }
            if !running {
                imported.insert(r.package.as_str());
                if incl > 0 {
                    on_cpu.insert(r.package.as_str());
                }
                if r.package == "numpy" {
                    for x in c {
                        *numpy_callers.entry(&x.package).or_default() += x.samples;
                    }
                }
            }
        }
        let n = a.len();
        assert!(sampled > n * 8 / 10, "{sampled} of {n} sampled");
        assert!(
            unsupported > n / 100 && unsupported < n / 10,
            "{unsupported}"
        );
        assert!(off > n / 100 && off < n / 10, "{off}");
        for caller in ["xarray", "dask", "pandas", "scipy"] {
            assert!(
                numpy_callers.get(caller).is_some_and(|&s| s > 0),
                "{caller}"
            );
        }
        let never = imported.difference(&on_cpu).count();
        assert!(
            never > imported.len() / 2,
            "{never} of {} imported packages never on the CPU",
            imported.len()
        );
        for busy in ["numpy", "scipy", "torch"] {
            assert!(on_cpu.contains(busy), "{busy}");
        }
        assert!(!on_cpu.contains("tqdm") && imported.contains("tqdm"));
    }

    #[test]
    fn users_per_package_have_a_long_tail() {
        let (p, a) = sample();
        let mut users: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
        for r in &a {
            users.entry(&r.package).or_default().insert(r.uid);
        }
        let active = a.iter().map(|r| r.uid).collect::<BTreeSet<_>>().len();
        let mut by: Vec<(usize, &str)> = users.iter().map(|(k, v)| (v.len(), *k)).collect();
        by.sort_unstable_by(|a, b| b.cmp(a));
        let share = |i: usize| by[i].0 as f64 / active as f64;
        assert_eq!(by[0].1, "numpy");
        assert!(share(0) > 0.5, "numpy {:?} of {active}", by[0]);
        assert!(share(19) < 0.12, "20th {:?} of {active}", by[19]);
        assert!(share(19) > 0.01, "20th {:?} of {active}", by[19]);
        assert!(by.len() > 500, "{} packages", by.len());
        let rare = by.iter().filter(|(n, _)| *n <= 2).count();
        assert!(rare > 200, "packages of one or two users: {rare}");
        assert!(active > p.users as usize / 2, "{active} active users");
        // Several versions per package, users by version.
        let versions: BTreeSet<&str> = a
            .iter()
            .filter(|r| r.package == "numpy")
            .filter_map(|r| r.version.as_deref())
            .collect();
        assert!(versions.len() >= 3, "{versions:?}");
    }
}
