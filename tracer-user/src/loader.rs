//! Loads the embedded eBPF object, fills its `CONFIG` global from BTF and tracefs, and attaches
//! every program. Attaching is all-or-nothing: a tracer with a missing program would silently
//! under-count, so any failure is an error naming the program.
use std::path::Path;

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use thiserror::Error;
use tracer_common::Config;
pub use tracer_common::Counter;

use crate::status::{Counters, ProgStat};

use crate::{
    btf::{Btf, BtfError},
    tracefs::{Format, TracefsError},
};

/// The eBPF object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// Probation budget of a freshly exec'd process: 32 successful opens, or 2,048 failed attempts
/// (a long `LD_LIBRARY_PATH` makes the dynamic loader fail many), before it is forgotten.
/// CPython shows itself after at most 8 successful opens here (Debian's static 3.11: the
/// locale's; a shared build at its first, `libpython`); the rest is room for `LD_PRELOAD`ed
/// monitoring libraries.
pub const PROBATION_OPENS: u32 = 32 * tracer_common::PROBATION_OPEN_COST;

/// Why the tracer could not be attached.
#[derive(Debug, Error)]
pub enum LoadError {
    /// Built with `AYA_BUILD_SKIP=1`.
    #[error("this binary was built without its eBPF object (AYA_BUILD_SKIP); rebuild without it")]
    NoObject,
    /// Kernel BTF problem.
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// Tracefs problem.
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    /// Loading the object failed (verifier, permissions).
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// One program failed to load or attach.
    #[error("program {name}: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// Cause.
        source: aya::programs::ProgramError,
    },
    /// A map is missing or of the wrong type.
    #[error("map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        source: aya::maps::MapError,
    },
    /// The number of possible CPUs could not be read.
    #[error("reading {path}: {source}")]
    Cpus {
        /// The file.
        path: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// A program or map is missing from the object.
    #[error("{0} {1} missing from the eBPF object")]
    Missing(&'static str, &'static str),
}

/// The attached tracer: keep it alive to stay attached.
pub struct Tracer {
    /// The loaded object (owns programs and links).
    pub ebpf: Ebpf,
    /// Events from the kernel.
    pub events: RingBuf<MapData>,
    /// Per-CPU counters.
    pub counters: PerCpuArray<MapData, u64>,
    /// The drain epoch (see `tracer_common::UidUse::epoch`).
    pub epoch: aya::maps::Array<MapData, u64>,
    /// Sampled processes (`PYPROCS`), written by the daemon once it found an interpreter;
    /// taken by the daemon's sampler.
    pub pyprocs: Option<aya::maps::HashMap<MapData, u32, tracer_common::sampling::PyProc>>,
    /// The CPU sampler's rate, samples per CPU-second; 0 when it is not attached.
    pub sample_hz: u32,
}

/// Sizes of the kernel's shared maps (see `Config::kernel_procs`, `kernel_ring_mib`).
#[derive(Debug, Clone, Copy)]
pub struct MapSizes {
    /// Entries of `PROCS` (`STASH` has a quarter of them).
    pub procs: u32,
    /// Bytes of the ring buffer.
    pub ring_bytes: u32,
}

/// Entries of `PYPROCS`: Python processes sampled at once on one node (88 bytes each).
pub const PYPROCS_ENTRIES: u32 = 16384;

/// Attaches the CPU sampler to every online CPU's software clock, firing every `1/hz` s of
/// CPU time (a fixed period, not a frequency the kernel adapts: each sample then stands for
/// the same CPU time).
fn attach_sampler(ebpf: &mut Ebpf, hz: u32) -> Result<(), LoadError> {
    use aya::programs::perf_event::{
        PerfEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent,
    };
    let name = "cpu_sample";
    let prog: &mut PerfEvent = program(ebpf, name)?;
    prog.load().map_err(prog_err(name))?;
    let cpus =
        aya::util::online_cpus().map_err(|(path, source)| LoadError::Cpus { path, source })?;
    for cpu in cpus {
        prog.attach(
            PerfEventConfig::Software(SoftwareEvent::CpuClock),
            PerfEventScope::AllProcessesOneCpu { cpu },
            SamplePolicy::Period(1_000_000_000 / u64::from(hz.max(1))),
            false,
        )
        .map_err(prog_err(name))?;
    }
    Ok(())
}

