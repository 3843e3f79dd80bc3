#!/usr/bin/env bash
# Central ingest benchmark: records/s into the central dataset (omprog's protocol on stdin,
# and through a real rsyslog: one ingest, two lanes, and rsyslog alone with a null consumer), and
# the dataset's size per million records.
# Usage: bench/ingest.sh [records] (default 1,000,000); needs target/release/pyusage.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/ingest.py --bin target/release/pyusage --records "${1:-1000000}" --rsyslog \
    --rsyslog-lanes --rsyslog-null
