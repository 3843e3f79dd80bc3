use super::*;
use pyusage_record::error_line;

/// A line with every Table 1 field set, and the extras.
const FULL: &str = r#"{"executable": "/usr/bin/python3", "is_compute": true, "is_shifter": true,
    "is_staff": false, "job_id": "123_4", "main": "/home/a/run.py", "num_nodes": 8,
    "qos": "regular", "repo": "m1234", "subsystem": "cpu", "system": "perlmutter",
    "username": "alice", "package": "numpy", "version": "1.26.4",
    "timestamp": 1767225600.25, "host": "nid000012", "pid": 4242, "uid": 1001,
    "extra_field": {"ignored": [1, 2]}}"#;

fn parse(line: &str) -> CustomsRow {
    CustomsRow::parse(line).unwrap_or_else(|e| panic!("{line}: {}", error_line(&e)))
}

fn err(line: &str) -> String {
    match CustomsRow::parse(line) {
        Ok(r) => panic!("{line} parsed: {r:?}"),
        Err(e) => error_line(&e),
    }
}

/// 2026-01-01T00:00:00.25Z.
const TS: i64 = 1_767_225_600_250_000;

#[test]
fn every_field_into_the_record() {
    let r = parse(FULL).to_record("fallback", "id-1".into(), 9);
    let want = Record {
        record_id: "id-1".into(),
        seq: 9,
        source: Source::Atexit,
        sources: vec![Source::Atexit],
        host: "nid000012".into(),
        system: Some("perlmutter".into()),
        subsystem: Some("cpu".into()),
        is_compute: true,
        pid: 4242,
        ppid: 0,
        root_pid: 4242,
        process_start: TS,
        process_end: Some(TS),
        exit: Exit::Exited,
        exit_code: None,
        exit_signal: None,
        executable: "/usr/bin/python3".into(),
        python_version: None,
        main: Some("/home/a/run.py".into()),
        uid: 1001,
        username: Some("alice".into()),
        is_staff: false,
        in_container: true,
        container_runtime: Some("shifter".into()),
        blas: None,
        job_id: Some("123_4".into()),
        step_id: None,
        job_source: Some(JobSource::Env),
        rank: None,
        n_ranks: None,
        num_nodes: 8,
        qos: Some("regular".into()),
        account: Some("m1234".into()),
        partition: None,
        package: "numpy".into(),
        distribution: None,
        version: Some("1.26.4".into()),
        env_kind: EnvKind::Unknown,
        env_prefix: None,
        first_path: "<customs>".into(),
        n_files: 0,
        first_seen: TS,
        cpu_user_us: None,
        cpu_sys_us: None,
        cpu_sampling: None,
        cpu_sample_hz: None,
        cpu_samples_total: None,
        cpu_samples_self: None,
        cpu_samples_inclusive: None,
        cpu_samples_callers: Vec::new(),
    };
    assert_eq!(r, want);
}

#[test]
fn only_package_and_timestamp_are_required() {
    let r =
        parse(r#"{"package": "scipy", "timestamp": 1767225600}"#).to_record("h0", "i".into(), 1);
    assert_eq!(r.host, "h0");
    assert_eq!((r.pid, r.root_pid, r.uid), (0, 0, 0));
    assert_eq!(
        (r.is_compute, r.is_staff, r.in_container),
        (false, false, false)
    );
    assert_eq!(r.container_runtime, None);
    assert_eq!(r.num_nodes, 1);
    assert_eq!(r.executable, "");
    assert_eq!((r.job_id, r.job_source), (None, None));
    assert_eq!(r.process_start, 1_767_225_600_000_000);
    for o in [
        &r.system,
        &r.subsystem,
        &r.main,
        &r.username,
        &r.qos,
        &r.account,
        &r.version,
    ] {
        assert_eq!(*o, None);
    }
    // Null is unknown, like absent; an empty host is no host.
    let n = parse(
        r#"{"package": "scipy", "timestamp": 1, "is_shifter": null, "num_nodes": null,
            "host": "", "username": null}"#,
    )
    .to_record("h0", "i".into(), 1);
    assert_eq!(
        (n.in_container, n.num_nodes, n.host.as_str()),
        (false, 1, "h0")
    );
    assert_eq!(n.username, None);
    // Shifter false: not in a container, no runtime.
    let f = parse(r#"{"package": "a", "timestamp": 1, "is_shifter": false}"#).to_record(
        "h",
        "i".into(),
        1,
    );
    assert_eq!((f.in_container, f.container_runtime), (false, None));
}

