//! CPython from the outside: which interpreter a process runs, where its `_PyRuntime` is,
//! the offsets of the structures the CPU sampler's kernel walk reads
//! ([`tracer_common::sampling`]), and the same walk in user space (tests, `pyusage doctor`),
//! with the code objects' file names read from the process's memory.
//!
//! # Supported interpreters
//!
//! CPython **3.8 to 3.13**, x86-64, **release builds with the GIL**: the executable that
//! defines `_PyRuntime` (a static build, such as Debian's `/usr/bin/python3.X`, or an
//! embedding program) or a mapped `libpython3.X.so*` that does (`--enable-shared` builds:
//! pyenv, conda, python.org). Refused with [`CpythonError::Unsupported`]:
//! - **before 3.8**: 2.x and 3.6 have no `_PyRuntime`, 3.7's layouts differ (and it is past
//!   its end of life);
//! - **after 3.13**: 3.14 changed the frame (`owner` moved, tagged stack references); its
//!   `_Py_DebugOffsets` layout differs too;
//! - **free-threaded builds** (`Py_GIL_DISABLED`, ABI flag `t`, `python3.13t`): object headers
//!   and thread states differ; found by `_Py_DebugOffsets.free_threaded`, the symbols only
//!   they export (`_Py_DecRefShared`, `_Py_MergeZeroLocalRefcount`) and a `t` in the
//!   `libpython` soname;
//! - **debug builds** (`Py_DEBUG`, ABI flag `d`): structures gain fields; found by the symbols
//!   only `Py_REF_DEBUG`/`Py_TRACE_REFS` export (`_Py_NegativeRefcount`, `_Py_RefTotal`,
//!   `_Py_GetRefTotal`, `_Py_ForgetReference`, `_Py_PrintReferences`) and a `d` in the soname;
//! - another architecture than x86-64 (the tables are x86-64's).
//!
//! # The version
//!
//! From what the image holds, never from its file name (a renamed copy, `cp python3.9
//! worker`, is recognised): `Py_Version` (`PY_VERSION_HEX`, 3.11+, read from the file); before
//! it, the dynamic symbols each version added (3.8 `PyCode_NewWithPosOnlyArgs`, 3.9
//! `PyFrame_GetCode`, 3.10 `PyModule_AddObjectRef`), checked against the `libpython3.X` soname
//! when there is one. The layouts do not change within a minor version (the tables are the
//! same for every patch release: py-spy and the OpenTelemetry profiler use one per minor
//! version too), so the patch level ([`Version::patch`], 3.11+ only) is informative.
//!
//! # 3.13's debug offsets
//!
//! CPython 3.13 starts `_PyRuntime` with `_Py_DebugOffsets`: the cookie `"xdebugpy"`, its
//! `PY_VERSION_HEX`, whether it is free-threaded, then the offsets (and sizes) of the fields
//! out-of-process tools need: `_PyRuntimeState.interpreters.head`, the interpreter's thread
//! list, the thread state's `next`/`thread_id`/`current_frame`, the frame's
//! `previous`/`f_executable`/`owner`, the code object's `co_filename`/`co_name`/
//! `co_firstlineno`, the `str` header's `state`/`length` and `sizeof(PyASCIIObject)` (and more:
//! tuples, lists, dicts, GC). [`Interpreter::inspect`] reads it from the process, checks it
//! (cookie, version equal to `Py_Version`, not free-threaded, each offset inside its
//! structure) and prefers it to the table ([`LayoutSource`]); what it does not publish
//! (`FRAME_OWNED_BY_CSTACK`, `sizeof(PyCompactUnicodeObject)`) comes from the headers.
//!
//! # Threads
//!
//! `PyThreadState.thread_id` is `PyThread_get_thread_ident()`, that is `pthread_self()`
//! (`threading.get_ident()`), which on x86-64 glibc (and musl) is the thread's TCB address,
//! the thread pointer the `fs` register holds: the kernel matches it against
//! `task->thread.fsbase` (checked by the tests with `PTRACE_GETREGS`).
//!
//! The walk starts from `_PyRuntime.interpreters.head`, the most recently created interpreter:
//! the main one unless the program created subinterpreters (then `interpreters.main`, 8 bytes
//! after `head` in 3.8–3.13, is the main one, and `PyInterpreterState.next` links them all).
use std::{os::unix::ffi::OsStrExt, path::PathBuf, sync::Arc};

