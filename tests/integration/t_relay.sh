#!/usr/bin/env bash
# Relay behaviour: half-close in both forms, 100 MiB each way with a hash check, failover over
# a dead server and an origin killed mid-run, fast refusal when every server is down, and the
# PROXY protocol v1/v2 header as seen by an origin that parses it.
. "$(dirname "$0")/lib.sh"

gen_cert edge
ADMIN_PORT=$(free_port)

# ---------------------------------------------------------------------------------------------
# (a) half-close and (b) bulk transfer, through one edge in front of an echo origin and an
# http origin (two listeners, two pools).
ECHO=$(free_port); HTTP=$(free_port); EDGE_PORT=$(free_port); EDGE_HTTP=$(free_port)
start_origin echo "$ECHO" -m echo
start_origin http "$HTTP"
cat >"$T/edge.yaml" <<EOF
site: { id: 1, name: test }
workers: 2
tls: { cert: $T/edge.pem, key: $T/edge.key }
listeners:
  - { name: echo, address: "127.0.0.1:$EDGE_PORT", upstream: echo }
  - { name: http, address: "127.0.0.1:$EDGE_HTTP", upstream: http }
upstreams:
  echo: { servers: [ "127.0.0.1:$ECHO" ] }
  http: { servers: [ "127.0.0.1:$HTTP" ] }
admin: { address: "127.0.0.1:$ADMIN_PORT" }
EOF
start_edge edge "$T/edge.yaml"
wait_port "$EDGE_PORT"
wait_port "$EDGE_HTTP"

# (a1) The client sends 4 MiB and half-closes with close_notify + FIN right after its last
# byte, while most of the echo is still in flight: it must get every byte back, then the
# edge's close_notify.
out=$(tls_client "$EDGE_PORT" --send 4194304 --close notify --timeout 20)
log "half-close (close_notify): $(kv recv_at_close "$out") of 4194304 bytes back when the client closed, all back after $(kv eof_ms "$out") ms"
assert_eq "$(kv result "$out")" ok "half-close notify: result"
assert_eq "$(kv recv "$out")" 4194304 "half-close notify: bytes echoed after the client's close"
assert_eq "$(kv recv_sha "$out")" "$(kv sent_sha "$out")" "half-close notify: echoed data"
assert_eq "$(kv eof "$out")" notify "half-close notify: the edge ends with close_notify"
# (a2) Same with a bare TCP FIN (no close_notify) from the client.
out=$(tls_client "$EDGE_PORT" --send 1048576 --close fin --timeout 20)
assert_eq "$(kv result "$out")" ok "half-close fin: result"
assert_eq "$(kv recv "$out")" 1048576 "half-close fin: bytes echoed after the client's FIN"
assert_eq "$(kv recv_sha "$out")" "$(kv sent_sha "$out")" "half-close fin: echoed data"
# (a3) Deterministic variant: the response is produced 600 ms after the client half-closed.
# A proxy that closed on the client's close_notify would lose it.
t0=$(now_ms)
out=$(tls_client "$EDGE_HTTP" --data 'GET /sleep/600 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' \
    --close notify --show 400 --timeout 10)
dt=$(($(now_ms) - t0))
log "half-close then a 600 ms late response: ${dt} ms, eof=$(kv eof "$out")"
assert_match "$(kv body "$out")" 'slept 600' "response that arrives after the client's close_notify"
assert_eq "$(kv eof "$out")" notify "late response ends with close_notify"
assert_ge "$dt" 600 "late response really was late"

