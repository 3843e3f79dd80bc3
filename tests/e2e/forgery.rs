//! Forged records on a node do not reach the central dataset: the shipped node relay
//! (packaging/rsyslog/pyusage-relay.conf, only its paths, ports and the daemon's uid
//! substituted) forwards a record only when it arrives on the daemon's unix socket from the
//! daemon's uid (imuxsock's kernel-verified SCM_CREDENTIALS), and logs every other claim.
//!
//! A real daemon running as `pyusage` sends its records of a real Python run to the relay's
//! socket; the relay forwards over RELP to a central rsyslog running `pyusage ingest`. Then
//! schema-valid copies of a real record (another package, user and record_id) are sent, whole
//! (`logger --size`: its 1 KiB default cuts a record), by `nobody` and by root through the same
//! socket, by `nobody` over the relay's TCP port on 127.0.0.1, and by `nobody` with hand-made
//! SCM_CREDENTIALS claiming the daemon's uid or pid.
//! The central dataset must hold the daemon's records exactly once and none of the forgeries;
//! the forgery log must name each socket sender's uid and pid. A control copy sent as the
//! daemon's uid does reach the dataset: the forgeries were well-formed, only the sender check
//! stopped them (and anything running as the daemon's uid is trusted: see SECURITY.md).
use std::{collections::BTreeSet, path::Path, process::Command, time::Duration};

use serde_json::Value;

use crate::{ingest::*, util::*};

