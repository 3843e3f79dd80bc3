"""Central ingest benchmark: records/s into the central dataset, and its size per million.

    ingest.py --bin target/release/pyusage [--records N] [--batch B] [--rsyslog]
              [--rsyslog-lanes] [--rsyslog-null] [--bin OTHER --rounds R]
              [--rsyslog-records M] [--work DIR]

Records come from `pyusage synth` (realistic field values; dates moved to one day, as a live
stream's are), printed back by `pyusage show` and wrapped as the RFC 5424 lines the daemon
sends and rsyslog hands to omprog (`RSYSLOG_SyslogProtocol23Format`). Two measurements:

1. stdin: the lines fed straight into `pyusage ingest`, in transactions of B messages
   (rsyslog's dequeueBatchSize) between BEGIN/COMMIT TRANSACTION marks, as omprog with
   confirmMessages and useTransactions sends them (ingest's replies go to /dev/null: the
   pipe is not waited on per message as rsyslog does). Time until ingest has exited, i.e. every
   record is in Parquet.
2. --rsyslog: a real rsyslogd with packaging/rsyslog/pyusage-central.conf's omprog action
   (imtcp instead of imrelp as the input), the lines sent over TCP with octet counting. Time
   from the first byte sent until ingest's stats say every record is stored. With
   --rsyslog-lanes, also through pyusage-central-lanes.conf (two ingests, one dataset). With
   --rsyslog-null, the same paths again with omprog_null.c (answers each message at once,
   keeps nothing) in ingest's place: what rsyslog itself can deliver through omprog here, the
   ceiling for any consumer, and (first round) rsyslog's CPU for the same lines with no
   output and with omfile, the floor under it. rsyslog's own CPU per record is printed for
   every path.

With several --bin (say the build before a change and the one after) every run uses the same
lines, the binaries alternating within each of R rounds (the order swapped every round): on a
shared machine only runs side by side compare. Each run reports records/s, ingest's CPU per
record (both threads) and its peak RSS (stdin: GNU time's; the rsyslog path: VmHWM from /proc
before the stop).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


DAY = "2026-11-25"


def sh(*a, **kw):
    return subprocess.run(a, check=True, **kw)


def lines_of(bin_, n, work):
    synth = os.path.join(work, "synth")
    sh(bin_, "synth", "--rows", str(n), "--out", synth, stdout=subprocess.DEVNULL)
    out = subprocess.run([bin_, "show", "--format", "jsonl", synth], check=True,
                         capture_output=True).stdout.splitlines()
    msgs = []
    for j in out:
        r = json.loads(j)
        # A live stream: synth spreads a year, the centre receives today's processes. The
        # time of day is kept, the date set to one day.
        for f in ("process_start", "process_end", "first_seen"):
            if r[f]:
                r[f] = DAY + r[f][10:]
        j = json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode()
        head = "<134>1 %s %s pyusage %d IMPORT - " % (r["first_seen"], r["host"], r["pid"])
        msgs.append(head.encode() + j)
    return msgs


def size_of(root):
    total = 0
    for d, _, files in os.walk(root):
        if os.path.basename(d).startswith("date="):
            total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    return total


def files_of(root):
    return sum(len(fs) for d, _, fs in os.walk(root) if os.path.basename(d).startswith("date="))


def write_feed(msgs, batch, work):
    feed = os.path.join(work, "feed")
    with open(feed, "wb") as f:
        for i in range(0, len(msgs), batch):
            f.write(b"BEGIN TRANSACTION\n")
            f.write(b"\n".join(msgs[i:i + batch]) + b"\n")
            f.write(b"COMMIT TRANSACTION\n")
    return feed


# GNU time reports its child's peak RSS; a child forked from this process (which holds every
# line, a GB) would count this process's pages as its own until its exec.
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def bench_stdin(bin_, n, feed, work):
    out = os.path.join(work, "central-stdin")
    shutil.rmtree(out, ignore_errors=True)
    rss_file = os.path.join(work, "rss")
    cmd = [bin_, "ingest", "--out", out]
    if TIME:
        cmd = [TIME, "-f", "%M", "-o", rss_file] + cmd
    t0 = time.time()
    with open(feed, "rb") as f, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdin=f, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.time() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        log = err.read()
    assert p.returncode == 0, log[-2000:]
    cpu = ru.ru_utime + ru.ru_stime
    rss = int(open(rss_file).read().split()[-1]) * 1024 if TIME else None
    stats = json.load(open(os.path.join(out, ".ingest/stats.json")))
    assert stats["accepted"] == n, (stats, log[-2000:])
    # Compacted on request, as the running ingest does once a partition has enough files.
    sh(bin_, "ingest", "--compact", "--out", out, stderr=subprocess.DEVNULL)
    size, files = size_of(out), files_of(out)
    shutil.rmtree(out, ignore_errors=True)
    return dt, cpu, rss, size, files, stats


def proc_stat(pid):
    """(peak RSS in bytes, CPU in s) of a live process."""
    status = open("/proc/%s/status" % pid).read()
    stat = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    hwm = next(int(l.split()[1]) * 1024 for l in status.splitlines() if l.startswith("VmHWM:"))
    return hwm, (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def ingest_procs(out):
    """The ingests that rsyslog started for `out` (one per lane): the largest peak RSS (bytes)
    and their CPU (s) together."""
    rss, cpu = None, 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0")
            if b"ingest" not in cmd or out.encode() not in cmd:
                continue
            hwm, c = proc_stat(pid)
        except OSError:
            continue
        rss, cpu = max(rss or 0, hwm), cpu + c
    return rss, cpu


NULL_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "omprog_null.c")


def null_consumer(work):
    """bench/omprog_null.c, compiled once into `work`."""
    exe = os.path.join(work, "omprog_null")
    if not os.path.exists(exe):
        sh("cc", "-O2", "-o", exe, NULL_SRC)
    return exe


def connect(port):
    """A TCP connection to the rsyslog starting on `port` (waits up to 10 s for it)."""
    for _ in range(200):
        try:
            return socket.create_connection(("127.0.0.1", port))
        except OSError:
            time.sleep(0.05)
    raise SystemExit("rsyslogd is not listening on %d" % port)


def send_framed(s, msgs):
    """Sends `msgs` with octet-counting framing, a MiB at a time."""
    buf = bytearray()
    for m in msgs:
        buf += b"%d " % len(m) + m
        if len(buf) > 1 << 20:
            s.sendall(buf)
            buf.clear()
    s.sendall(buf)


def bench_rsyslog(bin_, msgs, work, repo, lanes=False, null=False):
    """Sends `msgs` over TCP to a real rsyslog running the shipped collector snippet
    (pyusage-central.conf, or pyusage-central-lanes.conf's two lanes), imtcp in place of
    imrelp; with `null`, omprog_null.c in ingest's place. Returns the time until every record
    is stored (or answered), the sender's time, ingest's peak RSS and CPU, rsyslog's CPU."""
    port = free_port()
    out = os.path.join(work, "central-rsyslog")
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(os.path.join(work, "rs"), ignore_errors=True)
    snippet = "pyusage-central-lanes.conf" if lanes else "pyusage-central.conf"
    conf = open(os.path.join(repo, "packaging/rsyslog", snippet)).read()
    conf = conf.replace('module(load="imrelp")', 'module(load="imtcp")')
    conf = conf.replace('input(type="imrelp" port="2514" maxDataSize="65536"',
                        'input(type="imtcp" address="127.0.0.1" port="%d"' % port)
    counts = []
    if null:
        for k in range(2 if lanes else 1):
            lane = "/usr/bin/pyusage ingest --out /srv/pyusage/dataset" + (" --lane %d" % k if lanes else "")
            counts.append(os.path.join(work, "null-%d.count" % k))
            conf = conf.replace(lane, "/usr/bin/env COUNT=%s %s" % (counts[-1], null_consumer(work)))
            if os.path.exists(counts[-1]):
                os.remove(counts[-1])
    conf = conf.replace("/usr/bin/pyusage ingest --out /srv/pyusage/dataset",
                        "%s ingest --out %s --flush-secs 1" % (bin_, out))
    conf = conf.replace("/var/log/pyusage-ingest", os.path.join(work, "ingest"))
    wd = os.path.join(work, "rs")
    os.makedirs(wd + "/work", exist_ok=True)
    with open(wd + "/rsyslog.conf", "w") as f:
        f.write('global(maxMessageSize="64k" workDirectory="%s/work")\n' % wd + conf)
    rs = subprocess.Popen(["rsyslogd", "-n", "-f", wd + "/rsyslog.conf", "-i", wd + "/pid"])
    stats_paths = [os.path.join(out, ".ingest/stats.json")]
    if lanes:
        stats_paths.append(os.path.join(out, ".ingest/lane-1/stats.json"))

    def stored():
        n = 0
        for p in counts or stats_paths:
            try:
                n += int(open(p).read()) if counts else json.load(open(p))["accepted"]
            except (OSError, ValueError):
                pass
        return n
    try:
        s = connect(port)
        _, rs0 = proc_stat(rs.pid)
        t0 = time.time()
        send_framed(s, msgs)
        sent = time.time() - t0
        while True:
            got = stored()
            if got >= len(msgs):
                break
            if time.time() - t0 > 600:
                raise SystemExit("rsyslog path: only %d of %d after 600 s" % (got, len(msgs)))
            time.sleep(0.05)
        dt = time.time() - t0
        s.close()
        rss, cpu = ingest_procs(out)
        _, rs1 = proc_stat(rs.pid)
    finally:
        rs.send_signal(signal.SIGTERM)
        rs.wait()
        shutil.rmtree(out, ignore_errors=True)
    return dt, sent, rss, cpu, rs1 - rs0


def bench_rsyslog_floor(msgs, work, output):
    """rsyslog's own CPU per message for the same lines over imtcp, with no output (`None`: a
    rule that matches nothing) or omfile to /dev/null: what any omprog path adds is above it.
    Waits until rsyslog's CPU stops moving (nothing to count stored)."""
    port = free_port()
    wd = os.path.join(work, "rs-floor")
    shutil.rmtree(wd, ignore_errors=True)
    os.makedirs(wd + "/work")
    action = 'action(type="omfile" file="/dev/null" template="RSYSLOG_SyslogProtocol23Format")'
    rule = action if output else 'if $msg == "no such message" then ' + action
    with open(wd + "/rsyslog.conf", "w") as f:
        f.write('global(maxMessageSize="64k" workDirectory="%s/work")\n'
                'module(load="imtcp")\n'
                'input(type="imtcp" address="127.0.0.1" port="%d" ruleset="r")\n'
                'ruleset(name="r") { %s }\n' % (wd, port, rule))
    rs = subprocess.Popen(["rsyslogd", "-n", "-f", wd + "/rsyslog.conf", "-i", wd + "/pid"])
    try:
        s = connect(port)
        _, c0 = proc_stat(rs.pid)
        send_framed(s, msgs)
        s.close()
        last = None
        while True:
            time.sleep(0.3)
            _, c = proc_stat(rs.pid)
            if c == last:
                break
            last = c
    finally:
        rs.send_signal(signal.SIGTERM)
        rs.wait()
    return (c - c0) / len(msgs)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, action="append",
                    help="a pyusage binary; give several to compare them, alternating")
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--rsyslog", action="store_true")
    ap.add_argument("--rsyslog-lanes", action="store_true",
                    help="also through pyusage-central-lanes.conf (two ingest lanes)")
    ap.add_argument("--rsyslog-null", action="store_true",
                    help="also with omprog_null.c in ingest's place: rsyslog's own ceiling")
    ap.add_argument("--rsyslog-records", type=int, default=0,
                    help="send only the first M records through rsyslog (default: all)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--work", default=None, help="directory for the lines and the datasets")
    a = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bins = [os.path.abspath(b) for b in a.bin]
    work = tempfile.mkdtemp(prefix="pyusage-bench-ingest-", dir=a.work)
    try:
        msgs = lines_of(bins[0], a.records, work)
        n = len(msgs)
        raw = sum(len(m) + 1 for m in msgs)
        print("records: %d, syslog lines %.0f bytes each" % (n, raw / n))
        feed = write_feed(msgs, a.batch, work)
        rs_msgs = msgs[:a.rsyslog_records] if a.rsyslog_records else msgs
        for rnd in range(a.rounds):
            order = bins if rnd % 2 == 0 else bins[::-1]
            for b in order:
                tag = "[round %d, %s] " % (rnd + 1, b) if len(bins) > 1 or a.rounds > 1 else ""
                dt, cpu, rss, size, files, st = bench_stdin(b, n, feed, work)
                print("%sstdin (omprog protocol, %d per transaction): %.2f s, %.0f records/s; "
                      "ingest's CPU %.2f s (%.1f us per record, both threads), peak RSS %s;"
                      " load average %.1f"
                      % (tag, a.batch, dt, n / dt, cpu, cpu / n * 1e6,
                         "%.0f MiB" % (rss / 2**20) if rss else "n/a (no /usr/bin/time)",
                         os.getloadavg()[0]))
                print("%scentral dataset: %.1f MB per million records (%d files after "
                      "compaction; syslog text %.0f MB per million)" % (tag, size / n, files, raw / n))
                print("%s  %d commits, %d Parquet files written before compaction"
                      % (tag, st["commits"], st["files"]))
                sys.stdout.flush()
            if a.rsyslog:
                for b in order:
                    tag = "[round %d, %s] " % (rnd + 1, b) if len(bins) > 1 or a.rounds > 1 else ""
                    paths = [(False, False)] + [(True, False)] * a.rsyslog_lanes
                    if a.rsyslog_null and b == order[0]:
                        paths += [(False, True)] + [(True, True)] * a.rsyslog_lanes
                    for lanes, null in paths:
                        dt, sent, rss, cpu, rcpu = bench_rsyslog(b, rs_msgs, work, repo, lanes, null)
                        m = len(rs_msgs)
                        what = "%s -> %s" % ("2 lanes" if lanes else "1 lane",
                                             "omprog_null.c" if null else "ingest")
                        extra = ""
                        if rss is not None and not null:
                            extra = "; ingest's CPU %.1f us per record, peak RSS %.0f MiB" % (
                                cpu / m * 1e6, rss / 2**20)
                        print("%srsyslog imtcp -> omprog, %s: %d records, %.2f s, %.0f records/s"
                              " (sender done after %.2f s; rsyslog's CPU %.1f us per record%s;"
                              " load average %.1f)"
                              % (tag, what, m, dt, m / dt, sent, rcpu / m * 1e6, extra,
                                 os.getloadavg()[0]))
                        sys.stdout.flush()
                if a.rsyslog_null and rnd == 0:
                    for output in (False, True):
                        us = bench_rsyslog_floor(rs_msgs, work, output) * 1e6
                        print("rsyslog imtcp -> %s: rsyslog's CPU %.1f us per record (its input"
                              " and rules, the floor under every omprog path)"
                              % ("omfile /dev/null" if output else "no output", us))
                        sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
