//! One analysis interface, two back ends: both take the same integer [`Chunk`]s from the scan
//! and return the same [`KindCounts`]; the report (and its floats) is built from those by
//! shared code. Only the interface and its error live here: the back ends implement it, and
//! [`crate::run`] chooses one, so neither depends on the other.
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
