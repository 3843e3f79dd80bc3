//! One analysis interface, two back ends: both take the same integer [`Chunk`]s from the scan
//! and return the same [`KindCounts`]; the report (and its floats) is built from those by
//! shared code. Only the interface and its error live here: the back ends implement it, and
//! [`crate::run`] chooses one, so neither depends on the other.
use crate::{
    counts::{KindCounts, PeriodKind},
    model::{Chunk, Names},
};

/// A back end failed. Only the GPU back end can (the CPU's counts cannot fail).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `--device gpu` without a usable GPU, or a CUDA error.
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

/// Why the GPU back end is unavailable or failed. Every message starts with `GPU back end: `;
/// CUDA's own error is the [`source`](std::error::Error::source), not repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No `libcuda.so` (looked for by name, as cudarc's dynamic loading does).
    #[error("GPU back end: the CUDA driver library (libcuda.so) is not installed")]
    NoDriver,
    /// No `libnvrtc.so` (idem).
    #[error("GPU back end: NVRTC (libnvrtc.so) is not installed")]
    NoNvrtc,
    /// The driver is there but device 0 could not be opened.
    #[error("GPU back end: no CUDA device")]
    NoDevice(#[source] cudarc::driver::DriverError),
    /// NVRTC rejected `kernels.cu`; `log` is its compile log (the errors, with lines).
    #[error("GPU back end: NVRTC could not compile kernels.cu:\n{log}")]
    Compile {
        /// NVRTC's compile log.
        log: String,
        /// NVRTC's status.
        #[source]
        source: cudarc::nvrtc::result::NvrtcError,
    },
    /// Another NVRTC call (creating the program, reading its log or PTX) failed.
    #[error("GPU back end: NVRTC failed")]
    Nvrtc(#[source] cudarc::nvrtc::result::NvrtcError),
    /// A CUDA call (allocation, copy, module load, launch) failed.
    #[error("GPU back end: a CUDA call failed")]
    Cuda(#[from] cudarc::driver::DriverError),
    /// Ids too large for the kernels' 64-bit key layout.
    #[error(
        "GPU back end: more distinct values than the GPU key layout holds ({packages} packages, \
         {versions} versions, {blases} BLAS, {processes} processes); use --device cpu"
    )]
    KeyLayout {
        /// Distinct packages.
        packages: usize,
        /// Distinct (package, version) pairs.
        versions: usize,
        /// Distinct BLAS backends.
        blases: usize,
        /// Processes.
        processes: u64,
    },
    /// More buckets than the row-count kernel's shared bins.
    #[error("GPU back end: more than 255 periods; narrow --from/--to")]
    TooManyPeriods,
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
