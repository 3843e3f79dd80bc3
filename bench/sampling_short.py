#!/usr/bin/env python3
"""Short processes under the CPU sampler, several builds alternated in one run (root): the share
of their samples charged to the package they ran in, and the daemon's CPU per process.

Usage: bench/sampling_short.py BIN [BIN ...]
  env: R rounds (3), N processes per block (40), HZ sampling rate (19), SPIN seconds each
  process spends in purepkg (0.15), PY interpreter (the pyenv 3.12 fixture venv of
  scripts/fixtures.sh).

A code object is named only by reading its process's memory, which is gone once the process
exits: samples that reach the daemon after that count for no package. Each block starts one
build's daemon pinned to CPU 0, measures its idle CPU rate for 2 s, then runs N processes one
after another on CPU 1, each importing purepkg (bench/sampling.py's) and spinning in it for SPIN
CPU-seconds. Printed per block: purepkg's self samples over all samples of the sampled
processes (the rest is start-up, in the standard library, and samples never attributed), the
daemon's CPU per process (all its threads' run time, net of the idle rate), and the kernel's
`sample_wakeups`. The build order alternates by round.
"""
import os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sampling as S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.environ.get("PY") or os.path.join(ROOT, "target", "fixtures", "sampling", "pyenv-3.12", "bin", "python")
R, N = int(os.environ.get("R", 3)), int(os.environ.get("N", 40))
HZ, SPIN = int(os.environ.get("HZ", 19)), float(os.environ.get("SPIN", 0.15))


def block(binary, tmp, pkgs):
    d = S.Daemon(os.path.abspath(binary), tmp, HZ)
    time.sleep(1.0)
    c0, t0 = d.cpu(), time.time()
    time.sleep(2.0)
    idle = (d.cpu() - c0) / (time.time() - t0)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": pkgs}
    c0, t0, pids = d.cpu(), time.time(), []
    for _ in range(N):
        p = subprocess.run(["taskset", "-c", "1", PY, "-c",
                            f"import os, purepkg\npurepkg.spin({SPIN})\nprint(os.getpid())"],
                           check=True, env=env, capture_output=True, text=True)
        pids.append(int(p.stdout))
    time.sleep(0.5)
    dcpu = d.cpu() - c0 - idle * (time.time() - t0)
    wakes = d.settled()["counters"].get("sample_wakeups")
    recs = d.stop()
    total = pure = sampled = 0
    for r in recs:
        if r["pid"] in pids and r["package"] == "purepkg" and r["cpu_sampling"] == "sampled":
            sampled += 1
            total += r["cpu_samples_total"]
            pure += r["cpu_samples_self"]
    return pure / max(total, 1), total, sampled, dcpu / N * 1e3, wakes


def main():
    builds = sys.argv[1:]
    if not builds:
        sys.exit(__doc__)
    tmp = tempfile.mkdtemp(prefix="sshort-")
    w = S.workdir(PY, tmp)
    pkgs = os.path.join(w, "pkgs")
    res = {b: [] for b in builds}
    for r in range(R):
        for b in builds if r % 2 == 0 else builds[::-1]:
            res[b].append(block(b, tmp, pkgs))
            share, total, sampled, ms, wakes = res[b][-1]
            print(f"round {r + 1} {b}: {share * 100:5.1f} % in purepkg ({total} samples, {sampled}/{N} "
                  f"processes sampled), daemon {ms:.2f} ms/process, sample_wakeups {wakes}", file=sys.stderr)
    subprocess.run(["rm", "-rf", tmp])
    print(f"\n# {N} processes a block, {SPIN} CPU-s each in purepkg, {HZ} Hz, {R} rounds: medians (range)")
    for b, v in res.items():
        share = [x[0] * 100 for x in v]
        ms = [x[3] for x in v]
        print(f"{b}: {statistics.median(share):.1f} % of samples in purepkg ({min(share):.1f}-{max(share):.1f}); "
              f"daemon {statistics.median(ms):.2f} ms/process ({min(ms):.2f}-{max(ms):.2f}); "
              f"sample_wakeups {[x[4] for x in v]}")


if __name__ == "__main__":
    main()
