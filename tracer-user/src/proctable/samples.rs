//! The CPU sampler's samples of a process, attributed to its packages.
//!
//! A sample is the interrupted thread's Python stack (code-object addresses, innermost first)
//! and the interrupted instruction. Each code object is resolved once per process to its
//! `co_filename` (read from the process's memory by the sampler's workers, off the record
//! path), and the file to a package with the same classification as the process's imports.
//! A sample counts:
//! - for the process (`cpu_samples_total`);
//! - as *self* for the package of the native library the instruction is in (an extension's
//!   `.so`, or the libraries a wheel vendors in `<package>.libs`), else for the innermost
//!   frame's package;
//! - as *inclusive* for every package on the stack, once;
//! - and, for the self package, once per other package on the stack (its *callers*).
//!
//! Samples whose code objects are not resolved yet wait (bounded) until the answer comes; at
//! the process's end, frames still unresolved count for no package.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

// Looked up twice per frame of every sample (a 32-frame stack: 64 look-ups of a code-object
// address): SipHash was most of the processor's time per sample. The keys are addresses in a
// user's process; ahash is keyed at random per map.
use ahash::AHashMap as HashMap;

use tracer_common::{
    sampling::{SAMPLE_FLAG_NO_THREAD, SAMPLE_FLAG_TRUNCATED},
    user::SampleInfo,
};

use super::{ProcTable, Process, Seen, Shared};
use crate::{
    cpython::{CpythonError, Interpreter},
    sampler::{Answer, Job, Sampler, SamplerCounts, ADDRS_PER_JOB},
};

/// Samples of one process waiting for their code objects, at most (an answer takes
/// milliseconds; up to 96 frames of 8 bytes each).
const PENDING_MAX: usize = 256;
/// Code objects remembered per process, at most (a process past it has its further frames
/// counted for no package).
const CODE_MAX: usize = 1 << 16;
/// Callers kept per package in a record.
pub const CALLERS_MAX: usize = 8;

/// Whether and how a process is sampled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Status {
    /// Not (yet) known to the sampler: sampling is off, or its interpreter is being found.
    #[default]
    Off,
    /// The kernel walks its stacks.
    Sampled,
    /// Its interpreter cannot be walked (the reason, e.g. `python-3.7`, `free-threaded`).
    Unsupported(String),
}

/// What one code object (or native library) is, for attribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Asked for; the answer has not come.
    Asked,
    /// Resolved: the index of its package in the process's packages, or none.
    Package(Option<u32>),
}

/// The samples of one process.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// Whether it is sampled.
    pub status: Status,
    /// The node's sampling rate (samples per CPU-second), once the sampler answered for it
    /// (sampled or unsupported: a record says the rate whenever it says either).
    pub hz: u32,
    /// Samples (all threads).
    pub total: u64,
    /// Per package index: self and inclusive samples.
    counts: Vec<[u64; 2]>,
    /// (self package, caller package) → samples.
    callers: HashMap<(u32, u32), u64>,
    /// Code-object address → what it is.
    code: HashMap<u64, Code>,
    /// Samples waiting for code objects.
    pending: Vec<SampleInfo>,
    /// Executable mappings: `[start, end)` → the package of the file (sorted by start).
    native: Vec<(u64, u64, Option<u32>)>,
    /// When the mappings were last read (wall µs); 0 never.
    native_read_at: i64,
    /// Mappings of modules whose package was not known when they were looked at, and when
    /// (at most [`WITHHELD_MAX`]).
    withheld: Vec<(u64, u64, i64)>,
    /// Samples dropped because too many waited, or whose frames stayed unresolved.
    pub unattributed: u64,
    /// The check of its kernel entry ([`Samples::check_threads`]).
    threads: ThreadsCheck,
}

/// Whether a sampled process's kernel entry finds its threads: a wrong `_PyRuntime` or layout
/// would have every sample come without a thread state, and the process's packages look
/// never used, where the record must say it was not sampled.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadsCheck {
    /// A sample matched a thread state: the entry is right.
    found: bool,
    /// Samples without a thread state whose instruction was in the interpreter's own code
    /// (the evaluation loop: a thread running Python), since the entry was last written.
    threadless: u32,
    /// The process was inspected again once already.
    reinspected: bool,
    /// Samples taken before this (wall µs) are not counted: they may have been walked with
    /// the entry the last inspection replaced (`i64::MAX` while its answer is awaited).
    since: i64,
}

/// Threadless samples in the interpreter's own code, none ever matching a thread, after which a
/// process is inspected again (a library caught half-mapped is then found right), and after a
/// second such run its record says `unsupported:no-thread-state`. A correct entry cannot give
/// them: a thread runs the evaluation loop only with a thread state, which the walk finds
/// among the first 64 (startup before the first one exists takes milliseconds, not 8 samples).
const THREADLESS_MAX: u32 = 8;