use tracer_common::sampling::{PyLayout, PyProc, FRAMES_MAX, NONE, THREADS_MAX};

mod image;
mod memory;
mod offsets;
#[cfg(test)]
mod tests;

use image::{FactsCache, ImageFacts, Mapping};
pub use memory::{Memory, STR_MAX};
pub use offsets::{
    layout, object_layout, parse_debug_offsets, DebugOffsets, DebugOffsetsError, ObjectLayout,
    DEBUG_OFFSETS_SIZE, FRAME_OWNED_BY_CSTACK,
};

/// Why a process's interpreter could not be inspected or read.
#[derive(Debug, thiserror::Error)]
pub enum CpythonError {
    /// Reading `/proc/<pid>/…` (the process is gone, or not ours to read).
    #[error("process {pid}: reading {what}: {source}")]
    Proc {
        /// The process.
        pid: u32,
        /// What was read.
        what: &'static str,
        /// The system's answer.
        #[source]
        source: std::io::Error,
    },
    /// No mapped image defines `_PyRuntime` or any CPython entry point (not Python, or an
    /// interpreter whose `libpython` is not mapped yet).
    #[error("process {pid} runs no CPython: {reason}")]
    NotPython {
        /// The process.
        pid: u32,
        /// What was found instead.
        reason: String,
    },
    /// A CPython this module does not read (see the module's documentation).
    #[error("unsupported CPython: {0}")]
    Unsupported(String),
    /// Opening an image.
    #[error("{}: {source}", path.display())]
    Open {
        /// The path opened.
        path: PathBuf,
        /// The system's answer.
        #[source]
        source: std::io::Error,
    },
    /// An image refused: not a regular file, not the file mapped, too large.
    #[error("{}: {reason}", path.display())]
    BadImage {
        /// Its path in the process.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An image that is not readable ELF.
    #[error("{}: ELF: {source}", path.display())]
    Elf {
        /// Its path in the process.
        path: PathBuf,
        /// The parser's answer.
        #[source]
        source: object::Error,
    },
    /// Reading the process's memory.
    #[error("process {pid}: reading {len} bytes at {addr:#x}: {source}")]
    Read {
        /// The process.
        pid: u32,
        /// Address.
        addr: u64,
        /// Bytes.
        len: usize,
        /// The system's answer.
        #[source]
        source: std::io::Error,
    },
    /// Memory that is not what it should be (a freed code object, a structure changing
    /// under the read).
    #[error("process {pid}: at {addr:#x}: {what}")]
    Invalid {
        /// The process.
        pid: u32,
        /// Address of the object.
        addr: u64,
        /// What is wrong.
        what: String,
    },
}

/// A CPython version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    /// 3.
    pub major: u8,
    /// 8–13.
    pub minor: u8,
    /// The patch level, when the image states it (`Py_Version`: 3.11+).
    pub patch: Option<u8>,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(p) = self.patch {
            write!(f, ".{p}")?;
        }
        Ok(())
    }
}

/// Where an interpreter's offsets came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutSource {
    /// The interpreter's own `_Py_DebugOffsets` (3.13).
    DebugOffsets,
    /// This module's table ([`layout`], [`object_layout`]).
    Table,
    /// The table, as a 3.13's `_Py_DebugOffsets` was refused (why).
    TableInstead(String),
}

