#!/bin/bash
# The process table and record path replayed from a real start (tracer-user/benches/proctable.rs):
# strace of the reference start in the bench venv (bench/capture.sh makes it), then the replay.
# Usage: bench/proctable.sh [STARTS a round, 200] [ROUNDS, 7]. Needs strace.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -e target/bench/.venv-done ] || bench/capture.sh --prepare-only
PY=target/bench/venv/bin/python
TRACE=target/bench/reference.strace
strace -f -qq -e trace=openat,mmap,execve -o "$TRACE" \
    "$PY" -c "import numpy, yaml, json, csv, email.mime.text, decimal, asyncio, argparse"
AYA_BUILD_SKIP=1 cargo bench -q -p tracer-user --bench proctable -- "$PWD/$TRACE" "${1:-200}" "${2:-7}"
