#!/usr/bin/env python3
"""The sampler's kernel cost per Python sample, several builds alternated in one run (root).

Usage: bench/sampling_ab.py BIN [BIN ...]   (env R rounds, default 1). At 997 Hz with
kernel.bpf_stats_enabled: a shell loop (the cost of a run on a process that is not Python),
pyenv 3.12 at 3, 32 and 92 frames, and every fixture interpreter (scripts/fixtures.sh) at 32
frames; the non-Python runs' cost is taken out as in bench/sampling.py.
"""
import os, sys, time, subprocess, resource, tempfile, statistics
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sampling as S
bins = sys.argv[1:]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))); venvs = os.path.join(ROOT, "target", "fixtures", "sampling")
py312 = os.path.join(venvs, "pyenv-3.12", "bin", "python")
def block(binary, cmd):
    tmp = tempfile.mkdtemp(prefix="scost-")
    d = S.Daemon(binary, tmp, 997); time.sleep(2.2)
    s0 = d.status().get("sampler") or {}
    p0 = {p["name"]: p for p in d.status().get("programs", [])}.get("cpu_sample") or {}
    subprocess.run(["taskset", "-c", "1"] + cmd, check=True)
    time.sleep(2.2); st = d.status(); s1 = st.get("sampler") or {}
    p1 = {p["name"]: p for p in st.get("programs", [])}.get("cpu_sample")
    d.stop()
    subprocess.run(["rm", "-rf", tmp])
    return p1["run_count"] - p0.get("run_count", 0), p1["run_time_ns"] - p0.get("run_time_ns", 0), s1.get("samples", 0) - s0.get("samples", 0)
old_stats = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
open("/proc/sys/kernel/bpf_stats_enabled", "w").write("1")
res = {}
cases = [("shell", ["sh", "-c", S.SHELL_LOOP])] + [(f"3.12 d{d+2}", [py312, "-c", S.DEEP, "20", str(d)]) for d in (1, 30, 90)] + \
        [(f"{n} d32", [os.path.join(venvs, n, "bin", "python"), "-c", S.DEEP, "15", "30"]) for n in sorted(os.listdir(venvs))]
for r in range(int(os.environ.get("R", 1))):
    for name, cmd in cases:
        for b in bins:
            res.setdefault((name, b), []).append(block(os.path.abspath(b), cmd))
open("/proc/sys/kernel/bpf_stats_enabled", "w").write(old_stats)
miss = {b: sum(x[1] for x in res[("shell", b)]) / max(1, sum(x[0] for x in res[("shell", b)])) for b in bins}
for name, _ in cases:
    row = []
    for b in bins:
        runs = sum(x[0] for x in res[(name, b)]); ns = sum(x[1] for x in res[(name, b)]); smp = sum(x[2] for x in res[(name, b)])
        row.append(f"{ns/runs:7.0f} ns/run" if name == "shell" else f"{(ns - (runs - smp) * miss[b]) / max(smp, 1) / 1000:5.2f} us/sample ({smp})")
    print(f"{name:16}", "  |  ".join(row))
