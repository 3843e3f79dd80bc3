#!/usr/bin/env bash
# The long fuzz run: every property-based target of tracer-user/src/fuzz.rs with many more
# cases than the test suite's 256 (default 20,000 each; `fuzz/run.sh 100000`). Prints each
# target's time. No root, no eBPF toolchain needed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH" AYA_BUILD_SKIP=1 PROPTEST_CASES="${1:-20000}"
cargo test -q -p tracer-user --lib fuzz:: --no-run
for t in $(cargo test -q -p tracer-user --lib fuzz:: -- --list 2>/dev/null | sed -n 's/: test$//p'); do
  s=$(date +%s.%N)
  cargo test -q -p tracer-user --lib "$t" -- --exact >/dev/null
  printf '%-70s %8s cases %6.1f s\n' "$t" "$PROPTEST_CASES" "$(echo "$(date +%s.%N) - $s" | bc)"
done
