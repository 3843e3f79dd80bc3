//! `pyusage synth` + `pyusage analyze` as a user runs them: the report's files, the tables
//! checked against an independent DuckDB computation (tests/e2e/duckdb_tables.py, DuckDB from
//! PyPI in the tools fixture), and clear errors for bad input.
use std::{path::Path, process::Command};

use crate::util::{bin, fixtures, output_ok};

fn synth(dir: &Path, rows: u32, seed: u32) {
    output_ok(
        Command::new(bin())
            .args([
                "synth",
                "--rows",
                &rows.to_string(),
                "--seed",
                &seed.to_string(),
                "--out",
            ])
            .arg(dir),
    );
}

#[test]
fn report_agrees_with_duckdb() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let report = d.path().join("report");
    synth(&data, 150_000, 3);
    let out = output_ok(
        Command::new(bin())
            .arg("analyze")
            .arg(&data)
            .args(["--device", "auto", "--out"])
            .arg(&report),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Without a GPU, `auto` says so in one line and uses the CPU.
    assert!(
        stderr.contains("on gpu (") || stderr.contains("using the CPU back end"),
        "{stderr}"
    );
    for f in [
        "report.html",
        "report.json",
        "top_packages.csv",
        "correlation.csv",
        "versions.csv",
    ] {
        assert!(report.join(f).is_file(), "{f} missing: {stderr}");
    }
    let check = output_ok(
        Command::new(fixtures().join("tools/bin/python"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/duckdb_tables.py"))
            .arg("check")
            .arg(&data)
            .arg(report.join("report.json")),
    );
    let said = String::from_utf8_lossy(&check.stdout);
    // 13 months (a year of jobs, the last running into January), 5 quarters, 2 years, all.
    assert!(said.contains("duckdb agrees on 21 periods"), "{said}");

    // The same analysis twice gives the same bytes (ids are assigned in parallel).
    let a = output_ok(
        Command::new(bin())
            .arg("analyze")
            .arg(&data)
            .args(["--device", "cpu"]),
    );
    let b = output_ok(
        Command::new(bin())
            .arg("analyze")
            .arg(&data)
            .args(["--device", "cpu"]),
    );
    assert!(a.stdout == b.stdout);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    synth(d.path(), 2_000, 1);
    let fails = |args: &[&str], needle: &str| {
        let out = Command::new(bin())
            .arg("analyze")
            .arg(d.path())
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    };
    fails(&["--filter", "colour == red"], "unknown field \"colour\"");
    fails(&["--from", "2030-01-01"], "no records under");
    fails(&["--top", "0"], "--top");
    let gpu = Command::new(bin())
        .arg("analyze")
        .arg(d.path())
        .args(["--device", "gpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&gpu.stderr);
    assert!(
        gpu.status.success() || err.contains("GPU back end: "),
        "{err}"
    );
    // A corrupt file is named.
    let part = std::fs::read_dir(d.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(part.join("broken.parquet"), b"not parquet").unwrap();
    fails(&[], "broken.parquet");
}
