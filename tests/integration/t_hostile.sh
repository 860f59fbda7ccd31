#!/usr/bin/env bash
# Hostile and broken clients: garbage instead of a ClientHello, stalled handshakes, 10,000
# connect-and-drop connections (FIN, RST, mid-handshake), oversized and malformed SNI, and the
# client idle timeout. After each, the edge must be alive, serving and not leaking.
. "$(dirname "$0")/lib.sh"

# probe.py PORT KIND [WAIT_S]: one raw TCP client. Sends what KIND says, then waits up to WAIT_S
# (default 3) for the edge to close. Prints "close=<fin|rst|open> ms=<since connect>
# first=<hex of the first bytes received>".
cat >"$T/probe.py" <<'EOF'
import os, random, select, socket, ssl, struct, sys, time

def client_hello(sni="placeholder.example"):
    """A real ClientHello record, as Python's OpenSSL sends it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        o.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()

def set_sni_ext(rec, ext_data):
    """Replaces the server_name extension's data in a one-record ClientHello; fixes lengths."""
    assert rec[0] == 0x16 and rec[5] == 1
    body = bytearray(rec[9:])
    p = 2 + 32
    p += 1 + body[p]                                     # session id
    p += 2 + struct.unpack(">H", body[p:p + 2])[0]       # cipher suites
    p += 1 + body[p]                                     # compression methods
    exts, new, q = body[p + 2:], b"", 0
    while q < len(exts):
        t, l = struct.unpack(">HH", exts[q:q + 4])
        d = ext_data if t == 0 else exts[q + 4:q + 4 + l]
        new += struct.pack(">HH", t, len(d)) + d
        q += 4 + l
    body = bytes(body[:p]) + struct.pack(">H", len(new)) + new
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return rec[:3] + struct.pack(">H", len(hs)) + hs

def sni_ext(name, typ=0, list_adj=0, name_adj=0):
    n = name.encode()
    entry = bytes([typ]) + struct.pack(">H", len(n) + name_adj) + n
    return struct.pack(">H", len(entry) + list_adj) + entry

