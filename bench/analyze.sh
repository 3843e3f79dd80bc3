#!/usr/bin/env bash
# `pyusage analyze --device cpu` against expert baselines computing the same tables for every
# month, quarter, year and the whole range, on the same generated dataset and thread count:
#   pyusage cold             the full report from the Parquet files
#   pyusage incremental      (+1 day) with --cache, after a warm-up run (n/a without --cache)
#   duckdb                   bench/baseline_duckdb.py: one scan, ENUMs, month keys rolled up
#   polars                   bench/baseline_polars.py: the same with polars
#   floor duckdb             one DuckDB query: count(DISTINCT …) of each of the 14 columns read
#   floor pyarrow            pyarrow decodes the same 14 columns
# in alternating rounds (every tool once per round), with wall time and peak RSS of each run;
# then min and median per tool and the ratio of medians to pyusage cold. Round 1 checks both
# baselines table by table against pyusage's report.json of that round (their wall time then
# includes the check, a fraction of a second); a disagreement fails the bench.
#
#   bench/analyze.sh [ROWS ...]          default: 10000000 100000000
#   ROUNDS=3 THREADS=$(nproc)            environment (PYUSAGE_BIN: another binary)
#
# Datasets are generated once under target/bench/analyze-<rows> (pyusage synth, seed 1).
# DuckDB, polars, pyarrow and numpy come from PyPI into target/bench/venv (this script only).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("${@:-10000000 100000000}")
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-3}
export RAYON_NUM_THREADS=$THREADS POLARS_MAX_THREADS=$THREADS
cargo build --release --quiet -p pyusage-cli
BIN=${PYUSAGE_BIN:-target/release/pyusage}
V=target/bench/venv
PY=$V/bin/python
if ! "$PY" -c 'import duckdb, polars, pyarrow, numpy' 2>/dev/null; then
  python3 -m venv "$V"
  "$PY" -m pip install -q "duckdb>=1.1,<2" "polars>=1.20,<2" "pyarrow>=15" "numpy>=1.26"
fi
OUT=target/bench/analyze-out
mkdir -p "$OUT"
FAILED=0

# measure NAME STDOUT_FILE COMMAND...: runs it under /usr/bin/time, appends "NAME wall_s
# peak_MiB" to $RES (or "NAME failed(...)"), shows the command's own last line.
measure() {
  local name=$1 out=$2; shift 2
  local t; t=$(mktemp)
  if /usr/bin/time -f "%e %M" -o "$t" "$@" >"$out" 2>"$t.err"; then
    read -r wall kb < <(tail -1 "$t")
    echo "$name $wall $((kb / 1024))" >>"$RES"
    printf '  %-22s %7s s %6s MiB  %s\n' "$name" "$wall" "$((kb / 1024))" \
      "$(case $out in *.json) ;; *) tail -1 "$out" 2>/dev/null | cut -c1-70 ;; esac)"
  else  # e.g. killed for memory, or a baseline that disagrees: say so, keep going
    local why; why=$(grep -ho 'signal [0-9]*\|exit status [0-9]*' "$t" "$t.err" | head -1 | tr ' ' '_')
    echo "$name failed($why)" >>"$RES"
    printf '  %-22s failed (%s)\n' "$name" "$why"
    tail -n 25 "$out" "$t.err" | sed 's/^/    /'
    FAILED=1
  fi
  rm -f "$t" "$t.err"
}

