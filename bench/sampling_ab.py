#!/usr/bin/env python3
"""The sampler's kernel cost per Python sample, several builds alternated in one run (root).

Usage: bench/sampling_ab.py BIN [BIN ...]   (env R rounds, default 1; CASES a filter). At 997 Hz with
kernel.bpf_stats_enabled: a shell loop (the cost of a run on a process that is not Python),
pyenv 3.12 at 3, 32 and 92 frames, every fixture interpreter (scripts/fixtures.sh) at 32
frames, and pyenv 3.9 and 3.12 at 32 frames in the main thread with 8 idle threads started
after it (whose thread states the kernel's list holds ahead of the main thread's); the
non-Python runs' cost is taken out as in bench/sampling.py.
"""
import os, sys, time, subprocess, resource, tempfile, statistics
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sampling as S
bins = sys.argv[1:]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))); venvs = os.path.join(ROOT, "target", "fixtures", "sampling")
py312 = os.path.join(venvs, "pyenv-3.12", "bin", "python")
# Eight idle threads, started before the busy main thread's deep loop.
THREADS = "import threading\n_go = threading.Event()\nfor _ in range(8): threading.Thread(target=_go.wait, daemon=True).start()\n"
def block(binary, cmd):
    tmp = tempfile.mkdtemp(prefix="scost-")
    d = S.Daemon(binary, tmp, 997); st = d.settled()
    s0 = st.get("sampler") or {}
    p0 = {p["name"]: p for p in st.get("programs", [])}.get("cpu_sample") or {}
    subprocess.run(["taskset", "-c", "1"] + cmd, check=True)
    st = d.settled(); s1 = st.get("sampler") or {}
    p1 = {p["name"]: p for p in st.get("programs", [])}.get("cpu_sample")
    d.stop()
    subprocess.run(["rm", "-rf", tmp])
    return p1["run_count"] - p0.get("run_count", 0), p1["run_time_ns"] - p0.get("run_time_ns", 0), s1.get("samples", 0) - s0.get("samples", 0)
old_stats = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
open("/proc/sys/kernel/bpf_stats_enabled", "w").write("1")
res = {}
cases = [("shell", ["sh", "-c", S.SHELL_LOOP])] + [(f"3.12 d{d+2}", [py312, "-c", S.DEEP, "20", str(d)]) for d in (1, 30, 90)] + \
        [(f"{n} d32", [os.path.join(venvs, n, "bin", "python"), "-c", S.DEEP, "15", "30"]) for n in sorted(os.listdir(venvs))] + \
        [(f"{n} d32 9 thr", [os.path.join(venvs, n, "bin", "python"), "-c", THREADS + S.DEEP, "15", "30"]) for n in ("pyenv-3.9", "pyenv-3.12")]
# CASES: only the cases whose names contain one of these comma-separated strings (the shell
# loop, whose cost is taken out of the others, always runs).
want = [w for w in os.environ.get("CASES", "").split(",") if w]
cases = [c for c in cases if c[0] == "shell" or not want or any(w in c[0] for w in want)]
for r in range(int(os.environ.get("R", 1))):
    for name, cmd in cases:
        # The builds' order alternates by round, so that neither always runs first.
        for b in (bins if r % 2 == 0 else bins[::-1]):
            res.setdefault((name, b), []).append(block(os.path.abspath(b), cmd))
open("/proc/sys/kernel/bpf_stats_enabled", "w").write(old_stats)
miss = {b: sum(x[1] for x in res[("shell", b)]) / max(1, sum(x[0] for x in res[("shell", b)])) for b in bins}
def per_sample(x, b):
    return (x[1] - (x[0] - x[2]) * miss[b]) / max(x[2], 1) / 1000
# A block's cost swings up to 2x with the host's load over seconds; the builds' blocks of one
# round run back to back, so their ratio is steadier than either.
print("per Python sample: all blocks pooled [median of the blocks' own figures]"
      + ("; then the median of the rounds' ratios to the first build" if len(bins) > 1 else ""))
for name, _ in cases:
    row = []
    for b in bins:
        runs = sum(x[0] for x in res[(name, b)]); ns = sum(x[1] for x in res[(name, b)]); smp = sum(x[2] for x in res[(name, b)])
        per = [per_sample(x, b) for x in res[(name, b)]]
        row.append(f"{ns/runs:7.0f} ns/run" if name == "shell" else
                   f"{(ns - (runs - smp) * miss[b]) / max(smp, 1) / 1000:5.2f} us [{statistics.median(per):5.2f}] ({smp})")
    if name != "shell":
        for b in bins[1:]:
            ratios = [per_sample(y, b) / per_sample(x, bins[0]) for x, y in zip(res[(name, bins[0])], res[(name, b)])]
            row.append(f"x{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    print(f"{name:20}", "  |  ".join(row))
