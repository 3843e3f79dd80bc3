//! The CPU sampler's daemon side: finds a Python process's interpreter (its version and
//! `_PyRuntime`) and enables the kernel's walk of it, and reads what its code objects are.
//!
//! Both read the users' processes and files (`/proc/PID/maps`, the interpreter's ELF image,
//! `process_vm_readv` of the process's memory), which a user can make hang (a file or a
//! mapping on a FUSE mount of theirs). So they run on worker threads ([`Workers`]), and the
//! processor only collects answers when they come; a process whose read hangs costs one
//! worker thread, never the record path.
//!
//! A worker that finds an interpreter enables the kernel's walk of it itself (the map is
//! shared), so that sampling starts as soon as the interpreter is known, and the processor
//! takes the answers when it next runs (each batch of events begins with them) instead of
//! waking to poll for them (a wake-up of a daemon thread cost 70–150 µs of CPU on the
//! 2-core VM it was measured on). Only an answer that asks for a retry soon (an interpreter whose
//! `libpython` is not mapped yet) wakes it.
use std::{
    cell::RefCell,
    os::unix::ffi::OsStringExt,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use tracer_common::sampling::{self, PyProc};

use crate::{
    cpython::{CpythonError, Inspector, Interpreter},
    workers::Workers,
};

/// Worker threads reading processes for the sampler.
const THREADS: usize = 2;
/// Jobs queued at most; more are refused (and asked again later).
const QUEUED: usize = 1024;
/// Code objects read per job at most.
pub const ADDRS_PER_JOB: usize = 256;

/// A read for the sampler.
pub enum Job {
    /// Find the interpreter of process `pid` (started at `start`, wall µs).
    Inspect {
        /// Process.
        pid: u32,
        /// Its start, to match the answer to the same process.
        start: i64,
        /// Attempts left after this one.
        left: u8,
    },
    /// Read the `co_filename` of code objects of process `pid`.
    Resolve {
        /// Process.
        pid: u32,
        /// Its start.
        start: i64,
        /// Its interpreter.
        interp: Arc<Interpreter>,
        /// Code-object addresses.
        addrs: Vec<u64>,
    },
}

/// An answer from a worker.
pub enum Answer {
    /// The interpreter of a process, or why it cannot be sampled.
    Inspected {
        /// Process.
        pid: u32,
        /// Its start.
        start: i64,
        /// Its interpreter, or the reason (`Unsupported`, or a read that failed).
        result: Result<Arc<Interpreter>, CpythonError>,
        /// Attempts left.
        left: u8,
        /// The worker enabled the kernel's walk of it (`false`: the map was full, or no
        /// interpreter).
        enabled: bool,
    },
    /// Files of code objects (`None`: unreadable, or not a code object's).
    Resolved {
        /// Process.
        pid: u32,
        /// Its start.
        start: i64,
        /// Address and file.
        files: Vec<(u64, Option<PathBuf>)>,
    },
}

thread_local! {
    /// Each worker's cache of what it read from interpreter images (one read per build, not
    /// per process; per thread, so that a worker stuck on a hung file holds up no other).
    static INSPECTOR: RefCell<Inspector> = RefCell::new(Inspector::new());
}

/// The kernel's map of sampled processes, shared by the processor and the workers.
type PyProcs = Arc<Mutex<BpfHashMap<MapData, u32, PyProc>>>;

/// Wakes the processor (to retry an inspection soon).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Writes `pid`'s entry in the kernel's map (none in tests: nothing is enabled in the
/// kernel); `false` when the map refused it (full).
fn enable_in(map: Option<&PyProcs>, pid: u32, interp: &Interpreter) -> bool {
    let Some(map) = map else {
        return true;
    };
    let Ok(mut map) = map.lock() else {
        return false;
    };
    match map.insert(pid, interp.py_proc(), 0) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(pid, "not sampled: {e}");
            false
        }
    }
}