port, kind = int(sys.argv[1]), sys.argv[2]
wait = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
rnd = random.Random(7)
ch = client_hello()
payload, fin = {
    "random": (b"\xff" + rnd.randbytes(999), False),
    "http": (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", False),
    "bigrec": (b"\x16\x03\x01\xff\xff" + rnd.randbytes(200), False),
    "truncated": (ch[:len(ch) // 2], True),      # half a record, then FIN
    "silent": (b"", False),                      # connect and send nothing
    "half_hello": (ch[:len(ch) // 2], False),    # half a ClientHello, then nothing
    "sni300": (set_sni_ext(ch, sni_ext("a" * 300)), False),
    "sni300dots": (set_sni_ext(ch, sni_ext(".".join(["b" * 59] * 5))), False),
    "sni_listlen": (set_sni_ext(ch, sni_ext("example.com", list_adj=3)), False),
    "sni_namelen": (set_sni_ext(ch, sni_ext("example.com", name_adj=40)), False),
    "sni_type": (set_sni_ext(ch, sni_ext("example.com", typ=1)), False),
    "sni_empty": (set_sni_ext(ch, sni_ext("")), False),
    "sni_ctrl": (set_sni_ext(ch, sni_ext("exa\x01mple.com")), False),
    "sni_ok": (set_sni_ext(ch, sni_ext("example.com")), False),
}[kind]
t0 = time.monotonic()
s = socket.create_connection(("127.0.0.1", port), timeout=5)
if payload:
    s.sendall(payload)
if fin:
    s.shutdown(socket.SHUT_WR)
close, first = "open", b""
end = t0 + wait
while time.monotonic() < end:
    r, _, _ = select.select([s], [], [], max(0.0, end - time.monotonic()))
    if not r:
        break
    try:
        d = s.recv(65536)
    except ConnectionResetError:
        close = "rst"
        break
    if not d:
        close = "fin"
        break
    first += d
ms = int((time.monotonic() - t0) * 1000)
print("close=%s ms=%d first=%s" % (close, ms, first[:16].hex()))
EOF
probe() { python3 "$T/probe.py" "$@"; }

fails() { metric "anyedge_handshake_failures_total{reason=\"$1\"}"; }

# serving: a full request through the edge works.
serving() {
    local r
    r=$(edge_curl /id) || true
    [ "$r" = o1 ]
}

gen_cert edge
O1=$(free_port); EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port)
start_origin o1 "$O1"
UPSTREAMS="$O1" EXTRA="timeouts: { handshake: 1s, client_idle: 1s }" write_conf "$T/edge.yaml"
start_edge edge "$T/edge.yaml"
wait_port "$EDGE_PORT"
serving || fail "edge does not serve at start"
# Wait for idle: the scrape's own admin connection aside, nothing should be open.
wait_until 5 metric_eq anyedge_connections_active 0 || fail "connections_active not 0 at start"
fd_base=$(fd_count "$PID_edge")
log "edge pid $PID_edge, $fd_base fds at rest"

# ---------------------------------------------------------------------------------------------
# (a) garbage instead of a ClientHello.
p0=$(fails protocol); c0=$(fails peer_closed); o0=$(fails other)
for kind in random http bigrec truncated; do
    out=$(probe "$EDGE_PORT" "$kind" 3)
    log "garbage '$kind': $out"
    assert_match "$out" "close=(fin|rst)" "garbage '$kind' closed by the edge"
    ms=${out#*ms=}; ms=${ms%% *}
    assert_le "$ms" 900 "garbage '$kind' closed before the 1 s handshake timeout (ms)"
done
p1=$(fails protocol); c1=$(fails peer_closed); o1=$(fails other)
log "handshake_failures_total: protocol $p0->$p1, peer_closed $c0->$c1, other $o0->$o1"
assert_eq "$((p1 - p0))" 3 "random, cleartext HTTP and an oversized record count as protocol"
assert_eq "$((c1 - c0))" 1 "a truncated record then FIN counts as peer_closed"
kill -0 "$PID_edge" || fail "edge died on garbage"
serving || fail "edge does not serve after garbage"

# ---------------------------------------------------------------------------------------------
# (b) stalled handshakes, timeouts.handshake = 1s.
h0=$(metric anyedge_handshake_timeouts_total)
for kind in silent half_hello; do
    out=$(probe "$EDGE_PORT" "$kind" 5)
    log "stalled handshake '$kind': $out"
    assert_match "$out" "close=(fin|rst)" "stalled '$kind' closed by the edge"
    ms=${out#*ms=}; ms=${ms%% *}
    assert_ge "$ms" 900 "stalled '$kind' not closed before the timeout (ms)"
    assert_le "$ms" 2500 "stalled '$kind' closed about 1 s after connect (ms)"
done
h1=$(metric anyedge_handshake_timeouts_total)
log "handshake_timeouts_total $h0 -> $h1"
assert_eq "$((h1 - h0))" 2 "handshake timeouts counted"

# ---------------------------------------------------------------------------------------------
# (c) 10,000 connect-and-drop connections: FIN right away, RST right away (SO_LINGER 0), half a
# ClientHello then FIN, half a ClientHello then RST. 200 open at a time, 60 s deadline.
a0=$(metric anyedge_connections_accepted_total)
t0=$(now_ms)
made=$(python3 - "$EDGE_PORT" <<'EOF'
import socket, ssl, struct, sys, time
port = int(sys.argv[1])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
o = ctx.wrap_bio(inc, out, server_hostname="localhost")
try:
    o.do_handshake()
except ssl.SSLWantReadError:
    pass
half = out.read()
half = half[: len(half) // 2]
linger0 = struct.pack("ii", 1, 0)
deadline = time.monotonic() + 60
made = 0
while made < 10000 and time.monotonic() < deadline:
    batch = []
    for i in range(200):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        k = (made + i) % 4
        if k >= 2:
            try:
                s.send(half)
            except OSError:
                pass
        if k % 2 == 1:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        batch.append(s)
    for s in batch:
        s.close()
    made += len(batch)
print(made)
EOF
)
dt=$(($(now_ms) - t0))
log "$made connect-and-drop connections in $dt ms"
assert_eq "$made" 10000 "connections made within the deadline"
wait_until 20 metric_ge anyedge_connections_accepted_total "$((a0 + 10000))" ||
    fail "edge accepted $(( $(metric anyedge_connections_accepted_total) - a0 )) of 10000"
kill -0 "$PID_edge" || fail "edge died under connect-and-drop"
serving || fail "edge does not serve after connect-and-drop"
wait_until 15 metric_eq anyedge_connections_active 0 ||
    fail "connections_active stays at $(metric anyedge_connections_active)"
wait_until 15 sh -c "[ \$(ls /proc/$PID_edge/fd | wc -l) -le $fd_base ]" ||
    fail "fd leak: $(fd_count "$PID_edge") fds open, $fd_base at rest"
log "after the storm: connections_active 0, $(fd_count "$PID_edge") fds (baseline $fd_base)"

# (c2) 1,000 connections that get further: full handshake then FIN or RST, a request for 4 MB
# then RST or FIN before reading it all, half a request then FIN. Upstream connections must be
# released too (upstream_server_active back to 0).
t0=$(now_ms)
made=$(python3 - "$EDGE_PORT" <<'EOF'
import socket, ssl, struct, sys, time
port = int(sys.argv[1])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
linger0 = struct.pack("ii", 1, 0)
deadline = time.monotonic() + 40
made = 0
while made < 1000 and time.monotonic() < deadline:
    batch = []
    for i in range(50):
        k = (made + i) % 5
        try:
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                server_hostname="localhost")
            if k == 2 or k == 3:
                s.sendall(b"GET /bytes/4000000 HTTP/1.1\r\nHost: x\r\n\r\n")
                s.recv(1000)
            elif k == 4:
                s.sendall(b"GET /by")
        except OSError:
            continue
        if k % 2 == 1:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        batch.append(s)
    for s in batch:
        s.close()
    made += len(batch)
print(made)
EOF
)
log "$made handshake-then-drop connections in $(($(now_ms) - t0)) ms"
assert_eq "$made" 1000 "handshake-then-drop connections made"
wait_until 15 metric_eq anyedge_connections_active 0 ||
    fail "connections_active stays at $(metric anyedge_connections_active)"
wait_until 15 metric_eq "anyedge_upstream_server_active{pool=\"pool\",server=\"127.0.0.1:$O1\"}" 0 ||
    fail "upstream_server_active stays at $(metric "anyedge_upstream_server_active{pool=\"pool\",server=\"127.0.0.1:$O1\"}")"
wait_until 15 sh -c "[ \$(ls /proc/$PID_edge/fd | wc -l) -le $fd_base ]" ||
    fail "fd leak: $(fd_count "$PID_edge") fds open, $fd_base at rest"
serving || fail "edge does not serve after handshake-then-drop"

# ---------------------------------------------------------------------------------------------
# (d) oversized and malformed SNI: refused, counted as sni; a long legal name still works.
s0=$(fails sni)
nbad=0
for kind in sni300 sni300dots sni_listlen sni_namelen sni_type sni_empty sni_ctrl; do
    out=$(probe "$EDGE_PORT" "$kind" 3)
    log "SNI '$kind': $out"
    assert_match "$out" "close=(fin|rst)" "SNI '$kind' closed by the edge"
    # A fatal alert record: content type 21 (0x15).
    assert_match "$out" "first=15" "SNI '$kind' answered with an alert"
    nbad=$((nbad + 1))
done
s1=$(fails sni)
log "handshake_failures_total{reason=sni} $s0 -> $s1"
assert_eq "$((s1 - s0))" "$nbad" "malformed SNI counted as sni"
# The same hand-built ClientHello with a well-formed SNI is answered with a ServerHello (22).
out=$(probe "$EDGE_PORT" sni_ok 1)
assert_match "$out" "first=16" "hand-built ClientHello with a sane SNI gets a ServerHello"
long=$(python3 -c 'print(".".join(["c" * 49] * 4) + ".example")')
log "long legal SNI: ${#long} chars"
out=$(tls_client "$EDGE_PORT" --sni "$long" --show 300 \
    --data 'GET /id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' --timeout 10)
assert_eq "$(kv result "$out")" ok "handshake with a ${#long}-char SNI"
assert_match "$(kv body "$out")" "o1'\$" "request with a ${#long}-char SNI"
assert_eq "$(fails sni)" "$s1" "a legal long SNI is not counted as a failure"
kill -0 "$PID_edge" || fail "edge died on bad SNI"
serving || fail "edge does not serve after bad SNI"

# ---------------------------------------------------------------------------------------------
# (e) client idle timeout (1 s): an idle connection is closed in about 1 s with close_notify;
# one that trickles a byte pair every 400 ms for 2.4 s is not.
i0=$(metric anyedge_idle_timeouts_total)
out=$(tls_client "$EDGE_PORT" --timeout 6)
ms=$(( $(kv eof_ms "$out") - $(kv hs_ms "$out") ))
log "idle connection closed ${ms} ms after the handshake ($(kv eof "$out"))"
assert_eq "$(kv result "$out")" ok "idle: result"
assert_eq "$(kv eof "$out")" notify "idle: closed with close_notify"
assert_ge "$ms" 900 "idle: not closed before client_idle (ms)"
assert_le "$ms" 2000 "idle: closed about 1 s after going idle (ms)"
assert_eq "$(metric anyedge_idle_timeouts_total)" "$((i0 + 1))" "anyedge_idle_timeouts_total"
out=$(tls_client "$EDGE_PORT" --trickle 6:400 --show 300 \
    --data 'GET /id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' --timeout 10)
assert_match "$(kv body "$out")" "o1'\$" "a trickling connection outlives client_idle"
assert_eq "$(metric anyedge_idle_timeouts_total)" "$((i0 + 1))" "no idle timeout while trickling"

wait_until 10 metric_eq anyedge_connections_active 0 || fail "connections_active not back to 0"
wait_until 10 sh -c "[ \$(ls /proc/$PID_edge/fd | wc -l) -le $fd_base ]" ||
    fail "fd leak at the end: $(fd_count "$PID_edge") fds, $fd_base at rest"
stop_clean edge
