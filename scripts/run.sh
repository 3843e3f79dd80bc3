#!/usr/bin/env bash
# Installs what the build needs if missing, builds, and runs the daemon (root) with the
# embedded defaults, writing to ./data. Extra arguments go to `pyusage daemon`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
./scripts/install-deps.sh
# The binary as shipped (see Cargo.toml's release-lto profile).
cargo build --profile release-lto --quiet -p pyusage-cli
exec ./target/release-lto/pyusage daemon --data-dir "${PYUSAGE_DATA:-data}" "$@"
