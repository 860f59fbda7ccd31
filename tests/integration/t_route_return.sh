#!/usr/bin/env bash
# site.return: tunnel (issue #5): the owner of a forwarded connection sends its replies back
# through the site that receives the client's packets, for networks that drop packets with the
# anycast source from the owner. Network-namespace lab (tests/lab/netns.sh) as in
# t_route_shift.sh: client -> router -> site1|site2, anycast 192.0.2.10 on both sites' loopback,
# Redis and ae-origin in core; site1 has `site.return: tunnel`, site2 the default (direct).
#  1. A 50 MiB HTTP/3 download starts at site1 (direct replies). Mid-transfer the router's route
#     moves to site2 and site1 loses its route to the client's subnet (`ip route add
#     unreachable`: a direct reply from site1 cannot reach the client any more). The download completes
#     with the origin's sha256 only if site1's replies take the tunnel: site2 forwarded the
#     client's datagrams to site1 (direction="out"), site1 sent reply frames to site2
#     (direction="reply_out") and site2 sent them on to the client (direction="reply_in").
#  2. Once the route is back at site1 and site1 may reach the client again, a new download is
#     served directly: no further reply frames.
# Needs root and `ip netns` (CI runs as root).
. "$(dirname "$0")/lib.sh"
. "$AE_SRCDIR/tests/lab/netns.sh"

lab_test_require
command -v redis-cli >/dev/null || fail "redis-cli is not installed"
[ -x "$AE_BIN/ae-h3get" ] || fail "$AE_BIN/ae-h3get is missing (HTTP/3 test client)"
lab_test_up 2
A=$LAB_ANYCAST
CORE=$LAB_CORE_ADDR
RATE=${AE_SHIFT_RATE:-150mbit}
CLIENT_NET=${LAB_CLIENT_ADDR%.*}.0/30
lab_exec router tc qdisc add dev to-client root tbf rate "$RATE" burst 256kb latency 100ms ||
    fail "cannot shape the router's link to the client"
log "lab $LAB_PREFIX up: anycast $A -> $(lab_route), client link shaped to $RATE"
gen_cert edge

start_bg redis ip netns exec "$(lab_ns core)" redis-server --port 6379 --bind "$CORE" \
    --protected-mode no --save '' --appendonly no
start_bg origin ip netns exec "$(lab_ns core)" "$ORIGIN" -l "$CORE:8080" -i origin -q
lab_wait_tcp core "$CORE" 6379 || fail "redis does not listen"
lab_wait_tcp core "$CORE" 8080 || fail "origin does not listen"

# start_site N RETURN
start_site() {
    local n=$1 ret=$2
    cat >"$T/site$n.yaml" <<EOF
site: { id: $n, name: site$n, forward: "$(lab_site_fwd $n):4434", return: $ret }
workers: 2
log: { access: off }
tls: { cert: $T/edge.pem, key: $T/edge.key }
listeners:
  - { name: h3, protocol: quic, address: "$A:443", upstream: pool }
upstreams:
  pool:
    servers: [ "$CORE:8080" ]
admin: { address: "127.0.0.1:9901" }
state: { redis: "redis://$CORE:6379/0", sync_interval: 1s, heartbeat: 1s }
EOF
    start_bg "site$n" ip netns exec "$(lab_ns site$n)" "$ANYEDGE" -c "$T/site$n.yaml"
    lab_wait_tcp "site$n" 127.0.0.1 9901 || fail "site$n: admin does not listen"
}
start_site 1 tunnel
start_site 2 direct

