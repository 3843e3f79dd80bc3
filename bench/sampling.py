"""CPU-sampler benchmark: accuracy and cost, in one run. Standard library only; run through
bench/sampling.sh (root).

Accuracy: every supported interpreter (the venvs of scripts/fixtures.sh) runs
tests/e2e/sampling/workload.py for 60 CPU-seconds under one daemon at the default rate; the
records' sampled shares of the three packages are printed next to what the workload measured
itself (each phase's thread CPU time over the process's CPU time as its record says).

Cost: a CPU-bound Python workload (pure-Python loops 30 frames deep) runs pinned to CPU 1 while
a daemon runs pinned to CPU 0, in alternating blocks with sampling on (the default 19 Hz, and
997 Hz to make the cost visible above the VM's noise) and off (--sample-hz 0, the import
tracer still attached). Printed: the workload's CPU-time ratio on/off (medians), the kernel
program's ns per run and per Python sample (kernel.bpf_stats_enabled), the daemon's own CPU
per sample (its threads' schedstat), and the BPF maps' memory (/proc/PID/fdinfo)."""
import argparse, json, os, resource, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKLOAD_DIR = os.path.join(ROOT, "tests", "e2e", "sampling")
PUREPKG = ("import time\ndef spin(seconds):\n    end = time.thread_time() + seconds\n    x = 0\n"
           "    while time.thread_time() < end:\n        for i in range(20000):\n            x += i\n"
           "    return x\n")
NUMPKG = ("import time\nimport numpy as np\n_a = np.random.default_rng(0).random(50000)\n"
          "def spin(seconds):\n    end = time.thread_time() + seconds\n"
          "    while time.thread_time() < end:\n        np.sort(_a)\n")
# Fixed work, 30 frames deep: the cost workload.
DEEP = ("import sys\ndef f(d, n):\n    if d:\n        return f(d - 1, n)\n    x = 0\n"
        "    for i in range(n):\n        x += i\n    return x\nfor _ in range(int(sys.argv[1])):\n"
        "    f(int(sys.argv[2]), 1000000)\n")
# Not Python: what every other process pays (one hash lookup per clock tick).
SHELL_LOOP = "i=0; while [ $i -lt 1500000 ]; do i=$((i+1)); done"


def rewritten(path):
    """Waits until the daemon's status at `path` has been rewritten twice. The event loop reads
    the kernel's program statistics every 2 s and the processor writes the status every 2 s,
    so the second rewrite carries a reading taken after the call."""
    seen = os.stat(path).st_mtime_ns
    for _ in range(2):
        while os.stat(path).st_mtime_ns == seen:
            time.sleep(0.05)
        seen = os.stat(path).st_mtime_ns


class Daemon:
    def __init__(self, binary, tmp, hz):
        self.binary, self.hz = binary, hz
        self.data = tempfile.mkdtemp(dir=tmp)
        ready = os.path.join(self.data, "ready")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", binary, "daemon", "-d", os.path.join(self.data, "d"), "--ready-file", ready,
             "--flush-secs", "3600", "--sample-hz", str(hz), "--host", "bench"],
            stderr=open(os.path.join(self.data, "log"), "w"))
        for _ in range(1500):
            if os.path.exists(ready):
                return
            if self.proc.poll() is not None:
                sys.exit("daemon failed: " + open(os.path.join(self.data, "log")).read())
            time.sleep(0.02)
        sys.exit("daemon not ready")

    def status(self):
        with open(os.path.join(self.data, "d", "status.json")) as f:
            return json.load(f)

    def settled(self):
        """The status once it has been rewritten twice since the call (see [`rewritten`]): a
        status read at once can hold program statistics seconds older than its sample
        counter (a block's last samples counted but not their run time)."""
        rewritten(os.path.join(self.data, "d", "status.json"))
        return self.status()

    def cpu(self):
        """The daemon's CPU seconds so far: its threads' run time in ns (schedstat; /proc/PID/stat
        counts 10 ms ticks, too coarse here). Threads that ended are not counted."""
        total = 0
        task = f"/proc/{self.proc.pid}/task"
        for t in os.listdir(task):
            try:
                with open(os.path.join(task, t, "schedstat")) as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
        return total / 1e9

    def maps(self):
        """(name, memlock bytes) of every BPF map the daemon holds."""
        out = []
        fd_dir = f"/proc/{self.proc.pid}/fdinfo"
        for fd in os.listdir(fd_dir):
            try:
                info = dict(l.split(":", 1) for l in open(os.path.join(fd_dir, fd)) if ":" in l)
            except OSError:
                continue
            if "map_type" in info:
                out.append((int(info["map_id"]), info["map_type"].strip(), int(info["max_entries"]),
                            int(info["key_size"]), int(info["value_size"]), int(info["memlock"])))
        return sorted(set(out))

    def stop(self):
        self.proc.send_signal(2)
        self.proc.wait(timeout=60)
        out = subprocess.run([self.binary, "show", "--format", "jsonl", os.path.join(self.data, "d")],
                             check=True, capture_output=True, text=True).stdout
        return [json.loads(l) for l in out.splitlines()]


