//! Delivery: syslog to a real rsyslog over TCP and the unix socket, nothing lost when the
//! collector goes away or the daemon is killed, and the canary.
use std::{
    collections::HashSet, ffi::OsStr, os::unix::ffi::OsStrExt, process::Command, time::Duration,
};

use serde_json::Value;

use crate::util::*;

fn ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["record_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Every record arrives, and its syslog payload is byte-for-byte the spool's JSON.
fn assert_byte_exact(r: &Records, rs: &Rsyslog) {
    assert!(!r.lines.is_empty());
    rs.wait_for(&ids(&r.lines), 20)
        .unwrap_or_else(|m| panic!("{} records never arrived", m.len()));
    let got: HashSet<String> = rs.payloads().into_iter().collect();
    for line in &r.lines {
        assert!(
            got.contains(line),
            "payload differs from the record:\n{line}"
        );
    }
}

#[test]
fn syslog_over_tcp_and_unix_socket_is_byte_exact_with_non_ascii() {
    let tmp = tempfile::tempdir().unwrap();
    let rs = Rsyslog::start(tmp.path());
    let spaced = fixtures().join("vénv with spaces/bin/python");
    for target in [
        format!("tcp:127.0.0.1:{}", rs.port),
        format!("unix:{}", rs.dir.join("log.sock").display()),
    ] {
        let d = Daemon::start_with(&["--syslog", &target], &[]);
        let (pid, out) = run(&mut python(&spaced, "import yaml"));
        assert!(out.status.success());
        // A PYTHONPATH directory whose name has a newline, quotes, a tab, an escape and
        // invalid UTF-8: none of it may break the framing or the JSON.
        let hostile = tmp
            .path()
            .join(OsStr::from_bytes(b"bad\n\"quote'\t\x1b[31m\xff dir"));
        std::fs::create_dir_all(&hostile).unwrap();
        std::fs::write(hostile.join("hostilemod.py"), "").unwrap();
        let (hpid, out) =
            run(python(venv_python(), "import hostilemod").env("PYTHONPATH", &hostile));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = d.stop();
        assert_eq!(r.one(hpid, "hostilemod")["env_kind"], "pythonpath");
        assert!(r.one(pid, "yaml")["env_prefix"]
            .as_str()
            .unwrap()
            .contains("vénv with spaces"));
        assert_byte_exact(&r, &rs);
        let st = &r.status["syslog"];
        assert_eq!(st["target"], target.as_str());
    }
    // Header fields per RFC 5424.
    let line = rs
        .lines()
        .into_iter()
        .find(|l| l.contains(" pyusage "))
        .unwrap();
    assert!(line.starts_with("<134>1 "), "{line}");
    assert!(
        line.contains(" testhost pyusage ") && line.contains(" IMPORT - {"),
        "{line}"
    );
}

#[test]
fn collector_down_for_a_while_then_back_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rs = Rsyslog::start(tmp.path());
    let d = Daemon::start_with(&["--syslog", &format!("tcp:127.0.0.1:{}", rs.port)], &[]);
    run(&mut python(venv_python(), "import yaml"));
    std::thread::sleep(Duration::from_secs(2));
    rs.stop();
    for _ in 0..3 {
        run(&mut python(venv_python(), "import yaml, json"));
    }
    std::thread::sleep(Duration::from_secs(3));
    let st = d.status();
    assert!(
        st["syslog"]["errors"].as_u64().unwrap() >= 1,
        "the outage was noticed: {st}"
    );
    assert!(st["syslog"]["last_error"].is_string());
    rs.restart();
    run(&mut python(venv_python(), "import yaml"));
    let data = d.data();
    let spooled = show_lines(&data);
    rs.wait_for(&ids(&spooled), 60).unwrap_or_else(|m| {
        panic!(
            "{} of {} records lost: {:?}",
            m.len(),
            spooled.len(),
            &m[..m.len().min(3)]
        )
    });
    let r = d.stop();
    rs.wait_for(&ids(&r.lines), 20).unwrap();
    // Duplicates are allowed (at-least-once); after de-duplication by record_id, one each.
    let uniq: HashSet<String> = rs
        .payloads()
        .iter()
        .map(|p| {
            serde_json::from_str::<Value>(p).unwrap()["record_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(uniq, ids(&r.lines).into_iter().collect::<HashSet<_>>());
    // The daemon logged the condition, not one line per record.
    assert!(
        r.status["syslog"]["last_error"].is_null(),
        "recovered: {}",
        r.status["syslog"]
    );
}

#[test]
fn daemon_sigkilled_during_a_burst_loses_nothing_spooled() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rs = Rsyslog::start(&tmp.path().join("rs"));
    let target = format!("tcp:127.0.0.1:{}", rs.port);
    let d = Daemon::start_at(&data, &["--syslog", &target], &[]);
    // A burst of processes ending over ~2 s; kill the daemon in the middle of it.
    let children: Vec<_> = (0..40)
        .map(|i| {
            let code = format!("import yaml, json, time; time.sleep({})", i as f64 * 0.05);
            python(venv_python(), &code).spawn().unwrap()
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while show_lines(&data).len() < 10 {
        assert!(std::time::Instant::now() < deadline, "nothing spooled");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill();
    for mut c in children {
        c.wait().unwrap();
    }
    // What reached the spool before the kill.
    let before = show_lines(&data);
    assert!(
        !before.is_empty(),
        "some records were spooled before the kill"
    );
    let d = Daemon::start_at(&data, &["--syslog", &target], &[]);
    run(&mut python(venv_python(), "import yaml"));
    let r = d.stop();
    // The restarted sink resumed from its committed offset: everything reached rsyslog.
    rs.wait_for(&ids(&r.lines), 30)
        .unwrap_or_else(|m| panic!("{} records never reached rsyslog", m.len()));
    let after: HashSet<&String> = r.lines.iter().collect();
    for l in &before {
        assert!(after.contains(l), "lost after restart: {l}");
    }
    let mut seqs: Vec<u64> = r.recs.iter().map(|x| x["seq"].as_u64().unwrap()).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "seq gap-free across the kill"
    );
}

#[test]
fn canary_passes_through_rsyslog_and_fails_with_a_reason_when_the_sink_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rs = Rsyslog::start(tmp.path());
    let d = Daemon::start_with(&["--syslog", &format!("tcp:127.0.0.1:{}", rs.port)], &[]);
    let out_log = rs.dir.join("out.log");
    let canary = |timeout: &str| {
        Command::new(bin())
            .args(["canary", "--timeout", timeout, "--python"])
            .arg(venv_python())
            .arg("--syslog-file")
            .arg(&out_log)
            .arg(d.data())
            .output()
            .unwrap()
    };
    let ok = canary("30");
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    rs.stop();
    let bad = canary("4");
    assert_eq!(bad.status.code(), Some(1));
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(
        why.contains("did not arrive") && why.contains("syslog sink error"),
        "{why}"
    );
    // Status shows the sink down and lagging.
    let st = Command::new(bin())
        .args(["status", "--format", "json"])
        .arg(d.data())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["running"], true);
    assert!(v["syslog_lag"].as_u64().unwrap() >= 1, "{v}");
    d.stop();
}

#[test]
fn full_disk_keeps_records_in_memory_and_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    let small = Tmpfs::mount(&mnt, "4m");
    let data = mnt.join("data");
    let d = Daemon::start_at(&data, &[], &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !data.join("status.json").exists() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Fill the file system.
    let filler = small.fill();
    let (full_pid, _) = run(&mut python(venv_python(), "import yaml"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !d.log().contains("spool write failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "the full disk was not noticed:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2)); // several retries while still full
    std::fs::remove_file(&filler).unwrap();
    let (later_pid, _) = run(&mut python(venv_python(), "import json"));
    let r = d.stop();
    assert_eq!(
        r.one(full_pid, "yaml")["exit"],
        "exited",
        "record made while the disk was full survives"
    );
    r.one(later_pid, "json");
    let mut seqs: Vec<u64> = r.recs.iter().map(|x| x["seq"].as_u64().unwrap()).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no seq consumed by failed writes"
    );
    // One error line for the condition, not one per record or per retry.
    assert_eq!(r.log.matches("spool write failed").count(), 1, "{}", r.log);
    assert!(
        r.status["spool_errors"].as_u64().unwrap() >= 2,
        "retried: {}",
        r.status
    );
}

#[test]
fn spool_bound_retires_converted_segments_and_counts_them() {
    // Syslog pointed at a port nobody listens on: nothing is ever delivered.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("tcp:127.0.0.1:{port}");
    let d = Daemon::start_with(
        &[
            "--syslog",
            &target,
            "--rotate-bytes",
            "8192",
            "--spool-max-bytes",
            "16384",
            "--rotate-secs",
            "1",
        ],
        &[],
    );
    for _ in 0..6 {
        run(&mut python(venv_python(), "import yaml, json, email"));
    }
    std::thread::sleep(Duration::from_secs(3));
    let r = d.stop();
    assert!(
        r.status["spool_bound_hits"].as_u64().unwrap() >= 1,
        "{}",
        r.status
    );
    assert!(
        r.status["spool_bytes"].as_u64().unwrap() <= 16384 + 8192 * 2,
        "{}",
        r.status
    );
    // Nothing is lost from Parquet: seq is still gap-free in what `show` reads.
    let mut seqs: Vec<u64> = r.recs.iter().map(|x| x["seq"].as_u64().unwrap()).collect();
    seqs.sort();
    assert!(seqs.len() > 30);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

/// Reads RFC 6587 octet-counted frames from a byte stream; returns complete messages.
fn octet_frames(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(sp) = b.iter().position(|&c| c == b' ') {
        let Ok(n) = std::str::from_utf8(&b[..sp])
            .unwrap_or("x")
            .parse::<usize>()
        else {
            break;
        };
        if b.len() < sp + 1 + n {
            break;
        }
        out.push(b[sp + 1..sp + 1 + n].to_vec());
        b = &b[sp + 1 + n..];
    }
    out
}

#[test]
fn slow_collector_that_stalls_then_trickles_gets_everything() {
    use std::{
        io::Read,
        net::TcpListener,
        sync::{Arc, Mutex},
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        // Each connection: stall 7 s (past the daemon's 5 s write timeout) on the first one,
        // then read slowly, 2 KiB every 10 ms.
        let mut first = true;
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let stall = std::mem::replace(&mut first, false);
            let idx = {
                let mut v = sink.lock().unwrap();
                v.push(Vec::new());
                v.len() - 1
            };
            let sink = sink.clone();
            std::thread::spawn(move || {
                if stall {
                    std::thread::sleep(Duration::from_secs(7));
                }
                let mut buf = [0u8; 2048];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap()[idx].extend_from_slice(&buf[..n]);
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
    });
    let d = Daemon::start_with(&["--syslog", &format!("tcp:127.0.0.1:{port}")], &[]);
    for _ in 0..4 {
        run(&mut python(venv_python(), "import yaml, json, email"));
    }
    let spooled = show_lines(&d.data());
    let want: HashSet<String> = ids(&spooled).into_iter().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got: HashSet<String> = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|s| octet_frames(s))
            .filter_map(|m| {
                let s = String::from_utf8(m).ok()?;
                let json = s.split_once(" IMPORT - ")?.1.to_owned();
                Some(
                    serde_json::from_str::<Value>(&json).ok()?["record_id"]
                        .as_str()?
                        .to_owned(),
                )
            })
            .collect();
        if want.is_subset(&got) || std::time::Instant::now() >= deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let missing = want.difference(&got).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} records never reached the slow collector",
        want.len()
    );
    let r = d.stop();
    let last = r
        .recs
        .iter()
        .map(|x| x["seq"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        r.status["syslog"]["delivered_seq"].as_u64().unwrap() >= last,
        "{}",
        r.status["syslog"]
    );
}

#[test]
fn rate_limit_defers_and_counts_but_never_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let rs = Rsyslog::start(tmp.path());
    let target = format!("unix:{}", rs.dir.join("log.sock").display());
    let d = Daemon::start_with(&["--syslog", &target, "--syslog-rate-limit", "20"], &[]);
    let t0 = std::time::Instant::now();
    for _ in 0..3 {
        run(&mut python(venv_python(), "import yaml, json, email"));
    }
    std::thread::sleep(Duration::from_millis(500)); // the last exit reaches the spool
    let spooled = show_lines(&d.data());
    assert!(spooled.len() > 50, "{} records", spooled.len());
    rs.wait_for(&ids(&spooled), 30)
        .unwrap_or_else(|m| panic!("{} dropped", m.len()));
    assert!(t0.elapsed() >= Duration::from_secs(2), "paced at 20/s");
    let r = d.stop();
    assert!(
        r.status["syslog"]["deferred"].as_u64().unwrap() >= 1,
        "{}",
        r.status["syslog"]
    );
}