/// What [`Samples::check_threads`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ThreadsVerdict {
    Fine,
    /// Find the interpreter again.
    Reinspect,
    /// Stop sampling it: its threads cannot be found.
    GiveUp,
}

/// What a record says of its process's samples (see `pyusage_record::Record`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFields {
    /// `cpu_sampling`.
    pub sampling: Option<String>,
    /// `cpu_sample_hz`.
    pub hz: Option<u32>,
    /// `cpu_samples_total`.
    pub total: Option<u64>,
    /// `cpu_samples_self`.
    pub self_samples: Option<u64>,
    /// `cpu_samples_inclusive`.
    pub inclusive: Option<u64>,
    /// `cpu_samples_callers`.
    pub callers: Vec<pyusage_record::CallerSamples>,
}

/// A package's sampled counts, for its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSamples {
    /// Innermost (or native) samples.
    pub self_samples: u64,
    /// Samples with it anywhere on the stack.
    pub inclusive: u64,
    /// Other packages further out on the stack of its self samples: (package index, samples),
    /// largest first, at most [`CALLERS_MAX`].
    pub callers: Vec<(u32, u64)>,
}

impl Samples {
    /// For a fork child: sampled as its parent (the kernel copied its entry), with nothing
    /// else: its packages are numbered anew, so its code objects are resolved again.
    pub fn forked(&self) -> Samples {
        Samples {
            status: self.status.clone(),
            hz: self.hz,
            ..Samples::default()
        }
    }

    /// Counts one sample toward the check of the process's kernel entry: whether the walk
    /// found the thread (`no_thread` false), and whether its instruction was in the
    /// interpreter's own code, taken at `at` (wall µs).
    pub(super) fn check_threads(
        &mut self,
        no_thread: bool,
        in_interpreter: bool,
        at: i64,
    ) -> ThreadsVerdict {
        let c = &mut self.threads;
        if !no_thread {
            c.found = true;
        }
        if c.found || !in_interpreter || at < c.since {
            return ThreadsVerdict::Fine;
        }
        c.threadless += 1;
        if c.threadless < THREADLESS_MAX {
            return ThreadsVerdict::Fine;
        }
        c.threadless = 0;
        if std::mem::replace(&mut c.reinspected, true) {
            ThreadsVerdict::GiveUp
        } else {
            c.since = i64::MAX;
            ThreadsVerdict::Reinspect
        }
    }

    /// An inspection answered at `at` (wall µs), after its worker wrote the entry: the check
    /// counts the samples taken from then on.
    pub(super) fn entry_written(&mut self, at: i64) {
        self.threads.since = at;
    }

    /// Forgets what code objects were: their addresses may be reused by new ones (a module
    /// body's code is freed once it ran, and the next import's code objects take its place).
    /// Code objects asked for stay asked: their answers, read after this, are of what is there
    /// now.
    pub fn forget_code(&mut self) {
        self.code.retain(|_, c| *c == Code::Asked);
    }

