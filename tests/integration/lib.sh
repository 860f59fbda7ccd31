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

# fsize FILE: its size in bytes (0 when absent). wait_bytes FILE N SECS: until FILE holds at
# least N bytes (1 after SECS).
fsize() { stat -c %s "$1" 2>/dev/null || echo 0; }
wait_bytes() {
    local f=$1 n=$2 secs=$3
    for _ in $(seq $((secs * 50))); do
        [ "$(fsize "$f")" -ge "$n" ] && return 0
        sleep 0.02
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
# variables EDGE_PORT, ADMIN_PORT, UPSTREAMS (space-separated ports), WORKERS (default 2),
# ADMIN_EXTRA (more keys of the admin mapping, optional) and EXTRA (YAML appended at top level,
# optional). Cert is $T/edge.{pem,key}.
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
admin: { address: "127.0.0.1:$ADMIN_PORT"${ADMIN_EXTRA:+, $ADMIN_EXTRA} }
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

# ---- persistent keep-alive HTTPS clients, timing, wrk (added for reload/drain tests) ----

# now_ms: wall clock in milliseconds.
now_ms() {
    local t=${EPOCHREALTIME/[.,]/}
    printf '%s' "${t:0:-3}"
}

# tcp_refused PORT: succeeds when a TCP connect to 127.0.0.1:PORT fails (nothing accepts).
tcp_refused() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ka_open NAME PORT: opens one persistent TLS connection to 127.0.0.1:PORT (no certificate
# check) in a background python process (PID in PID_<NAME>, recorded for cleanup) and waits for
# the handshake. Fails the test when the connection cannot be made.
# ka_get NAME PATH: sends "GET PATH" (HTTP/1.1 keep-alive) on that same connection and prints
# "STATUS BODY", or "ERR reason" when the connection is gone.
# ka_peek NAME: prints "open" or "closed" (the server closed the connection).
# ka_close NAME: closes the connection and ends the process.
ka_open() {
    local name=$1 port=$2
    rm -f "$T/$name.fifo" "$T/$name.resp"
    mkfifo "$T/$name.fifo"
    cat >"$T/ka_client.py" <<'EOF'
import os, select, socket, ssl, sys
base, port = sys.argv[1], int(sys.argv[2])
def reply(text):
    with open(base + ".resp.tmp", "w") as f:
        f.write(text)
    os.rename(base + ".resp.tmp", base + ".resp")
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=15),
                        server_hostname="localhost")
    reply("connected")
except Exception as e:
    reply("ERR connect: %s" % e)
    sys.exit(1)
buf = b""
def recv_more():
    global buf
    try:
        d = s.recv(65536)
    except (ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
        d = b""
    if not d:
        raise EOFError("closed by peer")
    buf += d
def get(path):
    global buf
    s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path).encode())
    while b"\r\n\r\n" not in buf:
        recv_more()
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()[1]
    clen = 0
    for l in lines[1:]:
        k, _, v = l.partition(":")
        if k.strip().lower() == "content-length":
            clen = int(v)
    while len(buf) < clen:
        recv_more()
    body, buf = buf[:clen], buf[clen:]
    return "%s %s" % (status, body.decode("latin-1"))
def peek():
    if s.pending():
        return "open"
    r, _, _ = select.select([s], [], [], 0.2)
    if not r:
        return "open"
    try:
        s.setblocking(False)
        d = s.recv(65536)
        s.setblocking(True)
    except ssl.SSLWantReadError:
        s.setblocking(True)
        return "open"
    except Exception:
        return "closed"
    return "closed" if not d else "open"
while True:
    with open(base + ".fifo") as f:
        for line in f:
            cmd = line.rstrip("\n")
            if cmd == "close":
                s.close()
                reply("closed")
                sys.exit(0)
            if cmd == "peek":
                reply(peek())
                continue
            try:
                reply(get(cmd))
            except Exception as e:
                reply("ERR %s: %s" % (type(e).__name__, e))
