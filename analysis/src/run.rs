//! One run, stage by stage: the [`crate::scan`] reads the dataset into chunks, a
//! [`Backend`] (chosen here, [`select`]) folds them into [`crate::counts`], and
//! [`crate::report`] turns those into tables. The only module that knows every stage, so each
//! stage knows no more than its own input and output.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use pyusage_record::atomic::Durability;
use rayon::prelude::*;

use crate::{
    accounting::{Accounting, AccountingError},
    backend::{Backend, BackendError},
    cache::{self, CacheError, CacheStats},
    counts::{KindCounts, PeriodKind, MAX_PAIR_ROWS, SLICES},
    cpu::Cpu,
    filter::Filter,
    gpu::Gpu,
    model::Names,
    report::{self, Analysis, Header},
    scan::{self, ScanError, Selection},
    state::{
        file::{self, Meta, StateFileError},
        State,
    },
};

/// `--device`: which back end computes the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The GPU when a CUDA driver and device are present, else the CPU (with one line saying so).
    Auto,
    /// The CPU.
    Cpu,
    /// The GPU, or an error.
    Gpu,
}

/// The back end for `device`, and a line to print when `auto` fell back to the CPU.
pub fn select(device: Device) -> Result<(Box<dyn Backend>, Option<String>), BackendError> {
    match device {
        Device::Cpu => Ok((Box::new(Cpu::default()), None)),
        Device::Gpu => Ok((Box::new(Gpu::new()?), None)),
        Device::Auto => match Gpu::new() {
            Ok(g) => Ok((Box::new(g), None)),
            Err(e) => Ok((
                Box::new(Cpu::default()),
                Some(format!(
                    "no usable GPU ({}); using the CPU back end",
                    pyusage_record::error_line(&e)
                )),
            )),
        },
    }
}

/// Failures of a run.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// Reading the dataset.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The back end.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The cache.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A state file (`--partial`, `merge`).
    #[error(transparent)]
    State(#[from] StateFileError),
    /// The `--jobs` file.
    #[error(transparent)]
    Accounting(#[from] AccountingError),
    /// Nothing to analyse.
    #[error("no records under {0} (after date range and filters)")]
    Empty(String),
    /// `--device gpu` with `--cache` or `--partial`, which work on the CPU's state.
    #[error(
        "--cache and --partial keep the CPU back end's mergeable state; use --device cpu or auto"
    )]
    GpuState,
    /// Partials that cannot be merged.
    #[error("cannot merge {}: {why}", path.display())]
    Mismatch {
        /// The partial that disagrees with the first.
        path: PathBuf,
        /// How.
        why: String,
    },
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to read.
    pub selection: Selection,
    /// Back end.
    pub device: Device,
    /// Granularities (the month counts are always computed: they feed the monthly trends).
    pub kinds: Vec<PeriodKind>,
    /// Packages per top list (≤ 60, so pair rows fit a 64-bit job mask).
    pub top: usize,
    /// `--cache`: keep each partition's state here and reuse it.
    pub cache: Option<PathBuf>,
    /// `--jobs`: the scheduler's accounting (`sacct --parsable2`) to join by job id.
    pub jobs: Option<PathBuf>,
}

/// What a run did besides its report, for its summary line.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunStats {
    /// Partitions in the selection.
    pub partitions: u64,
    /// With `--cache`: what the cache did.
    pub cache: Option<CacheStats>,
    /// Seconds spent counting after the last partition was read (the back end's `finish`:
    /// on the GPU, the copy to the device and the kernels); the rest of a run is reading and
    /// decoding Parquet. Zero on the state path, which counts while it reads.
    pub count_s: f64,
}