/// A user's uid or gid (`id -u|-g NAME`).
fn id(flag: &str, name: &str) -> u32 {
    let out = output_ok(Command::new("id").args([flag, name]));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// `logger`'s largest message: the relay's `maxMessageSize` (64k). Its default, 1 KiB, cuts a
/// longer message at 1,024 bytes without a word, and a record is about that long (its paths
/// hold the checkout's, its pids and CPU times grow over a run): a cut copy is no longer a
/// record, and the collector quarantines it instead of storing it.
const LOGGER_SIZE: &str = "65536";

/// `logger` sending one RFC 5424 message (no structured data, as the daemon's) with the
/// daemon's APP-NAME and MSGID to the unix socket `sock`, whole.
fn logger_unix(mut c: Command, sock: &Path, procid: u32, payload: &str) -> Command {
    c.arg("logger")
        .arg("-u")
        .arg(sock)
        .args(["--size", LOGGER_SIZE])
        .args(["--rfc5424=notq", "-t", "pyusage", "--msgid", "IMPORT"])
        .arg(format!("--id={procid}"))
        .arg(payload);
    c
}

/// `setpriv` as `user` (its group, no supplementary groups).
fn setpriv(user: &str, group: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", user, "--regid", group, "--clear-groups", "--"]);
    c
}

/// A copy of the real record `real` claiming `package` for `user`, with a new record_id
/// (the real one's last 12 hex digits replaced by `n`): schema-valid, only its sender differs.
fn forge(real: &Value, package: &str, user: &str, n: u64) -> (String, String) {
    let mut v = real.clone();
    let id = v["record_id"].as_str().unwrap();
    let id = format!("{}{:012x}", &id[..24], n);
    v["record_id"] = Value::from(id.clone());
    v["package"] = Value::from(package);
    v["username"] = Value::from(user);
    v["uid"] = Value::from(4242);
    (id, v.to_string())
}

#[test]
fn forged_records_from_local_users_never_reach_the_central_dataset() {
    let (uid, gid) = (id("-u", "pyusage"), id("-g", "pyusage"));
    let tmp = shared_tempdir();
    let dataset = tmp.path().join("dataset");
    let chain = Chain::start_with(tmp.path(), &dataset, RelayTcp::Node, uid);
    let sock = chain.relay.dir.join("relay.sock");
    let forged_log = chain.relay.dir.join("forged.log");
    // The daemon as deployed: `--user pyusage`, its ready file next to a data directory it owns.
    let run_dir = tmp.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::os::unix::fs::lchown(&run_dir, Some(uid), Some(gid)).unwrap();
    let host = format!("forgery-{}", std::process::id());
    let target = format!("unix:{}", sock.display());
    let d = Daemon::start_at(
        &run_dir.join("data"),
        &["--user", "pyusage", "--host", &host, "--syslog", &target],
        &[],
    );
    let daemon_pid = d.pid();
    let hosts = [host.as_str()];

    // Real imports: their records reach the centre through the socket, from the daemon's uid.
    let (py, out) = run(&mut python(venv_python(), "import yaml, json, email"));
    assert!(out.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let real: Value = loop {
        let found = show_lines(&d.data()).iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["pid"].as_u64() == Some(py as u64) && v["package"] == "yaml").then_some(v)
        });
        if let Some(v) = found {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no record of python {py}:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let spooled: BTreeSet<(String, String)> = node_ids(&d.data())
        .into_iter()
        .map(|(h, id, _)| (h, id))
        .collect();
    wait_central(&chain, &hosts, &spooled, 120);

    // The attempts, each a schema-valid record of its own.
    let tag = std::process::id() as u64;
    let (nobody_id, nobody_rec) = forge(&real, "forged-by-nobody", "victim", (tag << 8) | 1);
    let (root_id, root_rec) = forge(&real, "forged-by-root", "victim", (tag << 8) | 2);
    let (tcp_id, tcp_rec) = forge(&real, "forged-over-tcp", "victim", (tag << 8) | 3);
    let (cred_id, cred_rec) = forge(&real, "forged-with-credentials", "victim", (tag << 8) | 4);
    let (control_id, control_rec) =
        forge(&real, "sent-as-the-daemon-uid", "victim", (tag << 8) | 5);

    // 1. nobody through the daemon's socket, claiming the daemon's pid in PROCID (logger
    //    cannot put it in the credentials: not root).
    let child = logger_unix(setpriv("nobody", "nogroup"), &sock, daemon_pid, &nobody_rec)
        .spawn()
        .unwrap();
    let nobody_pid = child.id(); // setpriv execs logger: the same process
    assert!(child.wait_with_output().unwrap().status.success());
    // 2. root through the socket: root may set the credentials' pid to the daemon's (logger
    //    does so with --id), but its uid is 0, not the daemon's.
    output_ok(&mut logger_unix(
        Command::new("env"),
        &sock,
        daemon_pid,
        &root_rec,
    ));
    // 3. nobody over the node rsyslog's TCP listener on 127.0.0.1: no credentials at all.
    output_ok(
        as_nobody("logger")
            .args(["-n", "127.0.0.1", "-T", "-P"])
            .arg(chain.relay.port.to_string())
            .args(["--size", LOGGER_SIZE])
            .args(["--rfc5424=notq", "-t", "pyusage", "--msgid", "IMPORT"])
            .arg(&tcp_rec),
    );
    // 4. nobody with hand-made SCM_CREDENTIALS: the daemon's uid with its own pid, its own uid
    //    with the daemon's pid. The kernel refuses both (EPERM) to a non-root sender.
    let code = r#"
import os, socket, struct, sys
sock, daemon_pid, uid, gid, msg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].encode()
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
said = []
for pid, u, g in [(os.getpid(), uid, gid), (daemon_pid, os.getuid(), os.getgid())]:
    creds = struct.pack("iII", pid, u, g)
    try:
        s.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)], 0, sock)
        said.append("sent")
    except PermissionError:
        said.append("EPERM")
