//! The GPU back end (cudarc, kernels in `kernels.cu` compiled with NVRTC at run time). The
//! kept rows are staged on the host as chunks arrive, copied to the device once, and every
//! table of every period granularity is computed there by hash-set kernels (see the `.cu`
//! file); only the dense count arrays come back.
//!
//! cudarc is built with dynamic loading, so the binary needs no CUDA to build or run; the
//! driver and NVRTC libraries are probed before any call (cudarc panics at first use when
//! they are missing) and their absence is an error `--device auto` turns into a CPU fallback.
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use rustc_hash::FxHashMap;

use crate::{
    backend::{Backend, BackendError},
    counts::{pair_rows, Dims, KindCounts, PeriodKind, MAX_PAIR_ROWS},
    model::{flag, node_bin, Chunk, Interner, Names, MAX_NODES, NODE_BINS, NO_JOB},
};

const SOURCE: &str = include_str!("kernels.cu");

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
}

/// The GPU back end.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    device: String,
    ptx: cudarc::nvrtc::Ptx,
    staging: Mutex<Staging>,
}

fn gpu_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Gpu(e.to_string())
}

impl Gpu {
    /// Opens device 0 and compiles the kernels, or says why not.
    pub fn new() -> Result<Gpu, BackendError> {
        // SAFETY: only loads (dlopen) the library and looks up symbols; no CUDA call is made.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(gpu_err(
                "the CUDA driver library (libcuda.so) is not installed",
            ));
        }
        // SAFETY: as above, for NVRTC.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(gpu_err("NVRTC (libnvrtc.so) is not installed"));
        }
        let ctx = CudaContext::new(0).map_err(|e| gpu_err(format!("no CUDA device: {e}")))?;
        let device = ctx.name().unwrap_or_else(|_| "CUDA device 0".into());
        let ptx = cudarc::nvrtc::compile_ptx(SOURCE).map_err(|e| gpu_err(format!("NVRTC: {e}")))?;
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
        let mut s = self.staging.lock().expect("staging");
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
        let s = self.staging.into_inner().expect("staging");
        let d = Dims::of(names, 0);
        let packages = names.packages.lock().expect("lock");
        let wide = (d.packages * NODE_BINS as usize)
            .max(d.versions)
            .max(MAX_NODES as usize);
        if wide >= 1 << 24 || d.blases >= 63 || s.processes >= u32::MAX as u64 {
            return Err(gpu_err(format!(
                "more distinct values than the GPU key layout holds ({} packages, {} versions, \
                 {} BLAS, {} processes); use --device cpu",
                d.packages, d.versions, d.blases, s.processes
            )));
        }
        let mut months: Vec<u16> = s.month.iter().map(|&m| m as u16).collect();
        months.sort_unstable();
        months.dedup();
        if months.is_empty() {
            // Nothing kept: no device work (and no zero-sized allocations).
            let empty = |&kind| (kind, KindCounts::zeroed(Vec::new(), d));
            return Ok(kinds.iter().map(empty).collect());
        }
        let dev = Device::new(&self.ctx, &self.ptx, &s).map_err(gpu_err)?;
        let mut out = Vec::new();
        for &kind in kinds {
            let (buckets, lut) = kind.layout(&months);
            if buckets.len() > 255 {
                return Err(gpu_err("more than 255 periods; narrow --from/--to"));
            }
            let d = Dims {
                buckets: buckets.len(),
                ..d
            };
            let k = dev
                .kind_counts(buckets, &lut, months[0] as u32, d, &packages, top)
                .map_err(gpu_err)?;
            out.push((kind, k));
        }
        Ok(out)
    }
}

/// The rows on the device and the compiled kernels.
struct Device {
    stream: Arc<CudaStream>,
    f: FxHashMap<&'static str, CudaFunction>,
    n: u64,
    month: CudaSlice<u32>,
    package: CudaSlice<u32>,
    user: CudaSlice<u32>,
    job: CudaSlice<u32>,
    process: CudaSlice<u32>,
    nodes: CudaSlice<u32>,
    bin: CudaSlice<u32>,
    version: CudaSlice<u32>,
    env_kind: CudaSlice<u32>,
    blas: CudaSlice<u32>,
    flags: CudaSlice<u8>,
    /// Hash set (and mask table keys) with a power-of-two capacity ≥ 2 × rows.
    set: CudaSlice<u64>,
    keys: CudaSlice<u64>,
    vals: CudaSlice<u64>,
    cap: u64,
}

type Res<T> = Result<T, cudarc::driver::DriverError>;

const KERNELS: &[&str] = &[
    "fill",
    "count_rows",
    "distinct_count",
    "job_masks",
    "pairs",
    "blas_masks",
    "blas_count",
];

