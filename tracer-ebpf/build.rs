//! Rebuilds the eBPF object when `bpf-linker` changes: building this crate has an undeclared
//! dependency on that binary (cargo cannot express it as an artifact dependency yet).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