smetric() {
    lab_exec "$1" curl -s --max-time 5 http://127.0.0.1:9901/metrics |
        awk -v k="$2" '$1 == k { v = $2 } END { printf "%d", (v == "" ? 0 : v) }'
}
fwd() { smetric "$1" "anyedge_forwarded_datagrams_total{direction=\"$2\",site=\"$3\"}"; }
peers_ready() {
    local n out
    for n in 1 2; do
        out=$(lab_exec "site$n" curl -s --max-time 3 http://127.0.0.1:9901/sites) || return 1
        [ "$(grep -o '"live":true' <<<"$out" | wc -l)" -ge 2 ] || return 1
    done
    [ "$(smetric site1 anyedge_ring_generation)" = "$(smetric site2 anyedge_ring_generation)" ]
}
wait_until 15 peers_ready || fail "sites do not see each other live in the registry"
sleep 1.5 # one peer-table refresh (every second) after both records are live
log "both sites live in the registry; site1 site.return: tunnel, site2: direct"

BIG=52428800
SMALL=5242880
sha_big=$(lab_exec core curl -s "http://$CORE:8080/bytes/$BIG" | sha256sum | cut -d' ' -f1)
sha_small=$(lab_exec core curl -s "http://$CORE:8080/bytes/$SMALL" | sha256sum | cut -d' ' -f1)


# ---- 1. shift with site1's direct path to the client gone ----
assert_eq "$(lab_route)" site1 "route before check 1"
o21=$(fwd site2 out 1)
ro12=$(fwd site1 reply_out 2)
ri21=$(fwd site2 reply_in 1)
e1=$(smetric site1 anyedge_quic_send_errors_total)
lab_exec client timeout 120 "$AE_BIN/ae-h3get" -k -o "$T/big.bin" "https://$A/bytes/$BIG" \
    >"$T/big.out" 2>"$T/big.err" &
PID_big=$!
AE_PIDS+=($!)
wait_bytes "$T/big.bin" $((8 << 20)) 30 || fail "download did not reach 8 MiB ($(cat "$T/big.err"))"
at=$(fsize "$T/big.bin")
# The route moves first, then site1 loses its direct path: the owner learns that the client now
# comes through site2 from the client's next packet (ACKs of the data in flight), so cutting the
# direct path before the client has spoken through site2 could leave site1 backing off its
# probes towards an unreachable client until the client happens to send again.
lab_shift site2
t_shift=$(now_ms)
lab_exec site1 ip route add unreachable "$CLIENT_NET" || fail "cannot cut site1's route to the client"
lab_exec site1 ip route get "$LAB_CLIENT_ADDR" >/dev/null 2>&1 &&
    fail "site1 still has a route to the client"
cut=$(fsize "$T/big.bin")
wait "$PID_big" || fail "download after the shift failed: $(cat "$T/big.out" "$T/big.err")"
t_done=$(now_ms)
read -r _ st bytes sha <"$T/big.out"
assert_eq "$st" 200 "status of the 50 MiB download"
assert_eq "$bytes" "$BIG" "bytes of the 50 MiB download"
assert_eq "$sha" "$sha_big" "sha256 of the 50 MiB download"
fo=$(($(fwd site2 out 1) - o21))
ro=$(($(fwd site1 reply_out 2) - ro12))
ri=$(($(fwd site2 reply_in 1) - ri21))
errs=$(($(smetric site1 anyedge_quic_send_errors_total) - e1))
assert_ge $((BIG - cut)) $((30 << 20)) "bytes received after site1's direct path was cut"
assert_ge "$fo" 100 "site2 datagrams forwarded to site1"
assert_ge "$ro" 1000 "site1 reply frames sent to site2"
assert_ge "$ri" 1000 "site2 reply frames received from site1"
assert_ge "$(smetric site2 anyedge_forward_reply_in_total)" "$ri" "site2 forward_reply_in_total"
log "check 1: 50 MiB shifted to site2 at $((at >> 20)) MiB, site1's route to the client cut at" \
    "$((cut >> 20)) MiB:" \
    "completed $((t_done - t_shift)) ms after the shift, sha256 ok; site2 forwarded $fo client" \
    "datagrams to site1, site1 sent $ro reply frames to site2, site2 sent $ri on to the client" \
    "(site1 direct sends that failed meanwhile: $errs)"

# ---- 2. back at site1 with its route restored: direct again ----
lab_exec site1 ip route del unreachable "$CLIENT_NET" || fail "cannot restore site1's route"
lab_shift site1
ro12=$(fwd site1 reply_out 2)
lab_exec client timeout 60 "$AE_BIN/ae-h3get" -k -o "$T/small.bin" "https://$A/bytes/$SMALL" \
    >"$T/small.out" 2>"$T/small.err" || fail "direct download failed: $(cat "$T/small.err")"
read -r _ st bytes sha <"$T/small.out"
assert_eq "$sha" "$sha_small" "sha256 of the direct download"
assert_eq "$(($(fwd site1 reply_out 2) - ro12))" 0 "reply frames for a connection served directly"
log "check 2: a new download at site1 is answered directly (no reply frames)"
# shellcheck disable=SC2154 # set by start_bg
stop_pid "$PID_site1"
# shellcheck disable=SC2154
stop_pid "$PID_site2"