fn grid(n: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 8192) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Which columns a distinct count reads: x = xa * xmul + xb, y.
struct Key<'a> {
    need: u8,
    xa: Option<(&'a CudaSlice<u32>, u32)>,
    xb: Option<&'a CudaSlice<u32>>,
    y: &'a CudaSlice<u32>,
    width: usize,
}

impl Device {
    fn new(ctx: &Arc<CudaContext>, ptx: &cudarc::nvrtc::Ptx, s: &Staging) -> Res<Device> {
        let stream = ctx.default_stream();
        let module = ctx.load_module(ptx.clone())?;
        let mut f = FxHashMap::default();
        for k in KERNELS {
            f.insert(*k, module.load_function(k)?);
        }
        let n = s.month.len() as u64;
        let cap = (2 * n).max(1024).next_power_of_two();
        let up = |v: &Vec<u32>| stream.clone_htod(v);
        Ok(Device {
            n,
            month: up(&s.month)?,
            package: up(&s.package)?,
            user: up(&s.user)?,
            job: up(&s.job)?,
            process: up(&s.process)?,
            nodes: up(&s.nodes)?,
            bin: up(&s.bin)?,
            version: up(&s.version)?,
            env_kind: up(&s.env_kind)?,
            blas: up(&s.blas)?,
            flags: stream.clone_htod(&s.flags)?,
            set: stream.alloc_zeros(cap as usize)?,
            keys: stream.alloc_zeros(cap as usize)?,
            vals: stream.alloc_zeros(cap as usize)?,
            cap,
            f,
            stream,
        })
    }

    fn clear(&self, which: &CudaSlice<u64>, value: u64) -> Res<()> {
        let mut b = self.stream.launch_builder(&self.f["fill"]);
        b.arg(which).arg(&self.cap).arg(&value);
        // SAFETY: `fill` writes cap elements of a buffer allocated with cap elements.
        unsafe { b.launch(grid(self.cap)) }?;
        Ok(())
    }

    fn distinct(&self, lut: &CudaSlice<u32>, m0: u32, buckets: usize, k: Key<'_>) -> Res<Vec<u64>> {
        self.clear(&self.set, u64::MAX)?;
        let out: CudaSlice<u64> = self.stream.alloc_zeros(buckets * k.width)?;
        let mask = self.cap - 1;
        let need = k.need as u32;
        let (xa, has_xa, xmul) = match k.xa {
            Some((c, m)) => (c, 1u32, m),
            None => (&self.package, 0, 0),
        };
        let (xb, has_xb) = match k.xb {
            Some(c) => (c, 1u32),
            None => (&self.package, 0),
        };
        let width = k.width as u32;
        let mut b = self.stream.launch_builder(&self.f["distinct_count"]);
        b.arg(&self.n)
            .arg(&self.month)
            .arg(lut)
            .arg(&m0)
            .arg(&self.flags)
            .arg(&need);
        b.arg(xa)
            .arg(&has_xa)
            .arg(&xmul)
            .arg(xb)
            .arg(&has_xb)
            .arg(k.y);
        b.arg(&self.set).arg(&mask).arg(&out).arg(&width);
        // SAFETY: every column has n elements; the set has cap (a power of two) slots and at
        // most n keys; x < width and bucket < buckets by construction of the LUT and Dims.
        unsafe { b.launch(grid(self.n)) }?;
        self.stream.clone_dtoh(&out)
    }