EOF
    start_bg "$name" python3 -u "$T/ka_client.py" "$T/$name" "$port"
    wait_until 15 test -f "$T/$name.resp" || fail "ka_open $name: no answer from the client"
    local r
    r=$(cat "$T/$name.resp")
    [ "$r" = connected ] || fail "ka_open $name: $r"
}

ka_cmd() {
    local name=$1 cmd=$2
    rm -f "$T/$name.resp"
    printf '%s\n' "$cmd" >"$T/$name.fifo"
    wait_until 20 test -f "$T/$name.resp" || { echo "ERR no answer"; return 0; }
    cat "$T/$name.resp"
}
ka_get() { ka_cmd "$1" "$2"; }
ka_peek() { ka_cmd "$1" peek; }
ka_close() { ka_cmd "$1" close >/dev/null; }

# wrk_check FILE WHAT: strict reading of wrk's output in FILE: at least one request, no
# "Socket errors" line (connect/read/write/timeout all 0), no "Non-2xx" line. Prints the
# number of requests.
wrk_check() {
    local f=$1 what=$2 n
    grep -q 'requests in' "$f" || fail "$what: wrk printed no summary: $(cat "$f")"
    n=$(awk '/requests in/ { print $1 }' "$f")
    if grep -q 'Socket errors' "$f"; then
        fail "$what: wrk socket errors: $(grep 'Socket errors' "$f")"
    fi
    if grep -q 'Non-2xx' "$f"; then
        fail "$what: wrk non-2xx responses: $(grep 'Non-2xx' "$f")"
    fi
    assert_ge "$n" 1 "$what: wrk requests"
    printf '%s' "$n"
}

# ---- helpers for relay and hostile-client tests (now_ms is defined above) ----

# fd_count PID: number of open file descriptors of PID.
fd_count() { ls "/proc/$1/fd" | wc -l; }

# metric_ge NAME MIN / metric_eq NAME VALUE: metric tests for wait_until.
metric_ge() { [ "$(metric "$1")" -ge "$2" ]; }
metric_eq() { [ "$(metric "$1")" = "$2" ]; }

# kv KEY TEXT: the value of the first "KEY=value" line of TEXT (tls_client's output format).
kv() { awk -v k="$1" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); exit }' <<<"$2"; }

# tls_client PORT [options]: a scripted TLS client (python3 ssl over a memory BIO, so the
# close_notify can be sent without closing the read side). Never fails; prints key=value lines:
#   result (ok | handshake_error:... | timeout | error:...), hs_ms, local_port, version, alpn,
#   sent, sent_sha, recv, recv_sha, eof (notify | fin | rst | none), eof_ms (since connect),
#   body (repr of the first --show bytes received), recv_at_close (bytes received when the
#   client started its close).
# Options:
#   --sni NAME        server name (default localhost; "" for none)
#   --alpn a,b        ALPN protocols to offer
#   --trickle N:MS    after the handshake send "\r\n" N times, MS ms apart
#   --data STR        then send STR (Python escapes such as \r\n are decoded)
#   --send N          then send N random bytes (hashed: sent_sha)
#   --close MODE      then: notify (close_notify + TCP FIN), fin (TCP FIN only), none
#   --timeout S       overall deadline (default 30); result=timeout when it passes
#   --show N          print the first N received bytes as body=
# It reads until the server ends the stream (close_notify, FIN or RST) or the deadline.
tls_client() {
    python3 - "$@" <<'EOF'
import argparse, hashlib, os, select, socket, ssl, sys, time
ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("--sni", default="localhost")
ap.add_argument("--alpn")
ap.add_argument("--trickle", default="0:0")
ap.add_argument("--data", default="")
ap.add_argument("--send", type=int, default=0)
ap.add_argument("--close", choices=["notify", "fin", "none"], default="none")
ap.add_argument("--timeout", type=float, default=30.0)
ap.add_argument("--show", type=int, default=0)
a = ap.parse_args()
out = {"result": "ok", "hs_ms": -1, "local_port": 0, "version": "", "alpn": "", "sent": 0,
       "recv": 0, "eof": "none", "eof_ms": -1}
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if hasattr(ssl, "OP_IGNORE_UNEXPECTED_EOF"):
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # tell a bare FIN from a close_notify
if a.alpn:
    ctx.set_alpn_protocols(a.alpn.split(","))
t0 = time.monotonic()
deadline = t0 + a.timeout
ms = lambda: int((time.monotonic() - t0) * 1000)
head = a.data.encode("latin1").decode("unicode_escape").encode("latin1")
tn, tms = (int(x) for x in a.trickle.split(":"))
next_trickle = 0.0
remaining = a.send
sha_tx, sha_rx = hashlib.sha256(), hashlib.sha256()
shown = b""
raw = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
raw.setblocking(False)
out["local_port"] = raw.getsockname()[1]
inc, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, outb, server_hostname=(a.sni or None))
pending = b""
hs = close_started = shut = tcp_eof = False
def end(kind):
    out["eof"], out["eof_ms"] = kind, ms()