/// A process's CPython interpreter, found by [`Interpreter::inspect`].
#[derive(Clone, Debug)]
pub struct Interpreter {
    /// The process.
    pub pid: u32,
    /// Its version.
    pub version: Version,
    /// The image that defines `_PyRuntime` (path in the process's mount namespace).
    pub image: PathBuf,
    /// Whether that image is the executable (else a `libpython`).
    pub in_executable: bool,
    /// The executable mapping of that image (start, end): an instruction there is the
    /// interpreter's own, known without asking the kernel which file holds it.
    pub text: (u64, u64),
    /// Address of `_PyRuntime`.
    pub runtime: u64,
    /// The kernel walk's offsets.
    pub layout: PyLayout,
    /// Code object and `str` offsets.
    pub objects: ObjectLayout,
    /// Where [`Self::layout`] and [`Self::objects`] came from.
    pub source: LayoutSource,
    /// Address of `PyCode_Type` (0: unknown, code objects not checked).
    pub code_type: u64,
    /// Address of `PyUnicode_Type` (0: unknown, strings not checked).
    pub str_type: u64,
}

/// One thread state's stack, as the kernel would send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadStack {
    /// `PyThreadState.thread_id`: `pthread_self()`, the thread's `fsbase`.
    pub thread_id: u64,
    /// Code objects, innermost first, C-stack-owned frames skipped.
    pub frames: Vec<u64>,
    /// The stack was deeper than [`FRAMES_MAX`].
    pub truncated: bool,
    /// A read failed mid-walk: `frames` are those read before.
    pub read_failed: bool,
}

/// A code object's names, for debugging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    /// `co_filename`.
    pub filename: String,
    /// `co_name`.
    pub name: String,
    /// `co_firstlineno`.
    pub firstlineno: i32,
}

/// Inspects processes, remembering the images it read (one read per interpreter build, not
/// per process).
#[derive(Default)]
pub struct Inspector {
    facts: FactsCache,
}

impl Inspector {
    /// A new inspector with an empty cache.
    pub fn new() -> Inspector {
        Inspector::default()
    }

    /// See [`Interpreter::inspect`].
    pub fn inspect(&mut self, pid: u32) -> Result<Interpreter, CpythonError> {
        let proc_err = |what, source| CpythonError::Proc { pid, what, source };
        let exe = std::fs::metadata(format!("/proc/{pid}/exe")).map_err(|e| proc_err("exe", e))?;
        let exe = {
            use std::os::unix::fs::MetadataExt;
            (exe.dev(), exe.ino())
        };
        // Only the executable mappings of files are asked of the kernel, one by one (a
        // short process inspected early has a few dozen; the whole `maps` text has hundreds
        // of lines once numpy is loaded); a kernel that cannot be asked gives the text.
        let mut queries = crate::procmaps::Maps::open(pid).map_err(|e| proc_err("maps", e))?;
        let mappings = match &mut queries {
            Some(q) => q
                .executable_files()
                .map_err(|e| proc_err("maps", e))?
                .into_iter()
                .filter_map(Mapping::of_vma)
                .collect(),
            None => image::parse_maps(
                &std::fs::read_to_string(format!("/proc/{pid}/maps"))
                    .map_err(|e| proc_err("maps", e))?,
            ),
        };
        // The executable first, then each `libpython*`, once per file.
        let mut candidates: Vec<&Mapping> = Vec::new();
        for m in &mappings {
            let is_exe = (m.dev, m.ino) == exe;
            let is_lib = m
                .path
                .file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"libpython"));
            if (is_exe || is_lib) && !candidates.iter().any(|c| (c.dev, c.ino) == (m.dev, m.ino)) {
                if is_exe {
                    candidates.insert(0, m);
                } else {
                    candidates.push(m);
                }
            }
        }
        let mut cpython_without_runtime = None;
        let mut first_error = None;
        for c in candidates {
            let facts = match self.facts.get(pid, c, (c.dev, c.ino) == exe) {
                Ok(f) => f,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            if let Some(&runtime_vaddr) = facts.symbols.get("_PyRuntime") {
                // `_PyRuntime` is in the data segment (`.data`, or `.bss` before 3.11),
                // mapped after the code. One query, at the address the code's mapping puts the
                // segment's start at, finds the segment's mapping; else every mapping of the
                // file from the code's on is looked at. Either must place the image where the
                // code does (`confirmed_bias`: a library still being mapped is not).
                let mut bias = None;
                let segment_start = facts
                    .segment_of(runtime_vaddr)
                    .and_then(|seg| facts.address_in(seg.vaddr, c));
                if let (Some(q), Some(at)) = (&mut queries, segment_start) {
                    bias = q
                        .file_at(at)
                        .map_err(|e| proc_err("maps", e))?
                        .and_then(Mapping::of_vma)
                        .filter(|d| (d.dev, d.ino) == (c.dev, c.ino))
                        .and_then(|d| facts.confirmed_bias(runtime_vaddr, c, &[&d]));
                }
                if bias.is_none() {
                    let run: Vec<Mapping> = match &mut queries {
                        Some(q) => q
                            .file_run(c.start, c.dev, c.ino)
                            .map_err(|e| proc_err("maps", e))?
                            .into_iter()
                            .filter_map(Mapping::of_vma)
                            .collect(),
                        None => Vec::new(),
                    };
                    let same_file: Vec<&Mapping> = match &queries {
                        Some(_) => run.iter().collect(),
                        None => mappings
                            .iter()
                            .filter(|m| (m.dev, m.ino) == (c.dev, c.ino))
                            .collect(),
                    };
                    bias = facts.confirmed_bias(runtime_vaddr, c, &same_file);
                }
                return interpreter(pid, c, (c.dev, c.ino) == exe, &facts, bias);
            }
            if facts.symbols.contains_key("Py_Initialize")
                && facts.symbols.contains_key("PyCode_Type")
            {
                cpython_without_runtime.get_or_insert(c.path.clone());
            }
        }
        if let Some(path) = cpython_without_runtime {
            return Err(CpythonError::Unsupported(format!(
                "{}: a CPython without _PyRuntime (2.x, or 3.x before 3.7)",
                path.display()
            )));
        }
        Err(first_error.unwrap_or_else(|| CpythonError::NotPython {
            pid,
            reason: "neither its executable nor a mapped libpython defines _PyRuntime".into(),
        }))
    }
}

