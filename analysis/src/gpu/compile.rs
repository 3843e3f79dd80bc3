//! `kernels.cu` → PTX with NVRTC. The one place the compile's options are set: the GPU back
//! end compiles with [`compile_kernels`] at run time, and so does the test that compiles the
//! kernels where there is no GPU (`tests/nvrtc.rs`), so CI checks the very compile a device
//! would run, warnings included.
use std::ffi::{c_char, CStr, CString};

use cudarc::nvrtc::{result, sys, Ptx};

use crate::backend::GpuError;

/// The kernels' source, built into the binary (no file to find at run time).
pub const SOURCE: &str = include_str!("../kernels.cu");

/// The kernels of [`SOURCE`] (`extern "C"`, so their PTX names are these).
pub const KERNELS: &[&str] = &[
    "fill",
    "count_rows",
    "distinct_count",
    "job_masks",
    "pairs",
    "blas_masks",
    "blas_count",
];

/// NVRTC's options for `kernels.cu`. None: NVRTC's default virtual architecture, whose PTX the
/// driver compiles for whatever device it runs on when the module is loaded.
pub const NVRTC_OPTIONS: &[&str] = &[];

/// The compiled kernels.
pub struct Compiled {
    /// PTX text, for `CudaContext::load_module`.
    pub ptx: Ptx,
    /// NVRTC's log: empty unless it had a warning to give (an error is a [`GpuError::Compile`]).
    pub log: String,
}

/// An NVRTC program, destroyed when dropped (on every path out of [`compile_kernels`]).
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by `create_program`, destroyed once, here. A failure to free leaks
        // the program and is not worth failing the run for.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

/// Compiles [`SOURCE`] with [`NVRTC_OPTIONS`]. NVRTC is probed first: cudarc's dynamic loading
/// panics at the first call into a library that is not there.
pub fn compile_kernels() -> Result<Compiled, GpuError> {
    // SAFETY: only loads (dlopen) the library and looks up symbols; no NVRTC call is made.
    if !unsafe { sys::is_culib_present() } {
        return Err(GpuError::NoNvrtc);
    }
    let src = CString::new(SOURCE).expect("kernels.cu has no NUL byte");
    let prog = Program(result::create_program(&src, Some(c"kernels.cu")).map_err(GpuError::Nvrtc)?);
    // SAFETY: `prog` is live until dropped at the end of this function.
    let compiled = unsafe { result::compile_program(prog.0, NVRTC_OPTIONS) };
    // SAFETY: as above; the log exists whether or not the compile succeeded.
    let log = text(&unsafe { result::get_program_log(prog.0) }.map_err(GpuError::Nvrtc)?);
    if let Err(source) = compiled {
        return Err(GpuError::Compile { log, source });
    }
    // SAFETY: as above, after a successful compile.
    let ptx = text(&unsafe { result::get_ptx(prog.0) }.map_err(GpuError::Nvrtc)?);
    Ok(Compiled {
        ptx: Ptx::from_src(ptx),
        log,
    })
}

/// NVRTC's NUL-terminated text (log or PTX) as a string, without the NUL.
fn text(raw: &[c_char]) -> String {
    let bytes: Vec<u8> = raw.iter().map(|&c| c as u8).collect();
    match CStr::from_bytes_until_nul(&bytes) {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}
