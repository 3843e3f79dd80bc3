//! GPU vs CPU parity: the same dataset through both back ends gives byte-identical JSON
//! (everything but the back end's name). Runs where a CUDA driver and device are present;
//! elsewhere each test prints `SKIPPED <name>: <reason>` (scripts/test.sh lists them).
use std::path::Path;

use pyusage_analysis::{
    counts::PeriodKind,
    export::write_json,
    filter::Filter,
    gpu::Gpu,
    run::{analyze, Device, Options},
    scan::Selection,
    synth::{stream, Params},
};
use pyusage_record::dataset::write;

fn gpu_or_skip(name: &str) -> bool {
    match Gpu::new() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED {name}: {e}");
            false
        }
    }
}

fn json(root: &Path, device: Device, filter: Option<&str>) -> String {
    let o = Options {
        selection: Selection {
            root: root.to_path_buf(),
            from: None,
            to: None,
            filter: filter.map(|f| Filter::parse(f).unwrap()),
            hosts: None,
        },
        device,
        kinds: PeriodKind::ALL.to_vec(),
        top: 20,
        cache: None,
        jobs: None,
    };
    let mut a = analyze(&o, &|_| {}, &|_| {}).unwrap().0;
    a.header.backend.clear();
    let mut out = Vec::new();
    write_json(&a, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn dataset(rows: usize, seed: u64) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let mut s = stream(Params {
        rows,
        seed,
        users: 2500,
    });
    loop {
        let chunk: Vec<_> = s.by_ref().take(200_000).collect();
        if chunk.is_empty() {
            break;
        }
        write(d.path(), &chunk).unwrap();
    }
    d
}

#[test]
fn gpu_matches_cpu_byte_for_byte() {
    if !gpu_or_skip("gpu_matches_cpu_byte_for_byte") {
        return;
    }
    let rows: usize = std::env::var("PYUSAGE_PARITY_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let d = dataset(rows, 5);
    let cpu = json(d.path(), Device::Cpu, None);
    let gpu = json(d.path(), Device::Gpu, None);
    assert!(cpu.len() > 10_000);
    assert!(cpu == gpu, "GPU and CPU reports differ");
}

#[test]
fn gpu_matches_cpu_with_a_filter() {
    if !gpu_or_skip("gpu_matches_cpu_with_a_filter") {
        return;
    }
    let d = dataset(50_000, 9);
    let f = Some("env_kind != conda or is_staff == true");
    assert!(json(d.path(), Device::Cpu, f) == json(d.path(), Device::Gpu, f));
}

#[test]
fn gpu_unavailable_is_a_clear_error() {
    match Gpu::new() {
        Ok(_) => eprintln!("SKIPPED gpu_unavailable_is_a_clear_error: a GPU is present"),
        Err(e) => {
            let m = e.to_string();
            assert!(m.starts_with("GPU back end: "), "{m}");
            let (b, note) = pyusage_analysis::run::select(Device::Auto).unwrap();
            assert!(b.name().starts_with("cpu"));
            assert!(note.unwrap().contains("using the CPU back end"));
            assert!(pyusage_analysis::run::select(Device::Gpu).is_err());
        }
    }
}