# (b1) 100 MiB both ways through the echo origin, hash of what was sent vs received.
t0=$(now_ms)
out=$(tls_client "$EDGE_PORT" --send 104857600 --close notify --timeout 50)
dt=$(($(now_ms) - t0))
log "100 MiB echo: $dt ms, recv=$(kv recv "$out") result=$(kv result "$out")"
assert_eq "$(kv result "$out")" ok "100 MiB echo: result"
assert_eq "$(kv sent "$out")" 104857600 "100 MiB echo: bytes sent"
assert_eq "$(kv recv "$out")" 104857600 "100 MiB echo: bytes received"
assert_eq "$(kv recv_sha "$out")" "$(kv sent_sha "$out")" "100 MiB echo: sha256 of sent vs received"
assert_eq "$(kv eof "$out")" notify "100 MiB echo: ends with close_notify"
# (b2) 100 MiB download of the origin's deterministic pattern, hashed.
expect=$(python3 - <<'EOF'
import hashlib
P = 65521
pat = bytes(((k * 7 + (k >> 8) + 3) & 0xff) for k in range(P))
n = 104857600
h = hashlib.sha256()
for _ in range(n // P):
    h.update(pat)
h.update(pat[: n % P])
print(h.hexdigest())
EOF
)
t0=$(now_ms)
got=$(curl -sk --max-time 50 "https://127.0.0.1:$EDGE_HTTP/bytes/104857600" | sha256sum | cut -d' ' -f1)
dt=$(($(now_ms) - t0))
log "100 MiB download: $dt ms"
assert_eq "$got" "$expect" "100 MiB download: sha256"
assert_ge "$(metric anyedge_client_bytes_out_total)" $((2 * 104857600)) "bytes_out metric"
assert_ge "$(metric anyedge_client_bytes_in_total)" 104857600 "bytes_in metric"
stop_clean edge

# ---------------------------------------------------------------------------------------------
# (c) failover: pool of a dead port and two live origins.
DEAD=$(free_port); O1=$(free_port); O2=$(free_port); EDGE_PORT=$(free_port)
start_origin o1 "$O1"
start_origin o2 "$O2"
UPSTREAMS="$DEAD $O1 $O2" write_conf "$T/fail.yaml"
start_edge fail "$T/fail.yaml"
wait_port "$EDGE_PORT"
f0=$(metric anyedge_upstream_connect_failures_total)
ok=0; ids=""
for i in $(seq 20); do
    r=$(edge_curl /id || true)
    ids="$ids $r"
    case $r in o1 | o2) ok=$((ok + 1)) ;; esac
done
f1=$(metric anyedge_upstream_connect_failures_total)
log "dead server in the pool: $ok/20 ok, connect failures $f0 -> $f1"
assert_eq "$ok" 20 "requests served with a dead server in the pool"
assert_match "$ids" o1 "o1 serves"
assert_match "$ids" o2 "o2 serves"
assert_ge "$((f1 - f0))" 3 "connect failures counted for the dead server"
# Passive health: 3 failed connects in a row hold the dead server out for 5 s.
assert_eq "$(metric "anyedge_upstream_server_up{pool=\"pool\",server=\"127.0.0.1:$DEAD\"}")" 0 \
    "dead server marked down by passive health"
assert_eq "$(metric "anyedge_upstream_server_connect_failures_total{pool=\"pool\",server=\"127.0.0.1:$DEAD\"}")" \
    "$((f1 - f0))" "per-server connect failures of the dead server"
