#!/usr/bin/env bash
# Broker memory under consumers that ask for everything: a 256 MiB partition, then N kcat
# consumers with 1 GB fetch limits reading it at once (N = 4 and 16). Prints the broker's peak
# RSS before and after each wave, per binary given (each on a fresh broker with default
# settings: kafka.fetch-max-bytes 55 MiB, kafka.fetch-memory-bytes 256 MiB).
#
#   bench/fetch_memory.sh                              # target/release/sluice
#   bench/fetch_memory.sh old/sluice target/release/sluice
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-$PWD/target/bench-fetch-memory}
BINARIES=("$@")
[ ${#BINARIES[@]} -eq 0 ] && BINARIES=(target/release/sluice)

source bench/common.sh
need_kcat
hwm_mib() { awk '/^VmHWM/ {printf "%d", $2/1024}' "/proc/$BROKER_PID/status"; }

echo "| binary | consumers | peak RSS before MiB | peak RSS after MiB |"
echo "|---|---|---|---|"
for binary in "${BINARIES[@]}"; do
    for consumers in 4 16; do
        port=$(free_port)
        start_broker "$binary" "$port"
        target/release/sluice-load --bootstrap "127.0.0.1:$port" --topic t --records 262144 --size 1024 --acks 1 --no-consume > /dev/null
        before=$(hwm_mib)
        readers=()
        for _ in $(seq "$consumers"); do
            kcat -C -b "127.0.0.1:$port" -t t -p 0 -o beginning -e -q -X fetch.max.bytes=1000000000 \
                -X fetch.message.max.bytes=1000000000 -X receive.message.max.bytes=1100000000 > /dev/null &
            readers+=($!)
        done
        wait "${readers[@]}"
        echo "| $binary | $consumers | $before | $(hwm_mib) |"
        stop_broker
    done
done
