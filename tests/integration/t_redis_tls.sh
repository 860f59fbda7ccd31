#!/usr/bin/env bash
# Redis over TLS (rediss:// and state.tls): a real redis-server (or valkey-server) with only a TLS
# port, a test CA, a server certificate for redis.test / 127.0.0.1, client certificates.
#  1. `anyedge -t` refuses bad TLS settings with a clear line (missing CA file, cert without key,
#     state.tls with a redis:// URL, a key that does not match its certificate).
#  2. Two sites over rediss:// with a client certificate and AUTH share the ring: a session of
#     site 1 resumes at site 2, a rotation at site 1 reaches site 2; the QUIC site's 0-RTT claims
#     (per-worker connections, quic.early_data_shared: hold) connect over TLS too.
#  3. Refusals are clear, counted and never stop the site from serving: a CA that did not sign
#     the server ("self-signed certificate in certificate chain"), a server_name the certificate does
#     not carry ("hostname mismatch"), no client certificate when the server requires one; a
#     plain redis:// client to the TLS port fails and retries (no hang).
#  4. server_name checks a DNS name when the URL holds an address; verify: off connects to a
#     server the CA does not vouch for, with a warning.
. "$(dirname "$0")/lib.sh"

need_redis
gen_cert edge
O1=$(free_port)
start_origin o1 "$O1"

# ---- a test PKI ----
pki() { openssl "$@" 2>/dev/null || fail "openssl $1 failed"; }
mk_ca() { # mk_ca NAME
    pki req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$1" -keyout "$T/$1.key" -out "$T/$1.pem"
}
mk_cert() { # mk_cert NAME CA SAN [clientAuth|serverAuth]
    pki req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" \
        -keyout "$T/$1.key" -out "$T/$1.csr"
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "${4:-serverAuth}" >"$T/$1.ext"
    pki x509 -req -in "$T/$1.csr" -CA "$T/$2.pem" -CAkey "$T/$2.key" -CAcreateserial -days 2 \
        -extfile "$T/$1.ext" -out "$T/$1.pem"
}
mk_ca ca
mk_ca otherca
mk_cert srv ca "DNS:redis.test,IP:127.0.0.1"
mk_cert cli ca "DNS:site" clientAuth
mk_cert cli2 ca "DNS:site" clientAuth

RP=$(free_port)
PW=tls-test-pw
start_bg redis "$REDIS_SERVER" --port 0 --tls-port "$RP" --bind 127.0.0.1 --save '' \
    --appendonly no --tls-cert-file "$T/srv.pem" --tls-key-file "$T/srv.key" \
    --tls-ca-cert-file "$T/ca.pem" --tls-auth-clients yes --requirepass "$PW"
rcli_tls() {
    "$REDIS_CLI" -h 127.0.0.1 -p "$RP" --tls --cacert "$T/ca.pem" --cert "$T/cli.pem" \
        --key "$T/cli.key" --no-auth-warning -a "$PW" --raw "$@"
}
wait_until 10 rcli_tls PING || fail "TLS redis on port $RP does not answer PING: $(tail -3 "$T/redis.log")"
log "$REDIS_SERVER with TLS on port $RP"
URL="rediss://:$PW@127.0.0.1:$RP/0"

# site_conf FILE ID PROTO PORT ADMIN TLS_BLOCK [EXTRA] [URL]
site_conf() {
    local tlsb=""
    [ -z "$6" ] || tlsb=", tls: { $6 }"
    write_site_conf "$1" "$2" "$3" "$4" "$5" "$O1" \
        "redis: \"${8:-$URL}\", sync_interval: 1s, heartbeat: 1s, connect_timeout: 500ms$tlsb" \
        "log: { access: off }
${7:-}"
}
GOOD="ca: $T/ca.pem, cert: $T/cli.pem, key: $T/cli.key"

# ---- 1. configuration checks ----
check_bad() { # check_bad TLS_BLOCK EXPECTED [URL]
    local out
    site_conf "$T/bad.yaml" 9 tcp "$(free_port)" "$(free_port)" "$1" "" "${3:-}"
    if out=$("$ANYEDGE" -t -c "$T/bad.yaml" 2>&1); then
        fail "anyedge -t accepted state.tls { $1 }"
    fi
    assert_match "$out" "$2" "anyedge -t: state.tls { $1 }"
    [ "$(printf '%s\n' "$out" | grep -c .)" -le 2 ] || fail "more than a short error: $out"
}
check_bad "ca: $T/nope.pem" "state.tls.*nope.pem"
check_bad "ca: $T/ca.pem, cert: $T/cli.pem" "cert and key go together"
check_bad "ca: $T/ca.pem" "not a rediss:// URL" "redis://127.0.0.1:$RP/0"
check_bad "ca: $T/ca.pem, cert: $T/cli.pem, key: $T/cli2.key" "client key.*mismatch"
site_conf "$T/ok.yaml" 9 tcp "$(free_port)" "$(free_port)" "$GOOD"
"$ANYEDGE" -t -c "$T/ok.yaml" >/dev/null 2>&1 || fail "anyedge -t refused a good state.tls"
log "config: bad TLS settings refused with one line each"

# ---- 2. two sites share the ring over TLS ----
E1=$(free_port); A1=$(free_port); E2=$(free_port); A2=$(free_port)
site_conf "$T/s1.yaml" 1 tcp "$E1" "$A1" "$GOOD"
site_conf "$T/s2.yaml" 2 quic "$E2" "$A2" "$GOOD, server_name: redis.test" \
    "quic: { early_data: on, early_data_shared: hold }"
