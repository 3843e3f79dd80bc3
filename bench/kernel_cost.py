#!/usr/bin/env python3
"""The kernel-side cost of the tracer, by parts: resolvable where a workload's wall ratio is not.

Usage (root): bench/kernel_cost.py BIN [ROUNDS, default 6]  (the bench venv of bench/capture.sh)

On this VM the wall ratio of a workload with the daemon attached and detached swings by ±5-25 %
between runs (bench/capture.py), so a 1 % goal cannot be read from it. The tracer's kernel-side
cost is made of three parts, each measured here where it can be resolved:
  1. the syscall slow path: while any syscall tracepoint is enabled every system call of every
     task goes through it: `getppid` in a loop, attached vs detached, and with the same
     tracepoints enabled by `perf stat` and no BPF program (any such tracer's floor);
  2. each traced operation's tracepoint and BPF program: `openat`+`close` and an executable
     `mmap` in a loop by a process that is not Python, and `os.open` of a `.py` file in a loop
     by a Python process (which the programs treat in full: path read, kernel path walk, event),
     attached vs detached, less the slow path of the loop's untraced call (`close`, `munmap`,
     or for Python the loop's own body, timed with `os.getppid` instead);
  3. what the programs cost inside the real workloads: `kernel.bpf_stats_enabled`'s run time
     over real runs (cache-cold, unlike the loops), less what the programs run anyway over the
     same window (the sampler's timer, the daemon's own reads), measured idle.
Blocks alternate detached/attached (ROUNDS of each); each loop is pinned to CPU 1 and the
daemon to CPU 0, with a nice-19 spinner keeping CPU 0 awake in both modes (bench/capture.py).
Everything is timed with the BPF statistics off (their accounting costs every program run);
the programs' run time is read in a pass of its own after each attached block.
Each workload's system calls are counted by `strace -f -c` in a separate run. The estimate is
  in-workload BPF run time + openat calls x (an open's cost - its BPF time per call in the loop)
  + mmap calls x (an mmap's cost - its BPF time) + other calls x slow path,
over the workload's CPU time detached, printed next to the wall and CPU ratios measured in the
same run (the unresolvable way, for comparison).
"""
import os, re, shutil, statistics, subprocess, sys, tempfile, time
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from capture import START, STORM, TRACEPOINTS, Daemon, timed, CPU_TIMES
from sampling import rewritten

