//! The CPU sampler's fields of a synthetic process: whether it was sampled, and per package
//! its self and inclusive samples and who called it — consistent with the process's CPU time
//! and with each other, and a function of the process alone (no draw from the block's random
//! stream, so every other field of the dataset stays as it was).
//!
//! Most processes are sampled at [`HZ`]; one in 25 is `unsupported:<reason>` and those
//! without a CPU time (one in 20) are not sampled at all. A process's samples are its CPU
//! time × [`HZ`] (±2 %); a part of them (10–40 %) is the main script's and the interpreter's,
//! the rest is split over its packages by how much compute they do ([`WEIGHTS`]: numpy, torch
//! and scipy a lot, `yaml` little, `tqdm`, `click` and most of the long tail nothing, though
//! imported), and in some processes a package does not run at all. Callers follow [`CALLERS`] (numpy under xarray, dask, pandas, scipy, …): of a
//! package's self samples a share ran under each caller the process imported, which adds them
//! to the caller's inclusive samples.
use pyusage_record::{sampling, CallerSamples};

use super::{mix, universe, Package};

/// The sampling rate of the synthetic nodes, samples per CPU-second.
pub const HZ: u32 = 19;

/// Why a synthetic process could not be sampled.
const REASONS: [&str; 3] = [
    "unsupported:read-stalled",
    "unsupported:debug-build",
    "unsupported:free-threaded",
];

/// How much of a process's time a package's own code takes, relative (real packages; the
/// ones not listed take none).
const WEIGHTS: &[(&str, u32)] = &[
    ("numpy", 100),
    ("torch", 120),
    ("tensorflow", 100),
    ("jax", 80),
    ("cupy", 60),
    ("numba", 60),
    ("scipy", 50),
    ("pandas", 40),
    ("sklearn", 40),
    ("sympy", 30),
    ("camb", 30),
    ("dask", 20),
    ("h5py", 20),
    ("astropy", 20),
    ("numexpr", 20),
    ("healpy", 20),
    ("statsmodels", 20),
    ("networkx", 20),
    ("xarray", 15),
    ("netCDF4", 15),
    ("matplotlib", 15),
    ("pyarrow", 15),
    ("mpi4py", 10),
    ("zarr", 10),
    ("numcodecs", 10),
    ("shapely", 10),
    ("tables", 10),
    ("fitsio", 10),
    ("lmfit", 10),
    ("emcee", 10),
    ("multiprocessing", 5),
    ("seaborn", 5),
    ("PIL", 5),
    ("joblib", 5),
    ("pyproj", 5),
    ("cartopy", 5),
    ("concurrent", 3),
    ("asyncio", 2),
    ("IPython", 2),
    ("yaml", 1),
    ("requests", 1),
];

/// Callee → (caller, per mille of the callee's self samples that ran under that caller).
const CALLERS: &[(&str, &[(&str, u64)])] = &[
    (
        "numpy",
        &[
            ("xarray", 350),
            ("dask", 300),
            ("pandas", 250),
            ("scipy", 200),
            ("sklearn", 200),
            ("astropy", 150),
            ("numba", 100),
            ("matplotlib", 80),
            ("h5py", 60),
        ],
    ),
    (
        "scipy",
        &[
            ("sklearn", 400),
            ("statsmodels", 300),
            ("astropy", 200),
            ("lmfit", 300),
        ],
    ),
    (
        "pandas",
        &[("xarray", 300), ("seaborn", 200), ("statsmodels", 250)],
    ),
    ("dask", &[("xarray", 600)]),
    ("h5py", &[("xarray", 200), ("netCDF4", 100)]),
    ("netCDF4", &[("xarray", 700)]),
    ("numcodecs", &[("zarr", 900)]),
    ("zarr", &[("xarray", 400), ("dask", 300)]),
    ("torch", &[("multiprocessing", 50)]),
    ("numexpr", &[("pandas", 500)]),
];

/// One package's sample fields in a sampled process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageSamples {
    /// Self samples.
    pub own: u64,
    /// Inclusive samples.
    pub inclusive: u64,
    /// Callers, largest first (at most [`sampling::MAX_CALLERS`], none with 0 samples).
    pub callers: Vec<CallerSamples>,
}

/// A process's sampler fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sampled {
    /// Not sampled: every field null.
    Off,
    /// The sampler could not read it: `cpu_sampling` is the reason, the counts are null.
    Unsupported(&'static str),
    /// Sampled: the process's samples and each package's, in the order of its packages.
    On {
        /// All threads' samples.
        total: u64,
        /// Per package (the process's packages, ascending).
        packages: Vec<PackageSamples>,
    },
}

