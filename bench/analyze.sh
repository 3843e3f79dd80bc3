#!/usr/bin/env bash
# `pyusage analyze --device cpu` end to end vs DuckDB and polars computing the same tables for
# every month, quarter, year and the whole range, on the same generated dataset, same thread
# count, one after the other in one run; wall time and peak RSS of each, and the ratios.
#
#   bench/analyze.sh [ROWS ...]          default: 10000000 100000000
#
# Datasets are generated once under target/bench/analyze-<rows> (pyusage synth, seed 1).
# DuckDB and polars come from PyPI into target/bench/venv (this script only).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("${@:-10000000 100000000}")
THREADS=${THREADS:-$(nproc)}
export RAYON_NUM_THREADS=$THREADS POLARS_MAX_THREADS=$THREADS
cargo build --release --quiet -p pyusage-cli
BIN=target/release/pyusage
V=target/bench/venv
if [ ! -x "$V/bin/python" ]; then
  python3 -m venv "$V"
  "$V/bin/python" -m pip install -q "duckdb>=1.1,<2" "polars>=1.20,<2"
fi
measure() { # name, command...: prints "name wall_s peak_MiB"
  local name=$1; shift
  local t; t=$(mktemp)
  if /usr/bin/time -f "%e %M" -o "$t" "$@" >/dev/null 2>"$t.err"; then
    read -r wall kb < <(tail -1 "$t")
    echo "$name $wall $((kb / 1024))"
  else  # e.g. killed for memory: say so, keep going
    echo "$name failed($(grep -ho 'signal [0-9]*\|exit status [0-9]*' "$t" "$t.err" | head -1 | tr ' ' '_')) -"
  fi
  rm -f "$t" "$t.err"
}
echo "threads: $THREADS  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for n in ${SIZES[*]}; do
  D=target/bench/analyze-$n
  if [ ! -f "$D/.done" ]; then
    rm -rf "$D"
    echo "generating $n records under $D ..."
    "$BIN" synth --rows "$n" --out "$D" >/dev/null
    touch "$D/.done"
  fi
  echo "== $n records ($(du -sh "$D" | cut -f1) of Parquet)"
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  cat "$D"/date=*/*.parquet >/dev/null  # the same warm page cache for everyone
  ours=$(measure pyusage "$BIN" analyze "$D" --device cpu)
  duck=$(measure duckdb "$V/bin/python" tests/e2e/duckdb_tables.py bench "$D" "$THREADS")
  pola=$(measure polars "$V/bin/python" bench/analyze_polars.py "$D")
  printf '%-8s %10s %10s\n' tool wall_s peak_MiB
  for r in "$ours" "$duck" "$pola"; do printf '%-8s %10s %10s\n' $r; done
  o=$(echo "$ours" | cut -d' ' -f2)
  for r in "$duck" "$pola"; do
    set -- $r
    case $2 in failed*) continue ;; esac
    echo "ratio $1/pyusage: $(python3 -c "print(f'{$2 / $o:.1f}x')")"
  done
done
