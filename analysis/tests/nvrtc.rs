//! Compiles the GPU kernels with NVRTC — the very compile the GPU back end runs before using a
//! device ([`compile_kernels`], with its [`NVRTC_OPTIONS`]) — on any machine: NVRTC needs no
//! driver and no GPU. So the kernels, never run where there is no device, are at least compiled
//! on every test run. Fails on an error or a warning, and fails (does not skip) when NVRTC is
//! missing: `scripts/install-deps.sh` installs it.
//!
//! How NVRTC is found. cudarc (built with `dynamic-loading`) opens it by file name only —
//! `libnvrtc.so`, then variants down to `libnvrtc.so.12` — so through the dynamic loader's
//! search path (LD_LIBRARY_PATH, ld.so.cache, /usr/lib). install-deps.sh puts PyPI's wheel in
//! /opt/pyusage-nvrtc, outside that path, and this test first opens the library there by its
//! full path ([`NVRTC_LIB`], or `$PYUSAGE_NVRTC`). The loader then answers cudarc's
//! `dlopen("libnvrtc.so.12")` with the library already loaded (it matches loaded libraries by
//! their soname, `libnvrtc.so.12`), so no LD_LIBRARY_PATH is needed. NVRTC finds its
//! `libnvrtc-builtins` beside itself. Where a CUDA toolkit puts a `libnvrtc.so` on the search
//! path, cudarc takes that one instead: the compile is checked all the same.
#![cfg(target_os = "linux")]

use std::{
    ffi::{c_char, c_int, c_void, CString},
    path::PathBuf,
};

use pyusage_analysis::gpu::{compile_kernels, KERNELS, NVRTC_OPTIONS};

/// Where `scripts/install-deps.sh` installs NVRTC.
const NVRTC_LIB: &str = "/opt/pyusage-nvrtc/nvidia/cuda_nvrtc/lib/libnvrtc.so.12";

extern "C" {
    // glibc's, linked into every Rust binary on Linux already.
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlerror() -> *const c_char;
}
const RTLD_NOW: c_int = 2;

/// Opens NVRTC by its path and keeps it loaded for the rest of the process.
fn load_nvrtc() {
    let path = std::env::var_os("PYUSAGE_NVRTC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(NVRTC_LIB));
    assert!(
        path.is_file(),
        "NVRTC not found at {} (run scripts/install-deps.sh, or set PYUSAGE_NVRTC to a \
         libnvrtc.so.12)",
        path.display()
    );
    let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("a path without NUL");
    // SAFETY: a NUL-terminated path; the handle is never closed, so the library stays loaded.
    let handle = unsafe { dlopen(c.as_ptr(), RTLD_NOW) };
    if handle.is_null() {
        // SAFETY: dlerror returns a NUL-terminated message after a failed dlopen.
        let why = unsafe { std::ffi::CStr::from_ptr(dlerror()) };
        panic!("cannot load {}: {}", path.display(), why.to_string_lossy());
    }
}

#[test]
fn nvrtc_compiles_the_kernels_without_warnings() {
    load_nvrtc();
    let compiled = match compile_kernels() {
        Ok(c) => c,
        Err(e) => panic!("{e} (options {NVRTC_OPTIONS:?})"),
    };
    let log = compiled.log.trim();
    assert!(
        log.is_empty(),
        "NVRTC warned on kernels.cu (options {NVRTC_OPTIONS:?}):\n{log}"
    );
    let ptx = compiled.ptx.to_src();
    for kernel in KERNELS {
        assert!(
            ptx.contains(&format!(".entry {kernel}(")),
            "no kernel {kernel} in the PTX"
        );
    }
}
