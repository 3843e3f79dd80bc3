//! `pyusage import-customs` and `pyusage show --format customs`: old customs-style JSON lines
//! into the dataset (bad lines reported by file and line, the rest imported), and the round
//! trip dataset → customs view → dataset through the analysis's tables.
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;

use crate::util::{bin, output_ok, show_lines};

/// `pyusage import-customs ARGS --out OUT`, with `stdin` as standard input.
fn import(args: &[&Path], out: &Path, stdin: &[u8]) -> Output {
    let mut child = Command::new(bin())
        .arg("import-customs")
        .args(args)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Every file under `dir` (relative path, bytes), sorted.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    out.sort();
    out
}

/// Good lines and bad ones; the good lines of one process (a dotted name and its package)
/// make one record.
const OLD: &str = concat!(
    // 1: every Table 1 field, a dotted name without a version, unknown keys.
    r#"{"executable": "/usr/common/python3", "is_compute": true, "is_shifter": true, "is_staff": false, "job_id": 4242, "main": "/global/homes/a/run.py", "num_nodes": "2", "qos": "regular", "repo": "m1759", "subsystem": "haswell", "system": "cori", "username": "alice", "module": "numpy.linalg", "timestamp": 1609459200.5, "hostname": "nid00017", "customs_version": 3, "cmdline": ["python", "run.py"]}"#,
    "\n",
    // 2: not JSON.
    "this is not json\n",
    // 3: no package.
    r#"{"timestamp": 1609459200, "username": "bob"}"#,
    "\n",
    // 4: a wrong type, whose value (an escape sequence) serde quotes in its message.
    r#"{"package": "scipy", "timestamp": 1609459200, "is_compute": "\u001b[31myes"}"#,
    "\n",
    // 5: empty.
    "\n",
    // 6: a NUL in the package name.
    r#"{"package": "nu\u0000mpy", "timestamp": 1609459200}"#,
    "\n",
    // 7: a terminal title escape in the user name.
    r#"{"package": "pandas", "timestamp": 1609459200, "username": "\u001b]0;pwned\u0007"}"#,
    "\n",
    // 8: the package of line 1's process, with its version: merged into line 1's record.
    r#"{"package": "numpy", "version": "1.19.2", "executable": "/usr/common/python3", "is_compute": true, "is_shifter": true, "is_staff": false, "job_id": "4242", "main": "/global/homes/a/run.py", "num_nodes": 2, "qos": "regular", "repo": "m1759", "subsystem": "haswell", "system": "cori", "username": "alice", "timestamp": 1609459200.5, "host": "nid00017"}"#,
    "\r\n",
    // 9: the least a line can be, RFC 3339 time, no host (the --host default).
    r#"{"package": "yaml", "timestamp": "2021-01-02T03:04:05.000006Z"}"#,
    "\n",
);

