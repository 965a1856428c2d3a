#!/usr/bin/env bash
# Soak: three release nodes for SECS seconds (default 1800) under a continuous idempotent
# acks=all producer, a consumer group whose members come and go, snapshot-trigger and codec
# rebinds, and a kill -9 of node 2 or 3 every few seconds. Fails on any lost, moved or
# duplicated acknowledged record, on a consumer group that stops reading, and on node 1's
# memory or open files growing beyond a bound (see tests/cluster/soak.rs). The test command
# runs the same test for 120 seconds in a debug build.
#   SECS=1800 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-1800}
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
SLUICE_TEST_SOAK_SECS="$SECS" cargo test --release --locked --features sluice/s3 -p sluice --test cluster soak -- --nocapture 2>&1 \
    | grep -v '^fault-proxy' | grep -E '^\[soak\]|^test |test result|Error|LOST|duplicate'
