#!/usr/bin/env bash
# HTTP/3 failover: a pool whose first server refuses connections and whose second one answers.
# A request that tried the refusing server first is sent in full to the next one (the request
# bytes queued while connecting are kept across the failed connect): GETs and a POST with a
# body get 200 and the right body, well before timeouts.upstream_idle.
. "$(dirname "$0")/lib.sh"

[ -x "$AE_BIN/ae-h3get" ] || fail "ae-h3get was not built (libcurl >= 8 missing?)"
H3GET=$AE_BIN/ae-h3get

gen_cert edge
O1=$(free_port); DEAD=$(free_port); QPORT=$(free_port udp); ADMIN_PORT=$(free_port)
start_origin o1 "$O1"
cat >"$T/edge.yaml" <<EOC
site: { id: 1, name: test }
workers: 1
tls: { cert: $T/edge.pem, key: $T/edge.key }
listeners:
  - { name: h3, protocol: quic, address: "127.0.0.1:$QPORT", upstream: pool }
upstreams:
  pool:
    servers: [ "127.0.0.1:$DEAD", "127.0.0.1:$O1" ]
timeouts: { upstream_idle: 20s }
admin: { address: "127.0.0.1:$ADMIN_PORT" }
EOC
start_edge edge "$T/edge.yaml"
url() { printf 'https://127.0.0.1:%s%s' "$QPORT" "$1"; }
sha() { sha256sum | cut -d' ' -f1; }

# Round robin starts with the refusing server: the first requests fail over (until passive
# health holds that server out).
fails0=$(metric anyedge_upstream_connect_failures_total)
t0=$(now_ms)
for i in 1 2; do
    out=$(timeout 15 "$H3GET" -k "$(url /bytes/1000)") || fail "GET #$i: $out"
    assert_eq "$out" "0 200 1000 $(curl -s "http://127.0.0.1:$O1/bytes/1000" | sha)" "GET #$i"
done
head -c 300000 /dev/urandom >"$T/up.bin"
out=$(timeout 15 "$H3GET" -k -d "$T/up.bin" "$(url /echo)") || fail "POST: $out"
assert_eq "$out" "0 200 300000 $(sha <"$T/up.bin")" "POST /echo 300000 bytes"
t1=$(now_ms)
assert_ge "$(metric anyedge_upstream_connect_failures_total)" $((fails0 + 1)) "connect failures"
assert_le $((t1 - t0)) 10000 "duration of three requests (ms)"
log "failover after a refused connect: GET and POST answered in $((t1 - t0)) ms"