fn work(job: Job, map: Option<&PyProcs>, wake: Option<&Wake>) -> Answer {
    match job {
        Job::Inspect { pid, start, left } => {
            let result = INSPECTOR
                .with(|i| i.borrow_mut().inspect(pid))
                .and_then(|interp| {
                    let l = interp.layout;
                    if !sampling::frame_fields_fit(&l) {
                        return Err(CpythonError::Unsupported(format!(
                            "frame-layout-{}.{}",
                            interp.version.major, interp.version.minor
                        )));
                    }
                    Ok(Arc::new(interp))
                });
            let enabled = match &result {
                Ok(interp) => enable_in(map, pid, interp),
                Err(CpythonError::Unsupported(_)) => false,
                Err(_) => {
                    if left > 0 {
                        if let Some(wake) = wake {
                            wake();
                        }
                    }
                    false
                }
            };
            Answer::Inspected {
                pid,
                start,
                left,
                result,
                enabled,
            }
        }
        Job::Resolve {
            pid,
            start,
            interp,
            addrs,
        } => {
            let files = interp.code_paths_bytes(&addrs);
            Answer::Resolved {
                pid,
                start,
                files: addrs
                    .into_iter()
                    .zip(files)
                    .map(|(a, file)| {
                        (
                            a,
                            file.map(|b| PathBuf::from(std::ffi::OsString::from_vec(b))),
                        )
                    })
                    .collect(),
            }
        }
    }
}

/// The sampler's counters in `status.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SamplerCounts {
    /// Samples received.
    pub samples: u64,
    /// Processes whose stacks the kernel walks.
    pub processes_sampled: u64,
    /// Processes whose interpreter cannot be walked (unsupported version or build).
    pub processes_unsupported: u64,
    /// Samples without the thread's Python stack (no thread state matched).
    pub samples_no_thread: u64,
    /// Sampled processes given up on: their samples in the interpreter's code never matched
    /// a thread state, also after a second inspection (`unsupported:no-thread-state`).
    #[serde(default)]
    pub processes_threadless: u64,
    /// Samples cut at the frame limit.
    pub samples_truncated: u64,
    /// Samples counted for no package because their code objects could not be read in time.
    pub samples_unattributed: u64,
    /// Jobs refused because the workers' queue was full.
    pub jobs_refused: u64,
    /// Processes not sampled because the kernel's map was full.
    pub map_full: u64,
}

/// The sampler: its workers and the kernel's map of sampled processes.
pub struct Sampler {
    workers: Workers<Job, Answer>,
    map: Option<PyProcs>,
    /// Samples per CPU-second.
    pub hz: u32,
    /// Counters.
    pub counts: SamplerCounts,
}

impl Sampler {
    /// A sampler writing `map` (none in tests: nothing is enabled in the kernel); `wake`
    /// wakes the processor when an inspection is to be retried soon.
    pub fn new(
        map: Option<BpfHashMap<MapData, u32, PyProc>>,
        hz: u32,
        wake: Option<Wake>,
    ) -> Sampler {
        let map = map.map(|m| Arc::new(Mutex::new(m)));
        let shared = map.clone();
        Sampler {
            workers: Workers::new("sampler", THREADS, QUEUED, move |job| {
                work(job, shared.as_ref(), wake.as_ref())
            }),
            map,
            hz,
            counts: SamplerCounts::default(),
        }
    }

    /// Queues a job; `false` (counted) when the queue is full.
    pub fn submit(&mut self, job: Job) -> bool {
        match self.workers.submit(job) {
            Ok(()) => true,
            Err(_) => {
                self.counts.jobs_refused += 1;
                false
            }
        }
    }

    /// The answers that came.
    pub fn answers(&mut self) -> Vec<Answer> {
        std::iter::from_fn(|| self.workers.try_recv()).collect()
    }

    /// Lets the kernel walk process `pid`'s stacks.
    pub fn enable(&mut self, pid: u32, interp: &Interpreter) -> bool {
        let ok = enable_in(self.map.as_ref(), pid, interp);
        if !ok {
            self.counts.map_full += 1;
        }
        ok
    }

    /// Stops the kernel's walk of `pid` (a worker enabled a process that has ended since).
    pub fn disable(&mut self, pid: u32) {
        if let Some(Ok(mut map)) = self.map.as_ref().map(|m| m.lock()) {
            let _ = map.remove(&pid);
        }
    }
}