/// The version an image states: `Py_Version`, else its symbols (checked against its soname).
fn version(facts: &ImageFacts, image: &std::path::Path) -> Result<Version, CpythonError> {
    let unsupported =
        |why: String| CpythonError::Unsupported(format!("{}: {why}", image.display()));
    let soname = facts.soname.as_deref().and_then(soname_version);
    if let Some((_, _, flags)) = &soname {
        if flags.contains('t') {
            return Err(unsupported("a free-threaded build (soname flag t)".into()));
        }
        if flags.contains('d') {
            return Err(unsupported("a debug build (soname flag d)".into()));
        }
    }
    if let Some(hex) = facts.py_version {
        let v = Version {
            major: (hex >> 24) as u8,
            minor: (hex >> 16) as u8,
            patch: Some((hex >> 8) as u8),
        };
        if let Some((major, minor, _)) = soname {
            if (major, minor) != (v.major, v.minor) {
                return Err(unsupported(format!(
                    "Py_Version says {v}, the soname {major}.{minor}"
                )));
            }
        }
        return Ok(v);
    }
    let has = |s| facts.symbols.contains_key(s);
    if has("Py_Version") {
        // Defined outside the file's bytes: not a build to guess about.
        return Err(unsupported("Py_Version is not in the file".into()));
    }
    let by_symbols = if has("PyModule_AddObjectRef") {
        10
    } else if has("PyFrame_GetCode") {
        9
    } else if has("PyCode_NewWithPosOnlyArgs") {
        8
    } else {
        // Before 3.8 (or an image that lost its exports).
        7
    };
    let minor = match soname {
        None => by_symbols,
        Some((3, minor, _)) if minor == by_symbols || (by_symbols == 7 && minor < 7) => minor,
        Some((major, minor, _)) => {
            return Err(unsupported(format!(
                "its symbols say 3.{by_symbols}, its soname {major}.{minor}"
            )))
        }
    };
    Ok(Version {
        major: 3,
        minor,
        patch: None,
    })
}

