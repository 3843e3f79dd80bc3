#!/usr/bin/env bash
# Preload-library vs eBPF benchmark (root): what each collector costs the workloads it
# watches, side by side in one run. No pass/fail: it prints ratios, the issue's goals beside
# them, and the record counts that show the daemon really recorded what it was measured doing.
#
# Workloads (run from a driver pinned to CPU 1 with taskset; children inherit the pinning):
#   P  import-heavy Python start-up: <venv>/bin/python -c 'import numpy, yaml, json, ...'
#   S  non-Python exec/open-heavy loop: sh -c 'for i in $(seq N); do cat ...; ls ...; done'
# Configurations, each paired with its own "off" block (no daemon, no library) in every round:
#   a  preload library in the workload's environment + daemon --no-ebpf --preload-socket
#   b  eBPF daemon alone (no library)
#   c  eBPF daemon with --preload-socket + library
# The daemon runs on CPU 0 (taskset), so the workload's on/off ratio is what the kernel side
# (b, c) or the library inside the process (a, c) costs it; the daemon's own CPU is measured
# apart, from its threads' schedstat run time around each workload segment (ns; /proc/PID/stat
# counts 10 ms ticks, too coarse per run, and is printed as a cross-check), per thread and net of
# the idle rate measured at the end of the same block (the eBPF daemon also records every other
# Python process on the node, the preload-only daemon sees every process's fork/exec/exit), and
# its whole-lifetime CPU from wait4's rusage.
# A nice-19 spinner keeps CPU 0 awake in every block, as in bench/capture.py (an idle vCPU is
# halted by the host and waking it slowed the daemon-less blocks).
#
# Each round runs the three (off, on) pairs, the pairs' order rotated and the order within a
# pair alternated from round to round (off,on / on,off / ...), so drift hits both sides alike.
# Ratios are per pair (on block mean / its off block mean; also with each block's fastest run,
# since interference only adds time), median over rounds [min-max]; the "A/A" line gives the
# same statistic for off blocks against each other: the noise floor, printed beside the goals.
# Then the checks that the daemon recorded what it was measured doing: every P run of an on
# block matched (pid and start time) to its numpy and yaml records, records per run and by
# source, preload messages per connection, no record from the S runs, status.json counters.
#
# Many short rounds rather than a few long ones: the host's speed drifts by 10-20 % over
# seconds, so an on block is best compared with an off block run a few seconds before or after.
# The driver, workloads and daemon run at nice NICE (-10), so other users' builds on the VM yield
# to them; the CPU 1 time taken by other processes and the steal are printed per workload.
#
# Knobs (environment): ROUNDS (10), REPS (P runs per block, 6), SREPS (S runs per block, 3),
# LOOP_N (S loop iterations, 200), NICE (-10), SPINNER (1), SKIP_BUILD (0), KEEP (0: keep the
# temp dir), PY (the venv's python). Defaults took 6 min on the 2-core VM, 8-10 min while other
# users' tests loaded it.
# Usage: bench/preload.sh   (quick look: ROUNDS=3 REPS=3 SREPS=1 bench/preload.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "bench/preload.sh: run as root (eBPF, /etc/pyusage/preload.conf)" >&2; exit 1; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --quiet -p pyusage-cli
  cargo build --profile preload --quiet -p pyusage-preload
fi
PY=${PY:-target/fixtures/venv/bin/python}
[ -x "$PY" ] || ./scripts/fixtures.sh
# PYUSAGE_PRELOAD_SOCKET is honoured only when root's preload.conf allows it.
CONF=/etc/pyusage/preload.conf
if [ ! -e "$CONF" ]; then
  mkdir -p /etc/pyusage
  printf 'allow_env_override = true\n' >"$CONF"
  chmod 644 "$CONF"
fi
grep -Eq '^[[:space:]]*allow_env_override[[:space:]]*=[[:space:]]*true' "$CONF" ||
  { echo "bench/preload.sh: $CONF must say allow_env_override = true" >&2; exit 1; }

