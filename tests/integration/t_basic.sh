#!/usr/bin/env bash
# Basic TLS relay: curl through the edge to two origins, round robin, the admin endpoint and
# anyedgectl, session resumption with openssl s_client.
. "$(dirname "$0")/lib.sh"

gen_cert edge
O1=$(free_port); O2=$(free_port); EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port)
start_origin o1 "$O1"
start_origin o2 "$O2"
UPSTREAMS="$O1 $O2" write_conf "$T/edge.yaml"
"$ANYEDGE" -t -c "$T/edge.yaml" >/dev/null || fail "anyedge -t rejects a valid config"
start_edge edge "$T/edge.yaml"
wait_port "$EDGE_PORT"

# curl, certificate verified against the self-signed cert, round robin over both origins.
ids=""
for i in 1 2 3 4; do
    ids="$ids $(curl -s --max-time 10 --cacert "$T/edge.pem" "https://localhost:$EDGE_PORT/id" \
        --resolve "localhost:$EDGE_PORT:127.0.0.1")"
done
log "origins seen: $ids"
assert_match "$ids" "o1" "round robin reaches o1"
assert_match "$ids" "o2" "round robin reaches o2"
assert_eq "$(edge_curl /bytes/100000 | wc -c)" 100000 "100 kB body"
assert_eq "$(edge_curl /echo --data-binary 'hello edge')" "hello edge" "POST echo"

# Resumption: the second and third connections resume with the ticket of the first.
# A request with Connection: close keeps s_client reading until the server closes, so the TLS
# 1.3 ticket (sent after the handshake) is stored.
out=$(s_get -sess_out "$T/sess")
assert_match "$out" "^New, TLSv1.3" "first handshake is full"
for i in 1 2; do
    out=$(s_get -sess_in "$T/sess" -sess_out "$T/sess")
    assert_match "$out" "^Reused, TLSv1.3" "handshake $i resumes"
    assert_match "$out" "o[12]" "resumed connection relays"
done
# TLS 1.3 suites (tls.ciphersuites unset): the server's order, AES-128-GCM first, whatever the
# client's order; ChaCha20 when the client lists it first (a client without AES hardware).
out=$(s_get -ciphersuites 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256')
assert_match "$out" "Cipher is TLS_AES_128_GCM_SHA256" "server preference: AES-128-GCM"
out=$(s_get -ciphersuites 'TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256')
assert_match "$out" "Cipher is TLS_CHACHA20_POLY1305_SHA256" "ChaCha20 for a client preferring it"
out=$(s_get -ciphersuites 'TLS_AES_256_GCM_SHA384')
assert_match "$out" "Cipher is TLS_AES_256_GCM_SHA384" "AES-256-GCM when it is all the client has"
# TLS 1.2 resumption with a ticket too.
out=$(s_get -tls1_2 -sess_out "$T/s12")
assert_match "$out" "^New, TLSv1.2" "TLS 1.2 full handshake"
out=$(s_get -tls1_2 -sess_in "$T/s12")
assert_match "$out" "^Reused, TLSv1.2" "TLS 1.2 resumes"
assert_ge "$(metric 'anyedge_handshakes_total{type="resumed"}')" 3 "resumed handshakes metric"

# Admin endpoint and anyedgectl.
st=$("$ANYEDGECTL" -a "127.0.0.1:$ADMIN_PORT" status)
assert_match "$st" '"generation":1' "status generation"
m=$("$ANYEDGECTL" -c "$T/edge.yaml" metrics)
assert_match "$m" '^anyedge_connections_accepted_total [1-9]' "anyedgectl -c metrics"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/nope")
assert_eq "$code" 404 "unknown admin path"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$ADMIN_PORT/metrics")
assert_eq "$code" 405 "wrong admin method"
rc=0; "$ANYEDGECTL" -a "127.0.0.1:1" status 2>/dev/null || rc=$?
assert_eq "$rc" 3 "anyedgectl exit code when the endpoint is unreachable"
before=$("$ANYEDGECTL" -a "127.0.0.1:$ADMIN_PORT" status | grep -o '"id":[0-9]*,"state":"current"')
"$ANYEDGECTL" -a "127.0.0.1:$ADMIN_PORT" keys rotate >/dev/null
after=$("$ANYEDGECTL" -a "127.0.0.1:$ADMIN_PORT" status | grep -o '"id":[0-9]*,"state":"current"')
[ "$before" != "$after" ] || fail "keys rotate did not change the current key ($before)"
# The ticket issued before the rotation is under the previous key now: still accepted.
out=$(s_get -sess_in "$T/sess")
assert_match "$out" "^Reused, TLSv1.3" "ticket of the previous key resumes"

stop_pid "$PID_edge"
assert_eq "$(exit_status "$PID_edge")" 0 "exit status after SIGTERM"
