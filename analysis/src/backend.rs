//! One analysis interface, two back ends: both take the same integer [`Chunk`]s from the scan
//! and return the same [`KindCounts`]; the report (and its floats) is built from those by
//! shared code.
use crate::{
    counts::{KindCounts, PeriodKind},
    model::{Chunk, Names},
};

/// A back end failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `--device gpu` without a usable GPU, or a CUDA error.
    #[error("GPU back end: {0}")]
    Gpu(String),
}

/// Counts distinct keys over the chunks of one run.
pub trait Backend: Sync {
    /// For the report: which back end, on what.
    fn name(&self) -> String;
    /// Takes one partition's rows; called from the scan's worker threads.
    fn add(&self, chunk: Chunk);
    /// The counts of each granularity in `kinds`; `top` sizes the pair-count rows.
    fn finish(
        self: Box<Self>,
        names: &Names,
        kinds: &[PeriodKind],
        top: usize,
    ) -> Result<Vec<(PeriodKind, KindCounts)>, BackendError>;
}

/// `--device`.
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
        Device::Cpu => Ok((Box::new(crate::cpu::Cpu::default()), None)),
        Device::Gpu => Ok((Box::new(crate::gpu::Gpu::new()?), None)),
        Device::Auto => match crate::gpu::Gpu::new() {
            Ok(g) => Ok((Box::new(g), None)),
            Err(e) => Ok((
                Box::new(crate::cpu::Cpu::default()),
                Some(format!("no usable GPU ({e}); using the CPU back end")),
            )),
        },
    }
}