/// `libpython3.9.so.1.0` → (3, 9, ""), `libpython3.13t.so.1.0` → (3, 13, "t").
fn soname_version(soname: &str) -> Option<(u8, u8, String)> {
    let rest = soname.strip_prefix("libpython")?;
    let (major, rest) = rest.split_once('.')?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let minor = rest[..digits].parse().ok()?;
    let flags = rest[digits..].split('.').next().unwrap_or("");
    Some((major.parse().ok()?, minor, flags.to_owned()))
}

/// The interpreter of `pid` whose image (its code mapped as `mapping`, loaded at `bias`: `None`
/// when no mapping of the file holds `_PyRuntime`) says `facts`.
fn interpreter(
    pid: u32,
    mapping: &Mapping,
    in_executable: bool,
    facts: &Arc<ImageFacts>,
    bias: Option<u64>,
) -> Result<Interpreter, CpythonError> {
    let path = &mapping.path;
    let unsupported = |why: &str| CpythonError::Unsupported(format!("{}: {why}", path.display()));
    let version = version(facts, path)?;
    if (version.major, version.minor) < (3, 8) {
        return Err(unsupported(&format!("CPython {version}: before 3.8")));
    }
    if (version.major, version.minor) > (3, 13) {
        return Err(unsupported(&format!("CPython {version}: after 3.13")));
    }
    let has = |s| facts.symbols.contains_key(s);
    if has("_Py_DecRefShared") || has("_Py_MergeZeroLocalRefcount") {
        return Err(unsupported("a free-threaded build (Py_GIL_DISABLED)"));
    }
    if let Some(s) = [
        "_Py_NegativeRefcount",
        "_Py_RefTotal",
        "_Py_GetRefTotal",
        "_Py_ForgetReference",
        "_Py_PrintReferences",
    ]
    .into_iter()
    .find(|s| has(s))
    {
        return Err(unsupported(&format!("a debug build (defines {s})")));
    }
    if !facts.x86_64 {
        return Err(unsupported("not x86-64"));
    }
    let runtime_vaddr = facts.symbols["_PyRuntime"];
    let bias = bias.ok_or_else(|| CpythonError::BadImage {
        path: path.clone(),
        reason:
            "the segment of _PyRuntime is not mapped where its code places it (not loaded yet?)"
                .into(),
    })?;
    let at = |s: &str| facts.symbols.get(s).map_or(0, |v| v.wrapping_add(bias));
    let runtime = runtime_vaddr.wrapping_add(bias);
    let mut layout = offsets::layout(version.major, version.minor).expect("3.8–3.13");
    let mut objects = offsets::object_layout(version.major, version.minor).expect("3.8–3.13");
    let mut source = LayoutSource::Table;
    if version.minor == 13 {
        let mut bytes = vec![0u8; DEBUG_OFFSETS_SIZE];
        let read = Memory::new(pid).read(runtime, &mut bytes);
        let hex = facts.py_version.map_or(0, u64::from);
        match read.map(|()| parse_debug_offsets(&bytes, hex)) {
            Ok(Ok(d)) => {
                layout = d.layout;
                objects = d.objects;
                source = LayoutSource::DebugOffsets;
            }
            Ok(Err(DebugOffsetsError::FreeThreaded)) => {
                return Err(unsupported("a free-threaded build (_Py_DebugOffsets)"));
            }
            // Unreadable or implausible: the table.
            Ok(Err(e)) => source = LayoutSource::TableInstead(e.to_string()),
            Err(e) => source = LayoutSource::TableInstead(e.to_string()),
        }
    }
    Ok(Interpreter {
        pid,
        version,
        image: path.clone(),
        in_executable,
        text: (mapping.start, mapping.end),
        runtime,
        layout,
        objects,
        source,
        code_type: at("PyCode_Type"),
        str_type: at("PyUnicode_Type"),
    })
}