DRIVER=$(cat <<'EOF'
import datetime, json, os, resource, signal, shutil, statistics, subprocess, sys, tempfile, time

BIN = os.path.abspath("target/release/pyusage")
LIB = os.path.abspath("target/preload/libpyusage_preload.so")
PY = os.path.abspath(os.environ.get("PY") or "target/fixtures/venv/bin/python")
ROUNDS = int(os.environ.get("ROUNDS", 10))
REPS = int(os.environ.get("REPS", 6))
SREPS = int(os.environ.get("SREPS", 3))
LOOP_N = int(os.environ.get("LOOP_N", 200))
SPINNER = os.environ.get("SPINNER", "1") != "0"
NICE = int(os.environ.get("NICE", -10))
SETTLE, TAIL, IDLE = 1.0, 0.5, 0.5  # after ready; after each workload segment; idle measure at the end

START = "import numpy, yaml, json, email.mime.text, decimal, argparse, csv"
WORK = {
    "P": ("python start-up", [PY, "-c", START], REPS),
    "S": ("non-Python sh loop", ["sh", "-c", f"for i in $(seq {LOOP_N}); do cat /etc/hostname >/dev/null;"
                                            " ls /usr/lib >/dev/null; done"], SREPS),
}
# name: (title, extra daemon args, preload socket, library in the workload's environment)
CONFIGS = {
    "a": ("library + daemon --no-ebpf", ["--no-ebpf"], True, True),
    "b": ("eBPF daemon, no library", [], False, False),
    "c": ("eBPF daemon + library", [], True, True),
}
GOALS = {("P", "a"): 1.01, ("S", "a"): 1.005}

tmp = tempfile.mkdtemp(prefix="pyusage-bench-preload-")
SOCK = os.path.join(tmp, "preload.sock")
base_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
base_env["PYUSAGE_PRELOAD_SOCKET"] = SOCK  # in every condition: only LD_PRELOAD differs
lib_env = dict(base_env, LD_PRELOAD=LIB)
HZ = os.sysconf("SC_CLK_TCK")


def run(cmd, env):
    """One run: (pid, wall-clock start, wall s, CPU s of the process and its reaped descendants)."""
    t_epoch, t0 = time.time(), time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    _, st, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(st)
    if p.returncode != 0:
        sys.exit(f"{cmd} exited {p.returncode}")
    return p.pid, t_epoch, wall, ru.ru_utime + ru.ru_stime


def cpu1_ticks():
    """(busy, steal) clock ticks of CPU 1 so far (/proc/stat)."""
    with open("/proc/stat") as f:
        for l in f:
            if l.startswith("cpu1 "):
                v = [int(x) for x in l.split()[1:]]
                return v[0] + v[1] + v[2] + v[5] + v[6], v[7]
    return 0, 0


def self_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


OURS = set()  # our daemons' pids


def other_tracers():
    """pids of pyusage daemons that are not ours and attach eBPF (no --no-ebpf): while one
    runs, an "off" block is not free of syscall tracepoints."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in OURS:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"pyusage" and b"daemon" in argv and b"--no-ebpf" not in argv:
            found.append(int(d))
    return found


class Daemon:
    def __init__(self, cfg):
        self.cfg, self.proc = cfg, None
        self.data = os.path.join(tmp, "data-" + cfg)
        self.ready = os.path.join(tmp, "ready-" + cfg)
        self.log = os.path.join(tmp, "log-" + cfg)

    def start(self):
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        _, extra, sock, _ = CONFIGS[self.cfg]
        args = ["taskset", "-c", "0", BIN, "daemon", "-d", self.data, "--ready-file", self.ready] + extra
        if sock:
            args += ["--preload-socket", SOCK]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "a"))
        OURS.add(self.proc.pid)
        t = time.monotonic()
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None:
                sys.exit(f"daemon ({self.cfg}) failed:\n" + open(self.log).read()[-3000:])
            if time.monotonic() - t > 60:
                sys.exit(f"daemon ({self.cfg}) not ready after 60 s")
            time.sleep(0.01)
        return time.monotonic() - t

    def threads(self):
        """{tid: (name, run time s)} of the daemon's live threads (schedstat, ns)."""
        out = {}
        for t in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{t}/comm") as f:
                    name = f.read().strip().rstrip("0123456789").rstrip("-")
                with open(f"/proc/{self.proc.pid}/task/{t}/schedstat") as f:
                    out[t] = (name, int(f.read().split()[0]) / 1e9)
            except (FileNotFoundError, ProcessLookupError):
                pass
        return out

    def cpu(self):
        return sum(v for _, v in self.threads().values())

    def ticks(self):
        """utime + stime of the whole thread group, exited threads included (10 ms ticks), s."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        return (int(v[11]) + int(v[12])) / HZ

    def stop(self):
        """SIGTERM, reap with wait4: (lifetime CPU s, status.json written at shutdown)."""
        self.proc.send_signal(signal.SIGTERM)
        _, st, ru = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(st)
        if self.proc.returncode != 0:
            sys.exit(f"daemon ({self.cfg}) exited {self.proc.returncode}:\n" + open(self.log).read()[-3000:])
        self.proc = None
        with open(os.path.join(self.data, "status.json")) as f:
            return ru.ru_utime + ru.ru_stime, json.load(f)


daemons = {c: Daemon(c) for c in CONFIGS}
spinner = None


def cleanup():
    for d in daemons.values():
        if d.proc is not None and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            try:
                d.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                d.proc.kill()
    if spinner is not None:
        spinner.kill(); spinner.wait()


signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))

SIDES = ("off", "on")
# blocks[(cfg, side)][w] = list over rounds of [(wall s, cpu s) per run]
blocks = {(c, s): {w: [] for w in WORK} for c in CONFIGS for s in SIDES}
foreign = {(c, s): {w: [] for w in WORK} for c in CONFIGS for s in SIDES}  # (other, steal) share of CPU 1
tracer_blocks = {(c, s): 0 for c in CONFIGS for s in SIDES}  # blocks with another eBPF pyusage daemon
tracer_pids = set()
dcpu = {c: {w: [] for w in WORK} for c in CONFIGS}        # daemon CPU s/run per block
dnet = {c: {w: [] for w in WORK} for c in CONFIGS}        # the same less the block's idle rate
dthr = {c: {w: {} for w in WORK} for c in CONFIGS}        # daemon CPU s per thread name, summed over blocks
dtick = {c: [0.0, 0.0] for c in CONFIGS}                  # (schedstat, /proc/PID/stat) s over all segments
idle = {c: [] for c in CONFIGS}                           # daemon CPU s/s after the workloads
runs_on = {c: {w: [] for w in WORK} for c in CONFIGS}     # (pid, start) of the runs in on blocks
ready_s = {c: [] for c in CONFIGS}
life = {c: [] for c in CONFIGS}                           # daemon lifetime CPU s per block
status = {c: {"connections": 0, "messages": 0, "refused": 0, "python_execs": 0, "ring_full": 0,
              "queue_full": 0} for c in CONFIGS}
order_log = []
load0 = open("/proc/loadavg").read().split()[:3]
t_start = time.monotonic()


def block(cfg, side):
    on = side == "on"
    _, _, _, with_lib = CONFIGS[cfg]
    env = lib_env if (on and with_lib) else base_env
    d = daemons[cfg] if on else None
    if d is not None:
        ready_s[cfg].append(d.start())
    time.sleep(SETTLE)
    others = other_tracers()
    seg = []  # (workload, daemon CPU s, segment s, runs)
    for w, (_, cmd, n) in WORK.items():
        th0, tk0, ts0 = (d.threads(), d.ticks(), time.perf_counter()) if d else ({}, 0.0, 0.0)
        (b0, s0), o0, t0 = cpu1_ticks(), self_cpu(), time.perf_counter()
        rs = []
        for _ in range(n):
            pid, t_epoch, wall, cpu = run(cmd, env)
            rs.append((wall, cpu))
            if on:
                runs_on[cfg][w].append((pid, t_epoch))
        t1, (b1, s1), o1 = time.perf_counter(), cpu1_ticks(), self_cpu()
        blocks[(cfg, side)][w].append(rs)
        busy = (b1 - b0) / HZ - sum(x[1] for x in rs) - (o1 - o0)
        foreign[(cfg, side)][w].append((max(0.0, busy) / (t1 - t0), (s1 - s0) / HZ / (t1 - t0)))
        time.sleep(TAIL)
        if d:
            th1, tk1 = d.threads(), d.ticks()
            total = 0.0
            for tid, (name, v) in th1.items():
                dv = v - th0.get(tid, (name, 0.0))[1]
                total += dv
                dthr[cfg][w][name] = dthr[cfg][w].get(name, 0.0) + dv
            dcpu[cfg][w].append(total / n)
            seg.append((w, total, time.perf_counter() - ts0, n))
            dtick[cfg][0] += total
            dtick[cfg][1] += tk1 - tk0
    others += other_tracers()
    if others:
        tracer_blocks[(cfg, side)] += 1
        tracer_pids.update(others)
    if d is not None:
        c0, t0 = d.cpu(), time.perf_counter()
        time.sleep(IDLE)
        rate = (d.cpu() - c0) / (time.perf_counter() - t0)
        idle[cfg].append(rate)
        for w, total, dur, n in seg:
            dnet[cfg][w].append((total - rate * dur) / n)
        lt, st = d.stop()
        life[cfg].append(lt)
        s = status[cfg]
        p = st.get("preload") or {}
        s["connections"] += p.get("connections", 0)
        s["messages"] += p.get("messages", 0)
        s["refused"] += p.get("refused", 0)
        s["python_execs"] += st.get("counters", {}).get("python_execs", 0)
        s["ring_full"] += st.get("counters", {}).get("ring_full", 0)
        s["queue_full"] += st.get("queue_full", 0)


try:
    if SPINNER:
        spinner = subprocess.Popen(["taskset", "-c", "0", "sh", "-c", "while :; do :; done"],
                                   preexec_fn=lambda: os.nice(40))  # niceness 19
    os.nice(NICE)  # the driver, the workloads and the daemon: other users' jobs on the VM yield to them
    for w, (_, cmd, _) in WORK.items():  # warm caches, both environments, no daemon
        for env in (base_env, lib_env, base_env, lib_env):
            run(cmd, env)
    cfgs = list(CONFIGS)
    for r in range(ROUNDS):
        pairs = cfgs[r % len(cfgs):] + cfgs[:r % len(cfgs)]
        seq = []
        for i, c in enumerate(pairs):
            for s in (SIDES if (r + i) % 2 == 0 else SIDES[::-1]):
                block(c, s)
                seq.append(c + ("+" if s == "on" else "-"))
        order_log.append(" ".join(seq))
        print(f"round {r + 1}/{ROUNDS} done ({time.monotonic() - t_start:.0f} s): {order_log[-1]}",
              file=sys.stderr, flush=True)
finally:
    cleanup()


def mq(v):
    return statistics.median(v), min(v), max(v)


def fmt(m):
    return f"{m[0]:7.4f} [{m[1]:.3f}-{m[2]:.3f}]"


load1 = open("/proc/loadavg").read().split()[:3]
print(f"\n# pyusage preload vs eBPF benchmark: {ROUNDS} rounds, per block {REPS} x P and {SREPS} x S;"
      f" total {time.monotonic() - t_start:.0f} s")
print(f"# P = {PY} -c '{START}'")
print(f"# S = sh -c 'for i in $(seq {LOOP_N}); do cat /etc/hostname; ls /usr/lib; done' (to /dev/null)")
print(f"# workloads on CPU 1, daemon on CPU 0{', a nice-19 spinner on CPU 0 in every block' if SPINNER else ''};"
      f" driver, workloads and daemon at nice {NICE}; loadavg {' '.join(load0)} -> {' '.join(load1)}")
print("# off/on ms: median over rounds of the block's mean per run; wall = fork to reaped, cpu = the run's"
      " user+sys (wait4, with its reaped children)")
print("# ratio(mean) = on block mean / paired off block mean (same round); ratio(min) = the same with the block's"
      " fastest run (interference only adds time); median [min-max] over rounds")
print("# daemon ms/run = the daemon threads' schedstat run time over the segment (+0.5 s tail) / runs,"
      " median [min-max]; net = less the same block's idle rate (0.5 s after the workloads) x the segment's"
      " time: the eBPF daemon also records every other Python process on the node; % = net of the run's own CPU")
for k, name in ((0, "wall"), (1, "cpu")):
    print(f"\n{'wl':2} {'config':28} {name + ' off':>9} {name + ' on':>8} {'ratio(mean) [min-max]':>23}"
          f" {'ratio(min) [min-max]':>23}" + (f" {'daemon ms/run [min-max]':>26} {'net':>7} {'%':>6}" if k else "")
          + f" {'goal':>7}")
    for w in WORK:
        for c, (title, _, _, _) in CONFIGS.items():
            on, off = blocks[(c, "on")][w], blocks[(c, "off")][w]
            mean = lambda b: statistics.fmean(x[k] for x in b)
            low = lambda b: min(x[k] for x in b)
            rm = mq([mean(a) / mean(b) for a, b in zip(on, off)])
            rl = mq([low(a) / low(b) for a, b in zip(on, off)])
            von, voff = statistics.median(mean(a) for a in on), statistics.median(mean(b) for b in off)
            goal = f"<={GOALS[(w, c)]:.3f}" if (w, c) in GOALS else "-"
            line = f"{w:2} {c + ' ' + title:28} {voff * 1e3:9.2f} {von * 1e3:8.2f} {fmt(rm):>23} {fmt(rl):>23}"
            if k:
                dm = mq(dcpu[c][w])
                line += f" {dm[0] * 1e3:8.3f} [{dm[1] * 1e3:.2f}-{dm[2] * 1e3:.2f}]".rjust(27)
                dn = statistics.median(dnet[c][w])
                line += f" {dn * 1e3:7.3f} {dn / von * 100:5.2f}%"
            print(line + f" {goal:>7}")
        # The noise floor: off blocks of the same round against each other.
        rm, rl = [], []
        for r in range(ROUNDS):
            offs = [blocks[(c, "off")][w][r] for c in CONFIGS]
            ms = [statistics.fmean(x[k] for x in b) for b in offs]
            ls = [min(x[k] for x in b) for b in offs]
            rm += [x / y for i, x in enumerate(ms) for j, y in enumerate(ms) if i < j]
            rl += [x / y for i, x in enumerate(ls) for j, y in enumerate(ls) if i < j]
        print(f"{w:2} {'A/A: off vs off, same round':28} {'':9} {'':8} {fmt(mq(rm)):>23} {fmt(mq(rl)):>23}")
print("# goals (the issue): library: Python start-up <= 1.01, non-Python loop <= 1.005 (rows a);"
      " b and c for comparison. A/A = the resolution of this run: |1 - x| spread of off vs off.")

print("\n# other load on CPU 1 during the workload segments: (CPU 1 busy - workload - driver) / wall,"
      " and steal / wall (10 ms ticks); median [max] over blocks")
for w in WORK:
    for side in SIDES:
        xs = [x for c in CONFIGS for x in foreign[(c, side)][w]]
        fo, st = [x[0] for x in xs], [x[1] for x in xs]
        print(f"{w:2} {side:3} blocks: other {statistics.median(fo) * 100:5.1f} % [{max(fo) * 100:5.1f}],"
              f" steal {statistics.median(st) * 100:5.1f} % [{max(st) * 100:5.1f}]")
n_tr = sum(tracer_blocks.values())
print(f"# blocks during which another (not this bench's) eBPF pyusage daemon ran: {n_tr} of {2 * ROUNDS * len(CONFIGS)}"
      + (f" (pids {sorted(tracer_pids)}; per block: "
         + ", ".join(f"{c}{'+' if s == 'on' else '-'} {v}" for (c, s), v in tracer_blocks.items() if v)
         + "): their off blocks were not tracer-free" if n_tr else ""))

print("\n# daemon: ready after (s), idle CPU over 0.5 s after the workloads (ms/s), lifetime CPU per block"
      " (s, wait4 rusage); median [min-max]")
for c, (title, _, _, _) in CONFIGS.items():
    r, i, l = mq(ready_s[c]), mq(idle[c]), mq(life[c])
    print(f"{c} {title:28} ready {r[0]:.2f} s, idle {i[0] * 1e3:.2f} ms/s [{i[1] * 1e3:.2f}-{i[2] * 1e3:.2f}],"
          f" lifetime {l[0]:.3f} s [{l[1]:.3f}-{l[2]:.3f}]; over all segments: live threads' schedstat"
          f" {dtick[c][0]:.2f} s, /proc/PID/stat (exited threads too) {dtick[c][1]:.2f} s")
    for w, (_, _, n) in WORK.items():
        runs = n * ROUNDS
        parts = sorted(dthr[c][w].items(), key=lambda kv: -kv[1])
        print(f"   {w} per run, by thread (mean): "
              + ", ".join(f"{k} {v / runs * 1e3:.2f} ms" for k, v in parts if v / runs >= 5e-6))


def started(x):
    return datetime.datetime.fromisoformat(x["process_start"].replace("Z", "+00:00")).timestamp()


# Did the daemon record what it was measured doing? Every P run in an on block is one Python
# process that imported numpy and yaml; S runs (not Python) should leave nothing. A run is
# matched by pid and start time (pids wrap at 32768 on this VM).
print("\n# records (pyusage show --format jsonl DATA):")
for c, (title, _, _, _) in CONFIGS.items():
    out = subprocess.run([BIN, "show", "--format", "jsonl", daemons[c].data], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    recs = [json.loads(l) for l in out]
    srcs = {}
    for x in recs:
        key = "+".join(x.get("sources") or [x.get("source") or "?"])
        srcs[key] = srcs.get(key, 0) + 1

    def matches(x, runs, parent=False):
        for t in runs.get(x["ppid"] if parent else x["pid"], ()):
            if -1.0 <= started(x) - t <= 5.0:
                return True
        return False

    by_pid = {w: {} for w in WORK}
    for w in WORK:
        for pid, t in runs_on[c][w]:
            by_pid[w].setdefault(pid, []).append(t)
    p_recs = [x for x in recs if matches(x, by_pid["P"])]
    numpy_runs = {(x["pid"], x["process_start"]) for x in p_recs if x["package"] == "numpy"}
    yaml_runs = {(x["pid"], x["process_start"]) for x in p_recs if x["package"] == "yaml"}
    p_srcs = {}
    for x in p_recs:
        key = "+".join(x.get("sources") or [x.get("source") or "?"])
        p_srcs[key] = p_srcs.get(key, 0) + 1
    s_recs = [x for x in recs if matches(x, by_pid["S"]) or matches(x, by_pid["S"], parent=True)]
    other = {}
    for x in recs:
        if not matches(x, by_pid["P"]) and x not in s_recs:
            other[x.get("executable")] = other.get(x.get("executable"), 0) + 1
    s = status[c]
    print(f"{c} {title:28} records {len(recs)} {srcs}; P runs with a numpy record {len(numpy_runs)},"
          f" with yaml {len(yaml_runs)}, of {len(runs_on[c]['P'])}; records per P run"
          f" {len(p_recs) / max(1, len(runs_on[c]['P'])):.1f} {p_srcs}; records from S runs {len(s_recs)}"
          + (f" {sorted({(x['executable'], x['package']) for x in s_recs})}" if s_recs else "")
          + f"; status.json summed: preload connections {s['connections']}, messages {s['messages']}"
          + (f" ({s['messages'] / s['connections']:.2f} per connection)," if s["connections"] else ",")
          + f" refused {s['refused']}, python_execs {s['python_execs']}, ring_full {s['ring_full']},"
          f" queue_full {s['queue_full']}")
    if other:
        print(f"  + records of other processes on the node: {other}")

print("\n# block order per round (x+ on, x- its off):")
for r, o in enumerate(order_log):
    print(f"  {r + 1}: {o}")
if os.environ.get("KEEP") == "1":
    print(f"# kept {tmp}")
else:
    shutil.rmtree(tmp, ignore_errors=True)
EOF
)
PY="$PY" exec taskset -c 1 /usr/bin/python3 -c "$DRIVER"