/// Computes the configuration for this kernel.
pub fn build_config(tracefs: &Path, self_tgid: u32, maps: MapSizes) -> Result<Config, LoadError> {
    let procs = maps.procs;
    let btf = Btf::from_sys_fs()?;
    let exit = Format::read(tracefs, "sched", "sched_process_exit")?;
    let openat = Format::read(tracefs, "syscalls", "sys_enter_openat")?;
    let open = Format::read(tracefs, "syscalls", "sys_enter_open")?;
    let openat2 = Format::read(tracefs, "syscalls", "sys_enter_openat2")?;
    let exit_openat = Format::read(tracefs, "syscalls", "sys_exit_openat")?;
    let mmap = Format::read(tracefs, "syscalls", "sys_enter_mmap")?;
    let cpu = cpu_offsets(&btf);
    if let Err(e) = &cpu {
        tracing::warn!("exit records carry no CPU time: {e}");
    }
    let [task_utime, task_stime, task_runtime, task_signal, task_group_leader, signal_utime, signal_stime, signal_runtime] =
        cpu.as_ref().copied().unwrap_or([0; 8]);
    // Both or neither: the walk of the live threads needs the list head and the link.
    let (signal_thread_head, task_thread_node) = match (
        btf.member_offset("signal_struct", "thread_head"),
        btf.member_offset("task_struct", "thread_node"),
    ) {
        (Ok(h), Ok(n)) => (h, n),
        _ => (0, 0),
    };
    // All four or none: without them the daemon reads the groups from `/proc`.
    let groups = [
        ("task_struct", "real_cred"),
        ("cred", "group_info"),
        ("group_info", "ngroups"),
        ("group_info", "gid"),
    ]
    .map(|(t, m)| btf.member_offset(t, m));
    let [task_real_cred, cred_group_info, group_info_ngroups, group_info_gid] =
        match groups.iter().all(Result::is_ok) {
            true => groups.map(|r| r.unwrap_or(0)),
            false => [0; 4],
        };
    Ok(Config {
        task_real_cred,
        cred_group_info,
        group_info_ngroups,
        group_info_gid,
        cpu_times: cpu.is_ok() as u32,
        task_utime,
        task_stime,
        task_runtime,
        task_signal,
        task_group_leader,
        signal_utime,
        signal_stime,
        signal_runtime,
        signal_thread_head,
        task_thread_node,
        self_tgid,
        probation_opens: PROBATION_OPENS,
        probation_per_uid: procs / 16,
        stash_per_uid: procs / 32,
        ring_share: maps.ring_bytes / 8,
        ring_bytes: maps.ring_bytes,
        task_exit_code: btf.member_offset("task_struct", "exit_code")?,
        task_real_parent: btf.member_offset("task_struct", "real_parent")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_mm: btf.member_offset("task_struct", "mm")?,
        task_nsproxy: btf.member_offset("task_struct", "nsproxy")?,
        nsproxy_mnt_ns: btf.member_offset("nsproxy", "mnt_ns")?,
        mnt_ns_inum: btf.member_offset("mnt_namespace", "ns.inum")?,
        mm_arg_start: btf.member_offset("mm_struct", "arg_start")?,
        mm_arg_end: btf.member_offset("mm_struct", "arg_end")?,
        mm_env_start: btf.member_offset("mm_struct", "env_start")?,
        mm_env_end: btf.member_offset("mm_struct", "env_end")?,
        tp_openat_dfd: openat.offset("dfd")?,
        tp_openat_filename: openat.offset("filename")?,
        tp_openat_flags: openat.offset("flags")?,
        tp_open_filename: open.offset("filename")?,
        tp_open_flags: open.offset("flags")?,
        tp_openat2_dfd: openat2.offset("dfd")?,
        tp_openat2_filename: openat2.offset("filename")?,
        tp_openat2_how: openat2.offset("how")?,
        tp_exit_ret: exit_openat.offset("ret")?,
        tp_mmap_prot: mmap.offset("prot")?,
        tp_mmap_fd: mmap.offset("fd")?,
        tp_exit_group_dead: exit.optional("group_dead").unwrap_or(0),
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        fdtable_max_fds: btf.member_offset("fdtable", "max_fds")?,
        file_dentry: btf.member_offset("file", "f_path.dentry")?,
        file_mnt: btf.member_offset("file", "f_path.mnt")?,
        dentry_parent: btf.member_offset("dentry", "d_parent")?,
        dentry_name: btf.member_offset("dentry", "d_name.name")?,
        mount_mnt: btf.member_offset("mount", "mnt")?,
        mount_parent: btf.member_offset("mount", "mnt_parent")?,
        mount_mountpoint: btf.member_offset("mount", "mnt_mountpoint")?,
        vfsmount_root: btf.member_offset("vfsmount", "mnt_root")?,
        task_fsbase: match (
            btf.member_offset("task_struct", "thread"),
            btf.member_offset("thread_struct", "fsbase"),
        ) {
            (Ok(t), Ok(f)) => t + f,
            _ => 0,
        },
    })
}

