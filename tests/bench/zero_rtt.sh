#!/usr/bin/env bash
# What quic.early_data_shared: hold costs a 0-RTT GET: the time from the request's arrival in
# 0-RTT to the end of its response at the edge (the access log's duration_ms; the response is
# 2 bytes, so this is the edge's time to first byte plus a few µs), for each mode in the same run:
#   off        no hold (each site on its own)
#   hold       hold, Redis direct (loopback, ~0.1 ms RTT)
#   hold_slow  hold, Redis behind a proxy adding REDIS_MS milliseconds of RTT
# with the client behind a proxy adding CLIENT_MS of RTT (the handshake completes one client
# RTT after the edge's first flight: that is the other way out of the hold).
#
#   tests/bench/zero_rtt.sh [-r ROUNDS] [-b BIN_DIR] [-o OUT] [--client-ms MS] [--redis-ms MS]
#
# ROUNDS (default 10): 0-RTT requests per mode and round... the modes alternate, 3 rounds.
# Prints one line per mode: requests, median and p90 duration_ms, how the held ones were
# released (redis / handshake). Loopback only; every process is ended by PID on exit.
set -euo pipefail
BENCH_TAG=zero_rtt
. "$(dirname "$0")/common.sh"

ROUNDS=10
CLIENT_MS=20
REDIS_MS=20
AE_BIN=${AE_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/build}
OUT=
while [ $# -gt 0 ]; do
    case "$1" in
    -r) ROUNDS=$2; shift 2 ;;
    -b) AE_BIN=$2; shift 2 ;;
    -o) OUT=$2; shift 2 ;;
    --client-ms) CLIENT_MS=$2; shift 2 ;;
    --redis-ms) REDIS_MS=$2; shift 2 ;;
    -h | --help) bench_usage; exit 0 ;;
    *) bench_usage >&2; exit 2 ;;
    esac
done
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 50 ] || die "rounds: 1..50"
[[ "$CLIENT_MS" =~ ^[0-9]+$ ]] && [ "$CLIENT_MS" -le 500 ] || die "--client-ms: 0..500"
[[ "$REDIS_MS" =~ ^[0-9]+$ ]] && [ "$REDIS_MS" -le 500 ] || die "--redis-ms: 0..500"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
ANYEDGE=$AE_BIN/anyedge
ORIGIN=$AE_BIN/ae-origin
[ -x "$ANYEDGE" ] || die "no $ANYEDGE (build first)"
[ -x "$ORIGIN" ] || die "no $ORIGIN"
command -v gtlsclient >/dev/null || die "gtlsclient (ngtcp2-client) is not installed"
command -v redis-server >/dev/null || die "redis-server is not installed"

bench_tmpdir zero_rtt
bench_cert
read -r ORIGIN_PORT REDIS_PORT SLOW_PORT ADMIN_PORT QPORT CPORT < <(free_ports 4 2)
bench_start_origin
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$T/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT" || die "redis-server did not start"
python3 "$SRC/tests/tools/delay_proxy.py" tcp "$SLOW_PORT" "$REDIS_PORT" $((REDIS_MS / 2)).$((REDIS_MS % 2 * 5)) 3600 \
    >"$T/slow.log" 2>&1 &
PIDS+=($!)
wait_port "$SLOW_PORT" || die "the Redis delay proxy did not start"
python3 "$SRC/tests/tools/delay_proxy.py" udp "$CPORT" "$QPORT" $((CLIENT_MS / 2)).$((CLIENT_MS % 2 * 5)) 3600 \
    >"$T/client_proxy.log" 2>&1 &
PIDS+=($!)

# conf MODE: the edge's config for a mode.
conf() {
    local redis=$REDIS_PORT shared=off
    case "$1" in
    hold) shared=hold ;;
    hold_slow) shared=hold; redis=$SLOW_PORT ;;
    esac
    cat >"$T/edge.yaml" <<EOF
