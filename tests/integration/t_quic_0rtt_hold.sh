#!/usr/bin/env bash
# 0-RTT at most once across sites (quic.early_data_shared: hold; issue #12 item 3). Two sites,
# one Redis:
#  (a) a site-1 ticket gets 0-RTT at site 2; the request is held, then released by the shared
#      record or the handshake, and reaches the origin once with Early-Data: 1; the record is
#      in Redis with a TTL;
#  (b) the client's first flight, captured and replayed to site 1 (which never saw it): site 1
#      accepts the early data (its own table has no record) but the shared record says "seen",
#      the replay never completes a handshake, and the request never reaches the origin;
#      replayed to site 2 it is refused by site 2's own table;
#  (c) Redis stopped: 0-RTT requests still all succeed, released by their handshakes;
#  (d) config checks: hold needs early_data and state.redis.
. "$(dirname "$0")/lib.sh"

command -v gtlsclient >/dev/null || fail "gtlsclient (ngtcp2-client) is not installed"
TOOLS=$AE_SRCDIR/tests/tools

gen_cert edge
OP=$(free_port); REDIS_PORT=$(free_port)
Q1=$(free_port udp); Q2=$(free_port udp); A1=$(free_port); A2=$(free_port)
start_bg origin python3 "$TOOLS/h3_origin.py" "$OP"
wait_port "$OP"
start_redis "$REDIS_PORT"

# site_conf FILE ID QPORT ADMIN_PORT QUIC
site_conf() {
    write_site_conf "$1" "$2" quic "$3" "$4" "$OP" \
        "redis: \"redis://127.0.0.1:$REDIS_PORT/0\", sync_interval: 1s, heartbeat: 1s" \
        "timeouts: { drain: 2s }
quic: { $5 }"
}

# ---- (d) config checks ----
site_conf "$T/bad1.yaml" 1 "$Q1" "$A1" "early_data: off, early_data_shared: hold"
out=$("$ANYEDGE" -t -c "$T/bad1.yaml" 2>&1) && fail "hold without early_data accepted"
assert_match "$out" "quic.early_data_shared.*needs quic.early_data: on" "hold without early_data"
cat >"$T/bad2.yaml" <<EOF
site: { id: 1, name: s }
tls: { cert: $T/edge.pem, key: $T/edge.key }
listeners:
  - { name: h3, protocol: quic, address: "127.0.0.1:$Q1", upstream: pool }
upstreams:
  pool: { servers: [ "127.0.0.1:$OP" ] }
quic: { early_data: on, early_data_shared: hold }
EOF
out=$("$ANYEDGE" -t -c "$T/bad2.yaml" 2>&1) && fail "hold without state.redis accepted"
assert_match "$out" "quic.early_data_shared.*needs state.redis" "hold without state.redis"
log "(d) hold without early_data / state.redis refused: $(tail -n1 <<<"$out")"

site_conf "$T/s1.yaml" 1 "$Q1" "$A1" "early_data: on, early_data_shared: hold"
site_conf "$T/s2.yaml" 2 "$Q2" "$A2" "early_data: on, early_data_shared: hold"
start_edge s1 "$T/s1.yaml" "$A1"
start_edge s2 "$T/s2.yaml" "$A2"
same_ring() { [ "$(metric_at "$A1" anyedge_ring_generation)" = "$(metric_at "$A2" anyedge_ring_generation)" ] &&
    [ "$(metric_at "$A1" anyedge_ring_generation)" -gt 0 ]; }
wait_until 10 same_ring || fail "the two sites do not share a ring"

m1() { metric_at "$A1" "anyedge_$1"; }
m2() { metric_at "$A2" "anyedge_$1"; }
metric_ge_at() { ADMIN_PORT=$1 metric_ge "$2" "$3"; }
released() { echo $(($(metric_at "$1" anyedge_quic_0rtt_released_redis_total) + $(metric_at "$1" anyedge_quic_0rtt_released_handshake_total))); }
count() { curl -s "http://127.0.0.1:$OP/count/$1"; }

# ---- (a) 0-RTT at the other site, held and released ----
S=$T/sess; TP=$T/tp
gtc a1.out "$T/d" "$Q1" "https://localhost:$Q1/hdr" --wait-for-ticket --session-file="$S" --tp-file="$TP"
[ -s "$S" ] && [ -s "$TP" ] || fail "no session ticket / transport parameters from site 1"
h0=$(m2 quic_0rtt_held_total); rl0=$(released "$A2"); hq0=$(m2 h3_early_data_held_total)
gtc a2.out "$T/d" "$Q2" "https://localhost:$Q2/hdr?first" --wait-for-ticket --session-file="$S" --tp-file="$TP"
grep -q "type=0RTT" "$T/a2.out" || fail "gtlsclient sent no 0-RTT packet to site 2"
grep -q "Early data was rejected" "$T/a2.out" && fail "site 2 rejected the early data of a site-1 ticket"
assert_match "$(cat "$T"/d/hdr*)" "^Early-Data: 1$" "Early-Data: 1 at the origin"
assert_eq "$(count first)" 1 "the 0-RTT request reached the origin once"
assert_eq "$(m2 quic_0rtt_held_total)" $((h0 + 1)) "site 2 held 0-RTT connections"
assert_eq "$(m2 h3_early_data_held_total)" $((hq0 + 1)) "site 2 held 0-RTT requests"
wait_until 5 test "$(released "$A2")" = $((rl0 + 1)) ||
    fail "site 2 released $(released "$A2") held connections (was $rl0)"