try:
    while True:
        now = time.monotonic()
        if now > deadline:
            out["result"] = "timeout"
            break
        if not hs:
            try:
                obj.do_handshake()
                hs = True
                out["hs_ms"], out["version"] = ms(), obj.version()
                out["alpn"] = obj.selected_alpn_protocol() or ""
                next_trickle = time.monotonic() + tms / 1000.0
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLError, OSError) as e:
                out["result"] = "handshake_error:" + type(e).__name__ + ":" + str(e).replace("\n", " ")
                break
        if hs:
            # Read everything decryptable first (also before unwrap(), which drops app data).
            while True:
                try:
                    d = obj.read(262144)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    end("notify")
                    break
                except (ssl.SSLEOFError, ssl.SSLSyscallError):
                    end("fin")
                    break
                if not d:
                    end("notify")
                    break
                out["recv"] += len(d)
                sha_rx.update(d)
                if len(shown) < a.show:
                    shown += d[: a.show - len(shown)]
            if out["eof"] != "none":
                break
            if tn > 0:
                if time.monotonic() >= next_trickle:
                    obj.write(b"\r\n")
                    out["sent"] += 2
                    sha_tx.update(b"\r\n")
                    tn -= 1
                    next_trickle = time.monotonic() + tms / 1000.0
            else:
                while len(pending) + outb.pending < 262144 and (head or remaining):
                    if head:
                        chunk, head = head[:16384], head[16384:]
                    else:
                        chunk = os.urandom(min(remaining, 16384))
                        remaining -= len(chunk)
                    obj.write(chunk)
                    out["sent"] += len(chunk)
                    sha_tx.update(chunk)
                if not head and not remaining and not close_started and a.close != "none":
                    close_started = True
                    out["recv_at_close"] = out["recv"]
                    if a.close == "notify":
                        try:
                            obj.unwrap()
                        except ssl.SSLWantReadError:
                            pass
        pending += outb.read()
        while pending:
            try:
                n = raw.send(pending)
            except BlockingIOError:
                break
            pending = pending[n:]
        if close_started and not pending and not shut:
            raw.shutdown(socket.SHUT_WR)
            shut = True
        if tcp_eof:
            if not hs:
                out["result"] = "handshake_error:eof"
                end("fin")
            elif out["eof"] == "none":
                end("fin")
            break
        wait = max(0.0, min(deadline - time.monotonic(), 0.2))
        if tn > 0 and hs:
            wait = max(0.0, min(wait, next_trickle - time.monotonic()))
        r, w, _ = select.select([raw], [raw] if pending else [], [], wait)
        if r:
            try:
                d = raw.recv(262144)
            except ConnectionResetError:
                end("rst")
                if not hs:
                    out["result"] = "handshake_error:rst"
                break
            if d:
                inc.write(d)
            else:
                inc.write_eof()
                tcp_eof = True
                # let the read loop above classify notify vs fin first
                if hs:
                    continue
except Exception as e:  # report, never fail
    out["result"] = "error:" + type(e).__name__ + ":" + str(e)
