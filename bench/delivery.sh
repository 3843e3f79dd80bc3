#!/usr/bin/env bash
# Delivery benchmark (root): records/s spooled and delivered over TCP to a real rsyslog on
# loopback, and the time for a burst of 256 processes x 20 packages to be fully delivered.
# Usage: bench/delivery.sh [backlog-records]
set -euo pipefail
cd "$(dirname "$0")/.."
./bench/capture.sh --prepare-only >/dev/null
exec target/bench/venv/bin/python bench/delivery.py --bin target/release/pyusage --venv target/bench/venv --backlog "${1:-200000}"
