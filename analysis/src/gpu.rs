//! The GPU back end (cudarc, kernels in `kernels.cu` compiled with NVRTC at run time). The
//! kept rows are staged on the host as chunks arrive, copied to the device once, and every
//! table of every period granularity is computed there by hash-set kernels (see the `.cu`
//! file); only the dense count arrays come back.
//!
//! cudarc is built with dynamic loading, so the binary needs no CUDA to build or run; the
//! driver and NVRTC libraries are probed before any call (cudarc panics at first use when
//! they are missing) and their absence is an error `--device auto` turns into a CPU fallback.
//!
//! [`compile`] turns the kernels into PTX (also for the test that compiles them without a GPU);
//! `context` holds the rows on the device and launches the kernels.
use std::sync::{Arc, Mutex};

use cudarc::driver::CudaContext;
use rustc_hash::FxHashMap;

use crate::{
    backend::{Backend, BackendError, GpuError},
    counts::{CpuSums, Dims, KindCounts, PeriodKind},
    model::{node_bin, Chunk, Names, MAX_NODES, NODE_BINS, NO_JOB},
    state::Sampled,
};

pub mod compile;
mod context;

pub use compile::{compile_kernels, Compiled, KERNELS, NVRTC_OPTIONS};
use context::GpuContext;

/// Rows as staged on the host (the device's column layout).
#[derive(Default)]
struct Staging {
    month: Vec<u32>,
    package: Vec<u32>,
    user: Vec<u32>,
    job: Vec<u32>,
    process: Vec<u32>,
    nodes: Vec<u32>,
    bin: Vec<u32>,
    version: Vec<u32>,
    env_kind: Vec<u32>,
    blas: Vec<u32>,
    flags: Vec<u8>,
    jobs: FxHashMap<u64, u32>,
    processes: u64,
    /// (month, package) → CPU time: per-process sums, computed on the host as chunks arrive.
    cpu: FxHashMap<(u16, u32), CpuSums>,
    /// The sampled CPU: per-process sums and job keys, built and counted on the host by the
    /// CPU back end's code.
    sampled: Sampled,
}

/// The GPU back end.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    device: String,
    ptx: cudarc::nvrtc::Ptx,
    staging: Mutex<Staging>,
}

impl Gpu {
    /// Opens device 0 and compiles the kernels, or says why not.
    pub fn new() -> Result<Gpu, BackendError> {
        // SAFETY: only loads (dlopen) the library and looks up symbols; no CUDA call is made.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(GpuError::NoDriver.into());
        }
        // SAFETY: as above, for NVRTC (probed again by `compile_kernels`; here so a machine
        // without it is told so before the device is opened).
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(GpuError::NoNvrtc.into());
        }
        let ctx = CudaContext::new(0).map_err(GpuError::NoDevice)?;
        let device = ctx.name().unwrap_or_else(|_| "CUDA device 0".into());
        let ptx = compile_kernels()?.ptx;
        Ok(Gpu {
            ctx,
            device,
            ptx,
            staging: Mutex::new(Staging::default()),
        })
    }
}

impl Backend for Gpu {
    fn name(&self) -> String {
        format!("gpu ({})", self.device)
    }

    fn add(&self, c: Chunk) {
        let cpu = crate::state::chunk_cpu(&c);
        let sampled = Sampled::of(&c);
        let mut s = self.staging.lock().expect("staging");
        for (k, v) in cpu {
            s.cpu.entry(k).or_default().add(v);
        }
        s.sampled.absorb(sampled);
        let base = s.processes;
        s.processes += c.processes as u64;
        for i in 0..c.len() {
            let j = match c.job[i] {
                NO_JOB => u32::MAX,
                j => {
                    let next = s.jobs.len() as u32;
                    *s.jobs.entry(j).or_insert(next)
                }
            };
            s.job.push(j);
            s.process.push((base + c.process[i] as u64) as u32);
            s.bin.push(node_bin(c.nodes[i]));
        }
        s.month.extend(c.month.iter().map(|&m| m as u32));
        s.package.extend(&c.package);
        s.user.extend(&c.user);
        s.nodes.extend(&c.nodes);
        s.version.extend(&c.version);
        s.env_kind.extend(&c.env_kind);
        s.blas.extend(&c.blas);
        s.flags.extend(&c.flags);
    }

    fn finish(
        self: Box<Self>,
        names: &Names,
        kinds: &[PeriodKind],
        top: usize,
    ) -> Result<Vec<(PeriodKind, KindCounts)>, BackendError> {
        let mut s = self.staging.into_inner().expect("staging");
        let d = Dims::of(names, 0);
        let packages = names.packages.lock().expect("lock");
        let wide = (d.packages * NODE_BINS as usize)
            .max(d.packages * d.env_kinds)
            .max(d.versions)
            .max(MAX_NODES as usize);
        if wide >= 1 << 24 || d.blases >= 63 || s.processes >= u32::MAX as u64 {
            return Err(GpuError::KeyLayout {
                packages: d.packages,
                versions: d.versions,
                blases: d.blases,
                processes: s.processes,
            }
            .into());
        }
        let mut months: Vec<u16> = s.month.iter().map(|&m| m as u16).collect();
        months.sort_unstable();
        months.dedup();
        if months.is_empty() {
            // Nothing kept: no device work (and no zero-sized allocations).
            let empty = |&kind| (kind, KindCounts::zeroed(Vec::new(), d));
            return Ok(kinds.iter().map(empty).collect());
        }
        let sampled = s.sampled.counts(&months, kinds, d.packages);
        let dev = GpuContext::new(&self.ctx, &self.ptx, &s).map_err(GpuError::from)?;
        let mut out = Vec::new();
        for (&kind, sampled) in kinds.iter().zip(sampled) {
            let (buckets, lut) = kind.layout(&months);
            if buckets.len() > 255 {
                return Err(GpuError::TooManyPeriods.into());
            }
            let d = Dims {
                buckets: buckets.len(),
                ..d
            };
            let mut k = dev
                .kind_counts(buckets, &lut, months[0] as u32, d, &packages, top)
                .map_err(GpuError::from)?;
            for (&(m, p), &sums) in &s.cpu {
                let b = lut[(m - months[0]) as usize] as usize;
                k.cpu.add_at(b * d.packages + p as usize, sums);
            }
            k.sampled = sampled;
            out.push((kind, k));
        }
        Ok(out)
    }
}