# The incremental slot: `pyusage analyze --cache` (being built). Each round: the dataset
# without its extra day (a warm-up run fills or trims the cache, untimed), then one more day
# of data (a copy of the last partition under the next date), then the timed run.
incremental() {
  local n=$1 D=$2 r=$3
  if ! "$BIN" analyze --help | grep -q -- '--cache'; then
    [ "$r" = 1 ] && echo "  incremental: n/a (no --cache)"
    return 0
  fi
  local I=target/bench/incr-$n C=target/bench/cache-$n
  if [ "$r" = 1 ]; then
    rm -rf "$I" "$C"
    cp -al "$D" "$I"  # hard links: the runs only read
  fi
  local last next
  last=$(ls -d "$D"/date=* | sort | tail -1)
  next=$(date -u -d "${last##*=} + 1 day" +%F)
  rm -rf "$I/date=$next"
  "$BIN" analyze "$I" --device cpu --cache "$C" --format json --out "$OUT/incr-warm-$n" >/dev/null 2>&1
  mkdir -p "$I/date=$next"
  cp "$last"/*.parquet "$I/date=$next/"
  measure "pyusage incremental" /dev/null \
    "$BIN" analyze "$I" --device cpu --cache "$C" --format json --out "$OUT/incr-$n"
  if [ "$r" = 1 ]; then  # the same bytes as a cold run of the same data
    "$BIN" analyze "$I" --device cpu >"$OUT/incr-cold-$n.json"
    if ! cmp -s "$OUT/incr-$n/report.json" "$OUT/incr-cold-$n.json"; then
      echo "  incremental: report differs from a cold run of the same data"
      FAILED=1
    fi
  fi
}

echo "threads: $THREADS  rounds: $ROUNDS  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for n in ${SIZES[*]}; do
  D=target/bench/analyze-$n
  if [ ! -f "$D/.done-synth2" ]; then  # synth v2: the data that exercises every path
    rm -rf "$D"
    echo "generating $n records under $D ..."
    "$BIN" synth --rows "$n" --out "$D" >/dev/null
    touch "$D/.done-synth2"
  fi
  echo "== $n records ($(du -sh "$D" | cut -f1) of Parquet, $(ls "$D"/date=*/*.parquet | wc -l) files)"
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  cat "$D"/date=*/*.parquet >/dev/null  # the same warm page cache for everyone
  RES=$(mktemp)
  REPORT=$OUT/report-$n.json
  for r in $(seq 1 "$ROUNDS"); do
    echo " round $r"
    measure "pyusage cold" "$REPORT" "$BIN" analyze "$D" --device cpu
    incremental "$n" "$D" "$r"
    check=()
    [ "$r" = 1 ] && check=(--check "$REPORT")
    measure duckdb "$OUT/duckdb-$n.txt" "$PY" bench/baseline_duckdb.py "$D" --threads "$THREADS" "${check[@]}"
    measure polars "$OUT/polars-$n.txt" "$PY" bench/baseline_polars.py "$D" --threads "$THREADS" "${check[@]}"
    measure "floor duckdb" "$OUT/floor-$n.txt" "$PY" bench/scan_floor.py duckdb "$D" --threads "$THREADS"
    measure "floor pyarrow" "$OUT/floor-$n.txt" "$PY" bench/scan_floor.py pyarrow "$D" --threads "$THREADS"
  done
  python3 - "$RES" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if parts[-1].startswith("failed"):
        runs.setdefault(" ".join(parts[:-1]), [])
    else:
        runs.setdefault(" ".join(parts[:-2]), []).append((float(parts[-2]), int(parts[-1])))
base = statistics.median(w for w, _ in runs.get("pyusage cold", [(float("nan"), 0)]))
print(f"  {'tool':22} {'min s':>7} {'median s':>9} {'peak MiB':>9} {'x pyusage':>10}")
for name, v in runs.items():
    if not v:
        print(f"  {name:22} failed")
        continue
    walls = [w for w, _ in v]
    med = statistics.median(walls)
    print(f"  {name:22} {min(walls):7.2f} {med:9.2f} {max(m for _, m in v):9d} {med / base:9.2f}x")
EOF
  rm -f "$RES"
done
if [ "$FAILED" != 0 ]; then
  echo "bench FAILED: a run failed or a baseline disagrees with pyusage (see above)"
  exit 1
fi
