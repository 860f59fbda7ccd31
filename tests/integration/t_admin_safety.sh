#!/usr/bin/env bash
# Admin endpoint safety (issue #11): Host and Origin checks (a web page or DNS rebinding cannot
# use it), the bearer token on the POST routes, the Unix socket (mode 0600, no token needed,
# anyedgectl -c prefers it), slots that idle or slow clients cannot exhaust (the oldest idle one
# makes room), the head deadline, refusals counted and logged at a bounded rate, bad token files
# refused at load and a token change taken at reload.
. "$(dirname "$0")/lib.sh"

gen_cert edge
O1=$(free_port); EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port)
start_origin o1 "$O1"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/token"
chmod 600 "$T/token"
TOKEN=$(cat "$T/token")
SOCK=$T/admin.sock
UPSTREAMS="$O1" ADMIN_EXTRA="socket: $SOCK, token_file: $T/token, max_connections: 64, max_per_source: 48, hosts: [ Scrape.Example ]" \
    write_conf "$T/edge.yaml"
"$ANYEDGE" -t -c "$T/edge.yaml" >/dev/null || fail "anyedge -t rejects the config"
start_edge edge "$T/edge.yaml"
wait_port "$EDGE_PORT"
wait_port "$ADMIN_PORT"
A=http://127.0.0.1:$ADMIN_PORT

code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@"; }
refused() { metric "anyedge_admin_refused_total{reason=\"$1\"}"; }

# ---- 1. Host and Origin ----
assert_eq "$(code "$A/metrics")" 200 "GET /metrics with Host 127.0.0.1:port"
assert_eq "$(code -H "Host: localhost" "$A/status")" 200 "Host: localhost"
assert_eq "$(code -H "Host: 127.0.0.1" "$A/status")" 200 "Host without port"
assert_eq "$(code -H "Host: evil.example:$ADMIN_PORT" "$A/status")" 403 "a DNS name in Host (rebinding)"
assert_eq "$(code -H "Host: 10.1.2.3" "$A/status")" 403 "another address in Host"
assert_eq "$(code -H "Host: scrape.example:$ADMIN_PORT" "$A/metrics")" 200 "a name of admin.hosts"
assert_eq "$(code -H "Host: scrape.example.evil" "$A/metrics")" 403 "a longer name"
assert_eq "$(code -H "Host:" "$A/status")" 403 "no Host header"
# HTTP/1.1 without Host at all (curl always sends one: a raw request).
raw=$(python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"GET /status HTTP/1.1\r\nConnection: close\r\n\r\n")
print(s.recv(100).split(b"\r\n")[0].decode())' "$ADMIN_PORT")
assert_match "$raw" "^HTTP/1.1 403" "HTTP/1.1 without Host"
assert_ge "$(refused host)" 5 "refused{reason=host}"
assert_eq "$(code -H "Origin: http://evil.example" "$A/status")" 403 "a foreign Origin"
assert_eq "$(code -H "Origin: null" "$A/status")" 403 "Origin: null (sandboxed page)"
assert_eq "$(code -H "Origin: http://127.0.0.1:$ADMIN_PORT" "$A/status")" 200 "its own Origin"
assert_eq "$(code -H "Origin: https://scrape.example" "$A/status")" 200 "an Origin of admin.hosts"
# A web page's "simple" POST: text/plain, foreign Origin, even with the token it cannot know.
assert_eq "$(code -X POST -H 'Content-Type: text/plain' -H 'Origin: http://evil.example' \
    -H "Authorization: Bearer $TOKEN" "$A/drain")" 403 "cross-origin POST /drain"
assert_ge "$(refused origin)" 3 "refused{reason=origin}"
log "check 1: Host/Origin refused: host=$(refused host) origin=$(refused origin)"

# ---- 2. token on the POST routes (TCP) ----
assert_eq "$(code -X POST "$A/keys/rotate")" 401 "POST without the token"
assert_eq "$(code -X POST -H "Authorization: Bearer wrong-token-0123456789" "$A/keys/rotate")" 401 \
    "POST with a wrong token"
assert_eq "$(code -X POST -H "Authorization: Bearer ${TOKEN}x" "$A/keys/rotate")" 401 \
    "POST with the token and one more byte"
assert_eq "$(code -X POST -H "Authorization: Bearer $TOKEN" "$A/keys/rotate")" 200 "POST with the token"
assert_eq "$(code -X POST -H "Authorization: bearer $TOKEN" "$A/keys/rotate")" 200 "scheme case-insensitive"
assert_eq "$(code "$A/metrics")" 200 "GET needs no token"
hdr=$(curl -s -D - -o /dev/null -X POST "$A/reload")
assert_match "$hdr" "WWW-Authenticate: Bearer" "401 names the scheme"
assert_ge "$(refused token)" 3 "refused{reason=token}"
rc=0; "$ANYEDGECTL" -a "127.0.0.1:$ADMIN_PORT" keys rotate >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 1 "anyedgectl -a without the token: refused (exit 1)"
"$ANYEDGECTL" -a "127.0.0.1:$ADMIN_PORT" -T "$T/token" keys rotate >/dev/null ||
    fail "anyedgectl -a -T TOKEN_FILE keys rotate"
log "check 2: token required on POST over TCP (refused $(refused token))"