out["sent_sha"], out["recv_sha"] = sha_tx.hexdigest(), sha_rx.hexdigest()
out["body"] = repr(shown)
for k, v in out.items():
    print("%s=%s" % (k, v))
raw.close()
EOF
}

# stop_clean NAME: SIGTERM the process started as NAME (start_bg/start_edge), then require exit
# status 0 and no sanitizer report (ASan, UBSan, LSan) in $T/NAME.log.
stop_clean() {
    local name=$1 v="PID_$1" rc
    stop_pid "${!v}"
    rc=$(exit_status "${!v}")
    if grep -Eq 'runtime error|AddressSanitizer|LeakSanitizer|ThreadSanitizer' "$T/$name.log"; then
        fail "$name: sanitizer report in its log"
    fi
    assert_eq "$rc" 0 "$name: exit status after SIGTERM"
}

# ---- Redis helpers (shared-state tests) ----

# The Redis server the shared-state tests run against: redis-server, or a drop-in named by
# AE_REDIS_SERVER (ctest's valkey.* cases set valkey-server, with valkey-cli as the client).
REDIS_SERVER=${AE_REDIS_SERVER:-redis-server}
REDIS_CLI=${AE_REDIS_CLI:-redis-cli}
# need_redis: fails unless the server and its client are installed.
need_redis() {
    command -v "$REDIS_SERVER" >/dev/null || fail "$REDIS_SERVER is not installed"
    command -v "$REDIS_CLI" >/dev/null || fail "$REDIS_CLI is not installed"
}

# start_redis PORT [NAME]: a throw-away $REDIS_SERVER on 127.0.0.1:PORT (no persistence), started
# with start_bg (PID in PID_<NAME>, default NAME redis); waits until it answers PING.
start_redis() {
    local port=$1 name=${2:-redis}
    need_redis
    mkdir -p "$T/$name.dir" # never a dump.rdb of another run (a server loads one it finds)
    start_bg "$name" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --dir "$T/$name.dir" \
        --save '' --appendonly no
    wait_until 10 rcli_at "$port" PING || fail "redis on port $port does not answer PING"
    log "$REDIS_SERVER on port $port: $(rcli_at "$port" INFO server | tr -d '\r' |
        grep -E '^(redis|valkey)_version:' | paste -sd ' ')"
}

# rcli_at PORT ARGS...: $REDIS_CLI against 127.0.0.1:PORT (raw output).
rcli_at() {
    local port=$1
    shift
    "$REDIS_CLI" -h 127.0.0.1 -p "$port" --raw "$@"
}

# rcli ARGS...: redis-cli against $REDIS_PORT.
rcli() { rcli_at "${REDIS_PORT:?REDIS_PORT must be set}" "$@"; }

# metric_at ADMIN_PORT NAME_WITH_LABELS: like metric, for the given admin port.
metric_at() { ADMIN_PORT=$1 metric "$2"; }

# ---- multi-site tests on 127.0.0.1 (shared state through Redis) ----

# write_site_conf FILE ID PROTO PORT ADMIN_PORT UPSTREAMS STATE [EXTRA]: writes the config of
# site ID (name siteID, 2 workers, cert $T/edge.{pem,key}) with one listener, PROTO tcp (named
# main) or quic (named h3), on 127.0.0.1:PORT to the pool of UPSTREAMS (space-separated ports on
# 127.0.0.1; POOL_EXTRA: more YAML lines inside the pool, indented by 4, optional), admin on
# 127.0.0.1:ADMIN_PORT, `state: { STATE }`, then EXTRA (YAML at top level, optional).
write_site_conf() {
    local f=$1 id=$2 proto=$3 port=$4 admin=$5 ups=$6 state=$7 extra=${8:-} name servers="" p
    case "$proto" in
    tcp) name=main ;;
    quic) name=h3 ;;
    *) fail "write_site_conf: unknown protocol '$proto'" ;;
    esac
    for p in $ups; do
        servers="$servers${servers:+, }\"127.0.0.1:$p\""
    done
    cat >"$f" <<EOF2
