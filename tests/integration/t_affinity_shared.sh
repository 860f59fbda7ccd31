#!/usr/bin/env bash
# Affinity across sites: a session obtained at site 1 and resumed at site 2 reaches the
# upstream server that served it at site 1 (the choice travels in the shared-key ticket); with
# that server down it goes elsewhere and the request still succeeds.
. "$(dirname "$0")/lib.sh"

gen_cert edge
O1=$(free_port); O2=$(free_port); O3=$(free_port); REDIS_PORT=$(free_port)
start_origin oa "$O1"
start_origin ob "$O2"
start_origin oc "$O3"
start_redis "$REDIS_PORT"

# site_conf FILE ID EDGE_PORT ADMIN_PORT: a site balancing by affinity over the three origins.
site_conf() {
    POOL_EXTRA="balance: affinity
    health: { http: /healthz, interval: 200ms, timeout: 150ms, rise: 1, fall: 1 }" \
        write_site_conf "$1" "$2" tcp "$3" "$4" "$O1 $O2 $O3" \
        "redis: \"redis://127.0.0.1:$REDIS_PORT/0\", sync_interval: 1s" "log: { access: off }"
}
E1=$(free_port); A1=$(free_port); E2=$(free_port); A2=$(free_port)
site_conf "$T/s1.yaml" 1 "$E1" "$A1"
site_conf "$T/s2.yaml" 2 "$E2" "$A2"
start_edge s1 "$T/s1.yaml" "$A1"
start_edge s2 "$T/s2.yaml" "$A2"
wait_port "$E1"; wait_port "$E2"
same_gen() { [ "$(metric_at "$A1" anyedge_ring_generation)" = "$(metric_at "$A2" anyedge_ring_generation)" ]; }
wait_until 5 same_gen || fail "sites do not share the ring"

# origin_of OUTPUT: the origin that answered (ae-origin's X-Origin response header).
origin_of() { tr -d '\r' <<<"$1" | awk '$1 == "X-Origin:" { o = $2 } END { print o }'; }

# Six sessions at site 1 spread over the three origins (round robin for new sessions); each
# one resumed twice at site 2 must reach the origin that served it at site 1.
declare -A first=()
spread=""
for i in 1 2 3 4 5 6; do
    out=$(EDGE_PORT=$E1 s_get -sess_out "$T/sess$i")
    assert_match "$out" "^New, TLSv1.3" "session $i: full handshake at site 1"
    first[$i]=$(origin_of "$out")
    [ -n "${first[$i]}" ] || fail "session $i: no origin id in the response"
    spread="$spread ${first[$i]}"
done
log "origins of the six sessions at site 1:$spread"
[ "$(tr ' ' '\n' <<<"$spread" | sort -u | grep -c .)" -ge 2 ] ||
    fail "new sessions did not spread over the origins:$spread"
hits0=$(metric_at "$A2" anyedge_affinity_hits_total)
for i in 1 2 3 4 5 6; do
    for r in 1 2; do
        out=$(EDGE_PORT=$E2 s_get -sess_in "$T/sess$i")
        assert_match "$out" "^Reused, TLSv1.3" "session $i resumes at site 2"
        assert_eq "$(origin_of "$out")" "${first[$i]}" "session $i (resumption $r at site 2) origin"
    done
done
assert_eq $(($(metric_at "$A2" anyedge_affinity_hits_total) - hits0)) 12 "affinity hits at site 2"

# The remembered origin goes down: the resumption at site 2 still succeeds, elsewhere.
victim=${first[1]}
case "$victim" in oa) vp=$PID_oa ;; ob) vp=$PID_ob ;; oc) vp=$PID_oc ;; esac
kill "$vp"
down() { [ "$(metric_at "$A2" "anyedge_upstream_server_up{pool=\"pool\",server=\"127.0.0.1:$1\"}")" = 0 ]; }
case "$victim" in oa) vport=$O1 ;; ob) vport=$O2 ;; oc) vport=$O3 ;; esac
wait_until 5 down "$vport" || fail "site 2 did not mark $victim down"
miss0=$(metric_at "$A2" anyedge_affinity_misses_total)
out=$(EDGE_PORT=$E2 s_get -sess_in "$T/sess1")
assert_match "$out" "^Reused, TLSv1.3" "session 1 still resumes at site 2"
now=$(origin_of "$out")
[ -n "$now" ] && [ "$now" != "$victim" ] || fail "with $victim down the request went to '$now'"
assert_eq $(($(metric_at "$A2" anyedge_affinity_misses_total) - miss0)) 1 "affinity miss counted"
log "with $victim down, session 1 was served by $now at site 2"