/// The sampler's fields of a process with CPU time `cpu_us` (the final record's; `None`:
/// unknown) and `pkgs` (indices into the package universe, ascending); `h` is a hash of the
/// process.
pub fn of_process(h: u64, cpu_us: Option<u64>, pkgs: &[u32]) -> Sampled {
    let Some(cpu_us) = cpu_us else {
        return Sampled::Off;
    };
    if h % 25 == 3 {
        return Sampled::Unsupported(REASONS[(h / 25 % 3) as usize]);
    }
    let uni = universe();
    // ±2 % around CPU time × rate.
    let exact = cpu_us as u128 * HZ as u128 / 1_000_000;
    let total = (exact * (980 + (mix(h ^ 1) % 41) as u128) / 1000) as u64;
    let main_pm = 100 + mix(h ^ 2) % 301;
    let for_packages = total - total * main_pm / 1000;
    // A package a process imports may still never run there (imported by another package,
    // or for a code path not taken): one process in 7 for the heaviest, 2 in 5 for the others.
    let weights: Vec<u64> = pkgs
        .iter()
        .map(|&k| {
            let w = weight(&uni[k as usize]);
            let idle = mix(h ^ 5 ^ (k as u64) << 8) % 100 < if w >= 50 { 15 } else { 40 };
            if idle {
                0
            } else {
                w * (20 + mix(h ^ 3 ^ k as u64) % 161)
            }
        })
        .collect();
    let sum: u64 = weights.iter().sum();
    let mut packages: Vec<PackageSamples> = weights
        .iter()
        .map(|&w| PackageSamples {
            own: if sum == 0 {
                0
            } else {
                (for_packages as u128 * w as u128 / sum as u128) as u64
            },
            ..PackageSamples::default()
        })
        .collect();
    for (i, &k) in pkgs.iter().enumerate() {
        let own = packages[i].own;
        packages[i].inclusive += own;
        if own == 0 {
            continue;
        }
        let name = uni[k as usize].name.as_str();
        let Some((_, callers)) = CALLERS.iter().find(|c| c.0 == name) else {
            continue;
        };
        let mut list: Vec<CallerSamples> = Vec::new();
        for &(caller, pm) in *callers {
            let Some(j) = pkgs.iter().position(|&q| uni[q as usize].name == caller) else {
                continue;
            };
            // The share varies from process to process: half to one and a half times `pm`.
            let pm = pm * (50 + mix(h ^ 4 ^ (k as u64) << 16 ^ j as u64) % 101) / 100;
            let samples = own * pm.min(1000) / 1000;
            if samples > 0 {
                packages[j].inclusive += samples;
                list.push(CallerSamples {
                    package: caller.to_owned(),
                    samples,
                });
            }
        }
        packages[i].callers = ordered(list);
    }
    Sampled::On { total, packages }
}

/// Callers by samples descending, then name; at most [`sampling::MAX_CALLERS`].
fn ordered(mut v: Vec<CallerSamples>) -> Vec<CallerSamples> {
    v.sort_by(|a, b| {
        b.samples
            .cmp(&a.samples)
            .then_with(|| a.package.cmp(&b.package))
    });
    v.truncate(sampling::MAX_CALLERS);
    v
}

/// A package's compute weight: [`WEIGHTS`], and for one tail package in five a little.
fn weight(p: &Package) -> u64 {
    if p.tail {
        let h = p.name.bytes().fold(0, |h, b| mix(h ^ b as u64));
        return u64::from(h.is_multiple_of(5));
    }
    WEIGHTS
        .iter()
        .find(|w| w.0 == p.name)
        .map_or(0, |w| w.1 as u64)
}

/// The fields of one record: package `i` of the process; a `running` snapshot has half of
/// every count (its CPU time is half the final one's).
pub struct Fields {
    /// `cpu_sampling`.
    pub status: Option<String>,
    /// `cpu_sample_hz`.
    pub hz: Option<u32>,
    /// `cpu_samples_total`, `cpu_samples_self`, `cpu_samples_inclusive`.
    pub counts: Option<(u64, u64, u64)>,
    /// `cpu_samples_callers`.
    pub callers: Vec<CallerSamples>,
}

impl Sampled {
    /// The record fields of package `i` (its position among the process's packages).
    pub fn fields(&self, i: usize, running: bool) -> Fields {
        let half = |x: u64| if running { x / 2 } else { x };
        match self {
            Sampled::Off => Fields {
                status: None,
                hz: None,
                counts: None,
                callers: Vec::new(),
            },
            Sampled::Unsupported(why) => Fields {
                status: Some((*why).to_owned()),
                hz: Some(HZ),
                counts: None,
                callers: Vec::new(),
            },
            Sampled::On { total, packages } => {
                let p = &packages[i];
                // Halving can tie two callers: ordered again.
                let callers = ordered(
                    p.callers
                        .iter()
                        .map(|c| CallerSamples {
                            package: c.package.clone(),
                            samples: half(c.samples),
                        })
                        .filter(|c| c.samples > 0)
                        .collect(),
                );
                Fields {
                    status: Some(sampling::SAMPLED.to_owned()),
                    hz: Some(HZ),
                    counts: Some((half(*total), half(p.own), half(p.inclusive))),
                    callers,
                }
            }
        }
    }
}
