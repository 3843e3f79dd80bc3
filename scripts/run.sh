#!/usr/bin/env bash
# Installs what the build needs if missing, builds, and runs the daemon (root) with the
# embedded defaults, writing to ./data. Extra arguments go to `pyusage daemon`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
./scripts/install-deps.sh
cargo build --release --quiet -p pyusage-cli
exec ./target/release/pyusage daemon --data-dir "${PYUSAGE_DATA:-data}" "$@"