impl Interpreter {
    /// Finds the CPython interpreter of process `pid`: the image (executable or mapped
    /// `libpython3.X.so*`) that defines `_PyRuntime`, its address (symbol value plus the load
    /// bias of the mapping that covers its segment), the version, and the offsets (3.13: its
    /// `_Py_DebugOffsets` when valid). Reads `/proc/<pid>/{maps,exe}`, the image's headers and
    /// dynamic symbols (opened as the very file mapped), and for 3.13 584 bytes of the
    /// process. Use an [`Inspector`] to inspect many processes.
    pub fn inspect(pid: u32) -> Result<Interpreter, CpythonError> {
        Inspector::new().inspect(pid)
    }

    /// Its entry in the kernel's `PYPROCS` map.
    pub fn py_proc(&self) -> PyProc {
        PyProc {
            runtime: self.runtime,
            layout: self.layout,
            deep: 0,
            tstate_tid: 0,
            tstate: 0,
            first_sample_ns: 0,
            wake_code: 0,
        }
    }

    fn memory(&self) -> Memory {
        Memory::new(self.pid)
    }

    fn invalid(&self, addr: u64, what: String) -> CpythonError {
        CpythonError::Invalid {
            pid: self.pid,
            addr,
            what,
        }
    }

    /// Reads the code object at `code` (its type checked against `PyCode_Type`): the bytes up
    /// to `end`, in one read.
    fn code(&self, code: u64, end: u32) -> Result<Vec<u8>, CpythonError> {
        let mut b = vec![0u8; end as usize];
        self.memory().read(code, &mut b)?;
        let ob_type = word(&b, self.objects.ob_type);
        if self.code_type != 0 && ob_type != self.code_type {
            return Err(self.invalid(code, format!("not a code object (type {ob_type:#x})")));
        }
        Ok(b)
    }

    /// `co_filename` of the code object at `code` as bytes, as the file system names the file
    /// (`os.fsencode`). Two reads (code object, string) for names up to 512 bytes.
    pub fn code_path_bytes(&self, code: u64) -> Result<Vec<u8>, CpythonError> {
        let b = self.code(code, self.objects.code_filename + 8)?;
        let name = word(&b, self.objects.code_filename);
        self.memory().str_bytes(name, &self.objects, self.str_type)
    }

    /// [`Self::code_path_bytes`] of each of `codes` (`None` where it fails), in a few reads:
    /// every code object's type and `co_filename` pointer in one `process_vm_readv` (see
    /// [`Memory::words`]), then each distinct `str` once. A sample's frames lie in a few
    /// files, and the functions of one file share its name's `str`: one read per code object,
    /// two each before, was most of the sampler threads' system calls.
    pub fn code_paths_bytes(&self, codes: &[u64]) -> Vec<Option<Vec<u8>>> {
        let ranges: Vec<u64> = codes
            .iter()
            .flat_map(|&c| {
                [
                    c.wrapping_add(self.objects.ob_type as u64),
                    c.wrapping_add(self.objects.code_filename as u64),
                ]
            })
            .collect();
        let words = self.memory().words(&ranges);
        let mut names: std::collections::HashMap<u64, Option<Vec<u8>>> = Default::default();
        words
            .chunks_exact(2)
            .map(|w| {
                let (Some(ob_type), Some(name)) = (w[0], w[1]) else {
                    return None;
                };
                if self.code_type != 0 && ob_type != self.code_type {
                    return None;
                }
                names
                    .entry(name)
                    .or_insert_with(|| {
                        self.memory()
                            .str_bytes(name, &self.objects, self.str_type)
                            .ok()
                    })
                    .clone()
            })
            .collect()
    }

    /// `co_filename` of the code object at `code` (at most [`STR_MAX`] characters; a byte
    /// that the file system name has but UTF-8 cannot say becomes U+FFFD: see
    /// [`Self::code_path_bytes`] for the exact name).
    pub fn code_filename(&self, code: u64) -> Result<String, CpythonError> {
        Ok(String::from_utf8_lossy(&self.code_path_bytes(code)?).into_owned())
    }