/// Runs the analysis. `note` receives one-line messages (the CPU fallback); `progress` is
/// told the number of partitions, then once per partition read.
pub fn analyze(
    o: &Options,
    note: &dyn Fn(&str),
    progress: &(dyn Fn(Option<u64>) + Sync),
) -> Result<(Analysis, RunStats), AnalyzeError> {
    let parts = scan::partitions(&o.selection)?;
    progress(Some(parts.len() as u64));
    let mut stats = RunStats {
        partitions: parts.len() as u64,
        ..RunStats::default()
    };
    let names = Names::default();
    let mut meta = cache::meta_of(&o.selection);
    meta.dates = parts.iter().map(|p| p.0.clone()).collect();
    if o.cache.is_some() || o.jobs.is_some() {
        if o.device == Device::Gpu {
            return Err(AnalyzeError::GpuState);
        }
        let accounting = o.jobs.as_deref().map(Accounting::read).transpose()?;
        if let Some(a) = &accounting {
            for line in &a.bad_lines {
                note(&format!("--jobs: {line} (line skipped)"));
            }
        }
        let cache = o.cache.as_deref();
        let (state, cs) = cache::fold(&o.selection, &parts, cache, &names, &|| progress(None))?;
        stats.cache = cache.map(|_| cs);
        let analysis = report_of(
            state,
            &names,
            &meta,
            &o.kinds,
            o.top,
            Cpu::default().name(),
            accounting.as_ref(),
        )?;
        return Ok((analysis, stats));
    }
    let (backend, fallback) = select(o.device)?;
    if let Some(line) = fallback {
        note(&line);
    }
    let sink = |_: &str, c| backend.add(c);
    scan::scan(&o.selection, &parts, &names, &sink, &|| progress(None))?;
    let backend_name = backend.name();
    let kinds = with_months(&o.kinds);
    let top = clamp_top(o.top);
    let counting = std::time::Instant::now();
    let counts = backend.finish(&names, &kinds, top)?;
    stats.count_s = counting.elapsed().as_secs_f64();
    Ok((
        analysis_of(&names, &counts, &meta, &o.kinds, o.top, backend_name, None)?,
        stats,
    ))
}

/// `--partial OUT`: folds the selection (through the cache, if any) and writes its state to
/// `out` for `merge`. Returns the rows kept and the run's stats.
pub fn partial(
    o: &Options,
    out: &Path,
    progress: &(dyn Fn(Option<u64>) + Sync),
) -> Result<(u64, RunStats), AnalyzeError> {
    if o.device == Device::Gpu {
        return Err(AnalyzeError::GpuState);
    }
    let parts = scan::partitions(&o.selection)?;
    progress(Some(parts.len() as u64));
    let names = Names::default();
    let (state, cs) = cache::fold(&o.selection, &parts, o.cache.as_deref(), &names, &|| {
        progress(None)
    })?;
    let mut meta = cache::meta_of(&o.selection);
    meta.dates = parts.iter().map(|p| p.0.clone()).collect();
    file::save(out, &state, &names, &meta, Durability::Durable)?;
    let stats = RunStats {
        partitions: parts.len() as u64,
        cache: o.cache.as_ref().map(|_| cs),
        count_s: 0.0,
    };
    Ok((state.rows(), stats))
}

/// `analyze merge`: the report of the union of the shards whose partials are `paths` —
/// identical to a single run over the same data. The shards must have kept rows by the
/// same rules and not overlap: no date read twice for the same hosts.
pub fn merge(
    paths: &[PathBuf],
    kinds: &[PeriodKind],
    top: usize,
    accounting: Option<&Accounting>,
) -> Result<Analysis, AnalyzeError> {
    let names = Names::default();
    let mut state = State::default();
    let mut metas: Vec<(PathBuf, Meta)> = Vec::new();
    let loaded: Vec<Result<(State, Meta), StateFileError>> =
        paths.par_iter().map(|p| file::load(p, &names)).collect();
    for (p, r) in paths.iter().zip(loaded) {
        let (s, m) = r?;
        check_mergeable(&metas, p, &m)?;
        state.absorb(s);
        metas.push((p.clone(), m));
    }
    let mut datasets: Vec<&str> = metas.iter().map(|(_, m)| m.dataset.as_str()).collect();
    datasets.sort_unstable();
    datasets.dedup();
    let mut dates: Vec<String> = metas.iter().flat_map(|(_, m)| m.dates.clone()).collect();
    dates.sort_unstable();
    dates.dedup();
    let meta = Meta {
        dataset: datasets.join(", "),
        filter: metas
            .first()
            .map(|(_, m)| m.filter.clone())
            .unwrap_or_default(),
        hosts: None,
        dates,
        files: Vec::new(),
    };
    report_of(
        state,
        &names,
        &meta,
        kinds,
        top,
        Cpu::default().name(),
        accounting,
    )
}

