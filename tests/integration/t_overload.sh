#!/usr/bin/env bash
# Overload reporting (issue #11): connection-limit refusals and accept failures (no file
# descriptors left) are counted per event but logged in one line per worker per 10 s, not one
# line per event; QUIC Initials that never become a connection are counted under their own
# close cause (no_handshake), not as errors of opened connections.
. "$(dirname "$0")/lib.sh"

gen_cert edge
O1=$(free_port); EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port)
start_origin o1 "$O1"

# hold_conns PORT N SECONDS DONE_FILE: N plain TCP connections to PORT, held SECONDS (no TLS).
hold_conns() {
    python3 - "$@" <<'EOF'
import socket, sys, time
port, n, secs, done = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
held = []
for _ in range(n):
    try:
        held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    except OSError:
        pass
open(done, "w").write("%d\n" % len(held))
time.sleep(secs)
EOF
}
ovl_lines() { grep -c 'overload: ' "$T/$1.log" || true; }

# ---- 1. tune.max_connections: 3 on one worker, 20 connections ----
UPSTREAMS="$O1" WORKERS=1 EXTRA="tune: { max_connections: 3 }" write_conf "$T/lim.yaml"
start_edge lim "$T/lim.yaml"
wait_port "$EDGE_PORT"
hold_conns "$EDGE_PORT" 20 12 "$T/h1.done" &
H1=$!
wait_until 10 test -s "$T/h1.done" || fail "the client did not connect"
wait_until 5 metric_ge anyedge_connection_limit_refusals_total 17 ||
    fail "refusals: $(metric anyedge_connection_limit_refusals_total), want 17"
assert_eq "$(ovl_lines lim)" 1 "overload lines right after 17 refusals"
assert_match "$(grep -m1 'overload: ' "$T/lim.log")" \
    "0 accept failure\(s\), 1 TCP connection\(s\) and 0 QUIC Initial\(s\) refused by tune.max_connections \(3 per worker\)" \
    "first overload line"
wait_until 12 eval '[ "$(ovl_lines lim)" -ge 2 ]' || fail "no summary line 12 s after the refusals"
assert_match "$(grep 'overload: ' "$T/lim.log" | sed -n 2p)" "16 TCP connection\(s\)" "summary line: the other 16"
assert_eq "$(metric anyedge_connection_limit_refusals_total)" 17 "refusals counted one by one"
kill "$H1" 2>/dev/null || true
wait "$H1" 2>/dev/null || true
log "check 1: 17 refusals -> $(ovl_lines lim) log lines: $(grep 'overload: ' "$T/lim.log" | sed -n 2p | sed 's/.*overload: //')"
stop_clean lim

# ---- 2. no file descriptors left: accept fails (EMFILE) while connections are held ----
UPSTREAMS="$O1" WORKERS=1 write_conf "$T/fd.yaml"
(
    ulimit -n 40
    exec "$ANYEDGE" -c "$T/fd.yaml"
) >"$T/fd.log" 2>&1 &
PID_fd=$!
PIDS+=("$PID_fd")
wait_port "$EDGE_PORT"
wait_port "$ADMIN_PORT"
hold_conns "$EDGE_PORT" 60 4 "$T/h2.done" &
H2=$!
wait_until 10 test -s "$T/h2.done" || fail "the client did not connect"
sleep 3 # accepts keep failing (EMFILE) and pausing 100 ms each
wait "$H2" 2>/dev/null || true
wait_until 5 eval '[ "$(metric anyedge_accept_errors_total)" -ge 10 ]' ||
    fail "accept_errors_total $(metric anyedge_accept_errors_total) after 3 s without descriptors"
errs=$(metric anyedge_accept_errors_total)
lines=$(ovl_lines fd)
assert_le "$lines" 2 "overload lines for $errs accept failures in ~4 s"
assert_match "$(grep -m1 'overload: ' "$T/fd.log")" "1 accept failure\(s\) \(last: Too many open files\)" \
    "accept failure line names the error"
out=$(edge_curl /id)
assert_match "$out" "o1" "serves again once descriptors are free"
log "check 2: $errs accept failures (EMFILE) -> $lines log line(s); serving again"
stop_pid "$PID_fd"

# ---- 3. QUIC Initials that never complete a handshake ----
QP=$(free_port)
UPSTREAMS="$O1" WORKERS=1 LISTENER_EXTRA="" write_conf "$T/q.yaml"
sed -i "s#^listeners:#listeners:\n  - { name: h3, protocol: quic, address: \"127.0.0.1:$QP\", upstream: pool }#" "$T/q.yaml"
start_edge q "$T/q.yaml"
wait_port "$ADMIN_PORT"
# Initials with a valid long header and random payload: ngtcp2 accepts the packet header, the
# connection is created, its handshake never completes (the payload does not decrypt).
python3 - "$QP" <<'EOF'
import os, socket, struct, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(5):
    dcid, scid = os.urandom(8), os.urandom(8)
    token = b""
    payload = os.urandom(1200)
    length = len(payload) + 4
    hdr = bytes([0xc3]) + struct.pack("!I", 1) + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    hdr += bytes([0]) + struct.pack("!H", 0x4000 | length) + struct.pack("!I", i)
    s.sendto(hdr + payload, ("127.0.0.1", port))
EOF
sleep 2
nh=$(metric 'anyedge_quic_connections_closed_by_reason_total{reason="no_handshake"}')
er=$(metric 'anyedge_quic_connections_closed_by_reason_total{reason="error"}')
opened=$(metric anyedge_quic_connections_opened_total)
log "check 3: Initials with undecryptable payloads: opened $opened, closed no_handshake $nh, error $er"
assert_ge "$opened" 5 "connections opened by the Initials (a datagram of 1200 bytes and more)"
assert_eq "$er" 0 "no Initial counted as an error of an opened connection"
assert_eq "$nh" "$opened" "every opened-but-never-handshaken connection is no_handshake"
stop_clean q
