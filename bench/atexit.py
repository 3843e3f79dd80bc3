#!/usr/bin/env python3
"""What the atexit collector (`pyusage atexit install`) costs a Python process, side by side.

Two measurements, printed as figures and ratios (no pass/fail):

1. The hook's own exit-time work, timed inside the process: the workload runs with the hook on
   PYTHONPATH, then calls the hook's exit handler itself between two perf_counter reads (the
   atexit handler then runs a second time at the real exit; only the timed call is reported).
   Per workload: median and p95 over RUNS processes, and records written per process.
2. Whole-process wall time, hook on vs off (PYTHONPATH pointing at an empty directory), in
   alternating blocks (off, on / on, off / ...), the ratio per pair of blocks, median over
   rounds [min-max], and an A/A line (off vs off) for the noise floor of this VM.

Usage: bench/atexit.py [PYUSAGE_BIN] (default target/release/pyusage). Knobs: RUNS (30),
ROUNDS (8), REPS (8), PY (the fixture venv's python).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/pyusage")
PY = os.environ.get("PY", os.path.join(ROOT, "target/fixtures/venv/bin/python"))
RUNS = int(os.environ.get("RUNS", 30))
ROUNDS = int(os.environ.get("ROUNDS", 8))
REPS = int(os.environ.get("REPS", 8))

WORKLOADS = {
    "json": "import json",
    "numpy+yaml": "import numpy, yaml",
    "400 modules": (
        "import sys, pkgutil, importlib\n"
        "names = sorted(m.name for m in pkgutil.iter_modules() if not m.name.startswith(('_', 'idle', 'tkinter', 'turtle', 'antigravity', 'this')))\n"
        "for n in names:\n"
        "    if len(sys.modules) > 400: break\n"
        "    try: importlib.import_module(n)\n"
        "    except BaseException: pass\n"
    ),
}


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def main():
    tmp = tempfile.mkdtemp(prefix="pyusage-atexit-bench-")
    hook, spool, empty = (os.path.join(tmp, d) for d in ("hook", "spool", "empty"))
    os.mkdir(empty)
    subprocess.run([BIN, "atexit", "install", "--prefix", hook, "--out", spool, "--no-socket",
                    "--compile-with", PY],
                   check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    print("atexit collector cost, %s, %s" % (PY, time.strftime("%Y-%m-%d %H:%M")))
    print("\n1. the hook's exit-time work, timed in the process (%d processes each)" % RUNS)
    for name, code in WORKLOADS.items():
        timed = code + (
            "\nimport sitecustomize, time, sys\n"
            "t = time.perf_counter(); sitecustomize._pyusage_at_exit(); d = time.perf_counter() - t\n"
            "sys.stderr.write('HOOK %f %d\\n' % (d * 1e3, len(sys.modules)))\n"
        )
        ms, mods = [], []
        for _ in range(RUNS):
            r = subprocess.run([PY, "-c", timed], env=dict(env, PYTHONPATH=hook),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            line = [x for x in r.stderr.splitlines() if x.startswith("HOOK ")][-1].split()
            ms.append(float(line[1]))
            mods.append(int(line[2]))
        print("  %-12s  %5d modules  hook %.2f ms median, %.2f ms p95" % (
            name, statistics.median(mods), statistics.median(ms), pct(ms, 95)))
    recs = 0
    for f in os.listdir(spool):
        if f.endswith(".jsonl"):
            with open(os.path.join(spool, f)) as fh:
                recs += sum(1 for _ in fh)
    print("  (%d records in the spool, %.0f bytes each on average)" % (
        recs, sum(os.path.getsize(os.path.join(spool, f)) for f in os.listdir(spool)) / max(recs, 1)))

    print("\n2. whole process wall time, hook on / off, alternating blocks of %d, %d rounds" % (REPS, ROUNDS))

    def block(code, path):
        t = []
        for _ in range(REPS):
            t0 = time.perf_counter()
            subprocess.run([PY, "-c", code], env=dict(env, PYTHONPATH=path), check=True,
                           stdout=subprocess.DEVNULL)
            t.append(time.perf_counter() - t0)
        return statistics.mean(t)

    for name, code in WORKLOADS.items():
        ratios, aa, on_ms, off_ms = [], [], [], []
        for i in range(ROUNDS):
            order = [(empty, "off"), (hook, "on")]
            if i % 2:
                order.reverse()
            got = {k: block(code, p) for p, k in order}
            got["off2"] = block(code, empty)
            ratios.append(got["on"] / got["off"])
            aa.append(got["off2"] / got["off"])
            on_ms.append(got["on"] * 1e3)
            off_ms.append(got["off"] * 1e3)
        print("  %-12s  off %.1f ms, on %.1f ms: on/off %.3f [%.3f-%.3f]; A/A %.3f [%.3f-%.3f]" % (
            name, statistics.median(off_ms), statistics.median(on_ms), statistics.median(ratios),
            min(ratios), max(ratios), statistics.median(aa), min(aa), max(aa)))
    print("\n(spool and hook in %s)" % tmp)


if __name__ == "__main__":
    main()