def workdir(python, tmp):
    d = tempfile.mkdtemp(dir=tmp)
    pkgs = os.path.join(d, "pkgs")
    for name, init in (("purepkg", PUREPKG), ("numpkg", NUMPKG), ("cext", "from ._spin import spin\n")):
        os.makedirs(os.path.join(pkgs, name))
        with open(os.path.join(pkgs, name, "__init__.py"), "w") as f:
            f.write(init)
    inc, suffix = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['include']); "
                                  "print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                                 check=True, capture_output=True, text=True).stdout.split()
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-I", inc, "-o", os.path.join(pkgs, "cext", "_spin" + suffix),
                    os.path.join(WORKLOAD_DIR, "spin.c")], check=True)
    return d


def accuracy(binary, tmp, seconds):
    venvs = os.path.join(ROOT, "target", "fixtures", "sampling")
    names = sorted(os.listdir(venvs))
    d = Daemon(binary, tmp, 19)
    runs = []
    for name in names:
        py = os.path.join(venvs, name, "bin", "python")
        w = workdir(py, tmp)
        out = os.path.join(w, "out.json")
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.path.join(w, "pkgs"), "OPENBLAS_NUM_THREADS": "1"}
        subprocess.run(["taskset", "-c", "1", py, os.path.join(WORKLOAD_DIR, "workload.py"), str(seconds), out],
                       check=True, env=env, cwd=w)
        runs.append((name, json.load(open(out))))
    recs = d.stop()
    print(f"\n# Accuracy: {seconds} CPU-s per interpreter at 19 Hz; sampled share vs the phase's own CPU time")
    print(f"{'interpreter':12} {'samples':>7} {'purepkg self':>18} {'cext self':>18} {'numpkg inclusive':>18}  worst")
    for name, w in runs:
        by = {r["package"]: r for r in recs if r["pid"] == w["pid"]}
        p = by["purepkg"]
        total = p["cpu_samples_total"]
        cpu = (p["cpu_user_us"] + p["cpu_sys_us"]) / 1e6
        cells, worst = [], 0.0
        for (pkg, field), spent in zip((("purepkg", "cpu_samples_self"), ("cext", "cpu_samples_self"),
                                        ("numpkg", "cpu_samples_inclusive")), w["spent"]):
            s, t = by[pkg][field] / total * 100, spent / cpu * 100
            worst = max(worst, abs(s - t))
            cells.append(f"{s:5.1f} vs {t:5.1f} %")
        print(f"{name:12} {total:7d} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18}  {worst:4.1f} pts")


