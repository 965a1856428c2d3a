#!/usr/bin/env bash
# TLS throughput on one node: kcat (librdkafka with OpenSSL) produces RECORDS records of SIZE
# bytes at acks=1 to a broker speaking plain text and to one speaking TLS (a P-256 self-signed
# certificate), alternately, REPS times, each on a fresh data dir; odd repetitions start with
# plain text, even ones with TLS, so neither always writes right after the other's data was
# deleted. Reports the median MB/s of each and their ratio, taken under the same conditions.
#
#   bench/tls.sh                       # defaults below
#   RECORDS=500000 REPS=5 bench/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-1000000}
SIZE=${SIZE:-1024}
REPS=${REPS:-3}
WORK=${WORK:-$PWD/target/bench-work-tls}
BROKER=${BROKER:-target/release/sluice}

source bench/common.sh
need_kcat
PORT=$(free_port)
# The producer's first metadata request creates the topic (one partition).
export SLUICE_KAFKA__AUTO_CREATE_TOPICS=true

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
python3 -c "
import sys
line = b'x' * ($SIZE - 1) + b'\n'
with open('$WORK/records.txt', 'wb') as f:
    for _ in range($RECORDS):
        f.write(line)
"

produce() { # name, extra kcat args...
    local name=$1; shift
    local started ended
    started=$(date +%s.%N)
    kcat -P -b "127.0.0.1:$PORT" -t "bench" -l "$WORK/records.txt" -X broker.address.family=v4 \
        -X acks=1 -X linger.ms=5 -X batch.size=1000000 -X queue.buffering.max.kbytes=1048576 "$@"
    ended=$(date +%s.%N)
    python3 -c "s=$ended-$started; print(f'$name records_per_sec={$RECORDS/s:.0f} mb_per_sec={$RECORDS*$SIZE/s/1e6:.1f} seconds={s:.2f}')" | tee -a "$WORK/$name.log"
}

run_plain() {
    start_broker "$BROKER" "$PORT"
    produce plain
    stop_broker
}
run_tls() {
    export SLUICE_KAFKA__TLS__CERT_FILE="$WORK/cert.pem" SLUICE_KAFKA__TLS__KEY_FILE="$WORK/key.pem"
    start_broker "$BROKER" "$PORT"
    unset SLUICE_KAFKA__TLS__CERT_FILE SLUICE_KAFKA__TLS__KEY_FILE
    produce tls -X security.protocol=ssl -X ssl.ca.location="$WORK/cert.pem"
    stop_broker
}
for rep in $(seq "$REPS"); do
    if [ $((rep % 2)) -eq 1 ]; then run_plain; run_tls; else run_tls; run_plain; fi
done

PLAIN=$(median $(field mb_per_sec < "$WORK/plain.log"))
TLS=$(median $(field mb_per_sec < "$WORK/tls.log"))
echo
echo "| listener | MB/s (median of $REPS) | runs |"
echo "|---|---|---|"
echo "| plain text | $PLAIN | $(field mb_per_sec < "$WORK/plain.log" | paste -sd, -) |"
echo "| TLS | $TLS | $(field mb_per_sec < "$WORK/tls.log" | paste -sd, -) |"
echo "TLS / plain text: $(python3 -c "print(round($TLS/$PLAIN,3))")"
