#!/usr/bin/env bash
# Single-node benchmark: the disk's fsync'd sequential write bandwidth as the physical
# reference, then sluice-load against a release `sluice` with 1 KiB records at acks=1 and
# acks=all, a run at half the acks=1 peak for latency, and the broker's RSS idle and under load.
# Each measurement is repeated REPS times; the summary reports medians.
#
#   bench/run.sh                  # defaults below
#   RECORDS=500000 REPS=5 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-300000}
REPS=${REPS:-3}
WORK=${WORK:-$PWD/target/bench-work}

cargo build --release --quiet --bin sluice --bin sluice-load
rm -rf "$WORK"
mkdir -p "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BROKER_PID=""
cleanup() {
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$BROKER_PID/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$BROKER_PID/status"; }
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), disk under $WORK: $(df -h "$WORK" | awk 'NR==2 {print $1}')"

# The physical reference: 1 GiB written sequentially, fdatasync'd before dd reports.
dd_mbs=()
for _ in $(seq "$REPS"); do
    out=$(dd if=/dev/zero of="$WORK/dd.bin" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1)
    bytes=$(echo "$out" | awk '{print $1}')
    secs=$(echo "$out" | sed -n 's/.*copied, \([0-9.]*\) s.*/\1/p')
    dd_mbs+=("$(python3 -c "print(round($bytes/$secs/1e6,1))")")
    rm -f "$WORK/dd.bin"
done
DD=$(median "${dd_mbs[@]}")
echo "dd conv=fdatasync MB/s: ${dd_mbs[*]} -> median $DD"

target/release/sluice serve --data-dir "$WORK/data" --kafka-addr "127.0.0.1:$PORT" --metrics-addr 127.0.0.1:0 \
    > "$WORK/broker.out" 2> "$WORK/broker.err" &
BROKER_PID=$!
for _ in $(seq 100); do grep -q "kafka listening" "$WORK/broker.out" 2>/dev/null && break; sleep 0.1; done
sleep 2
IDLE_RSS=$(rss_kib)
echo "idle RSS: $((IDLE_RSS / 1024)) MiB"

run() { # name, extra args...
    local name=$1; shift
    target/release/sluice-load --bootstrap "127.0.0.1:$PORT" --records "$RECORDS" --size 1024 "$@" | tee -a "$WORK/$name.log"
}

for rep in $(seq "$REPS"); do
    run acks1 --topic "acks1-$rep" --acks 1
    run acksall --topic "acksall-$rep" --acks all
done
PEAK=$(median $(field records_per_sec < "$WORK/acks1.log"))
HALF=$(python3 -c "print(int($PEAK/2))")
for rep in $(seq "$REPS"); do
    run half --topic "half-$rep" --acks 1 --rate "$HALF" --records "$((HALF * 10))"
done
LOAD_HWM=$(hwm_kib)

summary() { # name
    local log="$WORK/$1.log"
    local mbs rps p50 p99 ok
    mbs=$(median $(field mb_per_sec < <(grep '^produce' "$log")))
    rps=$(median $(field records_per_sec < "$log"))
    p50=$(median $(field p50_ms < "$log"))
    p99=$(median $(field p99_ms < "$log"))
    ok=$(grep -c 'match=true' "$log" || true)
    echo "| $1 | $rps | $mbs | $(python3 -c "print(round($mbs/$DD,3))") | $p50 | $p99 | $ok/$REPS |"
}
echo
echo "| run | records/s | MB/s | ratio to dd | p50 ms | p99 ms | read back = acked |"
echo "|---|---|---|---|---|---|---|"
summary acks1
summary acksall
summary half
echo
echo "dd reference: $DD MB/s; half-peak rate: $HALF records/s"
echo "RSS: idle $((IDLE_RSS / 1024)) MiB, peak under load $((LOAD_HWM / 1024)) MiB"