    /// Code objects of `s` not known yet (each returned once: they are marked asked).
    pub fn unknown(&mut self, s: &SampleInfo) -> Vec<u64> {
        let mut out = Vec::new();
        for &a in &s.frames {
            if self.code.len() >= CODE_MAX {
                break;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = self.code.entry(a) {
                e.insert(Code::Asked);
                out.push(a);
            }
        }
        out
    }

    /// Whether every frame of `s` is resolved (or can never be: past [`CODE_MAX`]).
    fn ready(&self, s: &SampleInfo) -> bool {
        s.frames
            .iter()
            .all(|a| !matches!(self.code.get(a), Some(Code::Asked)))
    }

    /// Takes a sample: counted now when its frames are resolved, else kept until they are.
    pub fn add(&mut self, s: SampleInfo, native: Option<u32>) {
        self.total += 1;
        if self.ready(&s) {
            self.count(&s, native);
        } else if self.pending.len() < PENDING_MAX {
            self.pending.push(s);
        } else {
            self.unattributed += 1;
        }
    }

    /// A code object's answer: counts the waiting samples it completes. `native_of` gives the
    /// package of a waiting sample's instruction.
    pub fn resolved(
        &mut self,
        addr: u64,
        package: Option<u32>,
        mut native_of: impl FnMut(&mut Samples, u64) -> Option<u32>,
    ) {
        self.code.insert(addr, Code::Package(package));
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        for s in pending {
            if self.ready(&s) {
                let n = native_of(self, s.user_ip);
                self.count(&s, n);
            } else {
                self.pending.push(s);
            }
        }
    }

    /// At the end of the process: the samples still waiting count with what is resolved.
    pub fn settle(&mut self) {
        for s in std::mem::take(&mut self.pending) {
            self.unattributed += 1;
            let n = self.native_at(s.user_ip);
            self.count(&s, n);
        }
    }

    fn package_of(&self, addr: u64) -> Option<u32> {
        match self.code.get(&addr) {
            Some(Code::Package(p)) => *p,
            _ => None,
        }
    }

    fn count(&mut self, s: &SampleInfo, native: Option<u32>) {
        let own = native.or_else(|| s.frames.first().and_then(|&a| self.package_of(a)));
        let mut on_stack: Vec<u32> = Vec::with_capacity(8);
        for p in native
            .into_iter()
            .chain(s.frames.iter().filter_map(|&a| self.package_of(a)))
        {
            if !on_stack.contains(&p) {
                on_stack.push(p);
            }
        }
        for &p in &on_stack {
            self.slot(p)[1] += 1;
        }
        if let Some(own) = own {
            self.slot(own)[0] += 1;
            for &c in on_stack.iter().filter(|&&c| c != own) {
                *self.callers.entry((own, c)).or_insert(0) += 1;
            }
        }
    }

    fn slot(&mut self, p: u32) -> &mut [u64; 2] {
        let i = p as usize;
        if self.counts.len() <= i {
            self.counts.resize(i + 1, [0; 2]);
        }
        &mut self.counts[i]
    }

    /// The counts of package `i`, for its record.
    pub fn of_package(&self, i: u32) -> PackageSamples {
        let [self_samples, inclusive] = self.counts.get(i as usize).copied().unwrap_or([0; 2]);
        let mut callers: Vec<(u32, u64)> = self
            .callers
            .iter()
            .filter(|((own, _), _)| *own == i)
            .map(|(&(_, c), &n)| (c, n))
            .collect();
        callers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        callers.truncate(CALLERS_MAX);
        PackageSamples {
            self_samples,
            inclusive,
            callers,
        }
    }

    /// The record fields of package `i`: `cpu_sampling`, `cpu_sample_hz`, the three counts and
    /// the callers (named by `name_of`).
    pub fn record_fields(&self, i: u32, name_of: impl Fn(u32) -> Option<String>) -> RecordFields {
        match &self.status {
            Status::Off => RecordFields::default(),
            Status::Unsupported(why) => RecordFields {
                sampling: Some(format!("{}{why}", pyusage_record::sampling::UNSUPPORTED)),
                hz: Some(self.hz),
                ..RecordFields::default()
            },
            Status::Sampled => {
                let s = self.of_package(i);
                RecordFields {
                    sampling: Some(pyusage_record::sampling::SAMPLED.to_owned()),
                    hz: Some(self.hz),
                    total: Some(self.total),
                    self_samples: Some(s.self_samples),
                    inclusive: Some(s.inclusive),
                    callers: s
                        .callers
                        .into_iter()
                        .filter_map(|(c, samples)| {
                            Some(pyusage_record::CallerSamples {
                                package: name_of(c)?,
                                samples,
                            })
                        })
                        .collect(),
                }
            }
        }
    }

    /// The package of the executable mapping `ip` is in, if known.
    pub fn native_at(&self, ip: u64) -> Option<u32> {
        if ip == 0 {
            return None;
        }
        let i = self.native.partition_point(|&(start, _, _)| start <= ip);
        let &(start, end, p) = self.native.get(i.checked_sub(1)?)?;
        (start <= ip && ip < end).then_some(p).flatten()
    }

    /// Whether `ip` is in no mapping read so far.
    pub fn native_unknown(&self, ip: u64) -> bool {
        if ip == 0 {
            return false;
        }
        let i = self.native.partition_point(|&(start, _, _)| start <= ip);
        !matches!(i.checked_sub(1).and_then(|i| self.native.get(i)), Some(&(s, e, _)) if s <= ip && ip < e)
    }

    /// When the mappings were last read.
    pub fn native_read_at(&self) -> i64 {
        self.native_read_at
    }

    /// Adds the executable mapping `[start, end)` (found at `at`), in place of any it
    /// overlaps (an older mapping at those addresses, since unmapped).
    pub fn add_native(&mut self, start: u64, end: u64, package: Option<u32>, at: i64) {
        self.insert_native(start, end, package);
        self.native_read_at = at;
    }

    /// Records the interpreter's own executable mapping, known from its inspection (no
    /// query of the kernel, so the next query is not held back).
    pub fn add_interpreter_text(&mut self, start: u64, end: u64) {
        self.insert_native(start, end, None);
    }

    fn insert_native(&mut self, start: u64, end: u64, package: Option<u32>) {
        self.native.retain(|&(s, e, _)| e <= start || end <= s);
        if self.native.len() >= NATIVE_MAX {
            // A process that maps executable memory without end grows no daemon state.
            self.native.clear();
        }
        let i = self.native.partition_point(|&(s, _, _)| s < start);
        self.native.insert(i, (start, end, package));
    }

    /// Records that the mappings could not be looked at, at `at`: none is looked at again
    /// for a while.
    pub fn looked_at(&mut self, at: i64) {
        self.native_read_at = at;
    }

    /// Records that the mapping `[start, end)`, seen at `at`, is a module's whose package is
    /// not known yet: it is not looked at again for a while.
    pub fn withhold(&mut self, start: u64, end: u64, at: i64) {
        self.withheld.retain(|&(s, e, _)| e <= start || end <= s);
        if self.withheld.len() >= WITHHELD_MAX {
            self.withheld.remove(0);
        }
        self.withheld.push((start, end, at));
    }

    /// Whether `ip` is in a mapping withheld after `since`.
    pub fn withheld_since(&self, ip: u64, since: i64) -> bool {
        self.withheld
            .iter()
            .any(|&(s, e, at)| s <= ip && ip < e && at > since)
    }

    /// Replaces the executable mappings (read at `at`).
    pub fn set_native(&mut self, mut maps: Vec<(u64, u64, Option<u32>)>, at: i64) {
        maps.sort_unstable_by_key(|m| m.0);
        self.native = maps;
        self.native_read_at = at;
    }
}

/// The executable file mappings of a live process: `[start, end)` and the file
/// (`/proc/PID/maps`; anonymous and special mappings left out).
pub fn executable_maps(pid: u32) -> std::io::Result<Vec<(u64, u64, PathBuf)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(text.lines().filter_map(parse_maps_line).collect())
}

