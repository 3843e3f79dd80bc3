//! Links the library with `-z defs`: every symbol it uses must be found in the libraries it
//! names (libc), so a missing one is a link error, not a library that fails to load (it is
//! linked with `-z now`) in every process of a node.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-cdylib-link-arg=-Wl,-z,defs");
}