#[test]
fn customs_import_reports_bad_lines_and_keeps_the_good_ones() {
    let d = tempfile::tempdir().unwrap();
    let old = d.path().join("old.jsonl");
    std::fs::write(&old, OLD).unwrap();
    let data = d.path().join("data");
    // And standard input: a good line, and a raw ESC in a line that is not JSON.
    let stdin = b"{\"package\": \"mpi4py\", \"timestamp\": 1609545600, \"pid\": 77}\n\x1b[2J{\n";
    let out = import(&[&old, Path::new("-")], &data, stdin);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let o = old.display();
    let want = [
        format!("{o}:2: not JSON: expected ident at line 1 column 2"),
        format!("{o}:3: no \"package\""),
        format!(
            "{o}:4: \"is_compute\": invalid type: string \"\\u{{1b}}[31myes\", expected a boolean"
        ),
        format!("{o}:5: empty line"),
        format!(
            "{o}:6: \"package\" holds a control or bidirectional-override character: \"nu\\u{{0}}mpy\""
        ),
        format!(
            "{o}:7: \"username\" holds a control or bidirectional-override character: \
             \"\\u{{1b}}]0;pwned\\u{{7}}\""
        ),
        "-:2: not JSON: expected value at line 1 column 1".to_owned(),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), want, "{stderr}");
    assert!(!stderr.contains('\x1b') && !stderr.contains('\0'));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "imported 3 records from 2 files, 7 bad lines\n"
    );

    let recs: Vec<Value> = show_lines(&data)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by = |p: &str| -> &Value {
        let mut of = recs.iter().filter(|r| r["package"] == p);
        let r = of.next().unwrap_or_else(|| panic!("no {p}: {recs:?}"));
        assert!(of.next().is_none(), "one {p} record: {recs:?}");
        r
    };
    assert_eq!(recs.len(), 3, "{recs:?}");
    let numpy = by("numpy");
    for (k, v) in [
        ("host", "nid00017"),
        ("executable", "/usr/common/python3"),
        ("main", "/global/homes/a/run.py"),
        ("username", "alice"),
        ("job_id", "4242"),
        ("job_source", "env"),
        ("qos", "regular"),
        ("account", "m1759"),
        ("system", "cori"),
        ("subsystem", "haswell"),
        ("container_runtime", "shifter"),
        ("version", "1.19.2"),
        ("source", "atexit"),
        ("exit", "exited"),
        ("env_kind", "unknown"),
        ("first_path", "<customs>"),
        ("process_start", "2021-01-01T00:00:00.500000Z"),
        ("process_end", "2021-01-01T00:00:00.500000Z"),
        ("first_seen", "2021-01-01T00:00:00.500000Z"),
    ] {
        assert_eq!(numpy[k], v, "{k}: {numpy}");
    }
    assert_eq!(numpy["sources"], serde_json::json!(["atexit"]));
    assert_eq!(
        (
            &numpy["is_compute"],
            &numpy["in_container"],
            &numpy["is_staff"]
        ),
        (&Value::Bool(true), &Value::Bool(true), &Value::Bool(false))
    );
    assert_eq!((&numpy["num_nodes"], &numpy["pid"]), (&2.into(), &0.into()));
    assert_eq!(
        (&numpy["exit_code"], &numpy["n_files"]),
        (&Value::Null, &0.into())
    );
    let yaml = by("yaml");
    assert_eq!(yaml["host"], "unknown");
    assert_eq!(yaml["process_start"], "2021-01-02T03:04:05.000006Z");
    assert_eq!((&yaml["num_nodes"], &yaml["uid"]), (&1.into(), &0.into()));
    assert_eq!(yaml["username"], Value::Null);
    let mpi = by("mpi4py");
    assert_eq!((&mpi["pid"], &mpi["host"]), (&77.into(), &"unknown".into()));
    let ids: std::collections::HashSet<_> = recs.iter().map(|r| r["record_id"].clone()).collect();
    let seqs: std::collections::HashSet<_> = recs.iter().map(|r| r["seq"].clone()).collect();
    assert_eq!((ids.len(), seqs.len()), (3, 3));

    // The same input again writes the same files, byte for byte: into another dataset, and
    // into this one (replaced by identical files, nothing added).
    let again = d.path().join("again");
    let before = files(&data);
    assert_eq!(
        import(&[&old, Path::new("-")], &again, stdin).status.code(),
        Some(2)
    );
    assert_eq!(files(&again), before);
    assert_eq!(
        import(&[&old, Path::new("-")], &data, stdin).status.code(),
        Some(2)
    );
    assert_eq!(files(&data), before);
    // Other input with the same host and dates lands beside it, replacing nothing.
    let other = d.path().join("other.jsonl");
    std::fs::write(
        &other,
        "{\"package\": \"mpi4py\", \"timestamp\": 1609545601}\n",
    )
    .unwrap();
    let out = import(&[&other], &data, b"");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(show_lines(&data).len(), 4);

    // A file that cannot be opened: nothing is written.
    let none = d.path().join("none");
    let out = import(&[&old, &d.path().join("missing.jsonl")], &none, b"");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.jsonl: No such file or directory"),
        "{err}"
    );
    assert!(!none.exists());
}