    fn kind_counts(
        &self,
        buckets: Vec<u32>,
        lut: &[u32],
        m0: u32,
        d: Dims,
        packages: &Interner,
        top: usize,
    ) -> Res<KindCounts> {
        let nb = d.buckets;
        let lut_d = self.stream.clone_htod(lut)?;
        let mut k = KindCounts::zeroed(buckets, d);
        let rows_d: CudaSlice<u64> = self.stream.alloc_zeros(nb)?;
        let nb32 = nb as u32;
        let mut b = self.stream.launch_builder(&self.f["count_rows"]);
        b.arg(&self.n)
            .arg(&self.month)
            .arg(&lut_d)
            .arg(&m0)
            .arg(&nb32)
            .arg(&rows_d);
        // SAFETY: nb ≤ 255 < the kernel's 256 shared bins; every LUT entry is < nb.
        unsafe { b.launch(grid(self.n)) }?;
        k.rows = self.stream.clone_dtoh(&rows_d)?;
        let np = d.packages;
        let job_rows = flag::KEEP_JOB | flag::HAS_JOB;
        let count = |need, xa, xb, y, width| {
            let key = Key {
                need,
                xa,
                xb,
                y,
                width,
            };
            self.distinct(&lut_d, m0, nb, key)
        };
        let (user, job, process) = (&self.user, &self.job, &self.process);
        let pkg = Some((&self.package, 1));
        let ver = Some((&self.version, 1));
        let env = Some((&self.env_kind, 1));
        let nodes = Some((&self.nodes, 1));
        let pkg_bins = Some((&self.package, NODE_BINS));
        let (nv, ne, nn) = (d.versions, d.env_kinds, MAX_NODES as usize);
        k.by_user = count(0, pkg, None, user, np)?;
        k.versioned_users = count(flag::HAS_VERSION, pkg, None, user, np)?;
        k.version_users = count(flag::HAS_VERSION, ver, None, user, nv)?;
        k.by_job = count(flag::HAS_JOB, pkg, None, job, np)?;
        k.by_process = count(0, pkg, None, process, np)?;
        k.signaled = count(flag::SIGNALED, pkg, None, process, np)?;
        k.env_kinds = count(flag::NON_STDLIB, env, None, process, ne)?;
        k.jobs = count(job_rows, None, None, job, 1)?;
        k.job_sizes = count(job_rows, nodes, None, job, nn)?;
        k.job_packages = count(job_rows, pkg, None, job, np)?;
        let bins = Some(&self.bin);
        k.package_sizes = count(job_rows, pkg_bins, bins, job, np * NODE_BINS as usize)?;

        // Pairs: the shared choice of rows, each job's row mask, then one pass over the
        // distinct (bucket, package, job) keys.
        let mut rindex = vec![u8::MAX; nb * np];
        for b in 0..nb {
            k.pair_rows[b] = pair_rows(&k.job_packages[b * np..(b + 1) * np], packages, top);
            for (r, &p) in k.pair_rows[b].iter().enumerate() {
                rindex[b * np + p as usize] = r as u8;
            }
        }
        let rindex_d = self.stream.clone_htod(&rindex)?;
        self.clear(&self.keys, u64::MAX)?;
        self.clear(&self.vals, 0)?;
        let mask = self.cap - 1;
        let need = job_rows as u32;
        let np32 = np as u32;
        let mut b = self.stream.launch_builder(&self.f["job_masks"]);
        b.arg(&self.n)
            .arg(&self.month)
            .arg(&lut_d)
            .arg(&m0)
            .arg(&self.flags)
            .arg(&need);
        b.arg(&self.package)
            .arg(&self.job)
            .arg(&rindex_d)
            .arg(&np32);
        b.arg(&self.keys).arg(&self.vals).arg(&mask);
        // SAFETY: rindex has nb * np entries; keys/vals have cap slots for ≤ n keys.
        unsafe { b.launch(grid(self.n)) }?;
        self.clear(&self.set, u64::MAX)?;
        let pairs_d: CudaSlice<u64> = self.stream.alloc_zeros(nb * MAX_PAIR_ROWS * np)?;
        let rows = MAX_PAIR_ROWS as u32;
        let mut b = self.stream.launch_builder(&self.f["pairs"]);
        b.arg(&self.n)
            .arg(&self.month)
            .arg(&lut_d)
            .arg(&m0)
            .arg(&self.flags)
            .arg(&need);
        b.arg(&self.package)
            .arg(&self.job)
            .arg(&self.keys)
            .arg(&self.vals)
            .arg(&mask);
        b.arg(&self.set)
            .arg(&mask)
            .arg(&pairs_d)
            .arg(&np32)
            .arg(&rows);
        // SAFETY: row bits are < MAX_PAIR_ROWS; out has nb * MAX_PAIR_ROWS * np entries.
        unsafe { b.launch(grid(self.n)) }?;
        k.pairs = self.stream.clone_dtoh(&pairs_d)?;

        // BLAS among numpy/scipy jobs.
        self.clear(&self.keys, u64::MAX)?;
        self.clear(&self.vals, 0)?;
        let need = (flag::HAS_JOB | flag::NUMPYISH) as u32;
        let mut b = self.stream.launch_builder(&self.f["blas_masks"]);
        b.arg(&self.n)
            .arg(&self.month)
            .arg(&lut_d)
            .arg(&m0)
            .arg(&self.flags)
            .arg(&need);
        b.arg(&self.blas)
            .arg(&self.job)
            .arg(&self.keys)
            .arg(&self.vals)
            .arg(&mask);
        // SAFETY: as for job_masks; BLAS ids are < 63 (checked in finish).
        unsafe { b.launch(grid(self.n)) }?;
        let w = (d.blases + 1) as u32;
        let blas_d: CudaSlice<u64> = self.stream.alloc_zeros(nb * w as usize)?;
        let mut b = self.stream.launch_builder(&self.f["blas_count"]);
        b.arg(&self.cap)
            .arg(&self.keys)
            .arg(&self.vals)
            .arg(&blas_d)
            .arg(&w);
        // SAFETY: reads cap slots; writes below nb * w.
        unsafe { b.launch(grid(self.cap)) }?;
        k.blas = self.stream.clone_dtoh(&blas_d)?;
        Ok(k)
    }
}
