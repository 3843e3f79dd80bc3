//! One run, stage by stage: the [`crate::scan`] reads the dataset into chunks, a
//! [`Backend`] (chosen here, [`select`]) folds them into [`crate::counts`], and
//! [`crate::report`] turns those into tables. The only module that knows every stage, so each
//! stage knows no more than its own input and output.
use std::{collections::BTreeMap, path::PathBuf};

use crate::{
    backend::{Backend, BackendError},
    counts::{PeriodKind, MAX_PAIR_ROWS, SLICES},
    cpu::Cpu,
    filter::Filter,
    gpu::Gpu,
    model::Names,
    report::{self, Analysis, Header},
    scan::{self, ScanError, Selection},
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
    /// Nothing to analyse.
    #[error("no records under {0} (after date range and filters)")]
    Empty(PathBuf),
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
}

/// Runs the analysis. `note` receives one-line messages (the CPU fallback); `progress` is
/// told the number of partitions, then once per partition read.
pub fn analyze(
    o: &Options,
    note: &dyn Fn(&str),
    progress: &(dyn Fn(Option<u64>) + Sync),
) -> Result<Analysis, AnalyzeError> {
    let (backend, fallback) = select(o.device)?;
    if let Some(line) = fallback {
        note(&line);
    }
    let names = Names::default();
    let parts = scan::partitions(&o.selection)?;
    progress(Some(parts.len() as u64));
    let sink = |c| backend.add(c);
    scan::scan(&o.selection, &parts, &names, &sink, &|| progress(None))?;
    let backend_name = backend.name();
    let mut kinds = vec![PeriodKind::Month];
    kinds.extend(o.kinds.iter().filter(|&&k| k != PeriodKind::Month));
    let top = o.top.clamp(1, MAX_PAIR_ROWS - SLICES.len());
    let counts = backend.finish(&names, &kinds, top)?;
    let rows: u64 = counts[0].1.rows.iter().sum();
    if rows == 0 {
        return Err(AnalyzeError::Empty(o.selection.root.clone()));
    }
    Ok(Analysis {
        header: Header {
            dataset: o.selection.root.clone(),
            backend: backend_name,
            rows,
            range: (o.selection.from.clone(), o.selection.to.clone()),
            filters: filters_in_words(o.selection.filter.as_ref()),
            top: o.top,
        },
        periods: report::periods(&names, &counts, &o.kinds, top),
    })
}

/// The header's account of which rows each kind of table counts.
fn filters_in_words(filter: Option<&Filter>) -> BTreeMap<String, String> {
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
            filters.insert("all tables (--filter)".into(), f.to_string());
            filters.insert("job-based tables".into(), "in a job".into());
        }
    }
    filters
}
