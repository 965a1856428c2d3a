#!/usr/bin/env bash
# Produce latency on a partition while a consumer with large fetch limits reads 1 GiB from it.
# The partition is filled with 1 GiB first; then kcat reads it from the beginning (50 MiB per
# fetch) while sluice-load produces 100,000 1 KiB records at a fixed rate into the same
# partition and reports their latency. Each binary given runs REPS times, alternating, each on a
# fresh broker; medians are printed at the end.
#
#   bench/fetch_contention.sh                          # target/release/sluice
#   REPS=3 bench/fetch_contention.sh old/sluice target/release/sluice
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
RATE=${RATE:-20000}
WORK=${WORK:-$PWD/target/bench-contention}
BINARIES=("$@")
[ ${#BINARIES[@]} -eq 0 ] && BINARIES=(target/release/sluice)

cargo build --release --quiet --bin sluice --bin sluice-load
command -v kcat >/dev/null || { echo "kcat is needed (scripts/test installs it)" >&2; exit 1; }
rm -rf "$WORK"
mkdir -p "$WORK"
BROKER_PID=""
cleanup() {
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

one() { # binary, label
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    rm -rf "$WORK/data"
    "$1" serve --data-dir "$WORK/data" --kafka-addr "127.0.0.1:$port" --metrics-addr 127.0.0.1:0 > "$WORK/broker.out" 2> "$WORK/broker.err" &
    BROKER_PID=$!
    for _ in $(seq 100); do grep -q "kafka listening" "$WORK/broker.out" 2>/dev/null && break; sleep 0.1; done
    target/release/sluice-load --bootstrap "127.0.0.1:$port" --topic t --records 1048576 --size 1024 --acks 1 --no-consume > /dev/null
    kcat -C -b "127.0.0.1:$port" -t t -p 0 -o beginning -e -q -X fetch.message.max.bytes=52428800 -X fetch.max.bytes=52428800 > /dev/null &
    local reader=$!
    target/release/sluice-load --bootstrap "127.0.0.1:$port" --topic t --records 100000 --size 1024 --acks 1 --rate "$RATE" --linger-ms 1 --no-consume \
        | grep '^produce' | sed "s|^|$2 |" | tee -a "$WORK/results.log"
    wait "$reader" || true
    kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}

for rep in $(seq "$REPS"); do
    for i in "${!BINARIES[@]}"; do one "${BINARIES[$i]}" "bin$i"; done
done
echo
echo "| binary | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|"
for i in "${!BINARIES[@]}"; do
    log=$(grep "^bin$i " "$WORK/results.log")
    echo "| ${BINARIES[$i]} | $(median $(echo "$log" | field p50_ms)) | $(median $(echo "$log" | field p99_ms)) | $(median $(echo "$log" | field max_ms)) |"
done
