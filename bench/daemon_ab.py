#!/usr/bin/env python3
"""Daemon CPU per import-heavy Python start, several builds alternated in one run (root).

Usage: bench/daemon_ab.py BIN [BIN ...]   (env R rounds, default 4; N starts per batch, 30;
EXTRA extra daemon arguments). Each round starts each build's daemon in turn (CPU 0) and runs
two batches of N reference starts (CPU 1, the bench venv of bench/capture.sh) after two
warm-up starts; the daemon's idle rate, measured for 3 s before each batch, is taken out. Prints medians per build.
"""
import os, subprocess, sys, tempfile, time, statistics
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from capture import Daemon, START
py = os.path.join(ROOT, "target", "bench", "venv", "bin", "python")
bins = sys.argv[1:]; rounds = int(os.environ.get("R", 4)); n = int(os.environ.get("N", 30))
extra = os.environ.get("EXTRA", "").split()
class D(Daemon):
    def start(self):
        ready = os.path.join(self.data, "ready")
        if os.path.exists(ready): os.unlink(ready)
        self.proc = subprocess.Popen(["taskset", "-c", "0", self.binary, "daemon", "-d", os.path.join(self.data, "d"),
            "--ready-file", ready, "--flush-secs", "3600"] + extra, stderr=open(os.path.join(self.data, "log"), "a"))
        while not os.path.exists(ready):
            assert self.proc.poll() is None, open(os.path.join(self.data, "log")).read()
            time.sleep(0.02)
res = {b: [] for b in bins}; raw = {b: [] for b in bins}
for r in range(rounds):
    for b in bins:
        tmp = tempfile.mkdtemp(prefix="pyusage-ab-")
        d = D(os.path.abspath(b), tmp); d.start()
        # Warm-up: a fresh daemon's first Python starts also start its worker threads and
        # read the interpreter image once per worker (once per daemon, not per start).
        for _ in range(2):
            subprocess.run(["taskset", "-c", "1", py, "-c", START], check=True)
        for _ in range(2):
            time.sleep(0.3); i0 = d.cpu(); t0 = time.time(); time.sleep(3); idle = (d.cpu() - i0) / (time.time() - t0)
            c0 = d.cpu(); t0 = time.time()
            for _ in range(n):
                subprocess.run(["taskset", "-c", "1", py, "-c", START], check=True)
            time.sleep(0.5); dt = time.time() - t0; used = d.cpu() - c0
            res[b].append((used - idle * dt) / n * 1e3); raw[b].append(used / n * 1e3)
        d.stop()
        subprocess.run(["rm", "-rf", tmp])
for b in bins:
    print(f"{os.path.basename(b):20} net of idle: median {statistics.median(res[b]):.2f} ms/start  ({' '.join(f'{x:.2f}' for x in sorted(res[b]))}); raw median {statistics.median(raw[b]):.2f}")
