#!/usr/bin/env python3
"""The daemon's own CPU per CPU sample, several builds alternated in one run (root).

Usage: bench/sampling_daemon.py BIN [BIN ...]   (env R rounds, default 3). Each block starts a
build's daemon at 997 Hz (CPU 0), runs a short warm-up start of pyenv 3.12 (the fixture venv of
scripts/fixtures.sh), measures the daemon's idle rate for 2 s, then runs a 32-frame CPU-bound
loop (bench/sampling.py's DEEP, CPU 1) and reads every daemon thread's schedstat run time
around it: µs per sample net of the idle rate, all threads together (event loop, processor,
sampler workers).
"""
import os, sys, time, subprocess, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sampling as S
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
py = os.path.join(ROOT, "target", "fixtures", "sampling", "pyenv-3.12", "bin", "python")


def cpu(pid):
    """Run time of all the process's threads, ns."""
    t = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                t += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return t


def samples(d):
    return (d.status().get("sampler") or {}).get("samples", 0)


res = {}
for _ in range(int(os.environ.get("R", 3))):
    for b in sys.argv[1:]:
        tmp = tempfile.mkdtemp(prefix="sdaemon-")
        d = S.Daemon(os.path.abspath(b), tmp, 997)
        time.sleep(1.5)
        subprocess.run(["taskset", "-c", "1", py, "-c", S.DEEP, "2", "30"], check=True)
        time.sleep(1.0)
        i0, t0 = cpu(d.proc.pid), time.time()
        time.sleep(2.0)
        idle = (cpu(d.proc.pid) - i0) / (time.time() - t0)
        s0, c0, t0 = samples(d), cpu(d.proc.pid), time.time()
        subprocess.run(["taskset", "-c", "1", py, "-c", S.DEEP, "40", "30"], check=True)
        time.sleep(1.5)
        s1, c1 = samples(d), cpu(d.proc.pid) - idle * (time.time() - t0)
        d.stop()
        subprocess.run(["rm", "-rf", tmp])
        res.setdefault(b, []).append(((c1 - c0) / 1e3 / max(1, s1 - s0), s1 - s0))
for b, v in res.items():
    print(f"{b}: " + "  ".join(f"{us:.2f} us/sample ({n})" for us, n in v))