# ---- 3. Unix socket ----
[ -S "$SOCK" ] || fail "admin.socket $SOCK was not created"
assert_eq "$(stat -c %a "$SOCK")" 600 "socket mode"
assert_eq "$(code --unix-socket "$SOCK" -X POST http://localhost/keys/rotate)" 200 \
    "POST over the Unix socket without a token"
"$ANYEDGECTL" -c "$T/edge.yaml" keys rotate >/dev/null || fail "anyedgectl -c (Unix socket) keys rotate"
"$ANYEDGECTL" -s "$SOCK" status | grep -q '"generation"' || fail "anyedgectl -s status"
log "check 3: Unix socket mode $(stat -c %a "$SOCK"), POST without token, anyedgectl -c/-s"

# ---- 4. idle and slow clients cannot lock /metrics out ----
# 100 connections from 127.0.0.1 that never finish a request (half of them send a partial head)
# while /metrics keeps being asked; then a connection that trickles its head past the deadline.
ev0=$(refused evicted)
python3 - "$ADMIN_PORT" "$T/idle.done" <<'EOF' &
import socket, sys, time, os
port, done = int(sys.argv[1]), sys.argv[2]
socks = []
for i in range(100):
    s = socket.socket()
    s.connect(("127.0.0.1", port))
    if i % 2:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the empty line
    socks.append(s)
open(done, "w").close()
time.sleep(6)
EOF
IDLE_PID=$!
wait_until 10 test -e "$T/idle.done" || fail "the idle clients did not connect"
worst=0; ok=0
for i in $(seq 20); do
    t0=$(now_ms)
    c=$(code "$A/metrics")
    dt=$(($(now_ms) - t0))
    [ "$c" = 200 ] && ok=$((ok + 1))
    [ "$dt" -gt "$worst" ] && worst=$dt
done
assert_eq "$ok" 20 "/metrics answers while 100 idle connections are held"
assert_le "$worst" 1000 "slowest /metrics with 100 idle connections (ms)"
assert_ge "$(($(refused evicted) - ev0))" 36 "idle connections evicted to make room"
kill "$IDLE_PID" 2>/dev/null || true
wait "$IDLE_PID" 2>/dev/null || true
to0=$(refused timeout)
python3 - "$ADMIN_PORT" <<'EOF' >"$T/slow.out"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
t0 = time.time()
try:
    for ch in b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n":
        s.sendall(bytes([ch]))
        time.sleep(0.2)
    print("sent all")
except OSError:
    pass
try:
    d = s.recv(100)
except OSError:
    d = b""
print("closed after %.1f s with %d bytes" % (time.time() - t0, len(d)))
EOF
assert_match "$(cat "$T/slow.out")" "closed after [23]\.[0-9] s with 0 bytes" "trickled head closed at the deadline"
assert_eq "$(($(refused timeout) - to0))" 1 "refused{reason=timeout}"
nlog=$(grep -c 'admin: refused' "$T/edge.log" || true)
assert_le "$nlog" 6 "refusal log lines (at most one per 10 s)"
assert_match "$(grep -m1 'admin: refused' "$T/edge.log")" "refused a request from 127.0.0.1:[0-9]+ \(host\)" \
    "refusal log line"
log "check 4: 20/20 /metrics with 100 idle connections held (worst ${worst} ms);" \
    "evicted $(($(refused evicted) - ev0)); trickled head: $(tail -1 "$T/slow.out"); $nlog refusal log line(s)"

# ---- 5. token file rules and reload ----
cp "$T/token" "$T/token2"; chmod 644 "$T/token2"
sed "s#token_file: $T/token#token_file: $T/token2#" "$T/edge.yaml" >"$T/bad.yaml"
out=$("$ANYEDGE" -t -c "$T/bad.yaml" 2>&1) && fail "a group/world-readable token file is accepted"
assert_match "$out" "admin.token_file: .*chmod 600" "token file mode error"
printf 'short\n' >"$T/token3"; chmod 600 "$T/token3"
sed "s#token_file: $T/token#token_file: $T/token3#" "$T/edge.yaml" >"$T/bad.yaml"
out=$("$ANYEDGE" -t -c "$T/bad.yaml" 2>&1) && fail "a 5-byte token is accepted"
assert_match "$out" "16..1024 printable" "short token error"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/token"
kill -HUP "$PID_edge"
wait_until 5 eval '[ "$(code -X POST -H "Authorization: Bearer $(cat "$T/token")" "$A/keys/rotate")" = 200 ]' ||
    fail "the new token is not accepted after SIGHUP"
assert_eq "$(code -X POST -H "Authorization: Bearer $TOKEN" "$A/keys/rotate")" 401 "the old token after the reload"
log "check 5: bad token files refused by anyedge -t; new token after SIGHUP"

# ---- 6. the socket file at exit and at start ----
stop_clean edge
[ -e "$SOCK" ] && fail "the Unix socket was left behind at exit"
: >"$SOCK.file"
sed "s#socket: $SOCK#socket: $SOCK.file#" "$T/edge.yaml" >"$T/f.yaml"
start_bg edge2 "$ANYEDGE" -c "$T/f.yaml"
wait_until 5 grep -q "is not a socket" "$T/edge2.log" || fail "a regular file at admin.socket is not reported"
stop_pid "$PID_edge2"
log "check 6: socket removed at exit; a regular file in its place is reported"