/// Offsets of the CPU-time fields the exit program sums (`task_struct.{utime, stime,
/// se.sum_exec_runtime, signal, group_leader}`, `signal_struct.{utime, stime,
/// sum_sched_runtime}`), in [`Config`]'s order. Optional: a kernel without one of them still
/// records imports, with null CPU time, rather than reading a wrong field.
pub fn cpu_offsets(btf: &Btf) -> Result<[u32; 8], BtfError> {
    Ok([
        btf.member_offset("task_struct", "utime")?,
        btf.member_offset("task_struct", "stime")?,
        btf.member_offset("task_struct", "se.sum_exec_runtime")?,
        btf.member_offset("task_struct", "signal")?,
        btf.member_offset("task_struct", "group_leader")?,
        btf.member_offset("signal_struct", "utime")?,
        btf.member_offset("signal_struct", "stime")?,
        btf.member_offset("signal_struct", "sum_sched_runtime")?,
    ])
}

const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("sys_enter_openat", "syscalls", "sys_enter_openat"),
    ("sys_enter_open", "syscalls", "sys_enter_open"),
    ("sys_enter_openat2", "syscalls", "sys_enter_openat2"),
    ("sys_exit_openat", "syscalls", "sys_exit_openat"),
    ("sys_exit_open", "syscalls", "sys_exit_open"),
    ("sys_exit_openat2", "syscalls", "sys_exit_openat2"),
    ("sys_enter_mmap", "syscalls", "sys_enter_mmap"),
];

fn nr_cpus() -> Result<u32, LoadError> {
    aya::util::nr_cpus()
        .map(|n| n as u32)
        .map_err(|(path, source)| LoadError::Cpus { path, source })
}

fn prog_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> LoadError {
    move |source| LoadError::Program { name, source }
}

/// The program `name`, as the type `T` it must be.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::Missing("program", name))?
        .try_into()
        .map_err(prog_err(name))
}

/// Takes the map `name` out of the object, as the type `T` it must be.
fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::Missing("map", name))?;
    T::try_from(map).map_err(|source| LoadError::Map { name, source })
}

/// Loads `open_kpath` (not attached: tail-called by `sys_exit_open*`) into slot 0 of `KPATH`.
fn load_kpath(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    let name = "open_kpath";
    let prog: &mut TracePoint = program(ebpf, name)?;
    prog.load().map_err(prog_err(name))?;
    let fd = prog
        .fd()
        .and_then(|f| f.try_clone().map_err(Into::into))
        .map_err(prog_err(name))?;
    let map_name = "KPATH";
    let map = ebpf
        .map_mut(map_name)
        .ok_or(LoadError::Missing("map", map_name))?;
    let mut jump: aya::maps::ProgramArray<_> =
        aya::maps::ProgramArray::try_from(map).map_err(|source| LoadError::Map {
            name: map_name,
            source,
        })?;
    jump.set(0, &fd, 0).map_err(|source| LoadError::Map {
        name: map_name,
        source,
    })
}