fn parse_maps_line(line: &str) -> Option<(u64, u64, PathBuf)> {
    let mut f = line.splitn(6, ' ');
    let range = f.next()?;
    let perms = f.next()?;
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let path = f.nth(3)?.trim_start();
    if !path.starts_with('/') {
        return None;
    }
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let (a, b) = range.split_once('-')?;
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
        PathBuf::from(path),
    ))
}

/// The package directory a library that a wheel vendors belongs to: `numpy.libs/libopenblas…`
/// (auditwheel's layout) → `numpy`.
pub fn vendored_package(file: &Path) -> Option<String> {
    let dir = file.parent()?.file_name()?.to_str()?;
    dir.strip_suffix(".libs").map(str::to_owned)
}

/// Attempts at finding a process's interpreter: a process promoted for opening `libpython` has
/// not mapped it yet at the first; the next come after [`INSPECT_BACKOFF`] times the attempt.
const INSPECT_ATTEMPTS: u8 = 4;
const INSPECT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(40);

/// `cpu_sampling = unsupported:no-thread-state`: see [`THREADLESS_MAX`].
const NO_THREAD_STATE: &str = "no-thread-state";

impl ProcTable {
    /// Turns sampling on: samples are attributed, and new Python processes are inspected.
    pub fn set_sampler(&mut self, s: Sampler) {
        self.sampler = Some(s);
    }

    /// The sampler's counters, when sampling is on.
    pub fn sampler_counts(&self) -> Option<SamplerCounts> {
        self.sampler.as_ref().map(|s| s.counts)
    }

    /// The sampling rate, when sampling is on.
    pub fn sample_hz(&self) -> Option<u32> {
        self.sampler.as_ref().map(|s| s.hz)
    }

    /// Queues a new Python process for the sampler to find its interpreter.
    pub(super) fn inspect_later(&mut self, pid: u32, start: i64) {
        if self.sampler.is_some() {
            let now = std::time::Instant::now();
            self.to_inspect
                .push((pid, start, INSPECT_ATTEMPTS - 1, now));
        }
    }

    /// A fork child of a Python process: sampled as its parent is. The kernel copied the
    /// parent's entry if the fork came after the daemon wrote it; the entry is written again
    /// for the fork that came before (the answer was processed first). A parent not sampled
    /// yet has its child found on its own.
    pub(super) fn sample_child(&mut self, child: u32) {
        let Some(sampler) = self.sampler.as_mut() else {
            return;
        };
        let Some(p) = self.procs.get(&child) else {
            return;
        };
        match (&p.samples.status, &p.interp) {
            (Status::Sampled, Some(interp)) => {
                sampler.enable(child, interp);
            }
            (Status::Off, _) => {
                let start = p.start;
                self.inspect_later(child, start);
            }
            // The kernel copied its parent's entry if the fork came before it was removed.
            (Status::Unsupported(why), _) if why == NO_THREAD_STATE => sampler.disable(child),
            _ => {}
        }
    }

