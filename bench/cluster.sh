#!/usr/bin/env bash
# Replication benchmark: a single release `sluice` at acks=1 as the reference, then three nodes
# of a cluster on this same machine (same disk) with a topic of replication factor 3 at
# acks=all, 1 KiB records. Reports throughput as a ratio of the single-node acks=1 run taken in
# the same repetition (every byte hits the one disk three times, so ~1/3 is ideal), p50/p99
# produce latency, and the bytes each node wrote to disk (/proc/PID/io write_bytes) per byte
# produced. Then sluice-failover measures kill -9 of the leader to the next acknowledged write.
#
# With RPC_TLS=1 the cluster's nodes talk over mutual TLS (a P-256 cluster CA and one
# certificate per node, made with openssl); KILLS=0 skips the failover runs.
#
#   bench/cluster.sh                       # defaults below
#   RECORDS=300000 REPS=5 KILLS=20 bench/cluster.sh
#   RPC_TLS=1 KILLS=0 bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-500000}
PARTITIONS=${PARTITIONS:-3}
REPS=${REPS:-3}
KILLS=${KILLS:-12}
RPC_TLS=${RPC_TLS:-0}
WORK=${WORK:-$PWD/target/bench-cluster}

cargo build --release --quiet --bin sluice --bin sluice-load --bin sluice-failover
rm -rf "$WORK"
mkdir -p "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
written() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }
wait_ready() { for _ in $(seq 100); do grep -q "kafka listening" "$1" 2>/dev/null && return; sleep 0.1; done; echo "node did not start: $1" >&2; exit 1; }

if [ "$RPC_TLS" = 1 ]; then
    mkdir -p "$WORK/pki"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=bench CA" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$WORK/pki/ca.key" -out "$WORK/pki/ca.pem" 2>/dev/null
    for i in 1 2 3; do
        openssl req -new "${ec[@]}" -subj "/CN=node-$i" -keyout "$WORK/pki/node-$i.key" -out "$WORK/pki/node-$i.csr" 2>/dev/null
        printf 'subjectAltName=DNS:node-%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' "$i" > "$WORK/pki/node-$i.ext"
        openssl x509 -req -in "$WORK/pki/node-$i.csr" -CA "$WORK/pki/ca.pem" -CAkey "$WORK/pki/ca.key" -CAcreateserial -days 2 \
            -extfile "$WORK/pki/node-$i.ext" -out "$WORK/pki/node-$i.pem" 2>/dev/null
    done
fi
# The environment of node $1: its rpc certificate when RPC_TLS=1.
node_env() {
    if [ "$RPC_TLS" = 1 ]; then
        echo "SLUICE_RPC__TLS__CA_FILE=$WORK/pki/ca.pem SLUICE_RPC__TLS__CERT_FILE=$WORK/pki/node-$1.pem SLUICE_RPC__TLS__KEY_FILE=$WORK/pki/node-$1.key"
    fi
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), disk under $WORK: $(df -h "$WORK" | awk 'NR==2 {print $1}')"

start_single() { # rep
    local port; port=$(free_port)
    target/release/sluice serve --data-dir "$WORK/single-$1" --kafka-addr "127.0.0.1:$port" --metrics-addr 127.0.0.1:0 --rpc-addr 127.0.0.1:0 \
        > "$WORK/single-$1.out" 2> "$WORK/single-$1.err" &
    PIDS+=($!)
    wait_ready "$WORK/single-$1.out"
    SINGLE="127.0.0.1:$port"
}

