#!/usr/bin/env bash
# Capture-core benchmark (root): traced vs untraced, side by side in one run. Prints ratios
# of medians; no pass/fail. Usage: bench/capture.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
./scripts/install-deps.sh
# The binary as shipped (see Cargo.toml's release-lto profile).
cargo build --profile release-lto --quiet -p pyusage-cli
B=target/bench
PY=$(python3 -c 'import sys; print(sys.executable)')
PKGS=(numpy PyYAML requests six packaging attrs click jinja2 pygments tomli python-dateutil pytz rich idna certifi)
if [ ! -f "$B/.venv-done" ]; then
  mkdir -p "$B/wheels"
  "$PY" -m pip download -q -d "$B/wheels" "${PKGS[@]}"
  rm -rf "$B/venv"; "$PY" -m venv "$B/venv"
  "$B/venv/bin/python" -m pip install -q --no-index --find-links "$B/wheels" "${PKGS[@]}"
  "$B/venv/bin/python" -m compileall -q "$B/venv/lib" >/dev/null || true
  touch "$B/.venv-done"
fi
[ "${1:-}" = "--prepare-only" ] && exit 0
exec "$B/venv/bin/python" bench/capture.py --bin target/release-lto/pyusage --venv "$B/venv" --rounds "${1:-5}"
