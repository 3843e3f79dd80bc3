//! Central ingest through real rsyslog on loopback: two node daemons (different `--host`)
//! send over TCP to a relay rsyslog (packaging/rsyslog/pyusage-relay.conf, its listener bound
//! to the forwarding ruleset as a rack relay's authenticated input is; the node side, the
//! daemon's socket and the uid check, is forgery.rs's), which forwards
//! over RELP to a central rsyslog (packaging/rsyslog/pyusage-central.conf) running
//! `pyusage ingest` through omprog. The relay and the central rsyslog are stopped and
//! restarted, ingest is SIGKILLed mid-stream, the central disk fills up; afterwards every
//! record the daemons delivered is in the central dataset exactly once (counted with DuckDB,
//! against the node datasets), and a `--from-dir` merge of the node datasets makes the
//! central dataset equal to them. Other tests' processes are recorded too: only this test's
//! hosts are asserted on.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::util::*;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn snippet(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/rsyslog")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A private rsyslogd with a given configuration, listening on `port` (and on the unix
/// socket `socket`, when it has one).
pub(crate) struct Syslogd {
    child: Option<Child>,
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
    socket: Option<PathBuf>,
}

impl Syslogd {
    /// Starts it once the configuration passes `rsyslogd -N1` without an error (rsyslog runs
    /// on with an unknown parameter: a typo in a shipped snippet would go unnoticed).
    fn start(dir: &Path, conf: &str, port: u16, socket: Option<PathBuf>) -> Syslogd {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let conf = format!(
            "global(maxMessageSize=\"64k\" workDirectory=\"{}\")\n{conf}",
            dir.join("work").display()
        );
        let path = dir.join("rsyslog.conf");
        std::fs::write(&path, conf).unwrap();
        let out = Command::new("rsyslogd")
            .args(["-N1", "-f"])
            .arg(&path)
            .output()
            .expect("running rsyslogd (scripts/install-deps.sh installs it)");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !said.contains("error"),
            "{}: rsyslogd -N1 {}:\n{said}",
            path.display(),
            out.status
        );
        let mut s = Syslogd {
            child: None,
            dir: dir.to_path_buf(),
            port,
            socket,
        };
        s.restart();
        s
    }

    fn restart(&mut self) {
        if let Some(sock) = &self.socket {
            let _ = std::fs::remove_file(sock);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("rsyslogd.log"))
            .unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting rsyslogd (scripts/install-deps.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("rsyslogd exited ({st}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd not listening on {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The unix socket (a previous run's was removed before the start).
        if let Some(sock) = &self.socket {
            while !sock.exists() {
                assert!(
                    Instant::now() < deadline,
                    "rsyslogd made no socket {}:\n{}",
                    sock.display(),
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM (a service stop): rsyslog saves its queues and closes ingest's stdin.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill with our child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(90);
            while c.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "rsyslogd did not stop");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Syslogd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The pids of `pyusage ingest` processes whose parent is `parent`.
fn ingest_children(parent: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(after) = stat.rsplit_once(") ") else {
            continue;
        };
        let ppid: u32 = after
            .1
            .split(' ')
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == parent && cmd.windows(6).any(|w| w == b"ingest") {
            out.push(pid);
        }
    }
    out
}

/// One chain at a time. The kill test stops its relay and its collector and starts them
/// again on the same ports; a chain started meanwhile by another test could be given such a
/// port by [`free_port`] (it is free while that rsyslog is down), and RELP sessions would
/// then reach the wrong collector. (The forgery test's lost control record, once blamed on
/// this, was `logger` cutting it at 1 KiB: see forgery.rs.)
static CHAINS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The central chain: relay and collector, and the dataset.
pub(crate) struct Chain {
    pub(crate) relay: Syslogd,
    pub(crate) central: Syslogd,
    pub(crate) dataset: PathBuf,
    /// Held until both rsyslogs above are stopped (fields drop in order).
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Where the relay's TCP listener (on `relay.port`) hands what it receives.
#[derive(Clone, Copy)]
pub(crate) enum RelayTcp {
    /// Straight to the forwarding ruleset, as a rack relay's network input from authenticated
    /// node relays (RELP over TLS with peer names there; plain TCP here): the daemons send to
    /// it and the delivery tests exercise the relay's queue.
    Forward,
    /// The node's own listener (the default ruleset), as a node whose rsyslog also listens on
    /// TCP: a record claimed there carries no credentials and is logged as a forgery.
    Node,
}

/// The shipped `pyusage-relay.conf` for a private rsyslog in `dir`: its daemon socket
/// `dir/relay.sock`, its forgery log `dir/forged.log`, the collector on 127.0.0.1:`central`,
/// the daemon's uid `uid`, a 1 s retry. Each replaced text must be there: what runs is what
/// ships.
pub(crate) fn relay_conf(dir: &Path, central: u16, uid: u32) -> String {
    let mut conf = snippet("pyusage-relay.conf");
    for (from, to) in [
        (
            "/run/pyusage-relay.sock".to_owned(),
            dir.join("relay.sock").display().to_string(),
        ),
        (
            "/var/log/pyusage-forged.log".to_owned(),
            dir.join("forged.log").display().to_string(),
        ),
        ("pyusage-central.example".to_owned(), "127.0.0.1".to_owned()),
        ("port=\"2514\"".to_owned(), format!("port=\"{central}\"")),
        (
            "resumeInterval=\"5\"".to_owned(),
            "resumeInterval=\"1\"".to_owned(),
        ),
        ("$!uid == \"999\"".to_owned(), format!("$!uid == \"{uid}\"")),
    ] {
        assert!(conf.contains(&from), "pyusage-relay.conf has no {from}");
        conf = conf.replace(&from, &to);
    }
    conf
}

impl Chain {
    /// The ingest tests' chain: daemons send over TCP to the relay's forwarding ruleset.
    fn start(tmp: &Path, dataset: &Path) -> Chain {
        // No daemon sends through the relay's unix socket in these tests.
        Chain::start_with(tmp, dataset, RelayTcp::Forward, 0)
    }

    /// A relay (the shipped snippet, with `uid` as the daemon's, plus a TCP listener bound as
    /// `tcp`) and a collector running ingest into `dataset`.
    pub(crate) fn start_with(tmp: &Path, dataset: &Path, tcp: RelayTcp, uid: u32) -> Chain {
        Chain::start_central(tmp, dataset, tcp, uid, "pyusage-central.conf")
    }

    /// The chain with `central` (a shipped collector snippet) as the collector.
    fn start_central(tmp: &Path, dataset: &Path, tcp: RelayTcp, uid: u32, central: &str) -> Chain {
        // A failed chain test poisons the lock; the next one still runs.
        let serial = CHAINS.lock().unwrap_or_else(|e| e.into_inner());
        let (relay_port, central_port) = (free_port(), free_port());
        let relay_dir = tmp.join("relay");
        let ruleset = match tcp {
            RelayTcp::Forward => " ruleset=\"pyusage_forward\"",
            RelayTcp::Node => "",
        };
        let relay_conf = format!(
            "module(load=\"imuxsock\" SysSock.Use=\"off\")\nmodule(load=\"imtcp\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{relay_port}\"{ruleset})\n{}",
            relay_conf(&relay_dir, central_port, uid)
        );
        let ingest = format!(
            "{} ingest --out {} --flush-secs 1 --flush-records 400 --compact-min-files 4",
            bin().display(),
            dataset.display()
        );
        let central_conf = snippet(central)
            .replace(
                "input(type=\"imrelp\" port=\"2514\"",
                &format!("input(type=\"imrelp\" address=\"127.0.0.1\" port=\"{central_port}\""),
            )
            .replace(
                "/usr/bin/pyusage ingest --out /srv/pyusage/dataset",
                &ingest,
            )
            .replace(
                "/var/log/pyusage-ingest",
                &tmp.join("ingest").display().to_string(),
            )
            .replace("resumeInterval=\"5\"", "resumeInterval=\"1\"");
        assert!(
            central_conf.contains(&ingest),
            "the snippet's binary line changed"
        );
        let central = Syslogd::start(&tmp.join("central"), &central_conf, central_port, None);
        let sock = Some(relay_dir.join("relay.sock"));
        let relay = Syslogd::start(&relay_dir, &relay_conf, relay_port, sock);
        Chain {
            relay,
            central,
            dataset: dataset.to_path_buf(),
            _serial: serial,
        }
    }

    /// Every ingest's log (one per lane), in name order.
    pub(crate) fn ingest_log(&self) -> String {
        let tmp = self.central.dir.parent().unwrap();
        let mut logs: Vec<PathBuf> = std::fs::read_dir(tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("ingest") && n.ends_with(".log")
            })
            .collect();
        logs.sort();
        logs.iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// What a failed wait shows: ingest's log, the last lines of the central quarantine (a
    /// message that arrived but is not a record, e.g. truncated on its way), and both
    /// rsyslogs' logs.
    fn diagnostics(&self) -> String {
        // Every lane's quarantine (`_quarantine.jsonl`, `_quarantine-lane-K.jsonl`).
        let mut q = String::new();
        for e in std::fs::read_dir(&self.dataset)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with("_quarantine") {
                q += &std::fs::read_to_string(e.path()).unwrap_or_default();
            }
        }
        let lines: Vec<&str> = q.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        format!(
            "ingest log:\n{}\ncentral quarantine ({} lines, the last ones):\n{tail}\n\
             central rsyslog:\n{}\nrelay rsyslog:\n{}",
            self.ingest_log(),
            lines.len(),
            self.central.log(),
            self.relay.log()
        )
    }

    /// SIGKILLs the ingest with the arguments `args` mid-stream, then waits for 20 more
    /// records of `hosts` (those it receives): rsyslog restarted it and resent the unconfirmed
    /// batch.
    fn kill_ingest_then_more(&self, args: &[&[u8]], hosts: &[&str]) {
        let killed = self.kill_ingest_where(args);
        let n = central_counts(&self.dataset, hosts).len();
        wait_growth(self, hosts, n + 20);
        assert!(!ingest_children(self.central.pid()).contains(&killed));
    }

    /// Stops the collector (ingest sees EOF and finishes), starts it again after `pause`, then
    /// waits for 20 more records of `hosts`.
    fn restart_central_then_more(&mut self, pause: Duration, hosts: &[&str]) {
        self.central.stop();
        std::thread::sleep(pause);
        self.central.restart();
        let n = central_counts(&self.dataset, hosts).len();
        wait_growth(self, hosts, n + 20);
    }

    /// SIGKILLs the running ingest (waiting for one to exist); returns its pid.
    fn kill_ingest(&self) -> i32 {
        self.kill_ingest_where(&[b"ingest"])
    }

    /// SIGKILLs the running ingest whose command line has the arguments `args` in a row
    /// (waiting for one to exist); returns its pid.
    fn kill_ingest_where(&self, args: &[&[u8]]) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mine = ingest_children(self.central.pid()).into_iter().find(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
                cmd.windows(args.len()).any(|w| w == args)
            });
            if let Some(pid) = mine {
                // SAFETY: kill with a pid we just found as rsyslog's child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return pid;
            }
            assert!(Instant::now() < deadline, "no ingest process running");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// (host, record_id) → copies in the central dataset, for `hosts`, counted by DuckDB.
pub(crate) fn central_counts(dataset: &Path, hosts: &[&str]) -> BTreeMap<(String, String), u64> {
    let any = std::fs::read_dir(dataset)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("date="))
        })
        .unwrap_or(false);
    if !any {
        return BTreeMap::new();
    }
    let rows: Vec<(String, String, u64)> = serde_json::from_slice(&duckdb_query(
        "select host, record_id, count(*) from read_parquet(?, hive_partitioning=true) \
         where list_contains(?, host) group by all",
        dataset,
        hosts,
    ))
    .unwrap();
    rows.into_iter().map(|(h, id, n)| ((h, id), n)).collect()
}

/// The rows of DuckDB's `query` (parameters: the dataset's files, `hosts`) as JSON.
fn duckdb_query(query: &str, dataset: &Path, hosts: &[&str]) -> Vec<u8> {
    let code = r#"
import duckdb, json, sys
q, root, hosts = sys.argv[1], sys.argv[2], sys.argv[3:]
print(json.dumps(duckdb.execute(q, [root + "/date=*/*.parquet", hosts]).fetchall()))
"#;
    // A compaction can delete a file between DuckDB's listing and its read: read again.
    let mut tries = 0;
    let out = loop {
        let out = Command::new(fixtures().join("tools/bin/python"))
            .arg("-c")
            .arg(code)
            .arg(query)
            .arg(dataset)
            .args(hosts)
            .output()
            .unwrap();
        tries += 1;
        if out.status.success()
            || tries == 5
            || !String::from_utf8_lossy(&out.stderr).contains("No such file")
        {
            break out;
        }
    };
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// (host, record_id, seq) of a node's records.
pub(crate) fn node_ids(data: &Path) -> Vec<(String, String, u64)> {
    show_lines(data)
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["host"].as_str().unwrap().to_owned(),
                v["record_id"].as_str().unwrap().to_owned(),
                v["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// (host, record_id) of the nodes' records.
pub(crate) fn node_set(recs: &[Records]) -> BTreeSet<(String, String)> {
    recs.iter()
        .flat_map(|r| node_ids(&r.data))
        .map(|(h, id, _)| (h, id))
        .collect()
}

/// Python processes started in a loop until stopped: records on every daemon.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u32>>,
}

impl Load {
    fn start() -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                let (_, out) = run(&mut python(venv_python(), "import yaml, json, email"));
                assert!(out.status.success());
                n += 1;
            }
            n
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Waits until every record of `want` is in the central dataset.
pub(crate) fn wait_central(
    chain: &Chain,
    hosts: &[&str],
    want: &BTreeSet<(String, String)>,
    secs: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = central_counts(&chain.dataset, hosts);
        let missing = want.iter().filter(|k| !got.contains_key(*k)).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} records not in the central dataset after {secs} s\n{}",
            want.len(),
            chain.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the central dataset has at least `n` records of `hosts`.
fn wait_growth(chain: &Chain, hosts: &[&str], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while central_counts(&chain.dataset, hosts).len() < n {
        assert!(
            Instant::now() < deadline,
            "central dataset stuck below {n} records\n{}",
            chain.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn two_daemons(relay_port: u16, tag: &str) -> (Daemon, Daemon, String, String) {
    let target = format!("tcp:127.0.0.1:{relay_port}");
    let a = format!("ingest-{tag}-a-{}", std::process::id());
    let b = format!("ingest-{tag}-b-{}", std::process::id());
    let da = Daemon::start_with(&["--host", &a, "--syslog", &target], &[]);
    let db = Daemon::start_with(&["--host", &b, "--syslog", &target], &[]);
    (da, db, a, b)
}

/// Stops the load and waits until what the daemons had spooled is central, then stops them:
/// returns their records and the set every daemon confirmed delivering (`delivered_seq`).
fn drain(
    chain: &Chain,
    load: Load,
    daemons: Vec<Daemon>,
    hosts: &[&str],
) -> (Vec<Records>, BTreeSet<(String, String)>) {
    assert!(load.stop() > 0);
    std::thread::sleep(Duration::from_secs(1));
    let spooled: BTreeSet<(String, String)> = daemons
        .iter()
        .flat_map(|d| node_ids(&d.data()))
        .map(|(h, id, _)| (h, id))
        .collect();
    wait_central(chain, hosts, &spooled, 180);
    let recs: Vec<Records> = daemons.into_iter().map(Daemon::stop).collect();
    let mut delivered = BTreeSet::new();
    for r in &recs {
        let upto = r.status["syslog"]["delivered_seq"].as_u64().unwrap();
        for (h, id, seq) in node_ids(&r.data) {
            if seq <= upto {
                delivered.insert((h, id));
            }
        }
    }
    // What was sent between the snapshot above and the stop is on its way.
    wait_central(chain, hosts, &delivered, 120);
    (recs, delivered)
}

/// Exactly once: no record twice, nothing of these hosts that no node has.
fn assert_once(counts: &BTreeMap<(String, String), u64>, node: &BTreeSet<(String, String)>) {
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let foreign: Vec<_> = counts.keys().filter(|k| !node.contains(*k)).collect();
    assert!(foreign.is_empty(), "not in any node dataset: {foreign:?}");
}

/// Every record the daemons confirmed delivering is in the central dataset exactly once, and
/// nothing of `hosts` that no node has; returns the nodes' (host, record_id).
fn assert_delivered_once(
    chain: &Chain,
    recs: &[Records],
    delivered: &BTreeSet<(String, String)>,
    hosts: &[&str],
) -> BTreeSet<(String, String)> {
    let node = node_set(recs);
    let counts = central_counts(&chain.dataset, hosts);
    assert_once(&counts, &node);
    let missing: Vec<_> = delivered
        .iter()
        .filter(|k| !counts.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} delivered records missing: {:?}\n{}",
        missing.len(),
        delivered.len(),
        &missing[..missing.len().min(3)],
        chain.diagnostics()
    );
    node
}

/// The daemons' data directories.
fn data_dirs(recs: &[Records]) -> Vec<&Path> {
    recs.iter().map(|r| r.data.as_path()).collect()
}

/// `pyusage ingest ARGS --out DATASET --from-dir DIRS` (the nodes' data directories, or a
/// dataset; the collector stopped): the central dataset then holds exactly the nodes' records
/// of `hosts`, each once.
fn merge_nodes(
    dataset: &Path,
    args: &[&str],
    dirs: &[&Path],
    node: &BTreeSet<(String, String)>,
    hosts: &[&str],
) {
    let mut merge = Command::new(bin());
    merge
        .arg("ingest")
        .args(args)
        .arg("--out")
        .arg(dataset)
        .arg("--from-dir");
    merge.args(dirs);
    let out = output_ok(&mut merge);
    let counts = central_counts(dataset, hosts);
    assert_once(&counts, node);
    assert_eq!(
        &counts.keys().cloned().collect::<BTreeSet<_>>(),
        node,
        "after --from-dir: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ingest_through_relay_and_central_rsyslog_survives_kills_every_record_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = tmp.path().join("dataset");
    let mut chain = Chain::start(tmp.path(), &dataset);
    let (da, db, a, b) = two_daemons(chain.relay.port, "kill");
    let hosts = [a.as_str(), b.as_str()];
    let load = Load::start();
    wait_growth(&chain, &hosts, 20);
    // The relay stopped and started while the daemons keep sending.
    chain.relay.stop();
    std::thread::sleep(Duration::from_secs(2));
    chain.relay.restart();
    let n = central_counts(&dataset, &hosts).len();
    wait_growth(&chain, &hosts, n + 20);
    // ingest killed mid-stream: rsyslog restarts it and resends the unconfirmed batch.
    chain.kill_ingest_then_more(&[b"ingest"], &hosts);
    chain.restart_central_then_more(Duration::from_secs(2), &hosts);
    chain.kill_ingest();
    // A malformed message through the whole chain is quarantined with its reason.
    let marker = format!("not-json-{}", std::process::id());
    output_ok(
        Command::new("logger")
            .args(["--rfc5424", "-n", "127.0.0.1", "-T", "-P"])
            .arg(chain.relay.port.to_string())
            .args(["--tag", "pyusage", "--msgid", "IMPORT", &marker]),
    );
    let (recs, delivered) = drain(&chain, load, vec![da, db], &hosts);
    let node = assert_delivered_once(&chain, &recs, &delivered, &hosts);
    let q = std::fs::read_to_string(dataset.join("_quarantine.jsonl")).unwrap_or_default();
    let line = q
        .lines()
        .find(|l| l.contains(&marker))
        .unwrap_or_else(|| panic!("the malformed message was not quarantined:\n{q}"));
    assert!(line.contains("payload is not a record"), "{line}");
    // The collector stopped, the node datasets merged: now exactly the nodes' records.
    chain.central.stop();
    merge_nodes(&dataset, &[], &data_dirs(&recs), &node, &hosts);
    // Counters and compaction, and the dataset as the analysis reads it.
    let stats: Value =
        serde_json::from_slice(&std::fs::read(dataset.join(".ingest/stats.json")).unwrap())
            .unwrap();
    // Counters are saved with each segment: a killed ingest's last seconds are not counted.
    assert!(stats["accepted"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        stats["duplicates"].as_u64().unwrap() > 0,
        "the merge found them: {stats}"
    );
    assert!(stats["quarantined"].as_u64().unwrap() >= 1, "{stats}");
    let out = output_ok(
        Command::new(bin())
            .args(["ingest", "--compact", "--out"])
            .arg(&dataset),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("compacted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_once(&central_counts(&dataset, &hosts), &node);
    for p in std::fs::read_dir(&dataset).unwrap().flatten() {
        let name = p.file_name().to_string_lossy().into_owned();
        if name.starts_with("date=") {
            let files = std::fs::read_dir(p.path()).unwrap().count();
            assert_eq!(files, 1, "{name}: compacted into one file");
        }
    }
    let out = output_ok(
        Command::new(bin())
            .args(["analyze", "--format", "json"])
            .arg(&dataset),
    );
    assert!(!out.stdout.is_empty());
}

#[test]
fn ingest_with_the_central_disk_full_then_freed_every_record_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    let small = Tmpfs::mount(&mnt, "48m");
    let dataset = mnt.join("dataset");
    let chain = Chain::start(tmp.path(), &dataset);
    let (da, db, a, b) = two_daemons(chain.relay.port, "full");
    let hosts = [a.as_str(), b.as_str()];
    let load = Load::start();
    wait_growth(&chain, &hosts, 20);
    let filler = small.fill();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !chain.ingest_log().contains("No space left on device") {
        assert!(
            Instant::now() < deadline,
            "the full disk was not noticed:\n{}",
            chain.ingest_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3)); // rsyslog retries while still full
    std::fs::remove_file(&filler).unwrap();
    let (recs, delivered) = drain(&chain, load, vec![da, db], &hosts);
    assert_delivered_once(&chain, &recs, &delivered, &hosts);
    // A commit that failed (answered with an error line), or a message that could not be
    // written (ingest ended, rsyslog restarted it).
    let log = chain.ingest_log();
    assert!(
        log.contains("commit failed") || log.contains("writing an arriving message"),
        "{log}"
    );
}

/// Two ingest lanes (packaging/rsyslog/pyusage-central-lanes.conf) writing one dataset: each
/// node's records reach the lane its host name hashes to, and only that one, through kills of
/// one lane's ingest and a restart of the collector; every record is there exactly once, the
/// lanes' counters and files are their own, ingest's hash agrees with rsyslog's, a
/// `--from-dir` merge routes the nodes' records to the same lanes (adding exactly what was
/// missing), another lane count is refused, and the analysis reads the dataset as one.
#[test]
fn ingest_in_two_lanes_every_record_once_each_node_in_one_lane() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = tmp.path().join("dataset");
    let mut chain = Chain::start_central(
        tmp.path(),
        &dataset,
        RelayTcp::Forward,
        0,
        "pyusage-central-lanes.conf",
    );
    // rsyslog's hash64mod(host, 2) puts these two in different lanes (checked below, where
    // a change of rsyslog's hash would show).
    let (a, b) = ("ingest-lanes-a", "ingest-lanes-b");
    let target = format!("tcp:127.0.0.1:{}", chain.relay.port);
    let da = Daemon::start_with(&["--host", a, "--syslog", &target], &[]);
    let db = Daemon::start_with(&["--host", b, "--syslog", &target], &[]);
    let hosts = [a, b];
    let load = Load::start();
    wait_growth(&chain, &hosts, 20);
    // Lane 1's ingest killed: rsyslog restarts it, and its node's records go on arriving.
    chain.kill_ingest_then_more(&[b"--lane", b"1"], &[a]);
    chain.restart_central_then_more(Duration::from_secs(1), &hosts);
    chain.kill_ingest_where(&[b"--lane", b"0"]);
    let (recs, delivered) = drain(&chain, load, vec![da, db], &hosts);
    let node = assert_delivered_once(&chain, &recs, &delivered, &hosts);
    // Each host in one lane's files, the two hosts in different lanes; ingest's own hash
    // agrees with rsyslog's (nothing misrouted).
    let each_in_its_lane = |when: &str| {
        let lanes: Vec<(String, bool)> = serde_json::from_slice(&duckdb_query(
            "select distinct host, filename like '%/ingest-l1-%' \
             from read_parquet(?, hive_partitioning=true, filename=true) \
             where list_contains(?, host) order by all",
            &dataset,
            &hosts,
        ))
        .unwrap();
        assert_eq!(
            lanes,
            [(a.to_owned(), true), (b.to_owned(), false)],
            "{when}: host → lane (lane 1's files are ingest-l1-*)"
        );
        for state in [".ingest/stats.json", ".ingest/lane-1/stats.json"] {
            let stats: Value =
                serde_json::from_slice(&std::fs::read(dataset.join(state)).unwrap()).unwrap();
            assert!(stats["accepted"].as_u64().unwrap() > 0, "{state}: {stats}");
            assert_eq!(stats["misrouted"].as_u64(), Some(0), "{state}: {stats}");
        }
    };
    // The collector stopped (each lane's counters saved), then the node datasets merged into
    // the dataset's two lanes (its recorded count: no `--lanes` needed), then compacted: each
    // node's records in its lane, exactly the nodes' records.
    chain.central.stop();
    each_in_its_lane("through rsyslog");
    merge_nodes(&dataset, &[], &data_dirs(&recs), &node, &hosts);
    output_ok(
        Command::new(bin())
            .args(["ingest", "--compact", "--out"])
            .arg(&dataset),
    );
    // Another lane count is refused with the reason, and so is a one-lane collector's ingest
    // (no --lane) pointed at this dataset.
    for args in [&["--lanes", "1", "--compact"][..], &[]] {
        let out = Command::new(bin())
            .arg("ingest")
            .args(args)
            .arg("--out")
            .arg(&dataset)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains("written by 2 lane(s)"),
            "{args:?}: {said}"
        );
    }
    // Another count means another dataset: every record moved into it once.
    let moved = tmp.path().join("one-lane");
    merge_nodes(&moved, &[], &[&dataset], &node, &hosts);
    assert_once(&central_counts(&dataset, &hosts), &node);
    each_in_its_lane("after --from-dir and --compact");
    let out = output_ok(
        Command::new(bin())
            .args(["analyze", "--format", "json"])
            .arg(&dataset),
    );
    assert!(!out.stdout.is_empty());
}
