#!/usr/bin/env bash
# Restart time of a node whose metadata log holds ENTRIES entries, before and after a snapshot
# compacts that log. Each metadata entry is a topic config change (IncrementalAlterConfigs from
# kafka-python, THREADS clients at once). REPS restarts are timed each way (SIGTERM, then start
# until the broker prints its listening line); medians are reported.
#   ENTRIES=100000 REPS=3 bench/metadata_restart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/sluice-bench-metadata}
ENTRIES=${ENTRIES:-100000}
REPS=${REPS:-3}
THREADS=${THREADS:-16}
source bench/common.sh
BIN=target/release/sluice

PORT=$(free_port)
RPC=$(free_port)
# No trigger fires during the load (a huge threshold); compaction keeps nothing before a snapshot.
export SLUICE_SNAPSHOT__KEEP_ENTRIES=0 SLUICE_SNAPSHOT__METADATA_SEGMENT_BYTES=1048576
start() {
    "$BIN" serve --data-dir "$WORK/data" --kafka-addr "127.0.0.1:$PORT" --metrics-addr 127.0.0.1:0 --rpc-addr "127.0.0.1:$RPC" \
        > "$WORK/broker.out" 2> "$WORK/broker.err" &
    BROKER_PID=$!
}
# Starts the broker; ELAPSED is the seconds until it prints its listening line.
timed_start() {
    : > "$WORK/broker.out"
    local t0 t1
    t0=$(date +%s%N)
    start
    until grep -q "kafka listening" "$WORK/broker.out" 2>/dev/null; do sleep 0.01; done
    t1=$(date +%s%N)
    ELAPSED=$(python3 -c "print(($t1 - $t0) / 1e9)")
}
rm -rf "$WORK/data"
start
until grep -q "kafka listening" "$WORK/broker.out" 2>/dev/null; do sleep 0.1; done
"$BIN" plugin bind --rpc-addr "127.0.0.1:$RPC" --kind trigger entries-or-age --param entries=100000000 >/dev/null
python3 - "$PORT" "$ENTRIES" "$THREADS" <<'PY'
import sys, threading
from kafka.admin import KafkaAdminClient, NewTopic, ConfigResource, ConfigResourceType
port, entries, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}").create_topics([NewTopic("configured", 1, 1)])
def work(k):
    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
    for i in range(k, entries, threads):
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "configured", configs={"retention.ms": str(1000000 + i)})])
ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
[t.start() for t in ts]
[t.join() for t in ts]
PY
log_bytes() { du -sb "$WORK/data/metadata" | cut -f1; }
before=()
for _ in $(seq "$REPS"); do
    stop_broker
    timed_start
    before+=("$ELAPSED")
done
bytes_before=$(log_bytes)
applied=$(python3 -c "import json; print(json.load(open('$WORK/data/metadata.json'))['applied_index'])")
"$BIN" snapshot create --rpc-addr "127.0.0.1:$RPC" > "$WORK/snapshot.txt"
after=()
for _ in $(seq "$REPS"); do
    stop_broker
    timed_start
    after+=("$ELAPSED")
done
bytes_after=$(log_bytes)
stop_broker
echo "metadata entries applied: $applied"
echo "metadata log before: $bytes_before bytes; restart s: ${before[*]}; median $(median "${before[@]}")"
echo "metadata log after:  $bytes_after bytes; restart s: ${after[*]}; median $(median "${after[@]}")"
tail -1 "$WORK/snapshot.txt"