def cost(binary, tmp, rounds, python):
    def run_block(hz, depth=30, cmd=None):
        d = Daemon(binary, tmp, hz)
        st = d.settled()
        s0, c0 = st.get("sampler") or {}, d.cpu()
        p0 = {p["name"]: p for p in st.get("programs", [])}.get("cpu_sample")
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(["taskset", "-c", "1"] + (cmd or [python, "-c", DEEP, "40", str(depth)]), check=True)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        st = d.settled()
        s1, c1 = st.get("sampler") or {}, d.cpu()
        p1 = {p["name"]: p for p in st.get("programs", [])}.get("cpu_sample")
        prog = p1 and {k: p1[k] - (p0 or {}).get(k, 0) for k in ("run_count", "run_time_ns")}
        maps = d.maps()
        d.stop()
        work = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        return work, s1.get("samples", 0) - s0.get("samples", 0), c1 - c0, prog, maps

    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        old = f.read().strip()
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("1")
    try:
        res = {0: [], 19: [], 997: []}
        extra = {0: [], 19: [], 997: []}
        for r in range(rounds):
            for hz in (0, 19, 0, 997):
                work, samples, dcpu, prog, maps = run_block(hz)
                res[hz].append(work)
                extra[hz].append((samples, dcpu, prog, maps))
            print(f"round {r + 1}: off {res[0][-1]:.2f} s, 19 Hz {res[19][-1]:.2f} s, 997 Hz {res[997][-1]:.2f} s",
                  file=sys.stderr)
        # The kernel program's cost apart: per run on a process that is not Python (a shell
        # loop), and per sample by stack depth.
        miss = [run_block(997, cmd=["sh", "-c", SHELL_LOOP]) for _ in range(2)]
        depth = {dep: [run_block(997, dep) for _ in range(2)] for dep in (1, 30, 90)}
        venvs = os.path.join(ROOT, "target", "fixtures", "sampling")
        version = {name: run_block(997, 30, [os.path.join(venvs, name, "bin", "python"), "-c", DEEP, "30", "30"])
                   for name in sorted(os.listdir(venvs))}
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(old)
    m_runs = sum(m[3]["run_count"] for m in miss)
    m_ns = sum(m[3]["run_time_ns"] for m in miss) / max(m_runs, 1)
    print(f"\n# Kernel program cost (997 Hz, kernel.bpf_stats_enabled)")
    print(f"not Python (shell loop on CPU 1, idle CPU 0): {m_ns:.0f} ns per run ({m_runs} runs)")
    for dep, blocks in depth.items():
        runs = sum(b[3]["run_count"] for b in blocks)
        ns = sum(b[3]["run_time_ns"] for b in blocks)
        samples = sum(b[1] for b in blocks)
        per = (ns - (runs - samples) * m_ns) / max(samples, 1)
        print(f"Python, {dep + 2:3d} frames deep: {per / 1000:.2f} µs per sample ({samples} samples; "
              f"the other {runs - samples} runs at {m_ns:.0f} ns taken out)")
    for name, b in version.items():
        runs, ns, samples = b[3]["run_count"], b[3]["run_time_ns"], b[1]
        per = (ns - (runs - samples) * m_ns) / max(samples, 1)
        print(f"{name:12} 32 frames deep: {per / 1000:.2f} µs per sample ({samples} samples)")
    off = statistics.median(res[0])
    # The daemon's CPU in a block without sampling (its timers, status writes) is not the
    # sampler's: subtracted, per block.
    idle = statistics.median(e[1] for e in extra[0])
    print(f"\n# Cost: a CPU-bound Python workload 30 frames deep, pinned to CPU 1, daemon on CPU 0 "
          f"({rounds} rounds, blocks alternated; medians)")
    print(f"sampling off: workload CPU {off:.3f} s (runs: {', '.join(f'{x:.2f}' for x in res[0])})")
    for hz in (19, 997):
        on = statistics.median(res[hz])
        samples = sum(e[0] for e in extra[hz])
        dcpu = sum(e[1] - idle for e in extra[hz])
        runs = sum(e[2]["run_count"] for e in extra[hz] if e[2])
        ns = sum(e[2]["run_time_ns"] for e in extra[hz] if e[2])
        print(f"{hz:4d} Hz: workload CPU {on:.3f} s, ratio on/off {on / off:.4f} "
              f"(runs: {', '.join(f'{x:.2f}' for x in res[hz])})")
        if samples:
            print(f"        kernel: {ns / max(runs, 1):.0f} ns per program run ({runs} runs, all CPUs, any process), "
                  f"{ns / samples / 1000:.2f} µs per Python sample (all runs' time over {samples} samples)")
            print(f"        daemon: {dcpu / samples * 1e6:.1f} µs CPU per sample ({dcpu:.3f} s for {samples}, after "
                  f"{idle:.3f} s per block without sampling)")
            print(f"        share of one CPU at {hz} Hz: kernel {ns / samples * hz / 1e9 * 100:.4f} %, "
                  f"daemon {dcpu / samples * hz * 100:.4f} %")
    maps = extra[19][-1][3]
    pyprocs = [m for m in maps if m[2] == 16384 and m[4] == 88]  # sizeof(PyProc)
    print(f"\n# The sampler's own map (PYPROCS): {sum(m[5] for m in pyprocs) / 2**20:.2f} MiB; samples share the "
          f"import tracer's ring buffer")
    total = sum(m[5] for m in maps)
    print(f"\n# BPF maps of the daemon: {total / 2**20:.1f} MiB memlock in all")
    for m in maps:
        print(f"  id {m[0]:5d} {m[1]:>4} entries {m[2]:8d} key {m[3]:3d} value {m[4]:6d}: {m[5] / 2**20:7.2f} MiB")


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--bin", required=True)
    a.add_argument("--seconds", type=float, default=60)
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--skip-accuracy", action="store_true")
    args = a.parse_args()
    tmp = tempfile.mkdtemp(prefix="pyusage-sampling-")
    try:
        if not args.skip_accuracy:
            accuracy(args.bin, tmp, args.seconds)
        cost(args.bin, tmp, args.rounds, os.path.join(ROOT, "target", "fixtures", "sampling", "pyenv-3.12", "bin",
                                                       "python"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
