#!/usr/bin/env python3
"""A real comparison run (root): the daemon and the atexit hook side by side on a seeded mix of
real Python processes, then `pyusage compare`. Writes compare.{txt,json,html} into OUT and
prints the headline figures. The example report in docs/ comes from this script.

Usage: scripts/compare_demo.py [--bin target/release/pyusage] [--out DIR] [--n 160] [--seed 1]
       [--socket]   (the hook reports through the daemon's preload socket instead of a spool)

The mix, drawn per process with fixed weights, each run by one of eight users (uids 2001-2008
through setpriv; Debian's python3.11, which every uid can run) or root (the fixture venv with
numpy): normal exits importing a random set of packages; jobs killed by `timeout` (SIGTERM
or SIGKILL, as a wall-clock limit does); os._exit; `python -I` (the hook never loads); a
multiprocessing pool (fork workers importing csv); a crash (SIGSEGV).
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBIAN = "/usr/bin/python3.11"
VENV = os.path.join(ROOT, "target/fixtures/venv/bin/python")
PACKAGES = ["yaml", "six", "mpi4py", "json", "csv", "sqlite3", "decimal", "xml.etree.ElementTree", "email",
            "http.client", "argparse", "logging", "asyncio", "concurrent.futures", "unittest"]
# What each user's jobs lean on (so that the users' package sets differ).
FAVOURITES = {2001: ["yaml"], 2002: ["six", "yaml"], 2003: ["sqlite3", "mpi4py"], 2004: ["yaml", "asyncio"],
              2005: ["six", "mpi4py"], 2006: ["email", "six"], 2007: ["yaml"], 2008: ["decimal"]}
KINDS = [("ok", 50), ("sigterm", 10), ("sigkill", 10), ("os_exit", 6), ("isolated", 8),
         ("pool", 5), ("crash", 3), ("numpy", 10), ("numpy_killed", 4)]


def pick(rng, weighted):
    total = sum(w for _, w in weighted)
    x = rng.uniform(0, total)
    for k, w in weighted:
        x -= w
        if x <= 0:
            return k
    return weighted[-1][0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/pyusage"))
    ap.add_argument("--out", default="compare-demo")
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--socket", action="store_true")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="pyusage-compare-demo-")
    os.chmod(tmp, 0o755)
    hook, spool, data = (os.path.join(tmp, d) for d in ("hook", "spool", "data"))
    sock = os.path.join(tmp, "preload.sock")
    install = [a.bin, "atexit", "install", "--prefix", hook, "--out", spool,
               "--compile-with", "%s,%s" % (DEBIAN, VENV)]
    install += ["--socket", sock] if a.socket else ["--no-socket"]
    subprocess.run(install, check=True, stdout=subprocess.DEVNULL)
    host = os.uname()[1].split(".")[0]
    ready = os.path.join(tmp, "ready")
    daemon_cmd = [a.bin, "daemon", "--host", host, "--data-dir", data, "--ready-file", ready,
                  "--flush-secs", "3600"]
    if a.socket:
        daemon_cmd += ["--preload-socket", sock]
    log = open(os.path.join(tmp, "daemon.log"), "w")
    daemon = subprocess.Popen(daemon_cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 30
    while not os.path.exists(ready):
        if daemon.poll() is not None or time.time() > deadline:
            sys.exit("daemon did not start; see %s" % log.name)
        time.sleep(0.05)
    if a.socket:
        os.chmod(sock, 0o666)
    kinds = {}
    t0 = time.time()
    for i in range(a.n):
        kind = pick(rng, KINDS)
        kinds[kind] = kinds.get(kind, 0) + 1
        # Long simulations, the ones a wall-clock limit kills, are two users' (so the bias of
        # the atexit method falls on their packages, as it does at a centre).
        uid = rng.choice([2003, 2008] if kind in ("sigterm", "sigkill") else sorted(FAVOURITES))
        mods = sorted(set(FAVOURITES[uid] + rng.sample(PACKAGES, rng.randint(1, 4))))
        code = "import " + ", ".join(mods)
        py, user = DEBIAN, ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", "--"]
        if kind.startswith("numpy"):
            py, user, code = VENV, [], "import numpy, yaml, json"
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": hook, "HOME": "/tmp",
               "SLURM_JOB_ID": str(1000 + i // 4)}
        argv = user + [py, "-c", code]
        if kind in ("sigterm", "sigkill", "numpy_killed"):
            sig = "KILL" if kind != "sigterm" else "TERM"
            argv = ["timeout", "-s", sig, "0.6"] + user + [py, "-c", code + "\nimport time; time.sleep(60)"]
        elif kind == "os_exit":
            argv = user + [py, "-c", code + "\nimport os; os._exit(0)"]
        elif kind == "isolated":
            argv = user + [py, "-I", "-c", code]
        elif kind == "pool":
            argv = user + [py, "-c", code + "\nimport multiprocessing as m\n"
                           "def w(x):\n    import csv\n    return x\n"
                           "m.set_start_method('fork')\n"
                           "with m.Pool(2) as p: p.map(w, range(4), chunksize=1)"]
        elif kind == "crash":
            argv = user + [py, "-c", code + "\nimport ctypes; ctypes.string_at(0)"]
        subprocess.run(argv, env=env, cwd="/tmp", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.time() - t0
    time.sleep(0.5)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=60)
    atexit_side = data if a.socket else spool
    os.makedirs(a.out, exist_ok=True)
    subprocess.run([a.bin, "compare", "--ebpf", data, "--atexit", atexit_side, "--out", a.out],
                   check=True)
    c = json.load(open(os.path.join(a.out, "compare.json")))
    p = c["processes"]
    print("%d processes run in %.0f s: %s" % (a.n, elapsed, json.dumps(kinds, sort_keys=True)))
    print("kernel side %d processes, atexit side %d, both %d, kernel only %d, atexit only %d" % (
        p["kernel"], p["atexit"], p["matched"], p["kernel_only"], p["atexit_only"]))
    for r in c["kernel_only"]:
        print("  %5d  %s" % (r["count"], r["words"]))
    moved = [r for r in c["ranking_users"] if r["change"]]
    print("top-%d by users: %d packages change rank, %d only on one side" % (
        20, len(moved), sum(1 for r in c["ranking_users"] if r["change"] is None)))
    print("report: %s/compare.html (data in %s)" % (a.out, tmp))


if __name__ == "__main__":
    main()