start_edge s1 "$T/s1.yaml" "$A1"
start_edge s2 "$T/s2.yaml" "$A2"
wait_port "$E1"
wait_until 10 metric_eq anyedge_redis_connected 1 || true
wait_until 10 eval '[ "$(metric_at "$A1" anyedge_redis_connected)" = 1 ] &&
    [ "$(metric_at "$A2" anyedge_redis_connected)" = 1 ] &&
    [ "$(metric_at "$A1" anyedge_redis_subscribed)" = 1 ]' ||
    fail "sites not connected over TLS: $(grep -i redis "$T/s1.log" | tail -3)"
G1=$(metric_at "$A1" anyedge_ring_generation)
wait_until 10 eval '[ "$(metric_at "$A2" anyedge_ring_generation)" = "$G1" ]' ||
    fail "site 2 does not hold site 1's ring generation $G1"
rcli_tls GET anyedge:ring | grep -q '^generation ' || fail "no ring in the TLS Redis"
grep -q "redis 127.0.0.1:$RP/0 tls: connected" "$T/s1.log" || fail "no 'tls: connected' line in s1.log"
# The QUIC site: the state client and one claims client per worker (2) over TLS.
wait_until 10 eval '[ "$(grep -c "redis 127.0.0.1:$RP/0 tls: connected" "$T/s2.log")" -ge 3 ]' ||
    fail "site 2's 0-RTT claim clients did not connect over TLS: $(grep -i redis "$T/s2.log" | tail -5)"
log "two sites over rediss:// with client certificates: ring generation $G1 at both"

# Resumption across sites needs a TCP listener at both: site 1 (tcp) issues, a third TCP site
# resumes.
E3=$(free_port); A3=$(free_port)
site_conf "$T/s3.yaml" 3 tcp "$E3" "$A3" "$GOOD"
start_edge s3 "$T/s3.yaml" "$A3"
wait_port "$E3"
wait_until 10 eval '[ "$(metric_at "$A3" anyedge_ring_generation)" = "$G1" ]' || fail "site 3 not at $G1"
out=$(EDGE_PORT=$E1 s_get -sess_out "$T/sess")
assert_match "$out" "^New, TLSv1.3" "first handshake at site 1"
out=$(EDGE_PORT=$E3 s_get -sess_in "$T/sess")
assert_match "$out" "^Reused, TLSv1.3" "site 1's session resumes at site 3 (ring over TLS)"
"$ANYEDGECTL" -a "127.0.0.1:$A1" keys rotate | grep -q '"ok":true' || fail "rotate at site 1 failed"
G2=$((G1 + 1))
wait_until 10 eval '[ "$(metric_at "$A3" anyedge_ring_generation)" = "$G2" ] &&
    [ "$(metric_at "$A2" anyedge_ring_generation)" = "$G2" ]' ||
    fail "rotation at site 1 did not reach sites 2 and 3 (want $G2)"
log "cross-site resumption and rotation ($G1 -> $G2) over TLS"

# ---- 3. refusals ----
# refused NAME TLS_BLOCK EXPECTED_LOG [URL]: a site that cannot connect logs why, counts it and
# still serves TLS clients with its local ring.
refused() {
    local e a
    e=$(free_port); a=$(free_port)
    site_conf "$T/$1.yaml" "$((10 + RANDOM % 100))" tcp "$e" "$a" "$2" "" "${4:-}"
    start_edge "$1" "$T/$1.yaml" "$a"
    wait_until 10 eval '[ "$(metric_at "$a" anyedge_redis_errors_total)" -ge 1 ]' ||
        fail "$1: no Redis error counted"
    wait_until 5 grep -q "$3" "$T/$1.log" || fail "$1: no '$3' in the log: $(grep -i redis "$T/$1.log" | tail -3)"
    [ "$(metric_at "$a" anyedge_redis_connected)" = 0 ] || fail "$1: connected anyway"
    out=$(EDGE_PORT=$e s_get)
    assert_match "$out" "hello from o1|o1" "$1: still serves"
    stop_pid "$(eval echo "\$PID_$1")"
    log "$1: refused ($3), counted, serving"
}
refused wrongca "ca: $T/otherca.pem, cert: $T/cli.pem, key: $T/cli.key" \
    "TLS: certificate refused: \(self-signed certificate in certificate chain\|unable to get local issuer\)"
refused wrongname "$GOOD, server_name: other.test" "TLS: certificate refused: hostname mismatch"
refused nocert "ca: $T/ca.pem" "connect failed"
refused plain "" "connect failed\|timeout" "redis://:$PW@127.0.0.1:$RP/0"

# ---- 4. server_name for an address URL; verify: off ----
E4=$(free_port); A4=$(free_port)
site_conf "$T/s4.yaml" 4 tcp "$E4" "$A4" "ca: $T/otherca.pem, cert: $T/cli.pem, key: $T/cli.key, verify: off"
start_edge s4 "$T/s4.yaml" "$A4"
wait_until 10 eval '[ "$(metric_at "$A4" anyedge_redis_connected)" = 1 ]' || fail "verify: off did not connect"
grep -q "verify is off" "$T/s4.log" || fail "no warning for verify: off"
log "verify: off connects (with a warning); server_name redis.test checked for site 2 (127.0.0.1 URL)"

stop_clean s1
stop_clean s2
log "PASS"
