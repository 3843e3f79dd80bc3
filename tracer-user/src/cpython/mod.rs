//! CPython from the outside: the offsets of the structures the CPU sampler's kernel walk
//! reads ([`tracer_common::sampling`]) for 3.8–3.13 (x86-64, release builds with the GIL),
//! 3.13's `_Py_DebugOffsets`, and reading a process's memory and the `str` objects in it.
use std::path::PathBuf;

mod memory;
mod offsets;

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