    /// One sample.
    pub(super) fn sample(&mut self, s: SampleInfo) {
        let at = self.wall(s.ktime_ns);
        let Some(sampler) = self.sampler.as_mut() else {
            return;
        };
        sampler.counts.samples += 1;
        if s.flags & SAMPLE_FLAG_NO_THREAD != 0 {
            sampler.counts.samples_no_thread += 1;
        }
        if s.flags & SAMPLE_FLAG_TRUNCATED != 0 {
            sampler.counts.samples_truncated += 1;
        }
        let Some(p) = self.procs.get_mut(&s.tgid) else {
            return;
        };
        let mut reinspect = None;
        if p.samples.status == Status::Sampled {
            let in_interpreter = p
                .interp
                .as_ref()
                .is_some_and(|i| (i.text.0..i.text.1).contains(&s.user_ip));
            let no_thread = s.flags & SAMPLE_FLAG_NO_THREAD != 0;
            match p.samples.check_threads(no_thread, in_interpreter, at) {
                ThreadsVerdict::Fine => {}
                ThreadsVerdict::Reinspect => {
                    tracing::debug!(pid = p.pid, "no thread state found: inspected again");
                    reinspect = Some((p.pid, p.start));
                }
                ThreadsVerdict::GiveUp => {
                    tracing::debug!(pid = p.pid, "no thread state found: not sampled");
                    p.samples.status = Status::Unsupported(NO_THREAD_STATE.into());
                    sampler.disable(p.pid);
                    sampler.counts.processes_threadless += 1;
                }
            }
        }
        if p.samples.native_unknown(s.user_ip) {
            match p.interp.as_ref().map(|i| i.text) {
                // The interpreter's own code (most samples: its evaluation loop), charged to
                // no package: the kernel is not asked.
                Some((start, end)) if (start..end).contains(&s.user_ip) => {
                    p.samples.add_interpreter_text(start, end)
                }
                _ if at - p.samples.native_read_at() > NATIVE_EVERY_US
                    && !p.samples.withheld_since(s.user_ip, at - NATIVE_EVERY_US) =>
                {
                    look_up_native(p, s.user_ip, at)
                }
                _ => {}
            }
        }
        let native = p.samples.native_at(s.user_ip);
        let mut unknown = p.samples.unknown(&s);
        // Each code object remembered is charged to the process and its user, as the import
        // state is: a process that makes up addresses cannot grow the daemon without end.
        let n = unknown.len() * super::ENTRY_BYTES;
        if n > 0
            && !Shared::charge_parts(
                &mut self.shared.uid_bytes,
                &mut self.shared.state_bounded,
                &mut p.bytes,
                p.uid,
                n,
            )
        {
            for a in unknown.drain(..) {
                p.samples.resolved(a, None, |_, _| None);
            }
        }
        if !unknown.is_empty() {
            match p.interp.is_some() {
                // Asked at the end of the batch (`resolve_sampled`), with the process's
                // other samples in it: one job, not one per sample.
                true => match self
                    .to_resolve
                    .iter_mut()
                    .find(|(pid, start, _)| (*pid, *start) == (p.pid, p.start))
                {
                    Some((_, _, addrs)) => addrs.extend(unknown),
                    None => self.to_resolve.push((p.pid, p.start, unknown)),
                },
                // A fork child sampled before its own interpreter handle came: its parent's
                // is the same image at the same addresses.
                false => unknown
                    .iter()
                    .for_each(|&a| p.samples.resolved(a, None, |_, _| None)),
            }
        }
        p.samples.add(s, native);
        if let Some((pid, start)) = reinspect {
            self.inspect_later(pid, start);
        }
    }

    /// Asks the sampler's workers for the files of the code objects sampled since the last
    /// call, a job per process (of at most [`ADDRS_PER_JOB`]). A process that ended since
    /// is not asked: its memory is gone, and its samples were settled at its end.
    fn resolve_sampled(&mut self) {
        let Some(sampler) = self.sampler.as_mut() else {
            return;
        };
        for (pid, start, addrs) in std::mem::take(&mut self.to_resolve) {
            let Some(p) = self.procs.get_mut(&pid).filter(|p| p.start == start) else {
                continue;
            };
            let Some(interp) = p.interp.clone() else {
                continue;
            };
            for addrs in addrs.chunks(ADDRS_PER_JOB) {
                let job = Job::Resolve {
                    pid,
                    start,
                    interp: interp.clone(),
                    addrs: addrs.to_vec(),
                };
                if !sampler.submit(job) {
                    addrs
                        .iter()
                        .for_each(|&a| p.samples.resolved(a, None, |_, _| None));
                }
            }
        }
    }

    /// When [`Self::sampler_upkeep`] has work next: an inspection to try again.
    pub fn sampler_due(&self) -> Option<std::time::Instant> {
        self.sampler.as_ref()?;
        self.to_inspect.iter().map(|&(_, _, _, at)| at).min()
    }

