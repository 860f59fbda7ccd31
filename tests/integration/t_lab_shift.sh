#!/usr/bin/env bash
# Route shift in network namespaces (tests/lab/netns.sh): client -> router -> site1|site2, both
# sites carrying the anycast address 192.0.2.10 on their loopback, Redis and ae-origin in core.
# Each site runs anyedge with TCP and QUIC listeners on 192.0.2.10:443 and a shared key ring in
# Redis. Checks, from the client namespace: TCP (curl) and HTTP/3 (ae-h3get) reach site1; after
# `ip route replace` at the router (lab_shift site2) new TCP connections and new QUIC
# connections reach site2 (time until the first one does is reported); a TLS session made at
# site1 resumes at site2 (openssl s_client -sess_out / -sess_in). Which site served a request is
# read from the origin's /client answer (the upstream connection's source address is the site's
# core-facing address) and cross-checked with each site's metrics on its own 127.0.0.1:9901.
# Needs root and `ip netns` (CI runs as root); fails with a clear message otherwise.
. "$(dirname "$0")/lib.sh"
. "$AE_SRCDIR/tests/lab/netns.sh"

lab_test_require
[ -x "$AE_BIN/ae-h3get" ] || fail "$AE_BIN/ae-h3get is missing (HTTP/3 test client)"

# Cleanup (lib.sh's lab_test_cleanup): lab_down first, then ae_cleanup with the exit status.
lab_test_up 2
log "lab $LAB_PREFIX up: anycast $LAB_ANYCAST -> $(lab_route)"

A=$LAB_ANYCAST
CORE=$LAB_CORE_ADDR
gen_cert edge

# ---- core: Redis and the origin ----
lab_start_core start_bg "$ORIGIN" || fail "core services do not start"
lab_wait_tcp site1 "$CORE" 6379 || fail "site1 cannot reach redis on $CORE:6379"
lab_wait_tcp site2 "$CORE" 8080 || fail "site2 cannot reach the origin on $CORE:8080"

# ---- the two sites ----
for n in 1 2; do
    lab_site_conf "$n" 2 "$T/edge.pem" "$T/edge.key" "tcp quic" \
        "quic: { site_header: x-anyedge-site }" >"$T/site$n.yaml"
    "$ANYEDGE" -t -c "$T/site$n.yaml" >/dev/null || fail "anyedge -t rejects $T/site$n.yaml"
    start_bg "site$n" ip netns exec "$(lab_ns site$n)" "$ANYEDGE" -c "$T/site$n.yaml"
done
for n in 1 2; do
    lab_wait_tcp "site$n" 127.0.0.1 9901 || fail "site$n: admin does not listen"
    lab_wait_tcp "site$n" "$A" 443 || fail "site$n: TCP listener on $A:443 does not listen"
done

smetric() { lab_smetric "$@"; }
# site_of BODY: the site whose core-facing address opened the upstream connection that
# answered /client ("SRC_IP SRC_PORT DST_IP DST_PORT"), or "?".
site_of() {
    case "${1%% *}" in
    "$(lab_site_fwd 1)") echo site1 ;;
    "$(lab_site_fwd 2)") echo site2 ;;
    *) echo "?" ;;
    esac
}
# tcp_site: one curl (new TCP connection) from the client to the anycast address; prints the
# site that answered, or "?" when the request failed.
tcp_site() {
    local body
    body=$(lab_exec client curl -sk --max-time 3 "https://$A/client" 2>/dev/null) || body=""
    site_of "$body"
}
# h3_site: one ae-h3get (new QUIC connection); prints the serving site or "?".
h3_site() {
    rm -f "$T/h3.body"
    if ! lab_exec client timeout 10 "$AE_BIN/ae-h3get" -k -o "$T/h3.body" "https://$A/client" \
        >"$T/h3.out" 2>&1; then
        echo "?"
        return 0
    fi
    site_of "$(cat "$T/h3.body" 2>/dev/null)"
}
# ns_s_get [s_client args]: GET /client over TLS/TCP from the client with openssl s_client.
ns_s_get() {
    printf 'GET /client HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
        lab_exec client timeout 10 openssl s_client -connect "$A:443" -ign_eof "$@" 2>&1 || true
}
# s_body_site S_CLIENT_OUTPUT: the site named by the /client answer inside s_client's output.
s_body_site() { site_of "$(grep -Eo '^10\.77\.2[0-9]\.2 [0-9]+ ' <<<"$1" | head -n 1)"; }
gen() { smetric "$1" anyedge_ring_generation; }
same_ring() {
    local g1 g2
    g1=$(gen site1); g2=$(gen site2)
    [ "$g1" -ge 1 ] && [ "$g1" = "$g2" ] &&
        [ "$(smetric site1 anyedge_redis_connected)" = 1 ] &&
        [ "$(smetric site2 anyedge_redis_connected)" = 1 ]
}
wait_until 10 same_ring ||
    fail "sites do not share a ring: generation $(gen site1) / $(gen site2)," \
        "redis connected $(smetric site1 anyedge_redis_connected) / $(smetric site2 anyedge_redis_connected)"
log "sites share ring generation $(gen site1) through Redis at $CORE"