site: { id: $id, name: site$id }
workers: 2
tls: { cert: $T/edge.pem, key: $T/edge.key }
listeners:
  - { name: $name, protocol: $proto, address: "127.0.0.1:$port", upstream: pool }
upstreams:
  pool:
    servers: [ $servers ]
    ${POOL_EXTRA:-}
admin: { address: "127.0.0.1:$admin" }
state: { $state }
$extra
EOF2
}

# ---- QUIC helpers (gtlsclient, the UDP relay of tests/tools/udp_relay.py) ----

# gtc OUT DIR PORT URI [gtlsclient options...]: one gtlsclient run against 127.0.0.1:PORT, full
# debug output in $T/OUT, bodies in DIR (emptied first); fails the test when gtlsclient fails.
gtc() {
    local out=$1 dir=$2 port=$3 uri=$4
    shift 4
    rm -rf "$dir"
    mkdir -p "$dir"
    timeout 30 gtlsclient --exit-on-all-streams-close --download="$dir" "$@" 127.0.0.1 "$port" \
        "$uri" >"$T/$out" 2>&1 || fail "gtlsclient $uri failed: $(tail -3 "$T/$out")"
}

# relay_start NAME TARGET SECONDS [udp_relay options]: a UDP relay in front of TARGET; its
# port in RELAY_PORT, its files in $T/NAME/.
relay_start() {
    local name=$1 target=$2 secs=$3
    shift 3
    RELAY_PORT=$(free_port udp)
    rm -rf "${T:?}/$name"
    mkdir -p "$T/$name"
    start_bg "$name" python3 "$AE_SRCDIR/tests/tools/udp_relay.py" "$RELAY_PORT" "$target" \
        "$T/$name" "$secs" "$@"
    wait_until 5 test -f "$T/$name/ready" || fail "relay $name did not start"
}

# replay_flight PORT [DIR]: sends the client datagrams a relay recorded (--record 2: the
# Initial and the 0-RTT request, DIR default $T/rec) again, from a new port, to 127.0.0.1:PORT.
replay_flight() {
    local dir=${2:-$T/rec}
    python3 - "$1" "$dir/c2s.0" "$dir/c2s.1" <<'EOP'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for f in sys.argv[2:]:
    s.sendto(open(f, "rb").read(), ("127.0.0.1", int(sys.argv[1])))
    time.sleep(0.05)
time.sleep(1)
EOP
}

# ---- network-namespace lab tests (source tests/lab/netns.sh after this file) ----

# lab_test_require: fails unless running as root with `ip netns` and redis-server available.
lab_test_require() {
    [ "$(id -u)" = 0 ] || fail "needs root for network namespaces (ip netns); run as root (CI does)"
    ip netns list >/dev/null 2>&1 || fail "'ip netns' is unavailable (iproute2 without netns support?)"
    command -v redis-server >/dev/null || fail "redis-server is not installed"
}

# lab_test_cleanup: the EXIT trap of lab tests. lab_down first (ends every process still inside
# the lab's namespaces, by PID — they are all ours — and deletes the namespaces), then
# ae_cleanup with the original exit status (it ends the recorded PIDs, prints the logs on
# failure, removes $T and exits); namespaces left behind make the test fail.
lab_test_cleanup() {
    local rc=$?
    trap - EXIT
    set +e
    lab_down
    local left
    left=$(ip netns list | awk -v p="$LAB_PREFIX" 'index($1, p) == 1 { printf "%s ", $1 }')
    if [ -n "$left" ]; then
        printf '[%s] namespaces left behind: %s\n' "$AE_TEST_NAME" "$left" >&2
        [ $rc -ne 0 ] || rc=1
    fi
    (exit $rc)
    ae_cleanup
}

# lab_test_up NSITES: installs lab_test_cleanup as the EXIT trap (and TERM/INT traps), then
# builds a lab of NSITES sites with the prefix "ae<pid>-"; fails if it cannot.
lab_test_up() {
    trap lab_test_cleanup EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    lab_init "ae$$-" "$1"
    lab_up || fail "could not build the namespace lab"
}
