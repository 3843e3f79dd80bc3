//! Privileges and data protection.
use std::os::unix::fs::PermissionsExt;

use crate::util::*;

/// CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19).
const KEPT: u64 = (1 << 2) | (1 << 19);

fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("{name} missing"))
        .trim()
        .to_owned()
}

#[test]
fn daemon_drops_capabilities_after_attaching_and_protects_its_data() {
    let d = Daemon::start();
    let pid = d.pid();
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let st = std::fs::read_to_string(t.path().join("status")).unwrap();
        let name = field(&st, "Name:");
        for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let v = u64::from_str_radix(&field(&st, set), 16).unwrap();
            assert_eq!(v, KEPT, "thread {name}: {set} {v:#x}");
        }
        assert_eq!(u64::from_str_radix(&field(&st, "CapInh:"), 16).unwrap(), 0);
        assert_eq!(field(&st, "NoNewPrivs:"), "1", "thread {name}");
        threads += 1;
    }
    assert!(threads >= 2, "main and processor threads checked");
    let (_, out) = run(&mut python(venv_python(), "import yaml"));
    assert!(out.status.success());
    let data = d.data();
    let r = d.stop();
    assert!(!r.recs.is_empty());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o750);
    assert_eq!(mode(&data.join("spool")), 0o750);
    let parquet: Vec<_> = walk(&data.join("parquet"));
    assert!(!parquet.is_empty());
    for p in parquet {
        let want = if p.is_dir() { 0o750 } else { 0o640 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
    assert_eq!(mode(&data.join("status.json")), 0o640);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
