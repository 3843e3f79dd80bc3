//! CPU time per process: every record carries its process's user and system CPU time, read
//! from the kernel at the exit (`cpu_user_us`, `cpu_sys_us`), and a `running` snapshot the
//! time so far. Checked against what the process measured itself (`getrusage(RUSAGE_SELF)`,
//! which the kernel computes from the same counters) with real interpreters.
use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::util::*;

/// Two threads burning 0.5 s of CPU each in a pure-Python loop while the main thread makes
/// system calls; prints `getrusage` (user, system, in seconds) as JSON, then ends as `END`
/// says: `exit` returns normally, `kill` SIGKILLs itself with both threads still alive
/// (sleeping), so that the exit sums threads that die together.
const BURN: &str = r#"
import json, os, resource, signal, sys, threading, time
END = sys.argv[1]
burnt = threading.Semaphore(0)
done = threading.Event()
def burn(sec):
    end = time.thread_time() + sec
    x = 0
    while time.thread_time() < end:  # a system call: check it rarely
        for _ in range(50000):
            x += 1
    burnt.release()
    if END == "kill":
        done.wait()
ts = [threading.Thread(target=burn, args=(0.5,)) for _ in range(2)]
for t in ts:
    t.start()
for _ in range(30000):
    os.stat("/")
for _ in ts:
    burnt.acquire()
if END == "exit":
    for t in ts:
        t.join()
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps([ru.ru_utime, ru.ru_stime]), flush=True)
if END == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"#;

/// Runs [`BURN`] under `exe`; its pid and what it measured, µs (user, system).
fn burn(exe: &str, end: &str) -> (u32, (f64, f64)) {
    let mut c = python(exe, BURN);
    c.arg(end);
    let (pid, out) = run(&mut c);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or_else(|| {
        panic!(
            "{exe} {end}: no getrusage line: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let v: Vec<f64> = serde_json::from_str(line).unwrap();
    (pid, (v[0] * 1e6, v[1] * 1e6))
}

fn cpu(r: &Value) -> (u64, u64) {
    let get = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} is not a number: {r}"))
    };
    (get("cpu_user_us"), get("cpu_sys_us"))
}

/// The record's total within ±10 % of the process's own, user > system.
fn check(what: &str, r: &Value, (user, sys): (f64, f64)) {
    let (u, s) = cpu(r);
    let total = (u + s) as f64;
    let own = user + sys;
    eprintln!(
        "{what}: record user {u} sys {s} total {total}; getrusage user {user:.0} sys {sys:.0} \
         total {own:.0} ({:+.2} %)",
        (total - own) / own * 100.0
    );
    assert!(own >= 900_000.0, "{what}: burnt only {own} µs");
    assert!(
        (total - own).abs() <= own * 0.10,
        "{what}: record's {total} µs vs getrusage's {own} µs: {r}"
    );
    assert!(u > s, "{what}: user {u} <= system {s}");
    assert!(s > 0, "{what}: no system time despite 30,000 stat calls");
}

#[test]
fn exit_and_sigkill_records_carry_the_process_cpu_time() {
    let d = Daemon::start();
    let pyenv = format!(
        "{}/.pyenv/versions/3.11.7/bin/python3",
        std::env::var("HOME").unwrap()
    );
    let mut runs = Vec::new();
    for exe in [pyenv.as_str(), DEBIAN_PYTHON] {
        for end in ["exit", "kill"] {
            let (pid, own) = burn(exe, end);
            runs.push((format!("{exe} {end}"), pid, own));
        }
    }
    let r = d.stop();
    for (what, pid, own) in &runs {
        let recs = r.of(*pid);
        assert!(!recs.is_empty(), "{what}: no records");
        let first = cpu(recs[0]);
        for x in &recs {
            assert_eq!(
                cpu(x),
                first,
                "{what}: every record of a process, the same time"
            );
        }
        let json = r.one(*pid, "json");
        let want_exit = if what.ends_with("kill") {
            "signaled"
        } else {
            "exited"
        };
        assert_eq!(json["exit"], want_exit, "{what}");
        check(what, json, *own);
    }
}

#[test]
fn running_snapshot_carries_the_cpu_time_so_far() {
    let d = Daemon::start_with(&["--flush-secs", "1"], &[]);
    // Burns ~0.6 s, says so, then sleeps until told to go.
    let mut child = python(
        DEBIAN_PYTHON,
        "import json, resource, sys, time\n\
         end = time.process_time() + 0.6\n\
         while time.process_time() < end: sum(range(100000))\n\
         ru = resource.getrusage(resource.RUSAGE_SELF)\n\
         print(json.dumps([ru.ru_utime, ru.ru_stime]), flush=True)\n\
         sys.stdin.read()",
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let own: Vec<f64> = serde_json::from_str(&line).unwrap();
    let own_us = (own[0] + own[1]) * 1e6;
    // The latest snapshot, once one was surely taken after the burn (idle from then on).
    let spool = d.data().join("spool");
    let after = Instant::now();
    let deadline = after + Duration::from_secs(20);
    let snap: Value = loop {
        let text: String = std::fs::read_dir(&spool)
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["pid"] == pid && v["exit"] == "running" && v["package"] == "json")
            .max_by_key(|v| v["seq"].as_u64());
        if let Some(v) = found.filter(|_| after.elapsed() > Duration::from_millis(1500)) {
            break v;
        }
        assert!(Instant::now() < deadline, "no running snapshot for {pid}");
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let (u, s) = cpu(&snap);
    let total = (u + s) as f64;
    eprintln!("snapshot: user {u} sys {s}; getrusage total {own_us:.0}");
    // `/proc/<pid>/stat` ticks: 10 ms resolution, and the interpreter's start-up before the
    // burn is in both.
    assert!(
        (total - own_us).abs() <= own_us * 0.10 + 20_000.0,
        "snapshot {total} µs vs getrusage {own_us} µs: {snap}"
    );
    assert!(u > s, "{snap}");
    let r = d.stop();
    let fin = r.one(pid, "json");
    assert_eq!(fin["exit"], "exited");
    let (fu, fs) = cpu(fin);
    assert!(
        fu + fs >= (u + s).saturating_sub(20_000),
        "final {fin} below the snapshot {snap}"
    );
}
