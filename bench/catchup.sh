#!/usr/bin/env bash
# Catch-up of a follower that missed MISSED_MIB of writes which retention has since deleted, on
# three release nodes of one machine: topic `big` (1 partition, replication factor 3,
# segment.bytes 16 MiB, retention.bytes KEPT_MIB). A follower is killed, MISSED_MIB of 1 KiB
# records are produced at acks=all to the other two, retention deletes all but KEPT_MIB, and the
# follower is started again: timed from its start until its log reaches the leader's last entry. It installs
# the leader's snapshot of the partition (a descriptor), then takes the KEPT_MIB still kept from
# the leader's log.
# Reference, same run: the same with retention off and KEPT_MIB produced while node 3 is down,
# so it replays KEPT_MIB of the leader's log, no snapshot.
#   MISSED_MIB=1024 KEPT_MIB=64 REPS=3 bench/catchup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MISSED_MIB=${MISSED_MIB:-1024}
KEPT_MIB=${KEPT_MIB:-64}
REPS=${REPS:-3}
WORK=${WORK:-$PWD/target/bench-catchup}
source bench/common.sh
BIN=target/release/sluice
export SLUICE_PLUGINS__RETENTION_CHECK_INTERVAL_MS=1000 SLUICE_SNAPSHOT__CHECK_INTERVAL_MS=500

NODE_PID=()
stop_cluster() { for i in 1 2 3; do [ -n "${NODE_PID[$i]:-}" ] && kill "${NODE_PID[$i]}" 2>/dev/null; done; wait 2>/dev/null || true; NODE_PID=(); }
trap 'stop_cluster; rm -rf "$WORK"' EXIT
start_node() { # node
    "$BIN" serve --node-id "$1" --data-dir "$WORK/n$1" --kafka-addr "127.0.0.1:${KPORT[$1]}" --rpc-addr "127.0.0.1:${RPORT[$1]}" \
        --metrics-addr 127.0.0.1:0 --peers "$PEERS" > "$WORK/n$1.out" 2> "$WORK/n$1.err" &
    NODE_PID[$1]=$!
}
start_cluster() {
    rm -rf "$WORK"/n*
    PEERS=""
    for i in 1 2 3; do KPORT[$i]=$(free_port); RPORT[$i]=$(free_port); PEERS="$PEERS${PEERS:+,}$i@127.0.0.1:${RPORT[$i]}"; done
    for i in 1 2 3; do start_node "$i"; done
    for i in 1 2 3; do until grep -q "kafka listening" "$WORK/n$i.out" 2>/dev/null; do sleep 0.1; done; done
    BOOTSTRAP="127.0.0.1:${KPORT[1]},127.0.0.1:${KPORT[2]},127.0.0.1:${KPORT[3]}"
}
# big_row NODE: the `big` partition's row of that node's `sluice cluster status` ($4 leader, $8 last index).
big_row() { "$BIN" cluster status --rpc-addr "127.0.0.1:${RPORT[$1]}" 2>/dev/null | awk '$2 == "big" && $3 == 0'; }
create_big() { # retention.bytes
    python3 - "$BOOTSTRAP" "$1" <<'PY'
import sys, time
from kafka.admin import KafkaAdminClient, NewTopic
for attempt in range(100):
    try:
        KafkaAdminClient(bootstrap_servers=sys.argv[1].split(",")).create_topics([NewTopic("big", 1, 3, topic_configs={"segment.bytes": str(16 << 20), "retention.bytes": sys.argv[2]})])
        break
    except Exception as e:
        time.sleep(0.2)
PY
}
# scenario NAME RETENTION_BYTES MIB: one run; prints the catch-up seconds.
scenario() {
    start_cluster
    create_big "$2"
    until [ -n "$(big_row 1)" ] && [ "$(big_row 1 | awk '{print $4}')" != "0" ]; do sleep 0.2; done
    local leader victim others="" i
    leader=$(big_row 1 | awk '{print $4}')
    victim=$(( leader % 3 + 1 ))
    for i in 1 2 3; do [ "$i" != "$victim" ] && others="$others${others:+,}127.0.0.1:${KPORT[$i]}"; done
    kill -9 "${NODE_PID[$victim]}"; wait "${NODE_PID[$victim]}" 2>/dev/null || true
    "$BIN-load" --bootstrap "$others" --topic big --partitions 1 --replication 3 --records $(($3 * 1024)) --size 1024 --acks all --no-consume > "$WORK/load.out"
    if [ "$2" != "-1" ]; then
        # Retention has run when the leader's log holds about KEPT_MIB.
        until [ "$(du -sm "$WORK/n$leader/partitions/big-0" | cut -f1)" -le $((KEPT_MIB + 40)) ]; do sleep 0.5; done
    fi
    local last; last=$(big_row "$leader" | awk '{print $8}')
    local t0 t1; t0=$(date +%s%N)
    start_node "$victim"
    until row=$(big_row "$victim") && [ -n "$row" ] && [ "$(echo "$row" | awk '{print $8}')" -ge "$last" ]; do sleep 0.05; done
    t1=$(date +%s%N)
    local metrics installs
    metrics=$(sed -n 's/.*metrics on \([0-9.:]*\).*/\1/p' "$WORK/n$victim.out")
    installs=$(curl -s "http://$metrics/metrics" | awk '/^sluice_snapshot_installs_total\{kind="partition"/ {print $2}')
    echo "$1: missed $3 MiB, node $victim caught up to entry $last in $(python3 -c "print(round(($t1 - $t0) / 1e9, 2))") s, partition snapshots installed: ${installs:-0}, its log now $(du -sm "$WORK/n$victim/partitions/big-0" | cut -f1) MiB" >&2
    python3 -c "print(($t1 - $t0) / 1e9)"
    stop_cluster
}
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
snap=(); replay=()
for _ in $(seq "$REPS"); do
    snap+=("$(scenario snapshot $((KEPT_MIB << 20)) "$MISSED_MIB")")
    replay+=("$(scenario replay -1 "$KEPT_MIB")")
done
s=$(median "${snap[@]}"); r=$(median "${replay[@]}")
echo "catch-up after ${MISSED_MIB} MiB missed (retention keeps ${KEPT_MIB} MiB): median ${s} s (all: ${snap[*]})"
echo "reference, ${KEPT_MIB} MiB missed and replayed from the log: median ${r} s (all: ${replay[*]})"
python3 -c "print('ratio snapshot / reference: %.2f' % ($s / $r))"