/// Names of every program, for statistics.
pub fn program_names() -> impl Iterator<Item = &'static str> {
    TRACEPOINTS
        .iter()
        .map(|(n, _, _)| *n)
        .chain(["sched_process_fork", "open_kpath", "cpu_sample"])
}

/// Loads and attaches the tracer.
///
/// `maps.procs` sizes the process map and, at a quarter of it, the map of opens in flight; each
/// non-root uid may hold a sixteenth of the first on probation and an eighth of the second
/// (4,096 of the default 65,536 and 2,048 of 16,384: far more than one user's processes
/// exec'ing, or threads opening, at once).
///
/// `sample_hz` > 0 attaches the CPU sampler at that rate (see [`attach_sampler`]); its failure
/// is logged and leaves the import tracer attached (`Tracer::sample_hz` is then 0).
pub fn attach(
    tracefs: &Path,
    self_tgid: u32,
    maps: MapSizes,
    sample_hz: u32,
) -> Result<Tracer, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let config = build_config(tracefs, self_tgid, maps)?;
    let procs = maps.procs;
    let mut ebpf = EbpfLoader::new()
        .override_global("CONFIG", &config, true)
        .map_max_entries("SCRATCH", nr_cpus()?)
        .map_max_entries("PROCS", procs)
        .map_max_entries("STASH", procs / 4)
        .map_max_entries("EVENTS", maps.ring_bytes)
        .map_max_entries("PYPROCS", PYPROCS_ENTRIES)
        .load(OBJECT)?;
    for &(name, category, tp) in TRACEPOINTS {
        let prog: &mut TracePoint = program(&mut ebpf, name)?;
        prog.load().map_err(prog_err(name))?;
        prog.attach(category, tp).map_err(prog_err(name))?;
    }
    let name = "sched_process_fork";
    let prog: &mut RawTracePoint = program(&mut ebpf, name)?;
    prog.load().map_err(prog_err(name))?;
    prog.attach(name).map_err(prog_err(name))?;
    load_kpath(&mut ebpf)?;
    let sample_hz = match sample_hz {
        0 => 0,
        hz => match attach_sampler(&mut ebpf, hz) {
            Ok(()) => hz,
            Err(e) => {
                tracing::warn!("CPU sampling is off: {}", pyusage_record::error_line(&e));
                0
            }
        },
    };
    let events = take_map(&mut ebpf, "EVENTS")?;
    let counters = take_map(&mut ebpf, "COUNTERS")?;
    let epoch = take_map(&mut ebpf, "EPOCH")?;
    let pyprocs = Some(take_map(&mut ebpf, "PYPROCS")?);
    Ok(Tracer {
        ebpf,
        events,
        counters,
        epoch,
        pyprocs,
        sample_hz,
    })
}

/// One program as the kernel's verifier accepted it.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Program name.
    pub name: &'static str,
    /// Instructions the verifier processed (`verified_insns`), if the kernel reports it.
    pub verified_insns: Option<u32>,
    /// Size of the translated program, bytes.
    pub xlated_bytes: Option<u32>,
}

/// The object loaded with this kernel's configuration and default map sizes, for `doctor`'s
/// checks (nothing attached; everything unloaded when it is dropped).
fn load_for_check(tracefs: &Path) -> Result<(Config, Ebpf), LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let config = build_config(
        tracefs,
        std::process::id(),
        MapSizes {
            procs: 65536,
            ring_bytes: tracer_common::RING_BYTES,
        },
    )?;
    let ebpf = EbpfLoader::new()
        .override_global("CONFIG", &config, true)
        .map_max_entries("SCRATCH", nr_cpus()?)
        .load(OBJECT)?;
    Ok((config, ebpf))
}

