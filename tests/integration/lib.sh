# Shared helpers for integration tests (sourced by tests/integration/t_*.sh).
#
# Every test gets a private temp dir ($T), starts its processes through the helpers below
# (which record their PIDs) and on exit ends exactly those processes, by PID. Traffic goes to
# 127.0.0.1 only. Ports are picked free by the kernel.
set -euo pipefail

AE_BIN=${AE_BIN:?AE_BIN (the build directory) must be set}
AE_SRCDIR=${AE_SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
ANYEDGE=$AE_BIN/anyedge
ANYEDGECTL=$AE_BIN/anyedgectl
ORIGIN=$AE_BIN/ae-origin

T=$(mktemp -d "${TMPDIR:-/tmp}/ae-test.XXXXXX")
AE_PIDS=()
AE_TEST_NAME=$(basename "$0" .sh)

log() { printf '[%s] %s\n' "$AE_TEST_NAME" "$*"; }

ae_cleanup() {
    local rc=$? p
    for p in "${AE_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${AE_PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$p" 2>/dev/null || true
    done
    if [ $rc -ne 0 ]; then
        # Show what the daemons said: the first thing to read when a test fails.
        for f in "$T"/*.log; do
            [ -f "$f" ] || continue
            printf -- '--- %s (last 40 lines)\n' "$f"
            tail -n 40 "$f"
        done
        printf '[%s] FAILED (rc=%d)\n' "$AE_TEST_NAME" "$rc"
    else
        printf '[%s] passed\n' "$AE_TEST_NAME"
    fi
    rm -rf "$T"
    exit $rc
}
trap ae_cleanup EXIT

fail() {
    printf '[%s] FAIL: %s\n' "$AE_TEST_NAME" "$*" >&2
    exit 1
}

# assert_eq ACTUAL EXPECTED WHAT
assert_eq() {
    [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"
}

# assert_ge ACTUAL MIN WHAT (integers)
assert_ge() {
    [ "$1" -ge "$2" ] || fail "$3: expected >= $2, got $1"
}

# assert_le ACTUAL MAX WHAT (integers)
assert_le() {
    [ "$1" -le "$2" ] || fail "$3: expected <= $2, got $1"
}

# assert_match STRING PATTERN WHAT: grep -E PATTERN in the string.
assert_match() {
    grep -Eq -- "$2" <<<"$1" || fail "$3: '$(head -c 300 <<<"$1")' does not match /$2/"
}

# Prints a TCP (default) or UDP port on 127.0.0.1 that is free right now.
free_port() {
    python3 - "${1:-tcp}" <<'EOF'
import socket, sys
t = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, t)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

# wait_port PORT [SECONDS]: waits until 127.0.0.1:PORT accepts TCP connections.
wait_port() {
    local port=$1 secs=${2:-10} i
    for i in $(seq $((secs * 20))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    fail "nothing listens on 127.0.0.1:$port after ${secs}s"
}

# wait_until SECONDS CMD...: polls CMD every 50 ms until it succeeds.
wait_until() {
    local secs=$1 i
    shift
    for i in $(seq $((secs * 20))); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# gen_cert NAME [CN]: writes $T/NAME.pem and $T/NAME.key (ECDSA P-256, self-signed,
# SAN localhost + 127.0.0.1 + CN).
gen_cert() {
    local name=$1 cn=${2:-localhost}
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$cn" -addext "subjectAltName=DNS:$cn,DNS:localhost,IP:127.0.0.1" \
        -keyout "$T/$name.key" -out "$T/$name.pem" 2>/dev/null
}

# start_bg NAME CMD...: starts CMD in the background with output in $T/NAME.log, records the
# PID and stores it in the variable PID_<NAME>.
start_bg() {
    local name=$1
    shift
    "$@" >"$T/$name.log" 2>&1 &
    AE_PIDS+=($!)
    printf -v "PID_$name" '%s' $!
}

# start_origin NAME PORT [ae-origin args...]: an ae-origin on 127.0.0.1:PORT with id NAME.
start_origin() {
    local name=$1 port=$2
    shift 2
    start_bg "$name" "$ORIGIN" -l "127.0.0.1:$port" -i "$name" -q "$@"
    wait_port "$port"
}

# start_edge NAME CONFIG [wait-port]: runs anyedge -c CONFIG; waits for the admin port
# ($ADMIN_PORT if set) or the given port.
start_edge() {
    local name=$1 conf=$2 port=${3:-${ADMIN_PORT:-}}
    start_bg "$name" "$ANYEDGE" -c "$conf"
    if [ -n "$port" ]; then
        wait_port "$port"
    fi
}

# stop_pid PID [SECONDS]: SIGTERM and wait for exit; fails if it outlives SECONDS (default 10).
stop_pid() {
    local pid=$1 secs=${2:-10} i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq $((secs * 20))); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    fail "pid $pid did not exit within ${secs}s of SIGTERM"
}

# exit_status PID: waits for a background child and prints its exit status.
exit_status() {
    local rc=0
    wait "$1" || rc=$?
    printf '%s' "$rc"
}

# metric NAME_WITH_LABELS: prints the value of that sample from $ADMIN_PORT's /metrics (0 when
# absent). Example: metric 'anyedge_handshakes_total{type="resumed"}'
metric() {
    curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk -v k="$1" '$1 == k { v = $2 } END { printf "%d", (v == "" ? 0 : v) }'
}

# write_conf FILE: writes the standard single-listener config used by most tests, from the
# variables EDGE_PORT, ADMIN_PORT, UPSTREAMS (space-separated ports), WORKERS (default 2) and
# EXTRA (YAML appended at top level, optional). Cert is $T/edge.{pem,key}.
write_conf() {
    local f=$1 servers="" p
    for p in $UPSTREAMS; do
        servers="$servers${servers:+, }\"127.0.0.1:$p\""
    done
    cat >"$f" <<EOF
site: { id: 1, name: test }
workers: ${WORKERS:-2}
tls: { cert: $T/edge.pem, key: $T/edge.key }
listeners:
  - { name: main, protocol: tcp, address: "127.0.0.1:$EDGE_PORT", upstream: pool ${LISTENER_EXTRA:-} }
upstreams:
  pool:
    servers: [ $servers ]
    ${UPSTREAM_EXTRA:-}
admin: { address: "127.0.0.1:$ADMIN_PORT" }
${EXTRA:-}
EOF
}

# edge_curl PATH [curl args...]: HTTPS request through the edge; prints the body.
edge_curl() {
    local path=$1
    shift
    curl -sk --max-time 10 "$@" "https://127.0.0.1:$EDGE_PORT$path"
}

# s_get [s_client args...]: GET /id with Connection: close through the edge with openssl
# s_client; prints s_client's whole output (handshake summary and response). Never fails.
s_get() {
    printf 'GET /id HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
        timeout 10 openssl s_client -connect "127.0.0.1:$EDGE_PORT" -ign_eof "$@" 2>&1 || true
}
