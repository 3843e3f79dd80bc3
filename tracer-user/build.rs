//! Builds the eBPF object (`tracer-ebpf`, nightly + bpf-linker) and places it in `OUT_DIR`,
//! from where `src/loader.rs` embeds it. `AYA_BUILD_SKIP=1` skips this for clippy and quick
//! checks (the binary then carries an empty object and refuses to attach).
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let obj = out.join("tracer-ebpf");
    if std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true") {
        if !obj.exists() {
            std::fs::write(&obj, [])?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    // The programs are built from tracer-common's types and constants too; aya-build only
    // watches the eBPF crate's own directory.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer-common/src")
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "tracer-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
}