    /// Collects the sampler's answers and queues what is due; called before and after each
    /// batch of events (answers first, so that a process's answers count before its exit in
    /// the batch), on the processor's tick, when [`Self::sampler_due`] says, and when a
    /// worker asks for it (an inspection to retry).
    pub fn sampler_upkeep(&mut self) {
        self.resolve_sampled();
        let Some(sampler) = self.sampler.as_mut() else {
            return;
        };
        let now = std::time::Instant::now();
        for (pid, start, left, at) in std::mem::take(&mut self.to_inspect) {
            if at > now {
                self.to_inspect.push((pid, start, left, at));
            } else if !sampler.submit(Job::Inspect { pid, start, left }) && left > 0 {
                self.to_inspect
                    .push((pid, start, left - 1, now + INSPECT_BACKOFF));
            }
        }
        let answers = sampler.answers();
        for a in answers {
            match a {
                Answer::Inspected {
                    pid,
                    start,
                    result,
                    left,
                    enabled,
                } => self.inspected(pid, start, result, left, enabled),
                Answer::Resolved { pid, start, files } => self.code_files(pid, start, files),
            }
        }
    }

    /// An inspection's answer. A worker that found the interpreter enabled the kernel's walk
    /// of the process itself (`enabled`); if the process has ended since (its exit and exec
    /// events clear its entry, which the worker may have written after them), the entry is
    /// written again for the process now under that pid when that one is sampled, else removed.
    pub(super) fn inspected(
        &mut self,
        pid: u32,
        start: i64,
        result: Result<Arc<Interpreter>, CpythonError>,
        left: u8,
        enabled: bool,
    ) {
        let at = self.wall(crate::clock::boot_ns());
        let Some(sampler) = self.sampler.as_mut() else {
            return;
        };
        let Some(p) = self.procs.get_mut(&pid).filter(|p| p.start == start) else {
            if enabled {
                // The pid's entry may now hold an ended process's layout.
                match self.procs.get(&pid) {
                    Some(now) => match &now.interp {
                        Some(interp) => {
                            sampler.enable(pid, interp);
                        }
                        // Its own inspection may have written its entry before this one:
                        // inspected again, after the entry is removed.
                        None => {
                            sampler.disable(pid);
                            let now = (pid, now.start, 0, std::time::Instant::now());
                            self.to_inspect.push(now);
                        }
                    },
                    None => sampler.disable(pid),
                }
            }
            return;
        };
        match result {
            Ok(interp) => {
                if enabled {
                    if p.samples.status != Status::Sampled {
                        sampler.counts.processes_sampled += 1;
                    }
                    p.samples.status = Status::Sampled;
                    p.samples.hz = sampler.hz;
                    p.samples.entry_written(at);
                    p.interp = Some(interp);
                } else {
                    sampler.counts.map_full += 1;
                }
            }
            Err(CpythonError::Unsupported(reason)) => {
                tracing::debug!(pid, "not sampled: {reason}");
                sampler.counts.processes_unsupported += 1;
                p.samples.status = Status::Unsupported(short_reason(&reason));
                p.samples.hz = sampler.hz;
            }
            Err(e) => {
                tracing::debug!(pid, "interpreter not found yet: {e}");
                if left > 0 {
                    let wait = INSPECT_BACKOFF * u32::from(INSPECT_ATTEMPTS - left);
                    let at = std::time::Instant::now() + wait;
                    self.to_inspect.push((pid, start, left - 1, at));
                }
            }
        }
    }

    fn code_files(&mut self, pid: u32, start: i64, files: Vec<(u64, Option<PathBuf>)>) {
        let at = self.wall(crate::clock::boot_ns());
        let Some(p) = self.procs.get_mut(&pid).filter(|p| p.start == start) else {
            return;
        };
        for (addr, file) in files {
            let package = file
                .filter(|f| f.is_absolute())
                .and_then(|f| Self::import(&mut self.shared, p, &f, at, Seen::Sampled))
                .map(|i| i as u32);
            p.samples.resolved(addr, package, |s, ip| s.native_at(ip));
        }
    }

    /// At a process's end: its waiting samples count with what is resolved.
    pub(super) fn settle_samples(&mut self, p: &mut Process) {
        let before = p.samples.unattributed;
        p.samples.settle();
        if let Some(s) = self.sampler.as_mut() {
            s.counts.samples_unattributed += p.samples.unattributed - before;
        }
    }
}

/// The reason a record gives (`cpu_sampling = unsupported:<reason>`) for what the interpreter
/// inspection said in prose (with the image's path, which a record does not repeat).
fn short_reason(why: &str) -> String {
    if why.contains("free-threaded") {
        return "free-threaded".into();
    }
    if why.contains("debug build") {
        return "debug-build".into();
    }
    if why.contains("not x86-64") {
        return "not-x86-64".into();
    }
    if why.contains("without _PyRuntime") {
        return "python-before-3.7".into();
    }
    // "…: CPython 3.7: before 3.8", "…: CPython 3.14.0: after 3.13".
    if let Some(v) = why.split("CPython ").nth(1) {
        let v: String = v
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = v.split('.');
        if let (Some(a), Some(b)) = (parts.next(), parts.next()) {
            return format!("python-{a}.{b}");
        }
    }
    "interpreter-layout".into()
}