keys=$(rcli --scan --pattern 'anyedge:0rtt:*' | wc -l)
assert_ge "$keys" 1 "shared 0-RTT records in Redis"
k=$(rcli --scan --pattern 'anyedge:0rtt:*' | head -n1)
ttl=$(rcli PTTL "$k")
assert_ge "$ttl" 1 "the record's TTL (ms)"
assert_ge "$ttl" 3590000 "the record's TTL (ms): early_data_max_age (1h) + 2 s"
assert_le "$ttl" 3602000 "the record's TTL (ms): early_data_max_age (1h) + 2 s"
log "(a) site-1 ticket, 0-RTT at site 2: held and released (redis $(m2 quic_0rtt_released_redis_total), handshake $(m2 quic_0rtt_released_handshake_total)); record $k value $(rcli GET "$k") PTTL ${ttl} ms"

# ---- (b) a replayed flight never reaches the origin twice ----
relay_start rec "$Q2" 15 --record 2
gtc b1.out "$T/d" "$RELAY_PORT" "https://localhost:$Q2/hdr?replay-probe" --session-file="$S" --tp-file="$TP"
grep -q "Early data was rejected" "$T/b1.out" && fail "site 2 rejected the probe's early data"
assert_eq "$(count replay-probe)" 1 "probe request at the origin"
sleep 1 # the original connection closes
acc0=$(m1 quic_0rtt_accepted_total); se0=$(m1 quic_0rtt_seen_elsewhere_total)
hs0=$(m1 quic_0rtt_released_handshake_total); rr0=$(m1 quic_0rtt_released_redis_total)
replay_flight "$Q1"
wait_until 5 metric_ge_at "$A1" anyedge_quic_0rtt_seen_elsewhere_total $((se0 + 1)) ||
    fail "site 1: the shared record did not report the replay (seen_elsewhere $(m1 quic_0rtt_seen_elsewhere_total), 0-RTT accepted $(m1 quic_0rtt_accepted_total) was $acc0)"
assert_eq "$(m1 quic_0rtt_accepted_total)" $((acc0 + 1)) "site 1 accepted the replay's early data (its own table never saw it)"
rj0=$(m2 quic_0rtt_rejected_total)
replay_flight "$Q2"
wait_until 5 metric_ge_at "$A2" anyedge_quic_0rtt_rejected_total $((rj0 + 1)) ||
    fail "replayed 0-RTT at site 2 not refused"
sleep 2 # time for a released request to reach the origin, if one were released
assert_eq "$(count replay-probe)" 1 "origin requests after replays at both sites"
assert_eq "$(m1 quic_0rtt_released_handshake_total)" "$hs0" "site 1 released the replay by handshake"
assert_eq "$(m1 quic_0rtt_released_redis_total)" "$rr0" "site 1 released the replay by the record"
log "(b) replayed flight: site 2 refused it (own table), site 1 accepted its early data but held it (seen elsewhere); origin count stays 1"

# ---- (c) Redis down: 0-RTT requests still succeed, released by their handshakes ----
stop_pid "$PID_redis"
wait_until 10 test "$(m2 redis_connected)" = 0 || true
hs0=$(m2 quic_0rtt_released_handshake_total); un0=$(m2 quic_0rtt_claims_unsent_total)
er0=$(m2 quic_0rtt_claim_errors_total)
for i in 1 2 3 4 5; do
    gtc c$i.out "$T/d" "$Q2" "https://localhost:$Q2/hdr?down$i" --wait-for-ticket \
        --session-file="$S" --tp-file="$TP"
    grep -q "Early data was rejected" "$T/c$i.out" && fail "site 2 rejected early data with Redis down ($i)"
    assert_match "$(cat "$T"/d/hdr*)" "^Early-Data: 1$" "request $i with Redis down: Early-Data: 1"
    assert_eq "$(count "down$i")" 1 "request $i with Redis down reached the origin once"
done
assert_eq "$(m2 quic_0rtt_released_handshake_total)" $((hs0 + 5)) "released by the handshake with Redis down"
un=$(($(m2 quic_0rtt_claims_unsent_total) - un0 + $(m2 quic_0rtt_claim_errors_total) - er0))
assert_eq "$un" 5 "claims not sent or failed with Redis down"
log "(c) Redis down: 5/5 0-RTT requests served, released by their handshakes"

stop_clean s1
stop_clean s2
