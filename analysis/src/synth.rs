//! `pyusage synth`: a realistic, deterministic dataset in the record schema for tests and
//! benchmarks. Real package names with a Zipf-like popularity (numpy first), ~2,500 users,
//! jobs with a heavy-tailed node count (mean ~2.4, a few thousand-node mpi4py jobs),
//! correlated packages (xarray → dask, mpi4py ↔ astropy), several versions per package, and
//! process start times spread over a year.
use pyusage_record::{EnvKind, Exit, JobSource, Record, Source};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Packages in popularity order (rank 1 = most used), with their distribution names.
pub const PACKAGES: &[(&str, &str)] = &[
    ("numpy", "numpy"),
    ("scipy", "scipy"),
    ("matplotlib", "matplotlib"),
    ("pandas", "pandas"),
    ("mpi4py", "mpi4py"),
    ("h5py", "h5py"),
    ("yaml", "PyYAML"),
    ("astropy", "astropy"),
    ("sklearn", "scikit-learn"),
    ("numba", "numba"),
    ("xarray", "xarray"),
    ("dask", "dask"),
    ("netCDF4", "netCDF4"),
    ("torch", "torch"),
    ("tensorflow", "tensorflow"),
    ("requests", "requests"),
    ("tqdm", "tqdm"),
    ("sympy", "sympy"),
    ("seaborn", "seaborn"),
    ("numexpr", "numexpr"),
    ("cython", "Cython"),
    ("jax", "jax"),
    ("cupy", "cupy"),
    ("PIL", "Pillow"),
    ("click", "click"),
    ("jinja2", "Jinja2"),
    ("psutil", "psutil"),
    ("tables", "tables"),
    ("fitsio", "fitsio"),
    ("healpy", "healpy"),
];

const MONTH_US: i64 = 30 * 24 * 3600 * 1_000_000;
/// 2026-01-01T00:00:00Z.
const YEAR_START_US: i64 = 1_767_225_600_000_000;

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

/// Zipf-like package index (exponent ~1.1) among [`PACKAGES`].
fn package(rng: &mut ChaCha8Rng) -> usize {
    static CUMULATIVE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let cum = CUMULATIVE.get_or_init(|| {
        let mut acc = 0.0;
        (1..=PACKAGES.len())
            .map(|k| {
                acc += (k as f64).powf(-1.1);
                acc
            })
            .collect()
    });
    let x = rng.random::<f64>() * cum[cum.len() - 1];
    cum.iter()
        .position(|&c| x <= c)
        .unwrap_or(PACKAGES.len() - 1)
}

/// Rows per independently seeded block: blocks can be generated in parallel and still give
/// the same dataset for a seed.
pub const BLOCK: usize = 1_000_000;

/// The records of one block, job by job. Jobs start in time order over the year (with up to an
/// hour of jitter), so consecutive records fall into the same few `date=` partitions and files
/// stay large.
pub struct Synth {
    p: Params,
    rng: ChaCha8Rng,
    emitted: usize,
    end: usize,
    job: u64,
    pid: i32,
    pending: std::collections::VecDeque<Record>,
}

/// Number of blocks of `p`.
pub fn blocks(p: Params) -> usize {
    p.rows.div_ceil(BLOCK)
}