site: { id: 1, name: bench }
workers: 1
tls: { cert: $T/cert.pem, key: $T/key.pem }
listeners:
  - { name: h3, protocol: quic, address: "127.0.0.1:$QPORT", upstream: pool }
upstreams:
  pool: { servers: [ "127.0.0.1:$ORIGIN_PORT" ] }
admin: { address: "127.0.0.1:$ADMIN_PORT" }
state: { redis: "redis://127.0.0.1:$redis/0", connect_timeout: 2s, command_timeout: 2s }
quic: { early_data: on, early_data_shared: $shared }
timeouts: { drain: 1s }
EOF
}
EDGE_PID=
edge_stop() {
    [ -n "$EDGE_PID" ] || return 0
    kill -TERM "$EDGE_PID" 2>/dev/null || true
    wait "$EDGE_PID" 2>/dev/null || true
    EDGE_PID=
}
edge_start() {
    conf "$1"
    "$ANYEDGE" -c "$T/edge.yaml" >>"$T/edge_$1.log" 2>&1 &
    EDGE_PID=$!
    PIDS+=("$EDGE_PID")
    wait_port "$ADMIN_PORT" || die "anyedge did not start ($1)"
    for _ in $(seq 100); do # the state connections are up
        [ "$(bench_metrics "$ADMIN_PORT" anyedge_redis_connected)" = 1 ] && break
        sleep 0.05
    done
    sleep 0.3
}
# gtc MODE TAG: one gtlsclient run through the client proxy; the session file is renewed.
gtc() {
    timeout 20 gtlsclient -q --exit-on-all-streams-close --wait-for-ticket \
        --session-file="$T/sess" --tp-file="$T/tp" 127.0.0.1 "$CPORT" \
        "https://localhost:$QPORT/id?$2" >"$T/gtc.out" 2>&1 || die "gtlsclient failed ($1): $(tail -n 3 "$T/gtc.out")"
}

MODES="off hold hold_slow"
for round in 1 2 3; do
    for mode in $MODES; do
        edge_start "$mode"
        rm -f "$T/sess" "$T/tp"
        gtc "$mode" "ticket" # a ticket from this process (earlier ones predate its anti-replay)
        for i in $(seq "$ROUNDS"); do
            gtc "$mode" "$mode-$round-$i"
        done
        m=$(bench_metrics "$ADMIN_PORT" anyedge_quic_0rtt_accepted_total \
            anyedge_quic_0rtt_released_redis_total anyedge_quic_0rtt_released_handshake_total)
        echo "$mode $m" >>"$T/released"
        edge_stop
    done
done

{
    printf 'client RTT +%s ms, Redis RTT +%s ms (hold_slow), %s 0-RTT GETs per mode\n' \
        "$CLIENT_MS" "$REDIS_MS" $((ROUNDS * 3))
    printf '%-10s %8s %12s %12s %10s %10s\n' mode requests median_ms p90_ms by_redis by_hs
    for mode in $MODES; do
        grep -h "path=/id?$mode-" "$T"/edge_"$mode".log | grep -o 'duration_ms=[0-9.]*' |
            cut -d= -f2 | sort -n >"$T/d_$mode" || true
        n=$(wc -l <"$T/d_$mode")
        [ "$n" -gt 0 ] || die "no access log lines for $mode"
        med=$(awk -v n="$n" 'NR == int((n + 1) / 2) { print }' "$T/d_$mode")
        p90=$(awk -v n="$n" 'NR == int(n * 0.9 + 0.999) { print }' "$T/d_$mode")
        read -r acc rr hs < <(awk -v m="$mode" '$1 == m { a += $2; r += $3; h += $4 } END { print a, r, h }' "$T/released")
        printf '%-10s %8s %12s %12s %10s %10s\n' "$mode" "$n" "$med" "$p90" "$rr" "$hs"
    done
} | tee "${OUT:-/dev/null}"
