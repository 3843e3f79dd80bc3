"""Delivery benchmark: a 256-process x 20-package burst through the daemon to rsyslog over TCP,
and the sink's throughput on a spool backlog. Standard library only; run via bench/delivery.sh."""
import argparse, json, os, shutil, signal, socket, subprocess, sys, tempfile, time, uuid

IMPORTS = ("numpy, yaml, requests, six, packaging, attr, click, jinja2, pygments, tomli, "
           "dateutil, pytz, rich, idna, certifi, urllib3, charset_normalizer, markupsafe, json, email")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def start_rsyslog(d, port):
    p = subprocess.Popen([os.path.join(ROOT, "scripts/services/rsyslog.sh"), d, str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); return p
        except OSError:
            time.sleep(0.05)
    sys.exit("rsyslog did not start")


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for l in f if b" IMPORT - " in l)
    except FileNotFoundError:
        return 0


def start_daemon(binary, data, port, ready):
    if os.path.exists(ready):
        os.unlink(ready)
    p = subprocess.Popen([binary, "daemon", "-d", data, "--ready-file", ready, "--flush-secs", "3600",
                          "--syslog", f"tcp:127.0.0.1:{port}", "--syslog-max-bytes", "65536"],
                         stderr=subprocess.DEVNULL)
    while not os.path.exists(ready):
        if p.poll() is not None:
            sys.exit("daemon failed")
        time.sleep(0.02)
    return p


def status(data):
    for _ in range(100):
        try:
            with open(os.path.join(data, "status.json")) as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.05)
    sys.exit("no status.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True); ap.add_argument("--venv", required=True)
    ap.add_argument("--backlog", type=int, default=200000)
    a = ap.parse_args()
    binary, py = os.path.abspath(a.bin), os.path.join(a.venv, "bin", "python")
    tmp = tempfile.mkdtemp(prefix="pyusage-delivery-")
    port = free_port()
    rs = start_rsyslog(os.path.join(tmp, "rs"), port)
    out_log = os.path.join(tmp, "rs", "out.log")

    # 1. Burst: 256 processes x 20 packages, all at once.
    data = os.path.join(tmp, "burst")
    d = start_daemon(binary, data, port, os.path.join(tmp, "ready"))
    base = count_lines(out_log)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([py, "-c", "import " + IMPORTS], stdout=subprocess.DEVNULL) for _ in range(256)]
    for p in procs:
        p.wait()
    t_exit = time.perf_counter() - t0
    expected = None
    while True:
        st = status(data)
        if st["live_processes"] == 0 and st["records_spooled"] > 0:
            spooled = st["records_spooled"]
            if st.get("syslog") and st["syslog"]["delivered_seq"] >= st["next_seq"] - 1:
                break
        if time.perf_counter() - t0 > 300:
            sys.exit("burst not delivered in 300 s")
        time.sleep(0.05)
    t_deliv = time.perf_counter() - t0
    while count_lines(out_log) - base < spooled and time.perf_counter() - t0 < 330:
        time.sleep(0.05)
    t_rsys = time.perf_counter() - t0
    d.send_signal(signal.SIGTERM); d.wait()
    print("# burst: 256 Python processes x 20 imported packages, at once")
    print(f"records: {spooled} ({spooled/256:.1f} per process incl. stdlib); processes done after {t_exit:.2f} s;"
          f" all committed as delivered after {t_deliv:.2f} s; all in rsyslog's file after {t_rsys:.2f} s")

    # 2. Backlog: the sink alone, from a spool of N records.
    with open(os.path.join(data, "status.json")) as f:
        pass
    sample = subprocess.run([binary, "show", "--format", "jsonl", data], capture_output=True, text=True).stdout.splitlines()[0]
    rec = json.loads(sample)
    data2 = os.path.join(tmp, "backlog")
    os.makedirs(os.path.join(data2, "spool"))
    with open(os.path.join(data2, "spool", f"{1:020}.jsonl"), "w") as f:
        for i in range(1, a.backlog + 1):
            rec["seq"], rec["record_id"], rec["pid"] = i, str(uuid.uuid4()), 100000 + i
            f.write(json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n")
    base = count_lines(out_log)
    t0 = time.perf_counter()
    d = start_daemon(binary, data2, port, os.path.join(tmp, "ready2"))
    while True:
        st = status(data2)
        if st.get("syslog") and st["syslog"]["delivered_seq"] >= a.backlog:
            break
        if time.perf_counter() - t0 > 600:
            sys.exit("backlog not delivered")
        time.sleep(0.05)
    t_b = time.perf_counter() - t0
    while count_lines(out_log) - base < a.backlog and time.perf_counter() - t0 < 900:
        time.sleep(0.05)
    t_b2 = time.perf_counter() - t0
    d.send_signal(signal.SIGTERM); d.wait()
    rs.send_signal(signal.SIGTERM); rs.wait()
    print(f"\n# sink throughput: spool backlog of {a.backlog} records -> rsyslog over TCP (octet-counted)")
    print(f"committed: {a.backlog/t_b:,.0f} records/s ({t_b:.2f} s, includes daemon start and Parquet conversion);"
          f" written by rsyslog: {a.backlog/t_b2:,.0f} records/s")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        # Never leave a daemon or rsyslog of this run behind.
        subprocess.run(["pkill", "-f", "pyusage-delivery-"], check=False)