print(" ".join(said))
"#;
    let out = output_ok(
        as_nobody(DEBIAN_PYTHON)
            .arg("-c")
            .arg(code)
            .arg(&sock)
            .arg(daemon_pid.to_string())
            .arg(uid.to_string())
            .arg(gid.to_string())
            .arg(format!(
                "<134>1 2026-01-01T00:00:00Z {host} pyusage {daemon_pid} IMPORT - {cred_rec}"
            )),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "EPERM EPERM",
        "the kernel let nobody claim another uid or pid"
    );
    // 5. The control: the same kind of copy, sent as the daemon's uid, is forwarded.
    output_ok(&mut logger_unix(
        setpriv("pyusage", "pyusage"),
        &sock,
        daemon_pid,
        &control_rec,
    ));

    // The control arrives; the three rejected messages are in the forgery log by then (each
    // once, with its sender).
    let control: BTreeSet<(String, String)> = [(host.clone(), control_id.clone())].into();
    wait_central(&chain, &hosts, &control, 120);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let forged = loop {
        let text = std::fs::read_to_string(&forged_log).unwrap_or_default();
        if [&nobody_id, &root_id, &tcp_id]
            .iter()
            .all(|id| text.contains(id.as_str()))
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Each logged once, with its sender, and whole: the relay judged the complete record.
    let line = |id: &str, rec: &str| -> &str {
        let mut l = forged.lines().filter(|l| l.contains(id));
        let one = l
            .next()
            .unwrap_or_else(|| panic!("{id} not in the forgery log:\n{forged}"));
        assert!(l.next().is_none(), "{id} logged twice:\n{forged}");
        assert!(one.starts_with("pyusage-forged "), "{one}");
        assert!(one.ends_with(&format!(" msg={rec}")), "not whole: {one}");
        one
    };
    let l = line(&nobody_id, &nobody_rec);
    assert!(
        l.contains(" uid=65534 ") && l.contains(&format!(" pid={nobody_pid} ")),
        "nobody's kernel-verified uid and pid: {l}"
    );
    assert!(l.contains("input=imuxsock"), "{l}");
    // Root set the credentials' pid to the daemon's: rsyslog then reports the daemon's pid
    // and executable (read from /proc by that pid). Only the uid is worth filtering on.
    let l = line(&root_id, &root_rec);
    assert!(
        l.contains(" uid=0 ") && l.contains(&format!(" pid={daemon_pid} ")),
        "{l}"
    );
    let l = line(&tcp_id, &tcp_rec);
    assert!(
        l.contains("uid= gid= pid= exe= input=imtcp from=127.0.0.1"),
        "no credentials over TCP: {l}"
    );
    for id in [&cred_id, &control_id] {
        assert!(!forged.contains(id.as_str()), "{id} in the forgery log");
    }
    assert!(
        !forged.contains(&format!(" uid={uid} ")),
        "a message from the daemon's uid was rejected:\n{forged}"
    );

    // What the daemon has spooled by now reaches the centre; it stops, and everything it
    // delivered is central exactly once, next to the control and nothing else.
    let spooled: BTreeSet<(String, String)> = node_ids(&d.data())
        .into_iter()
        .map(|(h, id, _)| (h, id))
        .collect();
    wait_central(&chain, &hosts, &spooled, 120);
    let recs = d.stop();
    let upto = recs.status["syslog"]["delivered_seq"].as_u64().unwrap();
    let node = node_set(std::slice::from_ref(&recs));
    let delivered: BTreeSet<(String, String)> = node_ids(&recs.data)
        .into_iter()
        .filter(|(_, _, seq)| *seq <= upto)
        .map(|(h, id, _)| (h, id))
        .collect();
    let real_key = (host.clone(), real["record_id"].as_str().unwrap().to_owned());
    assert!(
        delivered.contains(&real_key),
        "the python record was not delivered: up to {upto}, {:?}\n{}",
        node_ids(&recs.data),
        recs.status
    );
    wait_central(&chain, &hosts, &delivered, 120);
    std::thread::sleep(Duration::from_secs(2)); // anything late would be here by now
    let counts = central_counts(&dataset, &hosts);
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let got: BTreeSet<(String, String)> = counts.keys().cloned().collect();
    for id in [&nobody_id, &root_id, &tcp_id, &cred_id] {
        assert!(
            !got.contains(&(host.clone(), id.clone())),
            "the forged record {id} is in the central dataset"
        );
    }
    let control_key = (host.clone(), control_id.clone());
    assert!(got.contains(&control_key), "the control is gone");
    let foreign: Vec<_> = got
        .iter()
        .filter(|k| !node.contains(*k) && **k != control_key)
        .collect();
    assert!(foreign.is_empty(), "not the daemon's: {foreign:?}");
    let missing: Vec<_> = delivered.iter().filter(|k| !got.contains(*k)).collect();
    assert!(missing.is_empty(), "delivered, not central: {missing:?}");
    // Nothing else reached the collector: a forged copy let through but cut or mangled on its
    // way would be quarantined there, not stored, and go unseen above.
    let q = std::fs::read_to_string(dataset.join("_quarantine.jsonl")).unwrap_or_default();
    assert!(q.is_empty(), "quarantined centrally:\n{q}");
}