/// A partial `m` (from `path`) can join `seen` if it kept rows by the same filter and reads
/// no date that a partial of the same host group already read.
fn check_mergeable(seen: &[(PathBuf, Meta)], path: &Path, m: &Meta) -> Result<(), AnalyzeError> {
    let mismatch = |why: String| {
        Err(AnalyzeError::Mismatch {
            path: path.to_path_buf(),
            why,
        })
    };
    for (q, s) in seen {
        if s.filter != m.filter {
            return mismatch(format!(
                "its filter ({:?}) differs from that of {} ({:?})",
                m.filter,
                q.display(),
                s.filter
            ));
        }
        if s.hosts == m.hosts {
            if let Some(d) = m.dates.iter().find(|d| s.dates.binary_search(d).is_ok()) {
                return mismatch(format!(
                    "it overlaps {} (both read date={d}{}); shards must be disjoint",
                    q.display(),
                    m.hosts
                        .as_deref()
                        .map(|h| format!(" for hosts {h}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok(())
}

/// Month counts always, then the others requested.
fn with_months(kinds: &[PeriodKind]) -> Vec<PeriodKind> {
    let mut all = vec![PeriodKind::Month];
    all.extend(kinds.iter().filter(|&&k| k != PeriodKind::Month));
    all
}

/// The pair rows hold `top` packages plus the slice packages in 64 bits.
fn clamp_top(top: usize) -> usize {
    top.clamp(1, MAX_PAIR_ROWS - SLICES.len())
}

/// The report of a merged state.
fn report_of(
    state: State,
    names: &Names,
    meta: &Meta,
    kinds: &[PeriodKind],
    top: usize,
    backend: String,
    accounting: Option<&Accounting>,
) -> Result<Analysis, AnalyzeError> {
    let counts = state.counts(names, &with_months(kinds), clamp_top(top), accounting);
    analysis_of(
        names,
        &counts,
        meta,
        kinds,
        top,
        backend,
        accounting.map(|a| &a.accounts[..]),
    )
}

/// The report from the counts: the header from `meta` (what was read, and how).
fn analysis_of(
    names: &Names,
    counts: &[(PeriodKind, KindCounts)],
    meta: &Meta,
    kinds: &[PeriodKind],
    top: usize,
    backend: String,
    accounts: Option<&[String]>,
) -> Result<Analysis, AnalyzeError> {
    let rows: u64 = counts[0].1.rows.iter().sum();
    if rows == 0 {
        return Err(AnalyzeError::Empty(meta.dataset.clone()));
    }
    let filter = (!meta.filter.is_empty()).then_some(meta.filter.as_str());
    Ok(Analysis {
        header: Header {
            dataset: PathBuf::from(&meta.dataset),
            backend,
            rows,
            dates: (meta.dates.first().cloned(), meta.dates.last().cloned()),
            filters: filters_in_words(filter),
            top,
        },
        periods: report::periods(names, counts, kinds, clamp_top(top), accounts),
    })
}

/// The header's account of which rows each kind of table counts (`filter`: `--filter`'s
/// canonical text).
fn filters_in_words(filter: Option<&str>) -> BTreeMap<String, String> {
    let mut filters = BTreeMap::new();
    match filter {
        None => {
            filters.insert("all tables".into(), Filter::PAPER.into());
            filters.insert(
                "job-based tables (job sizes, package x job size, correlations)".into(),
                "is_compute == true, in a job".into(),
            );
        }
        Some(f) => {
            filters.insert("all tables (--filter)".into(), f.to_owned());
            filters.insert("job-based tables".into(), "in a job".into());
        }
    }
    filters
}
