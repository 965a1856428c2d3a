#!/usr/bin/env bash
# Single-node benchmark: the disk's fsync'd sequential write bandwidth as the physical
# reference, then sluice-load against a release `sluice` with 1 KiB records at acks=1 and
# acks=all, a run at half the acks=1 peak for latency, and the broker's RSS idle and under load.
# Each measurement is repeated REPS times and the dd reference is taken between the broker runs
# of each repetition (this disk's speed drifts a lot), so the summary compares medians taken
# under the same conditions. The throughput runs use librdkafka's linger.ms=5; the latency run
# at half the peak uses linger.ms=1, so the client's own batching delay stays out of the p99.
#
#   bench/run.sh                  # defaults below
#   RECORDS=500000 REPS=5 bench/run.sh
#   BROKER=old/sluice bench/run.sh   # another broker binary, same load generator (not SLUICE_*:
#                                      the broker reads those as its settings)
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-1000000}
# A second latency point at a fixed rate well below the disk's sustained bandwidth.
FIXED_RATE=${FIXED_RATE:-100000}
REPS=${REPS:-3}
WORK=${WORK:-$PWD/target/bench-work}
BROKER=${BROKER:-target/release/sluice}

source bench/common.sh
PORT=$(free_port)

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$BROKER_PID/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$BROKER_PID/status"; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), disk under $WORK: $(df -h "$WORK" | awk 'NR==2 {print $1}')"

dd_mbs=()
measure_dd() {
    # 1 GiB to a new file, fdatasync'd before dd reports.
    local out bytes secs
    out=$(dd if=/dev/zero of="$WORK/dd-$1.bin" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1)
    bytes=$(echo "$out" | awk '{print $1}')
    secs=$(echo "$out" | sed -n 's/.*copied, \([0-9.]*\) s.*/\1/p')
    dd_mbs+=("$(python3 -c "print(round($bytes/$secs/1e6,1))")")
    # Kept until the end: on a thin-provisioned disk, the run right after a delete would write
    # into blocks dd just freed and look faster than writes to fresh blocks.
    echo "dd conv=fdatasync: ${dd_mbs[-1]} MB/s"
}

start_broker "$BROKER" "$PORT"
sleep 2
IDLE_RSS=$(rss_kib)
echo "idle RSS: $((IDLE_RSS / 1024)) MiB"

run() { # name, records, extra args...
    local name=$1 records=$2; shift 2
    target/release/sluice-load --bootstrap "127.0.0.1:$PORT" --records "$records" --size 1024 "$@" | tee -a "$WORK/$name.log"
}

for rep in $(seq "$REPS"); do
    measure_dd "$rep"
    run acks1 "$RECORDS" --topic "acks1-$rep" --acks 1
    run acksall "$RECORDS" --topic "acksall-$rep" --acks all
done
PEAK=$(median $(field records_per_sec < "$WORK/acks1.log"))
HALF=$(python3 -c "print(int($PEAK/2))")
for rep in $(seq "$REPS"); do
    run half "$((HALF * 5))" --topic "half-$rep" --acks 1 --rate "$HALF" --linger-ms 1
    run fixed "$((FIXED_RATE * 5))" --topic "fixed-$rep" --acks 1 --rate "$FIXED_RATE" --linger-ms 1
done
LOAD_HWM=$(hwm_kib)
DD=$(median "${dd_mbs[@]}")

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
summary fixed
echo
echo "dd reference: ${dd_mbs[*]} MB/s, median $DD MB/s; half-peak rate: $HALF records/s; fixed rate: $FIXED_RATE records/s"
echo "RSS: idle $((IDLE_RSS / 1024)) MiB, peak under load $((LOAD_HWM / 1024)) MiB"
