"""The sampler's accuracy workload: spends known shares of its CPU time in three local
packages — `purepkg` (a pure-Python loop), `cext` (a C extension's loop) and `numpkg` (numpy
calls) — interleaved in rounds, and writes what each phase really took (its thread's CPU time)
as JSON. Usage: workload.py TOTAL_CPU_SECONDS OUT.json [SHARES…]"""
import json
import os
import sys
import time

import cext
import numpkg
import purepkg

total = float(sys.argv[1])
shares = [float(s) for s in sys.argv[3:]] or [0.6, 0.3, 0.1]
phases = (purepkg.spin, cext.spin, numpkg.spin)
spent = [0.0, 0.0, 0.0]
ROUND = 0.5
for _ in range(int(total / ROUND)):
    for i, f in enumerate(phases):
        t = time.thread_time()
        f(ROUND * shares[i])
        spent[i] += time.thread_time() - t
with open(sys.argv[2], "w") as out:
    json.dump({"pid": os.getpid(), "spent": spent}, out)