# The exposition is valid Prometheus text: every family declared once, every sample under the
# family declared last (a per-server family once shared the global counter's name).
m=$(curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics")
dups=$(awk '$1 == "#" && $2 == "TYPE" { print $3 }' <<<"$m" | sort | uniq -d)
assert_eq "$dups" "" "metric families declared more than once"
orphans=$(awk '$1 == "#" && $2 == "TYPE" { fam = $3; next } /^#/ || NF == 0 { next }
    { n = $1; sub(/\{.*/, "", n)
      if (n != fam && n != fam "_bucket" && n != fam "_sum" && n != fam "_count") print n }' <<<"$m")
assert_eq "$orphans" "" "samples outside their family"
# Kill o1 halfway through a run of requests: every request still succeeds, on o2.
ok=0; after=""
for i in $(seq 20); do
    if [ "$i" = 10 ]; then
        kill "$PID_o1"
        wait "$PID_o1" 2>/dev/null || true
    fi
    r=$(edge_curl /id || true)
    if [ "$i" -gt 10 ]; then after="$after $r"; fi
    case $r in o1 | o2) ok=$((ok + 1)) ;; esac
done
f2=$(metric anyedge_upstream_connect_failures_total)
log "o1 killed mid-run: $ok/20 ok, served after the kill:$after; connect failures $f1 -> $f2"
assert_eq "$ok" 20 "requests served while an origin is killed"
assert_eq "$(tr -d ' o2' <<<"$after")" "" "only o2 serves after o1 died"
assert_ge "$f2" "$((f1 + 1))" "connect failures counted for the killed origin"
stop_clean fail

# (c2) a server that never answers the SYN (a listener whose accept queue is full): each
# attempt on it ends after connect_timeout and the next server is tried.
BH=$(free_port)
cat >"$T/blackhole.py" <<'EOF'
import signal, socket, sys, time
port = int(sys.argv[1])
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(0)
held = []
for _ in range(2):  # fills the accept queue (backlog 0 holds one); later SYNs are dropped
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex(("127.0.0.1", port))
    held.append(c)
    time.sleep(0.1)
probe = socket.socket()
probe.settimeout(0.5)
try:
    probe.connect(("127.0.0.1", port))
    print("NOT-A-BLACKHOLE", flush=True)
except socket.timeout:
    print("ready", flush=True)
signal.sigwait([signal.SIGTERM, signal.SIGINT])
EOF
start_bg blackhole python3 "$T/blackhole.py" "$BH"
wait_until 5 grep -qx ready "$T/blackhole.log" || fail "blackhole listener: $(cat "$T/blackhole.log")"
EDGE_PORT=$(free_port)
UPSTREAMS="$BH $O2" UPSTREAM_EXTRA="connect_timeout: 300ms" write_conf "$T/bh.yaml"
start_edge bh "$T/bh.yaml"
wait_port "$EDGE_PORT"
ok=0; slow=0
for i in $(seq 6); do
    t0=$(now_ms)
    r=$(edge_curl /id || true)
    dt=$(($(now_ms) - t0))
    if [ "$r" = o2 ]; then ok=$((ok + 1)); fi
    if [ "$dt" -ge 300 ]; then slow=$((slow + 1)); fi
done
to=$(metric anyedge_upstream_connect_timeouts_total)
log "blackholed server in the pool: $ok/6 ok, $slow took >= 300 ms, connect timeouts $to"
assert_eq "$ok" 6 "requests served with a blackholed server in the pool"
assert_ge "$to" 1 "connect timeouts counted"
assert_ge "$slow" 1 "a connect timeout delays the request by connect_timeout"
assert_le "$slow" 3 "the blackholed server is held out after 3 timeouts"
stop_clean bh
stop_clean blackhole

# ---------------------------------------------------------------------------------------------
# (d) every server down: the client is refused right after the handshake, not after a timeout.
D1=$(free_port); D2=$(free_port); EDGE_PORT=$(free_port)
UPSTREAMS="$D1 $D2" write_conf "$T/down.yaml"
start_edge down "$T/down.yaml"
wait_port "$EDGE_PORT"
n0=$(metric anyedge_no_upstream_total)
worst=0
for i in 1 2 3 4 5; do
    out=$(tls_client "$EDGE_PORT" --data 'GET /id HTTP/1.1\r\nHost: x\r\n\r\n' --timeout 5)
    hs=$(kv hs_ms "$out"); eof=$(kv eof_ms "$out")
    log "all down, try $i: handshake ${hs} ms, closed at ${eof} ms ($(kv eof "$out")), result=$(kv result "$out")"
    assert_eq "$(kv result "$out")" ok "all down: handshake completes"
    assert_eq "$(kv recv "$out")" 0 "all down: no data"
    assert_match "$(kv eof "$out")" '^(notify|fin|rst)$' "all down: connection closed by the edge"
    assert_ge "$eof" 0 "all down: close time measured"
    if [ "$eof" -gt "$worst" ]; then worst=$eof; fi
done
log "all-down refusal: slowest close ${worst} ms after connect"
assert_le "$worst" 999 "all-down refusal time (ms)"
assert_ge "$(metric anyedge_no_upstream_total)" "$((n0 + 5))" "anyedge_no_upstream_total"
kill -0 "$PID_down" || fail "edge died with every upstream down"
# It recovers once a server comes back (after the 5 s passive hold).
start_origin back "$D1"
wait_until 12 sh -c "curl -sk --max-time 2 https://127.0.0.1:$EDGE_PORT/id | grep -qx back" ||
    fail "edge does not recover when a server comes back"
stop_clean down

# ---------------------------------------------------------------------------------------------
# (e) PROXY protocol v1 and v2 towards an origin that requires it (-P).
PO=$(free_port)
start_origin pp "$PO" -P
for v in v2 v1; do
    EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port)
    UPSTREAMS="$PO" LISTENER_EXTRA=", proxy_protocol: $v" write_conf "$T/pp$v.yaml"
    start_edge "pp$v" "$T/pp$v.yaml"
    wait_port "$EDGE_PORT"
    # With and without SNI/ALPN (v2 carries them as TLVs, which the origin parses strictly).
    for sni in "" "$(python3 -c 'print(".".join(["d" * 60] * 4))')"; do
        args=(--sni "$sni")
        if [ -n "$sni" ]; then args+=(--alpn http/1.1); fi
        out=$(tls_client "$EDGE_PORT" "${args[@]}" --show 600 --timeout 10 \
            --data 'GET /client HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        body=$(kv body "$out"); lp=$(kv local_port "$out")
        log "PROXY $v (SNI ${#sni} chars): client port $lp, origin saw: ${body##*\\r\\n}"
        assert_match "$body" "HTTP/1.1 200" "PROXY $v: origin accepted the header"
        assert_match "$body" "127\.0\.0\.1 $lp 127\.0\.0\.1 $EDGE_PORT\\\\n" \
            "PROXY $v: /client reports the real client address"
    done
    stop_clean "pp$v"
done
stop_clean pp
