#!/usr/bin/env python3
"""Daemon CPU per import-heavy Python start, by thread, several builds alternated (root).

Usage: bench/daemon_threads.py BIN[,BIN...] [N starts per batch, 40] [R rounds, 2]
(env EXTRA: more daemon arguments, e.g. "--sample-hz 0"; env WARM warm-up starts, default 6:
each of the sampler's two workers reads an interpreter's image the first time it inspects one,
1.6 ms once per daemon, and with two warm-up starts one worker could still be cold inside the
batch). Each round starts each build's daemon (CPU 0), runs WARM
reference starts, measures each thread's idle rate for 3 s, then runs N reference starts
(CPU 1, the bench venv of bench/capture.sh). Each thread's run time comes from its
/proc/PID/task/TID/schedstat (ns; /proc ticks are 10 ms, too coarse); threads are grouped by
name without their index (sampler-0, sampler-1 -> sampler). Prints ms per start net of idle,
one column per round: which of the processor, the sampler's workers and the event loop a
change moved; then the batch's whole CPU per start idle included (TOTAL gross) and the idle
rate (ms of CPU a second), for changes to what an idle daemon does. Then, per thread, how
many times it was put on a CPU per start (schedstat's third field, net of the idle rate):
the wake-ups a start costs, each some tens of microseconds of CPU on this VM.
"""
import collections, os, subprocess, sys, tempfile, time
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from capture import START
py = os.path.join(ROOT, "target", "bench", "venv", "bin", "python")
bins = sys.argv[1].split(",")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
warm = int(os.environ.get("WARM", 6))
extra = os.environ.get("EXTRA", "").split()

def threads(pid):
    """Run time in seconds, and times put on a CPU, by thread name (index dropped)."""
    out, runs = collections.Counter(), collections.Counter()
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                name = f.read().strip().rstrip("0123456789-")
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                fields = f.read().split()
        except FileNotFoundError:
            continue
        out[name] += int(fields[0]) / 1e9
        runs["runs " + name] += int(fields[2])
    return out, runs

def start():
    subprocess.run(["taskset", "-c", "1", py, "-c", START], check=True)

res = {b: collections.defaultdict(list) for b in bins}
runs = {b: collections.defaultdict(list) for b in bins}
for _ in range(rounds):
    for b in bins:
        d = tempfile.mkdtemp(prefix="pyusage-thr-")
        p = subprocess.Popen(["taskset", "-c", "0", b, "daemon", "-d", d + "/d", "--ready-file", d + "/ready",
                              "--flush-secs", "3600"] + extra, stderr=open(d + "/log", "w"))
        while not os.path.exists(d + "/ready"):
            assert p.poll() is None, open(d + "/log").read()
            time.sleep(0.02)
        for _ in range(warm):
            start()
        time.sleep(1)
        (i0, ri0), t0 = threads(p.pid), time.time()
        time.sleep(3)
        (i1, ri1), di = threads(p.pid), time.time() - t0
        (c0, rc0), t0 = threads(p.pid), time.time()
        for _ in range(n):
            start()
        time.sleep(0.6)
        (c1, rc1), dt = threads(p.pid), time.time() - t0
        p.terminate(); p.wait()
        subprocess.run(["rm", "-rf", d])
        name = os.path.basename(b)
        total = 0.0
        for k in set(c0) | set(c1):
            # The main thread is named after the binary: call it the event loop.
            label = "event loop" if k == name[:15].rstrip("0123456789-") else k
            net = ((c1[k] - c0[k]) - (i1[k] - i0[k]) / di * dt) / n * 1e3
            res[b][label].append(net)
            total += net
        res[b]["TOTAL"].append(total)
        # Gross: the batch's whole CPU per start, idle included. Net of idle alone misleads
        # when a change lowers the idle rate: the wake-ups an idle daemon no longer has are
        # then no longer subtracted from the busy ones.
        res[b]["TOTAL gross"].append(sum(c1[k] - c0[k] for k in c1) / n * 1e3)
        res[b]["idle ms/s"].append(sum(i1[k] - i0[k] for k in i1) / di * 1e3)
        for k in set(rc0) | set(rc1):
            label = "runs event loop" if k == "runs " + name[:15].rstrip("0123456789-") else k
            runs[b][label].append(((rc1[k] - rc0[k]) - (ri1[k] - ri0[k]) / di * dt) / n)
for b in bins:
    print(b)
    for k, v in sorted(res[b].items(), key=lambda kv: -sum(kv[1])):
        unit = "" if k == "idle ms/s" else " ms/start"
        print(f"  {k:12} {' '.join(f'{x:6.2f}' for x in v)}{unit}")
    for k, v in sorted(runs[b].items(), key=lambda kv: -sum(kv[1])):
        print(f"  {k:16} {' '.join(f'{x:6.1f}' for x in v)} /start")
