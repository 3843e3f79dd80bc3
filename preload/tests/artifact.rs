//! The shipped library's shape, which is what keeps it cheap to load into every process
//! (`docs/preload-research.md`, "Load cost"): it needs libc only (no libgcc_s: no std), exports
//! exactly the six `open` wrappers of open mode (`src/open_mode.rs`) and nothing else (nothing
//! of Rust's in the dynamic table for programs to bind to: every exported name replaces that
//! function for the whole process), is bound at load (`BIND_NOW`, so full RELRO) and stays
//! small. Read with binutils' `readelf`.

mod common;

use std::process::Command;

fn readelf(args: &[&str]) -> String {
    let lib = common::library();
    let out = Command::new("readelf")
        .args(args)
        .arg(&lib)
        .output()
        .expect("readelf (binutils) is needed");
    assert!(out.status.success(), "readelf {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn links_only_libc_and_exports_only_the_open_wrappers() {
    let dynamic = readelf(&["-d", "-W"]);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert_eq!(needed, ["libc.so.6"], "{dynamic}");
    assert!(dynamic.contains("BIND_NOW"), "{dynamic}");

    // `Num: Value Size Type Bind Vis Ndx Name`: a defined symbol has a section index, not UND.
    let syms = readelf(&["--dyn-syms", "-W"]);
    let mut defined: Vec<(&str, &str, &str)> = syms
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[6] != "UND").then(|| (f[7], f[3], f[4]))
        })
        .collect();
    defined.sort();
    let wrappers = ["fopen", "fopen64", "open", "open64", "openat", "openat64"];
    let expected: Vec<(&str, &str, &str)> =
        wrappers.iter().map(|&n| (n, "FUNC", "GLOBAL")).collect();
    assert_eq!(defined, expected, "exported: {syms}");

    let size = common::library().metadata().unwrap().len();
    assert!(size < 64 * 1024, "{size} bytes");
}