    /// `co_filename`, `co_name` and `co_firstlineno` of the code object at `code`.
    pub fn code_info(&self, code: u64) -> Result<CodeInfo, CpythonError> {
        let o = &self.objects;
        let end = o.code_filename.max(o.code_name).max(o.code_firstlineno) + 8;
        let b = self.code(code, end)?;
        let string = |at: u32| {
            self.memory()
                .str_bytes(word(&b, at), o, self.str_type)
                .map(|s| String::from_utf8_lossy(&s).into_owned())
        };
        let line = o.code_firstlineno as usize;
        Ok(CodeInfo {
            filename: string(o.code_filename)?,
            name: string(o.code_name)?,
            firstlineno: i32::from_le_bytes(b[line..line + 4].try_into().expect("4 bytes")),
        })
    }

    /// Every thread state of the interpreter at `_PyRuntime.interpreters.head` (at most
    /// [`THREADS_MAX`], as the kernel), each with its stack: the kernel's walk (module
    /// documentation of [`tracer_common::sampling`]) done from user space. Empty before the
    /// interpreter is initialised. The process runs meanwhile: a stack may be read while it
    /// changes (then [`ThreadStack::read_failed`], or frames of two moments).
    pub fn walk_threads(&self) -> Result<Vec<ThreadStack>, CpythonError> {
        let l = &self.layout;
        let mem = self.memory();
        let interp = mem.u64(self.runtime + l.runtime_interp_head as u64)?;
        if interp == 0 {
            return Ok(Vec::new());
        }
        let mut ts = mem.u64(interp + l.interp_tstate_head as u64)?;
        let end = l.tstate_next.max(l.tstate_thread_id).max(l.tstate_frame) + 8;
        let mut out = Vec::new();
        let mut buf = vec![0u8; end as usize];
        while ts != 0 && out.len() < THREADS_MAX as usize {
            mem.read(ts, &mut buf)?;
            let (frames, truncated, read_failed) = self.walk_frames(word(&buf, l.tstate_frame));
            out.push(ThreadStack {
                thread_id: word(&buf, l.tstate_thread_id),
                frames,
                truncated,
                read_failed,
            });
            ts = word(&buf, l.tstate_next);
        }
        Ok(out)
    }

    /// The frames from `frame` (the thread state's `frame`/`cframe`/`current_frame`):
    /// (code objects, truncated, read failed).
    fn walk_frames(&self, frame: u64) -> (Vec<u64>, bool, bool) {
        let l = &self.layout;
        let mem = self.memory();
        let mut f = frame;
        let mut frames = Vec::new();
        if l.cframe_current_frame != NONE && f != 0 {
            match mem.u64(f + l.cframe_current_frame as u64) {
                Ok(v) => f = v,
                Err(_) => return (frames, false, true),
            }
        }
        let owner = (l.frame_owner != NONE).then_some(l.frame_owner);
        let end = l
            .frame_back
            .max(l.frame_code)
            .max(owner.map_or(0, |o| o.saturating_sub(7)))
            + 8;
        let mut buf = vec![0u8; end as usize];
        // Skipped shim frames count too, so that a cycle ends.
        for _ in 0..2 * FRAMES_MAX {
            if f == 0 {
                return (frames, false, false);
            }
            if frames.len() == FRAMES_MAX {
                return (frames, true, false);
            }
            if mem.read(f, &mut buf).is_err() {
                return (frames, false, true);
            }
            let skip = owner.is_some_and(|o| buf[o as usize] as u32 == l.owner_cstack);
            if !skip {
                frames.push(word(&buf, l.frame_code));
            }
            f = word(&buf, l.frame_back);
        }
        (frames, f != 0, false)
    }
}

/// The 8-byte word at `at` of `b`.
fn word(b: &[u8], at: u32) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// [`Interpreter::inspect`] then [`Interpreter::walk_threads`].
pub fn walk_threads(pid: u32) -> Result<Vec<ThreadStack>, CpythonError> {
    Interpreter::inspect(pid)?.walk_threads()
}
