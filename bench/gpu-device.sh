#!/usr/bin/env bash
# The GPU back end on a machine with a GPU, in one run: the NVRTC compile, the parity tests
# (GPU vs CPU byte for byte), then `pyusage analyze` on synthetic data at 10 M and 100 M
# records, CPU and GPU back ends alternated on the same machine, each GPU report checked
# against the CPU one (everything but the back end's name).
#
#   bench/gpu-device.sh BIN_DIR [ROWS…]
#
# BIN_DIR holds `pyusage` and the analysis crate's test binaries `gpu` and `nvrtc`
# (`cargo test --release -p pyusage-analysis --no-run`), built where Rust is: the GPU machine
# needs only the driver and an NVRTC library (cudarc loads both at run time).
set -u
bin=$(cd "$1" && pwd)
shift
rows=("${@:-10000000 100000000}")
work=${WORK:-/tmp/pyusage-gpu}
mkdir -p "$work"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nproc

# cudarc looks for libnvrtc.so, libnvrtc.so.12, …: point the unversioned name at whichever
# NVRTC this machine has (CUDA 13 here), next to its builtins library.
nvrtc=$(ldconfig -p | awk '/libnvrtc\.so/ && !/builtins/ {print $NF; exit}')
if [ -z "$nvrtc" ]; then
  nvrtc=$(find /usr/local /opt /usr/lib -name 'libnvrtc.so*' 2>/dev/null | grep -v builtins | sort | head -1)
fi
echo "NVRTC: ${nvrtc:-none}"
mkdir -p "$work/lib"
[ -n "$nvrtc" ] && ln -sf "$nvrtc" "$work/lib/libnvrtc.so"
export LD_LIBRARY_PATH="$work/lib:$(dirname "${nvrtc:-/x}"):${LD_LIBRARY_PATH:-}"

echo "== NVRTC compile test"
PYUSAGE_NVRTC="$nvrtc" "$bin/nvrtc" --nocapture 2>&1 | tail -5
echo "== parity tests (GPU vs CPU, 3 M rows and a filter)"
PYUSAGE_PARITY_ROWS=3000000 "$bin/gpu" --nocapture --test-threads=1 2>&1 | tail -8

# Wall seconds and peak RSS (MiB) of one command, on one line.
measure() {
  python3 - "$@" <<'EOF'
import resource, subprocess, sys, time
t = time.perf_counter()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
w = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{w:.2f} s  {rss:.0f} MiB  rc={r.returncode}  {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
EOF
}

same() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for x in (a, b):
    x.pop("backend", None)
print("identical" if a == b else "DIFFERENT")
EOF
}

for n in ${rows[@]}; do
  d="$work/data-$n"
  echo "== synth $n"
  measure "$bin/pyusage" synth --rows "$n" --out "$d"
  for round in 1 2; do
    for dev in cpu gpu; do
      echo -n "round $round  $n  $dev  "
      rm -rf "$work/r-$dev"
      measure "$bin/pyusage" analyze "$d" --device "$dev" --out "$work/r-$dev" --format json
    done
    echo -n "GPU report vs CPU report: "
    same "$work/r-cpu/report.json" "$work/r-gpu/report.json"
  done
  echo -n "--device auto: "
  "$bin/pyusage" analyze "$d" --device auto --out "$work/r-auto" --format json 2>&1 | tail -1
  rm -rf "$d"
done
