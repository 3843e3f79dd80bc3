#!/bin/bash
# Submits a sharded `pyusage analyze`: one array task per line of SHARDS, then the merge,
# which runs only if every shard succeeded (afterok). Prints "ARRAY_JOB MERGE_JOB".
#
#   packaging/slurm/submit.sh SHARDS DATASET WORK OUT [sbatch options for both jobs…]
#
# SHARDS: one shard per line, e.g. per quarter:
#   --to 2026-03-31
#   --from 2026-04-01 --to 2026-06-30
#   --from 2026-07-01 --to 2026-09-30
#   --from 2026-10-01
# or per host group (`--hosts 'nid0[0-4]*'` without the quotes). Shards must not overlap:
# `merge` refuses two shards that read the same date for the same hosts.
# PYUSAGE (default: pyusage on PATH), CACHE, ANALYZE_ARGS and MERGE_ARGS pass through.
set -euo pipefail
[ $# -ge 4 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
dataset=$(realpath "$2") work=$3 out=$4
here=$(dirname "$(realpath "$0")")
mkdir -p "$work"
work=$(realpath "$work")
rm -f "$work"/shard-*.state  # a state left from an earlier run must not join this merge
# Blank lines and # comments dropped, so that task N is the N-th shard.
shards=$work/shards
grep -v -E '^[[:space:]]*(#|$)' "$1" >"$shards" || true
n=$(wc -l <"$shards")
[ "$n" -gt 0 ] || { echo "$1: no shards" >&2; exit 2; }
shift 4
export PYUSAGE=${PYUSAGE:-$(command -v pyusage)} DATASET=$dataset SHARDS=$shards WORK=$work OUT=$out
array=$(sbatch --parsable --export=ALL --array="0-$((n - 1))" "$@" "$here/analyze.sbatch")
array=${array%%;*}
merge=$(sbatch --parsable --export=ALL --dependency="afterok:$array" --kill-on-invalid-dep=yes \
  "$@" "$here/merge.sbatch")
echo "$array ${merge%%;*}"