/// Block `k` of `p`: rows `[k * BLOCK, (k + 1) * BLOCK)`, with its own random stream and its
/// own ranges of job ids and pids.
pub fn block(p: Params, k: usize) -> Synth {
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    rng.set_stream(k as u64);
    Synth {
        p,
        rng,
        emitted: k * BLOCK,
        end: ((k + 1) * BLOCK).min(p.rows),
        job: 1_000_000 + (k * BLOCK) as u64,
        pid: 1000 + (k * BLOCK) as i32,
        pending: Default::default(),
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

impl Iterator for Synth {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.emitted >= self.end {
            return None;
        }
        if self.pending.is_empty() {
            self.next_job();
        }
        self.emitted += 1;
        self.pending.pop_front()
    }
}

impl Synth {
    /// Queues the records of one job: its ranks × its packages.
    fn next_job(&mut self) {
        let (p, rng) = (self.p, &mut self.rng);
        self.job += 1;
        let job = self.job;
        let user = rng.random_range(0..p.users.max(1));
        let nodes = node_count(rng);
        let progress = self.emitted as f64 / p.rows.max(1) as f64;
        let start = YEAR_START_US
            + (progress * (12 * MONTH_US) as f64) as i64
            + rng.random_range(0..3_600_000_000);
        let ranks = (nodes as usize).min(4);
        let pkgs = job_packages(rng, nodes);
        for rank in 0..ranks {
            self.pid += 1;
            let pid = self.pid;
            let killed = rng.random::<f64>() < 0.05;
            for &k in &pkgs {
                let (name, dist) = PACKAGES[k];
                let version = format!("{}.{}", 1 + k % 3, rng.random_range(0..4));
                let n = self.emitted + self.pending.len();
                self.pending.push_back(Record {
                    record_id: format!("synth-{}-{n}", p.seed),
                    seq: n as u64 + 1,
                    source: Source::Ebpf,
                    sources: vec![Source::Ebpf],
                    host: format!("nid{:06}", rank),
                    system: Some("synth".into()),
                    subsystem: None,
                    is_compute: true,
                    pid,
                    ppid: 1,
                    root_pid: pid,
                    process_start: start,
                    process_end: Some(start + 60_000_000),
                    exit: if killed { Exit::Signaled } else { Exit::Exited },
                    exit_code: (!killed).then_some(0),
                    exit_signal: killed.then(|| "SIGKILL".into()),
                    executable: "/usr/bin/python3.11".into(),
                    python_version: Some("3.11".into()),
                    main: Some("/home/run.py".into()),
                    uid: 10_000 + user,
                    username: Some(format!("user{user:04}")),
                    is_staff: user < 25,
                    in_container: false,
                    container_runtime: None,
                    blas: (k < 2).then(|| if user % 6 == 0 { "mkl" } else { "openblas" }.into()),
                    job_id: Some(job.to_string()),
                    step_id: Some("0".into()),
                    job_source: Some(JobSource::Cgroup),
                    rank: Some(rank as i32),
                    n_ranks: None,
                    num_nodes: nodes,
                    qos: Some("regular".into()),
                    account: Some(format!("m{:04}", user % 400)),
                    partition: Some("cpu".into()),
                    package: name.into(),
                    distribution: Some(dist.into()),
                    version: Some(version),
                    env_kind: if user % 3 == 0 {
                        EnvKind::Conda
                    } else {
                        EnvKind::System
                    },
                    env_prefix: Some("/usr".into()),
                    first_path: format!("/usr/lib/python3.11/site-packages/{name}/__init__.py"),
                    n_files: 1 + (k as u32 % 7),
                    first_seen: start + 1_000_000,
                });
            }
        }
    }
}

/// A job's package set (indices into `PACKAGES`), with the planted correlations.
fn job_packages(rng: &mut ChaCha8Rng, nodes: u32) -> Vec<usize> {
    let mut pkgs: Vec<usize> = (0..rng.random_range(1..6)).map(|_| package(rng)).collect();
    if nodes >= 1024 {
        pkgs.push(4); // the thousand-node jobs are mpi4py jobs
    }
    if pkgs.contains(&10) && rng.random::<f64>() < 0.8 {
        pkgs.push(11); // xarray → dask
    }
    if pkgs.contains(&4) && rng.random::<f64>() < 0.3 {
        pkgs.push(7); // mpi4py ↔ astropy
    }
    pkgs.sort_unstable();
    pkgs.dedup();
    pkgs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_popular_numpy_and_mean_nodes() {
        let p = Params {
            rows: 50_000,
            seed: 7,
            users: 2500,
        };
        let a = generate(p);
        assert_eq!(a.len(), 50_000);
        assert_eq!(a, generate(p), "same seed, same data");
        assert_ne!(a, generate(Params { seed: 8, ..p }));
        let count = |n: &str| a.iter().filter(|r| r.package == n).count();
        assert!(count("numpy") > count("scipy") && count("scipy") > count("healpy"));
        // Mean node count over jobs.
        let mut jobs = std::collections::HashMap::new();
        for r in &a {
            jobs.insert(r.job_id.clone(), r.num_nodes);
        }
        let mean = jobs.values().map(|&n| n as f64).sum::<f64>() / jobs.len() as f64;
        assert!((1.8..3.2).contains(&mean), "mean nodes {mean}");
    }
}
