# Shared by the benchmark scripts: sourced after `cd` to the repository root with WORK set.
# Builds the release broker and load generator, makes $WORK afresh and removes it (and the
# broker) on exit; starts and stops one broker (BROKER_PID), and reads numbers out of
# sluice-load's output.

cargo build --release --quiet --bin sluice --bin sluice-load
rm -rf "$WORK"
mkdir -p "$WORK"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

BROKER_PID=""
# start_broker BINARY PORT: a single node on a fresh $WORK/data, its output in $WORK/broker.*.
start_broker() {
    rm -rf "$WORK/data"
    "$1" serve --data-dir "$WORK/data" --kafka-addr "127.0.0.1:$2" --metrics-addr 127.0.0.1:0 --rpc-addr 127.0.0.1:0 \
        > "$WORK/broker.out" 2> "$WORK/broker.err" &
    BROKER_PID=$!
    for _ in $(seq 100); do grep -q "kafka listening" "$WORK/broker.out" 2>/dev/null && break; sleep 0.1; done
}
stop_broker() {
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=""
}
cleanup() {
    stop_broker || true
    rm -rf "$WORK"
}
trap cleanup EXIT

need_kcat() { command -v kcat >/dev/null || { echo "kcat is needed (scripts/test installs it)" >&2; exit 1; }; }