/// `pyusage analyze DIR --device cpu` as JSON.
fn analyze(dir: &Path) -> Value {
    let out = output_ok(
        Command::new(bin())
            .arg("analyze")
            .arg(dir)
            .args(["--device", "cpu"]),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Tables the customs view cannot carry: `env_kinds` and `package_env_kinds` (no `env_kind`:
/// every imported record is `unknown`), `blas_in_numpy_jobs` (no `blas`), `signaled` (no
/// `exit`: the old hook only ran at a normal exit, so every imported record is `exited`),
/// `cpu_by_package` (no CPU time) and the sampled CPU's tables (nothing sampled).
const NOT_CARRIED: &[&str] = &[
    "env_kinds",
    "package_env_kinds",
    "blas_in_numpy_jobs",
    "signaled",
    "cpu_by_package",
    "sampled_cpu",
    "sampled_cpu_by_package",
    "imported_not_on_cpu",
    "package_callers",
];

#[test]
fn customs_round_trip_keeps_the_analysis() {
    let d = tempfile::tempdir().unwrap();
    let (d1, d2) = (d.path().join("d1"), d.path().join("d2"));
    output_ok(
        Command::new(bin())
            .args(["synth", "--rows", "20000", "--seed", "5", "--out"])
            .arg(&d1),
    );
    let view = output_ok(
        Command::new(bin())
            .args(["show", "--format", "customs"])
            .arg(&d1),
    );
    let text = String::from_utf8(view.stdout).unwrap();
    // `show` keeps the final record of a process and package, not its running snapshot.
    let n = text.lines().count();
    assert!((18_000..20_000).contains(&n), "{n} records shown");
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "executable",
            "host",
            "is_compute",
            "is_shifter",
            "is_staff",
            "job_id",
            "main",
            "num_nodes",
            "package",
            "pid",
            "qos",
            "repo",
            "subsystem",
            "system",
            "timestamp",
            "uid",
            "username",
            "version"
        ]
    );
    let c = d.path().join("c.jsonl");
    std::fs::write(&c, &text).unwrap();
    let out = import(&[&c], &d2, b"");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("imported {n} records from 1 files, 0 bad lines\n")
    );

    let (a1, a2) = (analyze(&d1), analyze(&d2));
    // The dataset's rows count the snapshots; the view has none.
    assert!(a1["rows"].as_u64() > a2["rows"].as_u64());
    let periods = a1["periods"].as_object().unwrap();
    assert_eq!(
        periods.keys().collect::<Vec<_>>(),
        a2["periods"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
    );
    let mut compared = 0;
    for (granularity, reports) in periods {
        let (r1, r2) = (
            reports.as_array().unwrap(),
            a2["periods"][granularity].as_array().unwrap(),
        );
        assert_eq!(r1.len(), r2.len(), "{granularity}");
        for (p1, p2) in r1.iter().zip(r2) {
            let period = &p1["period"];
            assert_eq!(period, &p2["period"]);
            for table in [
                "top_packages_by_user",
                "top_packages_by_job",
                "top_packages_by_process",
                "versions",
            ] {
                assert!(!p1[table].is_null(), "{table}");
                assert_eq!(p1[table], p2[table], "{granularity} {period}: {table}");
            }
            // Everything else the view carries is equal too.
            for (table, v1) in p1.as_object().unwrap() {
                if !NOT_CARRIED.contains(&table.as_str()) && table != "rows" {
                    assert_eq!(v1, &p2[table], "{granularity} {period}: {table}");
                }
            }
            compared += 1;
        }
    }
    assert!(compared >= 18, "{compared} periods");
    // And the tables left out do differ: they are left out for a reason.
    let all = |a: &Value, t: &str| a["periods"]["all"][0][t].clone();
    for t in NOT_CARRIED {
        assert_ne!(all(&a1, t), all(&a2, t), "{t}");
    }
    let kinds: Vec<Value> = all(&a2, "env_kinds")
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].clone())
        .collect();
    assert_eq!(kinds, [Value::from("unknown")]);
}
