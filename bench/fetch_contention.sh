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

source bench/common.sh
need_kcat

one() { # binary, label
    local port
    port=$(free_port)
    start_broker "$1" "$port"
    target/release/sluice-load --bootstrap "127.0.0.1:$port" --topic t --records 1048576 --size 1024 --acks 1 --no-consume > /dev/null
    kcat -C -b "127.0.0.1:$port" -t t -p 0 -o beginning -e -q -X fetch.message.max.bytes=52428800 -X fetch.max.bytes=52428800 > /dev/null &
    local reader=$!
    target/release/sluice-load --bootstrap "127.0.0.1:$port" --topic t --records 100000 --size 1024 --acks 1 --rate "$RATE" --linger-ms 1 --no-consume \
        | grep '^produce' | sed "s|^|$2 |" | tee -a "$WORK/results.log"
    wait "$reader" || true
    stop_broker
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