/// How often a mapping is looked at again at most, when a sample's instruction is in a
/// module's whose import the daemon had not taken yet (or, where the kernel cannot be asked
/// for one mapping, how often the few hundred lines of `/proc/PID/maps` are read again): at
/// most ten times a second and only while samples land in such a file.
const NATIVE_EVERY_US: i64 = 100_000;

/// Executable mappings remembered per process at most (more than any real program has
/// samples land in; the set starts again when full).
const NATIVE_MAX: usize = 1024;

/// Withheld mappings remembered per process at most.
const WITHHELD_MAX: usize = 16;

/// Finds the mapping of `ip` in `p` and its package ([`native_package`]): one query of the
/// kernel, or the whole table where the kernel cannot be asked ([`read_native`]).
fn look_up_native(p: &mut Process, ip: u64, at: i64) {
    use crate::procmaps::Covering;
    match crate::procmaps::covering(p.pid, ip) {
        Ok(Covering::Found(vma)) => {
            let package = match &vma.file {
                Some(f) => native_package(p, f),
                // Anonymous executable memory (a JIT's) and [vdso] belong to no package.
                None => NativeFile::NoPackage,
            };
            match package {
                NativeFile::Package(i) => p.samples.add_native(vma.start, vma.end, Some(i), at),
                NativeFile::NoPackage => p.samples.add_native(vma.start, vma.end, None, at),
                NativeFile::NotYet => p.samples.withhold(vma.start, vma.end, at),
            }
        }
        Ok(Covering::Unsupported) => read_native(p, at),
        Ok(Covering::Nothing) | Err(_) => p.samples.looked_at(at),
    }
}

/// What a mapped file is to a process's samples.
enum NativeFile {
    /// The file of a package the process imported (an extension module, or a library its
    /// wheel vendors in `<package>.libs`).
    Package(u32),
    /// Not a package's (the interpreter, libc).
    NoPackage,
    /// A module's of a package not known yet (its import's events are still on their way):
    /// asked again later rather than charged to no package for good.
    NotYet,
}

/// See [`NativeFile`]. A mapping never adds a package: only what the process imported, or ran
/// Python code of, is one.
fn native_package(p: &Process, f: &Path) -> NativeFile {
    if let Some(&i) = crate::imports::module_dir(f).and_then(|d| p.dirs.get(d.as_os_str())) {
        return NativeFile::Package(i as u32);
    }
    let by_name = |n: &str| p.index.get(n).map(|&i| i as u32);
    let class = crate::resolver::classify(f, &p.view);
    let vendored = vendored_package(f);
    let known = match &class {
        crate::resolver::Class::Module(loc) => by_name(&loc.package),
        _ => None,
    }
    .or_else(|| vendored.as_deref().and_then(by_name));
    match known {
        Some(i) => NativeFile::Package(i),
        None if vendored.is_some()
            || matches!(
                class,
                crate::resolver::Class::Module(_) | crate::resolver::Class::Unplaced
            ) =>
        {
            NativeFile::NotYet
        }
        None => NativeFile::NoPackage,
    }
}