acc() { smetric "$1" anyedge_connections_accepted_total; }
qopen() { smetric "$1" anyedge_quic_connections_opened_total; }

# ---- 1. before the shift: everything lands at site1 ----
a1=$(acc site1); a2=$(acc site2)
for i in 1 2 3; do
    s=$(tcp_site)
    assert_eq "$s" site1 "TCP request $i before the shift"
done
assert_eq $(($(acc site1) - a1)) 3 "site1 accepted TCP connections before the shift"
assert_eq $(($(acc site2) - a2)) 0 "site2 accepted TCP connections before the shift"
q1=$(qopen site1); q2=$(qopen site2)
s=$(h3_site)
assert_eq "$s" site1 "HTTP/3 request before the shift ($(cat "$T/h3.out"))"
assert_match "$(cat "$T/h3.out")" '^0 200 ' "ae-h3get status before the shift"
assert_eq $(($(qopen site1) - q1)) 1 "site1 QUIC connections before the shift"
assert_eq $(($(qopen site2) - q2)) 0 "site2 QUIC connections before the shift"
out=$(ns_s_get -tls1_3 -sess_out "$T/sess13")
assert_match "$out" "^New, TLSv1.3" "TLS 1.3 full handshake at site1"
assert_eq "$(s_body_site "$out")" site1 "s_client (TLS 1.3) before the shift"
out=$(ns_s_get -tls1_2 -sess_out "$T/sess12")
assert_match "$out" "^New, TLSv1.2" "TLS 1.2 full handshake at site1"
assert_eq "$(s_body_site "$out")" site1 "s_client (TLS 1.2) before the shift"
log "check 1: before the shift TCP x3, HTTP/3 and 2 s_client sessions all served by site1"

# ---- 2. shift the route: new TCP connections land at site2 ----
a1=$(acc site1); a2=$(acc site2)
t0=$(now_ms)
lab_shift site2
assert_eq "$(lab_route)" site2 "router's anycast route after lab_shift"
tries=0
while :; do
    tries=$((tries + 1))
    s=$(tcp_site)
    [ "$s" = site2 ] && break
    [ $(($(now_ms) - t0)) -lt 5000 ] || fail "TCP still not at site2 5 s after the shift (last: $s)"
    sleep 0.02
done
dt_tcp=$(($(now_ms) - t0))
for i in 2 3 4; do
    assert_eq "$(tcp_site)" site2 "TCP request $i after the shift"
done
assert_eq $(($(acc site1) - a1)) 0 "site1 accepted TCP connections after the shift"
assert_ge $(($(acc site2) - a2)) 4 "site2 accepted TCP connections after the shift"
log "check 2: first new TCP connection served by site2 ${dt_tcp} ms after ip route replace" \
    "(attempt $tries, curl included); 3 more at site2, site1 none"

# ---- 3. a TLS session made at site1 resumes at site2 ----
r0=$(smetric site2 'anyedge_handshakes_total{type="resumed"}')
out=$(ns_s_get -tls1_3 -sess_in "$T/sess13")
assert_match "$out" "^Reused, TLSv1.3" "TLS 1.3 session of site1 resumes at site2"
assert_eq "$(s_body_site "$out")" site2 "resumed TLS 1.3 connection served by site2"
out=$(ns_s_get -tls1_2 -sess_in "$T/sess12")
assert_match "$out" "^Reused, TLSv1.2" "TLS 1.2 session of site1 resumes at site2"
assert_eq "$(s_body_site "$out")" site2 "resumed TLS 1.2 connection served by site2"
assert_eq $(($(smetric site2 'anyedge_handshakes_total{type="resumed"}') - r0)) 2 "site2 resumed handshakes"
log "check 3: TLS 1.3 and 1.2 sessions from site1 resumed at site2 (Reused, site2 resumed +2)"

# ---- 4. QUIC after the shift: a new connection at site2 ----
q1=$(qopen site1); q2=$(qopen site2)
t0=$(now_ms)
s=$(h3_site)
dt_h3=$(($(now_ms) - t0))
assert_eq "$s" site2 "HTTP/3 request after the shift ($(cat "$T/h3.out"))"
assert_match "$(cat "$T/h3.out")" '^0 200 ' "ae-h3get status after the shift"
assert_eq $(($(qopen site2) - q2)) 1 "site2 QUIC connections after the shift"
assert_eq $(($(qopen site1) - q1)) 0 "site1 QUIC connections after the shift"
log "check 4: HTTP/3 after the shift served by site2 (ae-h3get ${dt_h3} ms)"

# ---- 5. and back: shift to site1 ----
t0=$(now_ms)
lab_shift site1
wait_until 5 eval '[ "$(tcp_site)" = site1 ]' || fail "TCP not back at site1 5 s after the shift back"
dt_back=$(($(now_ms) - t0))
assert_eq "$(h3_site)" site1 "HTTP/3 after the shift back"
log "check 5: shift back to site1 effective for TCP in ${dt_back} ms; HTTP/3 at site1 again"

for n in 1 2; do
    kill -0 "$(eval echo "\$PID_site$n")" 2>/dev/null || fail "site$n's anyedge died"
done
stop_clean site1
stop_clean site2
