//! The GPU back end's device side: the staged rows copied to the device once, the compiled
//! kernels, and one method per group of counts. Kernel arguments follow `kernels.cu`'s
//! signatures; each launch says why its indices stay in bounds.
use std::sync::Arc;

use cudarc::{
    driver::{
        CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchArgs, LaunchConfig, PushKernelArg,
    },
    nvrtc::Ptx,
};
use rustc_hash::FxHashMap;

use super::{compile::KERNELS, Staging};
use crate::{
    counts::{pair_rows, Dims, KindCounts, MAX_PAIR_ROWS},
    model::{flag, Interner, MAX_NODES, NODE_BINS},
};

/// The rows on the device and the compiled kernels: one per run, shared by every granularity.
pub(super) struct GpuContext {
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

/// A launch of 256-thread blocks over `n` items (the kernels loop with a grid stride, so the
/// grid is capped).
fn grid(n: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 8192) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One granularity's buckets on the device: `lut[month - m0]` is a month's bucket index.
struct Periods {
    lut: CudaSlice<u32>,
    m0: u32,
    buckets: usize,
}

/// Which columns a distinct count reads: x = xa * xmul + xb, y.
struct Key<'a> {
    need: u8,
    xa: Option<(&'a CudaSlice<u32>, u32)>,
    xb: Option<&'a CudaSlice<u32>>,
    y: &'a CudaSlice<u32>,
    width: usize,
}

impl GpuContext {
    /// Loads the kernels and copies the staged rows to the device.
    pub(super) fn new(ctx: &Arc<CudaContext>, ptx: &Ptx, s: &Staging) -> Res<GpuContext> {
        let stream = ctx.default_stream();
        let module = ctx.load_module(ptx.clone())?;
        let mut f = FxHashMap::default();
        for k in KERNELS {
            f.insert(*k, module.load_function(k)?);
        }
        let n = s.month.len() as u64;
        let cap = (2 * n).max(1024).next_power_of_two();
        let up = |v: &Vec<u32>| stream.clone_htod(v);
        Ok(GpuContext {
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

    /// Sets every slot of a cap-sized table to `value` (empty is `u64::MAX` for keys).
    /// A launch of a row kernel: every one starts with the row count, the month column, the
    /// period's look-up table and first month, the flags column and the flags a row needs.
    fn rows_launch<'a>(&'a self, kernel: &str, p: &'a Periods, need: &'a u32) -> LaunchArgs<'a> {
        let mut b = self.stream.launch_builder(&self.f[kernel]);
        b.arg(&self.n)
            .arg(&self.month)
            .arg(&p.lut)
            .arg(&p.m0)
            .arg(&self.flags)
            .arg(need);
        b
    }

    fn clear(&self, which: &CudaSlice<u64>, value: u64) -> Res<()> {
        let mut b = self.stream.launch_builder(&self.f["fill"]);
        b.arg(which).arg(&self.cap).arg(&value);
        // SAFETY: `fill` writes cap elements of a buffer allocated with cap elements.
        unsafe { b.launch(grid(self.cap)) }?;
        Ok(())
    }

    /// One distinct count per bucket and `x`, over the rows with the `need` flags.
    fn distinct(&self, p: &Periods, k: Key<'_>) -> Res<Vec<u64>> {
        self.clear(&self.set, u64::MAX)?;
        let out: CudaSlice<u64> = self.stream.alloc_zeros(p.buckets * k.width)?;
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
        let mut b = self.rows_launch("distinct_count", p, &need);
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

    /// Every count of one granularity: `lut` maps `month - m0` to a bucket index.
    pub(super) fn kind_counts(
        &self,
        buckets: Vec<u32>,
        lut: &[u32],
        m0: u32,
        d: Dims,
        packages: &Interner,
        top: usize,
    ) -> Res<KindCounts> {
        let p = Periods {
            lut: self.stream.clone_htod(lut)?,
            m0,
            buckets: d.buckets,
        };
        let mut k = KindCounts::zeroed(buckets, d);
        k.rows = self.row_counts(&p)?;
        self.distinct_counts(&p, d, &mut k)?;
        // Pairs: the shared choice of rows, then the counts for them.
        let np = d.packages;
        for b in 0..d.buckets {
            k.pair_rows[b] = pair_rows(&k.job_packages[b * np..(b + 1) * np], packages, top);
        }
        k.pairs = self.pair_counts(&p, np, &k.pair_rows)?;
        k.blas = self.blas_counts(&p, d.blases)?;
        Ok(k)
    }

    /// `[b]`: kept rows.
    fn row_counts(&self, p: &Periods) -> Res<Vec<u64>> {
        let rows_d: CudaSlice<u64> = self.stream.alloc_zeros(p.buckets)?;
        let nb32 = p.buckets as u32;
        let mut b = self.stream.launch_builder(&self.f["count_rows"]);
        b.arg(&self.n)
            .arg(&self.month)
            .arg(&p.lut)
            .arg(&p.m0)
            .arg(&nb32)
            .arg(&rows_d);
        // SAFETY: nb ≤ 255 < the kernel's 256 shared bins; every LUT entry is < nb.
        unsafe { b.launch(grid(self.n)) }?;
        self.stream.clone_dtoh(&rows_d)
    }

    /// Every count that is one distinct count of (bucket, x, y) keys.
    fn distinct_counts(&self, p: &Periods, d: Dims, k: &mut KindCounts) -> Res<()> {
        let count = |need, xa, xb, y, width| {
            let key = Key {
                need,
                xa,
                xb,
                y,
                width,
            };
            self.distinct(p, key)
        };
        let np = d.packages;
        let job_rows = flag::KEEP_JOB | flag::HAS_JOB;
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
        let pkg_envs = Some((&self.package, ne as u32));
        let envs = Some(&self.env_kind);
        k.package_env_kinds = count(flag::HAS_ENV, pkg_envs, envs, process, np * ne)?;
        k.jobs = count(job_rows, None, None, job, 1)?;
        k.job_sizes = count(job_rows, nodes, None, job, nn)?;
        k.job_packages = count(job_rows, pkg, None, job, np)?;
        let bins = Some(&self.bin);
        k.package_sizes = count(job_rows, pkg_bins, bins, job, np * NODE_BINS as usize)?;
        Ok(())
    }

    /// `[b][row][package]`: each job's row mask, then one pass over the distinct
    /// (bucket, package, job) keys.
    fn pair_counts(&self, p: &Periods, np: usize, pair_rows: &[Vec<u32>]) -> Res<Vec<u64>> {
        let nb = p.buckets;
        let mut rindex = vec![u8::MAX; nb * np];
        for (b, rows) in pair_rows.iter().enumerate() {
            for (r, &pk) in rows.iter().enumerate() {
                rindex[b * np + pk as usize] = r as u8;
            }
        }
        let rindex_d = self.stream.clone_htod(&rindex)?;
        self.clear(&self.keys, u64::MAX)?;
        self.clear(&self.vals, 0)?;
        let mask = self.cap - 1;
        let need = (flag::KEEP_JOB | flag::HAS_JOB) as u32;
        let np32 = np as u32;
        let mut b = self.rows_launch("job_masks", p, &need);
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
        let mut b = self.rows_launch("pairs", p, &need);
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
        self.stream.clone_dtoh(&pairs_d)
    }

    /// `[b][0 = none seen | 1 + blas]`: BLAS among numpy/scipy jobs.
    fn blas_counts(&self, p: &Periods, blases: usize) -> Res<Vec<u64>> {
        self.clear(&self.keys, u64::MAX)?;
        self.clear(&self.vals, 0)?;
        let mask = self.cap - 1;
        let need = (flag::HAS_JOB | flag::NUMPYISH) as u32;
        let mut b = self.rows_launch("blas_masks", p, &need);
        b.arg(&self.blas)
            .arg(&self.job)
            .arg(&self.keys)
            .arg(&self.vals)
            .arg(&mask);
        // SAFETY: as for job_masks; BLAS ids are < 63 (checked in finish).
        unsafe { b.launch(grid(self.n)) }?;
        let w = (blases + 1) as u32;
        let blas_d: CudaSlice<u64> = self.stream.alloc_zeros(p.buckets * w as usize)?;
        let mut b = self.stream.launch_builder(&self.f["blas_count"]);
        b.arg(&self.cap)
            .arg(&self.keys)
            .arg(&self.vals)
            .arg(&blas_d)
            .arg(&w);
        // SAFETY: reads cap slots; writes below nb * w.
        unsafe { b.launch(grid(self.cap)) }?;
        self.stream.clone_dtoh(&blas_d)
    }
}
