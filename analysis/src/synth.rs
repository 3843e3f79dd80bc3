//! `pyusage synth`: a realistic, deterministic dataset in the record schema for tests and
//! benchmarks. Real package names with a Zipf-like popularity (numpy first), ~2,500 users,
//! jobs with a heavy-tailed node count (mean ~2.4, a few thousand-node mpi4py jobs),
//! correlated packages (xarray → dask, mpi4py ↔ astropy), several versions per package, and
//! process start times spread over a year.
use pyusage_record::Record;
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
    let weights: f64 = (1..=PACKAGES.len()).map(|k| (k as f64).powf(-1.1)).sum();
    let mut x = rng.random::<f64>() * weights;
    for k in 1..=PACKAGES.len() {
        x -= (k as f64).powf(-1.1);
        if x <= 0.0 {
            return k - 1;
        }
    }
    PACKAGES.len() - 1
}

/// Generates the records, process by process.
pub fn generate(p: Params) -> Vec<Record> {
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let mut out = Vec::with_capacity(p.rows);
    let mut job = 1_000_000u64;
    let mut pid = 1000i32;
    while out.len() < p.rows {
        job += 1;
        let user = rng.random_range(0..p.users.max(1));
        let nodes = node_count(&mut rng);
        let start = YEAR_START_US + rng.random_range(0..12 * MONTH_US);
        let ranks = (nodes as usize).min(4);
        // The job's package set, with correlations.
        let mut pkgs: Vec<usize> = (0..rng.random_range(1..6))
            .map(|_| package(&mut rng))
            .collect();
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
        for rank in 0..ranks {
            pid += 1;
            let killed = rng.random::<f64>() < 0.05;
            for &k in &pkgs {
                let (name, dist) = PACKAGES[k];
                let version = format!("{}.{}", 1 + k % 3, rng.random_range(0..4));
                out.push(Record {
                    record_id: format!("synth-{}-{}", p.seed, out.len()),
                    seq: out.len() as u64 + 1,
                    source: "ebpf".into(),
                    host: format!("nid{:06}", rank),
                    system: Some("synth".into()),
                    subsystem: None,
                    is_compute: true,
                    pid,
                    ppid: 1,
                    root_pid: pid,
                    process_start: start,
                    process_end: Some(start + 60_000_000),
                    exit: if killed { "signaled" } else { "exited" }.into(),
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
                    rank: Some(rank as i32),
                    n_ranks: None,
                    num_nodes: nodes,
                    qos: Some("regular".into()),
                    account: Some(format!("m{:04}", user % 400)),
                    partition: Some("cpu".into()),
                    package: name.into(),
                    distribution: Some(dist.into()),
                    version: Some(version),
                    env_kind: if user % 3 == 0 { "conda" } else { "system" }.into(),
                    env_prefix: Some("/usr".into()),
                    first_path: format!("/usr/lib/python3.11/site-packages/{name}/__init__.py"),
                    n_files: 1 + (k as u32 % 7),
                    first_seen: start + 1_000_000,
                });
                if out.len() >= p.rows {
                    return out;
                }
            }
        }
    }
    out
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
