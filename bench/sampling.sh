#!/usr/bin/env bash
# CPU-sampler benchmark (root): accuracy on every supported interpreter, and the cost of
# sampling on vs off side by side. Prints figures; no pass/fail.
# Usage: bench/sampling.sh [--seconds N] [--rounds N] [--skip-accuracy]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
./scripts/install-deps.sh
./scripts/fixtures.sh
cargo build --release --quiet -p pyusage-cli
exec python3 bench/sampling.py --bin target/release/pyusage "$@"
