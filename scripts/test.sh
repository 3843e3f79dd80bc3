#!/usr/bin/env bash
# The whole test suite: installs what it needs if missing, checks formatting and lints, then
# unit tests (no root; the GPU kernels compiled with NVRTC) and the end-to-end tests (root;
# they fail, not skip, when BPF cannot be loaded). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
./scripts/install-deps.sh
./scripts/fixtures.sh
cargo fmt --all --check
# Lints without building the eBPF object (AYA_BUILD_SKIP: the library is checked, not run).
AYA_BUILD_SKIP=1 cargo clippy --quiet --all-targets -- -D warnings
# The analysis-only binary builds without the daemon, and so without the eBPF toolchain.
if cargo tree -q -p pyusage-cli --no-default-features -e normal | grep -qE '^.*(tracer-user|aya) '; then
  echo "pyusage-cli --no-default-features depends on the daemon or aya" >&2
  exit 1
fi
cargo clippy --quiet -p pyusage-cli --no-default-features --all-targets -- -D warnings
# The end-to-end tests run the binary as shipped (see Cargo.toml's release-lto profile).
cargo build --profile release-lto --quiet -p pyusage-cli
export PYUSAGE_BIN="$PWD/target/release-lto/pyusage"
# The preload library as shipped: no_std, its own profile (see Cargo.toml).
cargo build --profile preload --quiet -p pyusage-preload
export PYUSAGE_PRELOAD_LIB="$PWD/target/preload/libpyusage_preload.so"
cargo test --release --quiet --workspace --exclude pyusage-tests --exclude tracer-ebpf -- --skip gpu_
# GPU parity tests run where a CUDA driver and device are present; elsewhere they say
# "SKIPPED <name>: <reason>", listed here.
cargo test --release --quiet -p pyusage-analysis --test gpu -- --nocapture 2>&1 \
  | tee target/gpu-tests.log | grep -E "SKIPPED|test result|FAILED|panicked" || true
grep -q "test result: ok" target/gpu-tests.log
# The Slurm the end-to-end tests start (scripts/services/slurm.sh) is stopped however they end.
trap './scripts/services/slurm.sh stop "${TMPDIR:-/tmp}/pyusage-slurm" >/dev/null 2>&1 || true' EXIT
cargo test --release --quiet -p pyusage-tests -- --test-threads="${PYUSAGE_E2E_THREADS:-2}"
