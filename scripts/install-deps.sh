#!/usr/bin/env bash
# Installs what building and testing pyusage needs, when missing. Idempotent and
# quiet when everything is already there. Run as root on Debian 12.
set -euo pipefail

APT_PKGS=(llvm-22-dev libclang-cpp22-dev zlib1g-dev libzstd-dev rsyslog rsyslog-relp slurm-wlm munge
          openmpi-bin python3-mpi4py python3.11 python3-venv
          util-linux procps    # setpriv, unshare (tests as other users); pkill
          gcc libc6-dev make binutils    # the preload tests: C host programs (one static), make, readelf
          python3.11-dev python3.11-dbg  # the sampler tests: a C extension for Debian's 3.11; a debug build refused
          chromium                       # the dashboard test: report.html in a headless browser
          strace)                        # bench/proctable.sh: the recorded start it replays

log() { printf 'install-deps: %s\n' "$*" >&2; }

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The test command checks formatting and lints (stable toolchain).
for c in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
    log "rustup: $c"
    rustup component add "$c" >/dev/null 2>&1
  fi
done
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "rustup: rust-src (nightly)"
  rustup component add rust-src --toolchain nightly >/dev/null 2>&1
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v bpf-linker >/dev/null 2>&1; then
  log "cargo install bpf-linker (llvm-22), takes a few minutes"
  LLVM_PREFIX=/usr/lib/llvm-22 LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 cargo install --quiet --locked bpf-linker \
    --no-default-features --features llvm-22
fi

# NVRTC from PyPI (a wheel of the shared library; needs no driver or GPU), for the analysis
# crate's test that compiles the GPU kernels (analysis/tests/nvrtc.rs), which loads it from
# here. --target keeps it out of every Python's site-packages; the version matches cudarc's
# `cuda-12080` feature. Reinstalled only when the library of that version is missing.
NVRTC_DIR=/opt/pyusage-nvrtc
NVRTC_VERSION=12.8.93
if [ ! -f "$NVRTC_DIR/.version-$NVRTC_VERSION" ] || [ ! -f "$NVRTC_DIR/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" ]; then
  log "pip: nvidia-cuda-nvrtc-cu12==$NVRTC_VERSION into $NVRTC_DIR"
  rm -rf "$NVRTC_DIR"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target "$NVRTC_DIR" \
    "nvidia-cuda-nvrtc-cu12==$NVRTC_VERSION"
  touch "$NVRTC_DIR/.version-$NVRTC_VERSION"
fi

# The daemon's own user (the shipped configuration switches to it once attached).
if ! id pyusage >/dev/null 2>&1; then
  log "useradd pyusage (system user)"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pyusage
fi

if [ -z "$(ls -A /sys/kernel/tracing 2>/dev/null)" ]; then
  mount -t tracefs nodev /sys/kernel/tracing
fi