/// Reads the executable mappings of `p` and the package of each file it already imported
/// (an extension module, or a library its wheel vendors in `<package>.libs`). A mapping never
/// adds a package: only what the process imported, or ran Python code of, is one.
///
/// The mappings are the process's now, while the daemon may not have taken the events of its
/// latest imports yet: a module's file whose package is not known yet is left out, so that a
/// sample inside it reads the mappings again (at most once per [`NATIVE_EVERY_US`]) instead
/// of charging it to no package for good.
fn read_native(p: &mut Process, at: i64) {
    let Ok(maps) = executable_maps(p.pid) else {
        p.samples.set_native(Vec::new(), at);
        return;
    };
    let ranges = maps
        .into_iter()
        .filter_map(|(s, e, f)| match native_package(p, &f) {
            NativeFile::Package(i) => Some((s, e, Some(i))),
            NativeFile::NotYet => None,
            NativeFile::NoPackage => Some((s, e, None)),
        })
        .collect();
    p.samples.set_native(ranges, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(frames: &[u64], ip: u64) -> SampleInfo {
        SampleInfo {
            tgid: 1,
            tid: 1,
            ktime_ns: 0,
            user_ip: ip,
            frames: frames.to_vec(),
            flags: 0,
        }
    }

    #[test]
    fn self_inclusive_and_callers() {
        let mut s = Samples::default();
        // 0x10 numpy (0), 0x20 xarray (1), 0x30 the script (no package).
        assert_eq!(s.unknown(&sample(&[0x10, 0x20, 0x30], 0)).len(), 3);
        s.add(sample(&[0x10, 0x20, 0x30], 0), None);
        s.add(sample(&[0x20, 0x30], 0), None);
        assert_eq!(s.total, 2);
        s.resolved(0x10, Some(0), |_, _| None);
        s.resolved(0x20, Some(1), |_, _| None);
        assert_eq!(s.of_package(0).self_samples, 0, "still waiting for 0x30");
        s.resolved(0x30, None, |_, _| None);
        // Native time in a numpy `.so`, called from xarray, counts as numpy's.
        s.add(sample(&[0x20, 0x30], 0x5000), Some(0));
        let numpy = s.of_package(0);
        assert_eq!((numpy.self_samples, numpy.inclusive), (2, 2));
        assert_eq!(numpy.callers, vec![(1, 2)]);
        let xarray = s.of_package(1);
        assert_eq!((xarray.self_samples, xarray.inclusive), (1, 3));
        assert!(xarray.callers.is_empty());
        assert_eq!(s.total, 3);
    }

    #[test]
    fn a_package_twice_on_the_stack_counts_once() {
        let mut s = Samples::default();
        s.unknown(&sample(&[1, 2, 3], 0));
        for (a, p) in [(1, 0), (2, 1), (3, 0)] {
            s.resolved(a, Some(p), |_, _| None);
        }
        s.add(sample(&[1, 2, 3], 0), None);
        let p0 = s.of_package(0);
        assert_eq!(
            (p0.self_samples, p0.inclusive, p0.callers),
            (1, 1, vec![(1, 1)])
        );
    }

    #[test]
    fn unresolved_frames_settle_at_the_end() {
        let mut s = Samples::default();
        s.unknown(&sample(&[1, 2], 0));
        s.resolved(1, Some(0), |_, _| None);
        s.add(sample(&[1, 2], 0), None);
        assert_eq!(s.of_package(0).self_samples, 0);
        s.settle();
        assert_eq!(s.of_package(0).self_samples, 1);
        assert_eq!(s.unattributed, 1);
    }

    #[test]
    fn native_ranges() {
        let mut s = Samples::default();
        s.set_native(vec![(0x2000, 0x3000, Some(4)), (0x1000, 0x1800, None)], 1);
        assert_eq!(s.native_at(0x2fff), Some(4));
        assert_eq!(s.native_at(0x3000), None);
        assert!(s.native_unknown(0x3000));
        assert!(!s.native_unknown(0x1100));
        assert_eq!(s.native_at(0x1100), None);
        // One mapping found by address joins the others, replacing what it overlaps.
        s.add_native(0x3000, 0x4000, Some(5), 2);
        assert_eq!(s.native_at(0x3000), Some(5));
        assert_eq!(s.native_at(0x2fff), Some(4));
        s.add_native(0x2800, 0x3800, None, 3);
        assert!(s.native_unknown(0x2000), "the overlapped mappings are gone");
        assert!(s.native_unknown(0x3900));
        assert!(!s.native_unknown(0x2900));
        assert_eq!(s.native_at(0x1100), None);
        assert!(!s.native_unknown(0x1100), "the one before stays");
        // A module's mapping whose package is not known yet is not looked at again at once.
        s.withhold(0x9000, 0xa000, 100);
        assert!(s.withheld_since(0x9800, 50));
        assert!(
            !s.withheld_since(0x9800, 100),
            "after its time it is looked at again"
        );
        assert!(!s.withheld_since(0xa000, 50));
    }

    #[test]
    fn reasons() {
        assert_eq!(
            short_reason("/x/libpython3.7m.so: CPython 3.7: before 3.8"),
            "python-3.7"
        );
        assert_eq!(
            short_reason("/x: CPython 3.14.0: after 3.13"),
            "python-3.14"
        );
        assert_eq!(
            short_reason("/x: a free-threaded build (Py_GIL_DISABLED)"),
            "free-threaded"
        );
        assert_eq!(
            short_reason("/x: a debug build (defines _Py_RefTotal)"),
            "debug-build"
        );
        assert_eq!(
            short_reason("/x: a CPython without _PyRuntime (2.x, or 3.x before 3.7)"),
            "python-before-3.7"
        );
    }

    #[test]
    fn maps_lines() {
        let l = "7f00-7f10 r-xp 00001000 08:01 1234   /usr/lib/x86_64-linux-gnu/libc.so.6";
        assert_eq!(
            parse_maps_line(l),
            Some((
                0x7f00,
                0x7f10,
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6")
            ))
        );
        assert_eq!(parse_maps_line("7f00-7f10 rw-p 00000000 00:00 0 "), None);
        assert_eq!(
            parse_maps_line("7f00-7f10 r-xp 00000000 00:00 0   [vdso]"),
            None
        );
        assert_eq!(
            vendored_package(Path::new("/s/numpy.libs/libopenblas.so")).as_deref(),
            Some("numpy")
        );
    }
}