start_cluster() { # rep
    local peers="" i
    for i in 1 2 3; do KPORT[$i]=$(free_port); RPORT[$i]=$(free_port); peers="$peers${peers:+,}$i@127.0.0.1:${RPORT[$i]}"; done
    for i in 1 2 3; do
        env $(node_env "$i") target/release/sluice serve --node-id "$i" --data-dir "$WORK/c$1-n$i" --kafka-addr "127.0.0.1:${KPORT[$i]}" \
            --rpc-addr "127.0.0.1:${RPORT[$i]}" --metrics-addr 127.0.0.1:0 --peers "$peers" \
            > "$WORK/c$1-n$i.out" 2> "$WORK/c$1-n$i.err" &
        NODE_PID[$i]=$!
        PIDS+=($!)
    done
    for i in 1 2 3; do wait_ready "$WORK/c$1-n$i.out"; done
    CLUSTER="127.0.0.1:${KPORT[1]},127.0.0.1:${KPORT[2]},127.0.0.1:${KPORT[3]}"
    sleep 3 # a metadata leader, broker registration, the offsets topic
}

for rep in $(seq "$REPS"); do
    start_single "$rep"
    target/release/sluice-load --bootstrap "$SINGLE" --topic "single-$rep" --partitions "$PARTITIONS" --records "$RECORDS" --size 1024 --acks 1 | tee -a "$WORK/single.log"
    kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
    start_cluster "$rep"
    before=0; for i in 1 2 3; do before=$((before + $(written "${NODE_PID[$i]}"))); done
    target/release/sluice-load --bootstrap "$CLUSTER" --topic "rf3-$rep" --partitions "$PARTITIONS" --replication 3 --records "$RECORDS" --size 1024 --acks all --no-consume \
        | tee -a "$WORK/rf3.log"
    sync
    after=0; for i in 1 2 3; do after=$((after + $(written "${NODE_PID[$i]}"))); done
    acked=$(tail -1 "$WORK/rf3.log" | field acked)
    # Bytes on disk per byte produced, per replica: what the three nodes wrote over 3 copies.
    python3 -c "print('disk_write_ratio=%.3f' % (($after-$before)/($acked*1024*3)))" | tee -a "$WORK/ratio.log"
    for i in 1 2 3; do echo "peak_rss_mib=$(($(awk '/^VmHWM/ {print $2}' "/proc/${NODE_PID[$i]}/status") / 1024))" >> "$WORK/rss.log"; done
    for i in 1 2 3; do kill "${NODE_PID[$i]}"; done
    wait 2>/dev/null || true
    PIDS=()
done

S_MBS=$(median $(field mb_per_sec < <(grep '^produce' "$WORK/single.log")))
C_MBS=$(median $(field mb_per_sec < "$WORK/rf3.log"))
echo
echo "| run | records/s | MB/s | ratio to single-node acks=1 | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|"
echo "| single node, acks=1 | $(median $(field records_per_sec < "$WORK/single.log")) | $S_MBS | 1 | $(median $(field p50_ms < "$WORK/single.log")) | $(median $(field p99_ms < "$WORK/single.log")) |"
echo "| 3 nodes, RF=3, acks=all | $(median $(field records_per_sec < "$WORK/rf3.log")) | $C_MBS | $(python3 -c "print(round($C_MBS/$S_MBS,3))") | $(median $(field p50_ms < "$WORK/rf3.log")) | $(median $(field p99_ms < "$WORK/rf3.log")) |"
echo
echo "single-node MB/s per rep: $(field mb_per_sec < <(grep '^produce' "$WORK/single.log") | tr '\n' ' ')"
echo "cluster MB/s per rep: $(field mb_per_sec < "$WORK/rf3.log" | tr '\n' ' ')"
echo "disk bytes written per byte produced per replica: $(field disk_write_ratio < "$WORK/ratio.log" | tr '\n' ' ') (median $(median $(field disk_write_ratio < "$WORK/ratio.log")))"
echo "peak RSS per cluster node (MiB): $(field peak_rss_mib < "$WORK/rss.log" | tr '\n' ' ')"
echo "rpc between nodes: $([ "$RPC_TLS" = 1 ] && echo "mutual TLS" || echo "plain text")"
echo
if [ "$KILLS" -gt 0 ]; then
    target/release/sluice-failover --binary target/release/sluice --work "$WORK/failover" --kills "$KILLS"
fi