/// Loads every program through the verifier without attaching any (what `pyusage doctor`
/// checks): proves BPF permission, BTF offsets, tracepoint formats and verifier acceptance on
/// this kernel. Everything is unloaded when this returns.
pub fn check_load(tracefs: &Path) -> Result<Vec<Verified>, LoadError> {
    let (_, mut ebpf) = load_for_check(tracefs)?;
    let verified = |name, info: Option<aya::programs::ProgramInfo>| Verified {
        name,
        verified_insns: info.as_ref().and_then(|i| i.verified_instruction_count()),
        xlated_bytes: info.as_ref().and_then(|i| i.size_translated()),
    };
    let mut out = Vec::new();
    for &(name, _, _) in TRACEPOINTS {
        let prog: &mut TracePoint = program(&mut ebpf, name)?;
        prog.load().map_err(prog_err(name))?;
        out.push(verified(name, prog.info().ok()));
    }
    let name = "sched_process_fork";
    let prog: &mut RawTracePoint = program(&mut ebpf, name)?;
    prog.load().map_err(prog_err(name))?;
    out.push(verified(name, prog.info().ok()));
    load_kpath(&mut ebpf)?;
    let name = "open_kpath";
    let prog: &mut TracePoint = program(&mut ebpf, name)?;
    out.push(verified(name, prog.info().ok()));
    let name = "cpu_sample";
    let prog: &mut aya::programs::PerfEvent = program(&mut ebpf, name)?;
    prog.load().map_err(prog_err(name))?;
    out.push(verified(name, prog.info().ok()));
    Ok(out)
}

/// What `pyusage doctor` checks of the CPU sampler: loads it, attaches it to every online
/// CPU's software clock at 1 Hz and detaches. Returns the number of CPUs, or why sampling
/// cannot work here (the import tracer does not depend on it).
pub fn check_sampler(tracefs: &Path) -> Result<usize, LoadError> {
    let (config, mut ebpf) = load_for_check(tracefs)?;
    if config.task_fsbase == 0 {
        return Err(LoadError::Missing(
            "BTF member",
            "task_struct.thread.fsbase (the thread pointer the sampler matches threads by)",
        ));
    }
    attach_sampler(&mut ebpf, 1)?;
    let cpus = aya::util::online_cpus().map_or(0, |c| c.len());
    Ok(cpus)
}

/// Marks already-running processes as Python in the kernel's process map, so their opens,
/// forks and exit are reported from now on (see [`crate::seed`]).
pub fn track_python(ebpf: &mut Ebpf, pids: impl IntoIterator<Item = u32>) -> Result<(), LoadError> {
    let name = "PROCS";
    let map = ebpf.map_mut(name).ok_or(LoadError::Missing("map", name))?;
    let mut procs: aya::maps::HashMap<_, u32, tracer_common::ProcState> =
        aya::maps::HashMap::try_from(map).map_err(|source| LoadError::Map { name, source })?;
    let python = tracer_common::ProcState {
        state: tracer_common::STATE_PYTHON,
        budget: 0,
        uid: 0,
        _pad: 0,
    };
    for pid in pids {
        procs
            .insert(pid, python, 0)
            .map_err(|source| LoadError::Map { name, source })?;
    }
    Ok(())
}

/// Reads the per-CPU counters map.
pub struct CounterReader(PerCpuArray<MapData, u64>);

impl CounterReader {
    /// Wraps the map.
    pub fn new(map: PerCpuArray<MapData, u64>) -> CounterReader {
        CounterReader(map)
    }

    /// Reads the counters, summed over CPUs.
    pub fn read(&self) -> Counters {
        let mut out = Counters::default();
        for &c in Counter::ALL {
            out[c] = self
                .0
                .get(&(c as u32), 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0);
        }
        out
    }
}

/// Statistics of every program; counts only accumulate while `kernel.bpf_stats_enabled` is 1.
pub fn program_stats(ebpf: &Ebpf) -> Vec<ProgStat> {
    program_names()
        .filter_map(|name| {
            let info = ebpf.program(name)?.info().ok()?;
            Some(ProgStat {
                name: name.to_owned(),
                run_count: info.run_count(),
                run_time_ns: info.run_time().as_nanos() as u64,
            })
        })
        .collect()
}
