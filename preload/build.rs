//! Links the library with `-z defs`: every symbol it uses must be found in the libraries it
//! names (libc), so a missing one is a link error, not a library that fails to load (it is
//! linked with `-z now`) in every process of a node.
//!
//! Also sets `cfg(open_wrappers)` on the targets where the `open` wrappers of open mode are
//! built (Linux on x86-64 and AArch64): they take C's variadic `mode` as a fixed parameter,
//! which those calling conventions allow (see `src/open_mode.rs`).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-cdylib-link-arg=-Wl,-z,defs");
    println!("cargo::rustc-check-cfg=cfg(open_wrappers)");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let arch = var("CARGO_CFG_TARGET_ARCH");
    if var("CARGO_CFG_TARGET_OS") == "linux" && (arch == "x86_64" || arch == "aarch64") {
        println!("cargo::rustc-cfg=open_wrappers");
    }
}