#[test]
fn every_field_out_of_the_record() {
    let mut r = Record::example();
    r.in_container = true;
    r.container_runtime = Some("apptainer".into());
    r.account = Some("m9".into());
    r.job_id = Some("77".into());
    r.qos = Some("debug".into());
    r.system = Some("sys".into());
    r.subsystem = Some("gpu".into());
    r.num_nodes = 3;
    r.is_staff = true;
    r.process_end = Some(r.process_start + 5_000_000);
    let c = CustomsRow::from_record(&r);
    let want = CustomsRow {
        executable: Some("/usr/bin/python3.11".into()),
        is_compute: Some(true),
        // Any container counts: the old field is the only one.
        is_shifter: Some(true),
        is_staff: Some(true),
        job_id: Some("77".into()),
        main: Some("-c".into()),
        num_nodes: Some(3),
        qos: Some("debug".into()),
        repo: Some("m9".into()),
        subsystem: Some("gpu".into()),
        system: Some("sys".into()),
        username: Some("root".into()),
        package: "yaml".into(),
        version: Some("6.0.1".into()),
        timestamp: r.process_start,
        host: Some("n1".into()),
        pid: Some(10),
        uid: Some(0),
    };
    assert_eq!(c, want);
    // Every key, in Table 1's order then the package, its time and the extras.
    let text = serde_json::to_string(&c).unwrap();
    let keys = [
        "executable",
        "is_compute",
        "is_shifter",
        "is_staff",
        "job_id",
        "main",
        "num_nodes",
        "qos",
        "repo",
        "subsystem",
        "system",
        "username",
        "package",
        "version",
        "timestamp",
        "host",
        "pid",
        "uid",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| {
            text.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k}: {text}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    let j = serde_json::to_value(&c).unwrap();
    assert_eq!(j.as_object().unwrap().len(), keys.len());
    assert_eq!(j["timestamp"], serde_json::json!(1_764_000_000.123456));
    // Unknown fields are written as null, not left out.
    let mut bare = r.clone();
    bare.job_id = None;
    bare.executable = String::new();
    let j = serde_json::to_value(CustomsRow::from_record(&bare)).unwrap();
    assert_eq!(
        (&j["job_id"], &j["executable"]),
        (&Value::Null, &Value::Null)
    );
}

#[test]
fn export_then_import_keeps_the_customs_fields() {
    let mut r = Record::example();
    r.account = Some("m1".into());
    r.job_id = Some("5".into());
    r.num_nodes = 2;
    r.in_container = true;
    r.container_runtime = Some("shifter".into());
    let line = serde_json::to_string(&CustomsRow::from_record(&r)).unwrap();
    let row = parse(&line);
    assert_eq!(row, CustomsRow::from_record(&r));
    let back = row.to_record("x", "id".into(), 1);
    assert_eq!(CustomsRow::from_record(&back), CustomsRow::from_record(&r));
    assert_eq!(back.key(), r.key());
    // What the view does not carry is this mapping's fixed values.
    assert_eq!(
        (back.env_kind, back.blas.as_deref(), back.rank),
        (EnvKind::Unknown, None, None)
    );
}

#[test]
fn timestamps_in_every_form() {
    let ts = |v: &str| parse(&format!(r#"{{"package": "a", "timestamp": {v}}}"#)).timestamp;
    assert_eq!(ts("1767225600"), 1_767_225_600_000_000);
    assert_eq!(ts("1767225600.0"), 1_767_225_600_000_000);
    assert_eq!(ts("1767225600.123456"), 1_767_225_600_123_456);
    assert_eq!(ts("-1.5"), -1_500_000);
    assert_eq!(ts(r#""2026-01-01T00:00:00.25Z""#), TS);
    assert_eq!(ts(r#""2026-01-01T01:00:00.25+01:00""#), TS);
    // The export's floats read back to the µs.
    let mut x: i64 = 1_767_225_600_000_001;
    for _ in 0..20_000 {
        x += 987_654_321;
        let mut r = Record::example();
        r.process_start = x;
        let line = serde_json::to_string(&CustomsRow::from_record(&r)).unwrap();
        assert_eq!(parse(&line).timestamp, x, "{line}");
    }
    let e = err(r#"{"package": "a", "timestamp": "yesterday"}"#);
    assert!(
        e.starts_with("\"timestamp\": \"yesterday\" is not RFC 3339: "),
        "{e}"
    );
    assert_eq!(
        err(r#"{"package": "a", "timestamp": true}"#),
        "\"timestamp\": expected epoch seconds or an RFC 3339 string, found a boolean"
    );
    assert_eq!(
        err(r#"{"package": "a", "timestamp": 1e300}"#),
        "\"timestamp\": 1e+300 is out of range"
    );
    assert_eq!(
        err(r#"{"package": "a", "timestamp": 9223372036854}"#),
        "\"timestamp\": 9223372036854 is out of range"
    );
    assert_eq!(err(r#"{"package": "a"}"#), "no \"timestamp\"");
    assert_eq!(
        err(r#"{"package": "a", "timestamp": null}"#),
        "no \"timestamp\""
    );
}

#[test]
fn aliases() {
    let r = parse(r#"{"module": "h5py", "timestamp": 1, "hostname": "login3"}"#);
    assert_eq!(
        (r.package.as_str(), r.host.as_deref()),
        ("h5py", Some("login3"))
    );
    assert_eq!(
        err(r#"{"module": "h5py", "package": "numpy", "timestamp": 1}"#),
        "both \"package\" and its alias \"module\""
    );
    assert_eq!(
        err(r#"{"package": "a", "timestamp": 1, "host": "a", "hostname": "b"}"#),
        "both \"host\" and its alias \"hostname\""
    );
    // A null alias beside the name is no conflict.
    assert_eq!(
        parse(r#"{"package": "a", "module": null, "timestamp": 1}"#).package,
        "a"
    );
    // Through serde too.
    let r: CustomsRow = serde_json::from_str(r#"{"module": "h5py", "timestamp": 1}"#).unwrap();
    assert_eq!(r.package, "h5py");
    let e = serde_json::from_str::<CustomsRow>(r#"{"timestamp": 1}"#).unwrap_err();
    assert!(e.to_string().starts_with("no \"package\""), "{e}");
}

#[test]
fn numbers_given_as_strings_and_job_ids_as_numbers() {
    let r = parse(
        r#"{"package": "a", "timestamp": 1, "num_nodes": "16", "pid": "7", "uid": 5, "job_id": 991}"#,
    );
    assert_eq!((r.num_nodes, r.pid, r.uid), (Some(16), Some(7), Some(5)));
    assert_eq!(r.job_id.as_deref(), Some("991"));
}

#[test]
fn wrong_types_are_named() {
    let e = err(r#"{"package": "a", "timestamp": 1, "is_compute": "yes"}"#);
    assert_eq!(
        e,
        "\"is_compute\": invalid type: string \"yes\", expected a boolean"
    );
    let e = err(r#"{"package": 3, "timestamp": 1}"#);
    assert_eq!(
        e,
        "\"package\": invalid type: integer `3`, expected a string"
    );
    let e = err(r#"{"package": "a", "timestamp": 1, "num_nodes": -2}"#);
    assert_eq!(
        e,
        "\"num_nodes\": invalid value: integer `-2`, expected u32"
    );
    let e = err(r#"{"package": "a", "timestamp": 1, "num_nodes": "many"}"#);
    assert_eq!(
        e,
        "\"num_nodes\": \"many\" is not a number: invalid digit found in string"
    );
    let e = err(r#"{"package": "a", "timestamp": 1, "pid": 3000000000}"#);
    assert_eq!(e, "\"pid\": 3000000000 is out of range");
    let e = err(r#"{"package": "a", "timestamp": 1, "job_id": [1]}"#);
    assert_eq!(e, "\"job_id\": invalid type: sequence, expected a string");
    let e = err(r#"{"package": "a", "timestamp": 1, "job_id": -1}"#);
    assert_eq!(
        e,
        "\"job_id\": invalid type: integer `-1`, expected a string"
    );
    let e = err(r#"{"package": "a", "timestamp": 1, "username": {"n": 1}}"#);
    assert_eq!(e, "\"username\": invalid type: map, expected a string");
}

#[test]
fn bad_lines() {
    assert_eq!(err(""), "empty line");
    assert_eq!(err("  \t"), "empty line");
    assert!(
        err("{not json").starts_with("not JSON: key must be a string at line 1"),
        "{}",
        err("{not json")
    );
    assert_eq!(err("[1, 2]"), "not a JSON object but an array");
    assert_eq!(err(r#"{"timestamp": 1}"#), "no \"package\"");
    assert_eq!(
        err(r#"{"package": null, "timestamp": 1}"#),
        "no \"package\""
    );
    assert_eq!(
        CustomsRow::parse_bytes(b"{\"package\": \"\xff\"}")
            .map_err(|e| error_line(&e))
            .unwrap_err(),
        "not UTF-8: invalid utf-8 sequence of 1 bytes from index 13"
    );
}

#[test]
fn control_characters_are_refused_and_shown_escaped() {
    let e = err(r#"{"package": "a", "timestamp": 1, "username": "x\u001b[2Jy"}"#);
    assert_eq!(
        e,
        "\"username\" holds a control or bidirectional-override character: \"x\\u{1b}[2Jy\""
    );
    assert!(!e.chars().any(hostile));
    let e = err(r#"{"package": "nu\u0000mpy", "timestamp": 1}"#);
    assert_eq!(
        e,
        "\"package\" holds a control or bidirectional-override character: \"nu\\u{0}mpy\""
    );
    let e = err(r#"{"package": "a", "timestamp": 1, "main": "\u202eyp.nur"}"#);
    assert!(e.starts_with("\"main\" holds"), "{e}");
    assert!(!e.chars().any(hostile), "{e}");
    let e = err(r#"{"package": "a", "timestamp": 1, "job_id": "1\u009b"}"#);
    assert!(e.starts_with("\"job_id\" holds"), "{e}");
    // Not control characters: kept.
    assert_eq!(
        parse(r#"{"package": "a", "timestamp": 1, "username": "josé"}"#)
            .username
            .as_deref(),
        Some("josé")
    );
}

#[test]
fn dotted_names_become_their_top_level_package() {
    for (given, want) in [
        ("numpy.linalg", "numpy"),
        ("numpy", "numpy"),
        ("a.b.c", "a"),
        ("deps.zip", "deps.zip"),
        ("tool.pyz", "tool.pyz"),
        (
            "_sysconfigdata__x86_64-linux-gnu",
            "_sysconfigdata__x86_64-linux-gnu",
        ),
    ] {
        let line = format!(r#"{{"package": "{given}", "timestamp": 1}}"#);
        let row = parse(&line);
        assert_eq!(row.package, given, "the row keeps the name as given");
        assert_eq!(row.to_record("h", "i".into(), 1).package, want, "{given}");
    }
    assert_eq!(
        err(r#"{"package": ".hidden", "timestamp": 1}"#),
        "\"package\": \".hidden\" is not a module name"
    );
    assert_eq!(
        err(r#"{"package": "", "timestamp": 1}"#),
        "\"package\": \"\" is not a module name"
    );
}

#[test]
fn ids_are_stable_and_seq_bases_differ_by_input() {
    assert_eq!(record_id(b"{}", 3), record_id(b"{}", 3));
    assert_ne!(record_id(b"{}", 3), record_id(b"{}", 4));
    assert_ne!(record_id(b"{}", 3), record_id(b"{ }", 3));
    // FNV-1a's published test vectors: the hash is the same in every build.
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(record_id(b"a", 1), "customs-af63dc4c8601ec8c-1");
    assert_eq!(seq_base(b"a"), seq_base(b"a"));
    assert_ne!(seq_base(b"a"), seq_base(b"b"));
    assert_eq!(seq_base(b"a") % (1 << RUN_BITS), 0);
    assert!(seq_base(b"a").checked_add(u32::MAX as u64).is_some());
}