binary = os.path.abspath(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
py = os.path.join(ROOT, "target", "bench", "venv", "bin", "python")
tmp = tempfile.mkdtemp(prefix="pyusage-kcost-")
loop = os.path.join(tmp, "syscall_loop")
subprocess.run(["cc", "-O2", "-o", loop, os.path.join(ROOT, "bench", "syscall_loop.c")], check=True)
target = os.path.join(tmp, "target.py")
with open(target, "w") as f:
    f.write("x = 1\n")
PY_OPEN = ("import os, sys, time\np, n = sys.argv[1], int(sys.argv[2])\nt = time.perf_counter_ns()\n"
           "for _ in range(n):\n    os.close(os.open(p, os.O_RDONLY))\n"
           "print((time.perf_counter_ns() - t) / n)\n")
PY_EMPTY = ("import os, sys, time\np, n = sys.argv[1], int(sys.argv[2])\nt = time.perf_counter_ns()\n"
            "for _ in range(n):\n    os.getppid()\n"
            "print((time.perf_counter_ns() - t) / n)\n")
pin = ["taskset", "-c", "1"]
LOOPS = {  # name: (command, operations, whether BPF programs run for it)
    "getppid": (pin + [loop, "getppid", "2000000"], 2000000, False),
    "open (not Python)": (pin + [loop, "open", "400000", target], 400000, True),
    "mmap exec (not Python)": (pin + [loop, "mmap", "400000", "/etc/hostname"], 400000, True),
    # A Python loop's own time per iteration swings more than a C loop's: the loop body without
    # the open (getppid) is timed alongside and taken out.
    "os.open .py (Python)": (pin + [py, "-c", PY_OPEN, target, "100000"], 100000, True),
    "os.getppid (Python)": (pin + [py, "-c", PY_EMPTY, target, "100000"], 100000, False),
}
REFERENCE = "python -c 'import numpy, yaml, …'"
WORKLOADS = {  # name: command; whether its opens are a Python process's
    REFERENCE: (pin + [py, "-c", START], True),
    "non-Python find | xargs cat": (pin + ["sh", "-c", STORM], False),
}


def syscalls(cmd):
    """(total, openat-like, mmap) system calls of `cmd` and its children, from strace -c."""
    out = os.path.join(tmp, "strace")
    subprocess.run(["strace", "-f", "-c", "-o", out] + cmd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    calls = {}
    for line in open(out):
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m:
            calls[m.group(2)] = int(m.group(1))
    total = sum(v for k, v in calls.items() if k != "total")
    opens = sum(calls.get(k, 0) for k in ("openat", "open", "openat2"))
    return total, opens, calls.get("mmap", 0)


def fresh_stats(d):
    """{program: (runs, ns)} from status.json once it has been rewritten twice since the call
    (sampling.rewritten), and when."""
    rewritten(os.path.join(d.data, "d", "status.json"))
    return {p["name"]: (p["run_count"], p["run_time_ns"]) for p in d.status()["programs"]}, time.time()


def set_stats(on):
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("1" if on else "0")


def bpf_ns(d, run, idle_rate):
    """BPF run time of every program while `run()` runs (a tail-called program's is its
    caller's), less what runs anyway over the same window (the sampler's timer on both CPUs,
    the daemon's own reads) at `idle_rate` ns a second."""
    (s0, t0) = fresh_stats(d)
    run()
    (s1, t1) = fresh_stats(d)
    return sum(ns - s0.get(k, (0, 0))[1] for k, (_, ns) in s1.items()) - idle_rate * (t1 - t0)


def main():
    # Another tracer (a `perf` left running, another daemon) puts the detached blocks on the
    # slow path too, and the deltas vanish.
    others = subprocess.run(["pgrep", "-a", "-x", "perf|pyusage"], capture_output=True, text=True).stdout
    if others:
        sys.exit("stop these first, they enable tracepoints:\n" + others)
    d = Daemon(binary, tmp)
    counts = {k: syscalls(cmd) for k, (cmd, _) in WORKLOADS.items()}
    spinner = subprocess.Popen(["taskset", "-c", "0", "nice", "-n", "19", "sh", "-c", "while :; do :; done"])
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        old_stats = f.read().strip()
    loop_ns = {k: {"detached": [], "attached": []} for k in LOOPS}
    loop_bpf = {k: [] for k in LOOPS}
    wall = {k: {"detached": [], "attached": []} for k in WORKLOADS}
    cpu = {k: {"detached": [], "attached": []} for k in WORKLOADS}
    work_bpf = {k: [] for k in WORKLOADS}
    tp_only = []

    def loop(cmd):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return float(out.strip().splitlines()[-1])

    try:
        set_stats(False)
        for cmd, _ in WORKLOADS.values():
            timed(cmd)
        for r in range(rounds):
            # The slow path with the same syscall tracepoints enabled and no BPF program
            # (`perf stat` counting them): any syscall-tracepoint tracer's floor.
            # Without `perf` (Debian's linux-perf) the floor is not measured.
            if shutil.which("perf"):
                perf = subprocess.Popen(["taskset", "-c", "0", "perf", "stat", "-a", "-o", os.devnull,
                                          "-e", ",".join(TRACEPOINTS), "--", "sleep", "1000000"])
                time.sleep(1)
                tp_only.append(loop(LOOPS["getppid"][0]))
                subprocess.run(["pkill", "-x", "-f", "sleep 1000000"])
                perf.wait()
            # Timed with the BPF statistics off in both modes (their accounting costs each
            # program run), and with no pause between runs in either.
            for mode in ("detached", "attached"):
                if mode == "attached":
                    d.start()
                    for _ in range(2):  # the sampler's workers read the interpreter once each
                        timed(WORKLOADS[REFERENCE][0])
                for k, (cmd, n, progs) in LOOPS.items():
                    loop_ns[k][mode].append(loop(cmd))
                for k, (cmd, _) in WORKLOADS.items():
                    for _ in range(3):
                        wall[k][mode].append(timed(cmd))
                        cpu[k][mode].append(CPU_TIMES[-1])
            # Then the programs' run time, statistics on: per loop operation, and per run of
            # each workload.
            set_stats(True)
            idle_rate = bpf_ns(d, lambda: time.sleep(4), 0) / 4
            for k, (cmd, n, progs) in LOOPS.items():
                if progs:
                    loop_bpf[k].append(bpf_ns(d, lambda: loop(cmd), idle_rate) / n)
            for k, (cmd, _) in WORKLOADS.items():
                work_bpf[k].append(bpf_ns(d, lambda: [timed(cmd) for _ in range(3)], idle_rate) / 3)
            set_stats(False)
            d.stop()
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(old_stats)
        spinner.kill()
        spinner.wait()

    med = statistics.median
    print(f"# kernel-side cost by parts ({rounds} alternating rounds; loops on CPU 1, daemon on CPU 0)")
    print(f"{'loop':26} {'det ns/op':>10} {'att ns/op':>10} {'delta':>8} {'BPF ns/op':>10}   per-round deltas")
    dl = {}
    for k in LOOPS:
        det, att = loop_ns[k]["detached"], loop_ns[k]["attached"]
        # Paired by round: each round's attached block against its own detached one.
        ds = [a - b for a, b in zip(att, det)]
        dl[k] = med(ds)
        b = f"{med(loop_bpf[k]):10.1f}" if loop_bpf[k] else f"{'-':>10}"
        print(f"{k:26} {med(det):10.1f} {med(att):10.1f} {dl[k]:8.1f} {b}   "
              + " ".join(f"{x:.0f}" for x in ds))
    slow = dl["getppid"]
    # The floor per call, or the slow path measured attached where `perf` is missing.
    floor = med([t - d for t, d in zip(tp_only, loop_ns["getppid"]["detached"])]) if tp_only else slow
    # Each loop's second call (close, munmap) is an untraced call: its slow path is taken out,
    # so that a workload's opens and mmaps carry their own slow path and the rest of its calls
    # theirs. The Python loop's own body (its getppid twin) goes the same way.
    raw = {
        # What the tracer adds to a call beyond its BPF programs' own run time, which the
        # workloads' in-workload BPF time counts instead (cache-cold there).
        "open": dl["open (not Python)"] - slow - med(loop_bpf["open (not Python)"]),
        "open_py": dl["os.open .py (Python)"] - dl["os.getppid (Python)"]
        - med(loop_bpf["os.open .py (Python)"]),
        "mmap": dl["mmap exec (not Python)"] - slow - med(loop_bpf["mmap exec (not Python)"]),
    }
    # A delta below its programs' run time is the loops' noise (a round or two is not
    # enough): counted as 0, and said.
    over = {k: max(v, 0.0) for k, v in raw.items()}
    if any(v < 0 for v in raw.values()):
        print("(a per-call cost came out negative and is counted as 0: "
              + ", ".join(f"{k} {v:.1f} ns" for k, v in raw.items() if v < 0) + "; take more rounds)")
    print(f"syscall slow path: {slow:.1f} ns a call attached, "
          + (f"{floor:.1f} ns with the same tracepoints enabled and no BPF program (perf stat: any "
             f"such tracer's floor); " if tp_only else "(no perf: the floor below is this); ")
          + f"beyond BPF run time, with its slow path: "
          f"an open {over['open']:.1f} ns (Python's "
          f"{over['open_py']:.1f}), an mmap {over['mmap']:.1f} ns")
    print(f"\n{'workload':36} {'calls':>7} {'opens':>6} {'mmaps':>6} {'cpu det ms':>10} {'BPF ms':>7}"
          f" {'est. ratio':>10} {'floor':>7} {'wall ratio':>10} {'cpu ratio':>9}")
    for k, (_, python) in WORKLOADS.items():
        total, opens, mmaps = counts[k]
        per_open = over["open_py"] if python else over["open"]
        est_ns = (med(work_bpf[k]) + opens * per_open + mmaps * over["mmap"]
                  + (total - opens - mmaps) * slow)
        cdet = med(cpu[k]["detached"])
        print(f"{k:36} {total:7d} {opens:6d} {mmaps:6d} {cdet * 1e3:10.1f} {med(work_bpf[k]) / 1e6:7.3f}"
              f" {1 + est_ns / (cdet * 1e9):10.4f} {1 + total * floor / (cdet * 1e9):7.4f}"
              f" {med(wall[k]['attached']) / med(wall[k]['detached']):10.4f}"
              f" {med(cpu[k]['attached']) / med(cpu[k]['detached']):9.4f}")
    print("(est. ratio: 1 + (in-workload BPF time + calls x the per-call costs above) / CPU detached;"
          " floor: 1 + calls x the tracepoints' slow path alone / CPU detached;"
          " wall and cpu ratios: medians of the same run's alternating blocks, for comparison)")


main()
