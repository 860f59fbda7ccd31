#!/usr/bin/env bash
# Per-source limits (issue #11): floods from loopback sources (127.0.0.0/8 aliases) are limited
# per source (TCP connections per second and at once, QUIC Initials per second with Retry then
# drop, HTTP/3 requests per second with 429) while a legitimate source keeps being served;
# refusals are counted by reason and logged in the per-worker overload line.
. "$(dirname "$0")/lib.sh"

gen_cert edge
O1=$(free_port); EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port); QP=$(free_port)
start_origin o1 "$O1"
UPSTREAMS="$O1" WORKERS=1 EXTRA="limits: { tcp_connections_per_second: 20, tcp_concurrent: 10, quic_initials_per_second: 5, quic_initials_hard: 20, h3_requests_per_second: 50 }" \
    write_conf "$T/edge.yaml"
sed -i "s#^listeners:#listeners:\n  - { name: h3, protocol: quic, address: \"127.0.0.1:$QP\", upstream: pool }#" "$T/edge.yaml"
"$ANYEDGE" -t -c "$T/edge.yaml" >/dev/null || fail "anyedge -t rejects the limits section"
start_edge edge "$T/edge.yaml"
wait_port "$ADMIN_PORT"
wait_port "$EDGE_PORT"
ref() { metric "anyedge_limit_refusals_total{reason=\"$1\"}"; }

# legit SECONDS OUT: one HTTPS request from 127.0.0.1 every 50 ms; "ok worst_ms" into OUT.
legit() {
    local end=$(($(now_ms) + $1 * 1000)) ok=0 bad=0 worst=0 t0 dt
    while [ "$(now_ms)" -lt "$end" ]; do
        t0=$(now_ms)
        if [ "$(edge_curl /id)" = o1 ]; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
        dt=$(($(now_ms) - t0))
        [ "$dt" -gt "$worst" ] && worst=$dt
        sleep 0.05
    done
    echo "$ok $bad $worst" >"$2"
}

# ---- 1. TCP: one source opens 300 connections within ~1 s and holds them ----
python3 - "$EDGE_PORT" "$T/flood.out" <<'EOF' &
import socket, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
held, refused = [], 0
t0 = time.time()
for i in range(300):
    s = socket.socket()
    s.bind(("127.0.1.1", 0))
    try:
        s.connect(("127.0.0.1", port))
        held.append(s)
    except OSError:
        refused += 1
    time.sleep(0.003)
time.sleep(0.5)
alive = 0
for s in held:  # refused ones were closed by the edge at accept: they read EOF at once
    s.setblocking(False)
    try:
        if s.recv(1) != b"":
            alive += 1
    except BlockingIOError:
        alive += 1
    except OSError:
        pass
open(out, "w").write("%d %d\n" % (alive, refused))
time.sleep(2)
EOF
FLOOD=$!
legit 3 "$T/legit1"
wait "$FLOOD" || true
read -r alive _ <"$T/flood.out"
read -r ok bad worst <"$T/legit1"
assert_eq "$bad" 0 "legit requests failed during the TCP flood"
assert_ge "$ok" 8 "legit requests served during the TCP flood"
assert_le "$alive" 10 "connections the flooding source holds (tcp_concurrent 10)"
assert_ge "$(($(ref tcp_rate) + $(ref tcp_concurrent)))" 250 "TCP refusals of the flooding source"
log "check 1: TCP flood from 127.0.1.1: $alive of 300 held; refused tcp_rate=$(ref tcp_rate)" \
    "tcp_concurrent=$(ref tcp_concurrent); legit 127.0.0.1: $ok/$((ok + bad)) served, worst ${worst} ms"

# ---- 2. many sources, each within its limits: nothing refused ----
r0=$(($(ref tcp_rate) + $(ref tcp_concurrent)))
python3 - "$EDGE_PORT" <<'EOF'
import socket, sys
port = int(sys.argv[1])
held = []
for a in range(50):
    for _ in range(5):
        s = socket.socket()
        s.bind(("127.0.2.%d" % (a + 1), 0))
        s.connect(("127.0.0.1", port))
        held.append(s)
EOF
sleep 0.3
assert_eq "$(($(ref tcp_rate) + $(ref tcp_concurrent)))" "$r0" "refusals for 50 sources x 5 connections"
log "check 2: 50 sources x 5 connections: none refused"

# ---- 3. QUIC Initials from one source: Retry beyond 5/s, dropped beyond 20/s ----
python3 - "$QP" <<'EOF'
import os, socket, struct, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.3.1", 0))
for i in range(100):
    dcid, scid = os.urandom(8), os.urandom(8)
    payload = os.urandom(1200)
    hdr = bytes([0xc3]) + struct.pack("!I", 1) + bytes([8]) + dcid + bytes([8]) + scid
    hdr += bytes([0]) + struct.pack("!H", 0x4000 | (len(payload) + 4)) + struct.pack("!I", i)
    s.sendto(hdr + payload, ("127.0.0.1", port))
EOF
wait_until 5 eval '[ "$(ref quic_drop)" -ge 70 ]' || fail "QUIC drops: $(ref quic_drop)"
assert_ge "$(ref quic_retry)" 10 "QUIC Initials answered with Retry"
out=$(timeout 30 "$AE_BIN/ae-h3get" -k "https://127.0.0.1:$QP/id") || fail "legit HTTP/3 request: $out"
assert_match "$out" "^0 200 " "legit HTTP/3 request during the Initial flood"
log "check 3: 100 Initials from 127.0.3.1: retry=$(ref quic_retry) drop=$(ref quic_drop); legit H3 served"

# ---- 4. HTTP/3 requests: 300 on one connection, 50 per second allowed ----
out=$(timeout 60 "$AE_BIN/ae-h3get" -k -n 300 "https://127.0.0.1:$QP/id" 2>/dev/null) || true
n200=$(awk '$2 == 200' <<<"$out" | wc -l)
n429=$(awk '$2 == 429' <<<"$out" | wc -l)
assert_eq $((n200 + n429)) 300 "every request answered (200 or 429)"
assert_ge "$n429" 30 "429s beyond the HTTP/3 request rate"
assert_ge "$n200" 50 "requests within the rate"
assert_ge "$(ref h3_rate)" "$n429" "h3_rate refusals counted"
wait_until 5 grep -q 'reason=rate_limited' "$T/edge.log" || fail "no access line with reason=rate_limited"
log "check 4: 300 HTTP/3 requests at once: $n200 x 200, $n429 x 429 (Retry-After: 1)"

# ---- 5. the overload line names the per-source refusals ----
wait_until 12 grep -q 'refusal(s) by per-source limits' "$T/edge.log" ||
    fail "no overload line about per-source limits"
n=$(grep -c 'overload: ' "$T/edge.log" || true)
assert_le "$n" 4 "overload lines for $(($(ref tcp_rate) + $(ref tcp_concurrent) + $(ref quic_drop) + $(ref quic_retry) + $(ref h3_rate))) refusals"
log "check 5: $n overload line(s) for all refusals"
stop_clean edge
