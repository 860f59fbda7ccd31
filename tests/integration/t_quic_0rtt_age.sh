#!/usr/bin/env bash
# 0-RTT for tickets up to quic.early_data_max_age (issue #12 item 2; docs/0rtt-design.md, O2).
# Three sites, one Redis (one key ring), default max age (1h), quic.early_data_shared off:
#  (a) a site-1 ticket 2 minutes old gets 0-RTT at site 2 while site 2 keeps accepting other
#      0-RTT handshakes: a bounded loop of 0-RTT clients (each with the previous run's ticket)
#      runs there during the whole wait, across a reload; none of them is refused;
#  (b) a 0-RTT flight replayed to the site that accepted it is refused early data, right away,
#      after a reload and two minutes later; the request reaches the origin once;
#  (c) a restart forgets the records, so a ticket issued before it resumes in 1-RTT (no 0-RTT);
#  (d) site 3 with quic.early_data_records: 16: once the table is full, 0-RTT is refused and
#      counted (quic_0rtt_refused_full), and a replay of a recorded flight is still refused.
# With the former 10 s anti-replay window (re-started at every roll-over and reload), (a) fails.
. "$(dirname "$0")/lib.sh"

command -v gtlsclient >/dev/null || fail "gtlsclient (ngtcp2-client) is not installed"
need_redis
TOOLS=$AE_SRCDIR/tests/tools
AGE=${AE_0RTT_AGE:-120} # seconds: the ticket age (a) proves; the issue asks for 2 min

gen_cert edge
OP=$(free_port); REDIS_PORT=$(free_port)
Q1=$(free_port udp); Q2=$(free_port udp); Q3=$(free_port udp)
A1=$(free_port); A2=$(free_port); A3=$(free_port)
start_bg origin python3 "$TOOLS/h3_origin.py" "$OP"
wait_port "$OP"
start_redis "$REDIS_PORT"

# site_conf FILE ID QPORT ADMIN_PORT QUIC_EXTRA
site_conf() {
    write_site_conf "$1" "$2" quic "$3" "$4" "$OP" \
        "redis: \"redis://127.0.0.1:$REDIS_PORT/0\", sync_interval: 1s, heartbeat: 1s" \
        "timeouts: { drain: 2s, handshake: 1s }
quic: { early_data: on $5 }"
}
site_conf "$T/s1.yaml" 1 "$Q1" "$A1" ""
site_conf "$T/s2.yaml" 2 "$Q2" "$A2" ""
site_conf "$T/s3.yaml" 3 "$Q3" "$A3" ", early_data_records: 16"
start_edge s1 "$T/s1.yaml" "$A1"
start_edge s2 "$T/s2.yaml" "$A2"
start_edge s3 "$T/s3.yaml" "$A3"
gen() { metric_at "$1" anyedge_ring_generation; }
same_ring() { [ "$(gen "$A1")" -gt 0 ] && [ "$(gen "$A1")" = "$(gen "$A2")" ] && [ "$(gen "$A1")" = "$(gen "$A3")" ]; }
wait_until 10 same_ring || fail "the three sites do not share a ring"

m1() { metric_at "$A1" "anyedge_$1"; }
m2() { metric_at "$A2" "anyedge_$1"; }
m3() { metric_at "$A3" "anyedge_$1"; }
metric_ge_at() { ADMIN_PORT=$1 metric_ge "$2" "$3"; }
count() { curl -s "http://127.0.0.1:$OP/count/$1"; }
early_ok() { grep -q "type=0RTT" "$T/$1" && ! grep -q "Early data was rejected" "$T/$1"; }
early_refused() { grep -q "type=0RTT" "$T/$1" && grep -q "Early data was rejected" "$T/$1"; }

# The tickets under test: OLD (for (a), 0-RTT at site 2 after AGE s) and PRE (for (c), used at
# site 1 after its restart), both from full handshakes at site 1, neither used before.
gtc old.out "$T/d" "$Q1" "https://localhost:$Q1/hdr" --wait-for-ticket --session-file="$T/old" \
    --tp-file="$T/old.tp"
t_old=$(now_ms)
gtc pre.out "$T/d" "$Q1" "https://localhost:$Q1/hdr" --wait-for-ticket --session-file="$T/pre" \
    --tp-file="$T/pre.tp"
[ -s "$T/old" ] && [ -s "$T/pre" ] || fail "no session tickets from site 1"

# ---- the load loop: 0-RTT clients at site 2, each with the ticket the previous one got ----
LOOP_MAX=60 # runs at most, one every ~2 s, until $T/loop/stop exists or AGE + 30 s passed
mkdir -p "$T/loop"
(
    deadline=$(($(date +%s) + AGE + 30))
    for i in $(seq "$LOOP_MAX"); do
        [ -f "$T/loop/stop" ] || [ "$(date +%s)" -ge "$deadline" ] && break
        timeout 20 gtlsclient --exit-on-all-streams-close --download="$T/loop/d" --wait-for-ticket \
            --session-file="$T/loop/sess" --tp-file="$T/loop/tp" 127.0.0.1 "$Q2" \
            "https://localhost:$Q2/hdr?loop$i" >"$T/loop/$i.out" 2>&1 || echo "$i" >>"$T/loop/failed"
        sleep 2
    done
) &
AE_PIDS+=($!)
PID_loop=$!

# ---- (b) replay to the same site: refused now, after a reload, and at the end ----
gtc b0.out "$T/d" "$Q2" "https://localhost:$Q2/hdr" --wait-for-ticket --session-file="$T/b" \
    --tp-file="$T/b.tp"
relay_start rec "$Q2" 15 --record 2
gtc b1.out "$T/d" "$RELAY_PORT" "https://localhost:$Q2/hdr?replay-b" --session-file="$T/b" --tp-file="$T/b.tp"
early_ok b1.out || fail "site 2 refused the probe's early data: $(grep -c 'type=0RTT' "$T/b1.out") 0-RTT packets"
assert_eq "$(count replay-b)" 1 "probe request at the origin"
sleep 1 # the original connection closes
replays=0
replay_b() { # WHEN: the recorded flight once more at site 2, must be refused
    local rj0
    rj0=$(m2 quic_0rtt_rejected_total)
    replay_flight "$Q2"
    wait_until 5 metric_ge_at "$A2" anyedge_quic_0rtt_rejected_total $((rj0 + 1)) ||
        fail "replayed 0-RTT at site 2 not refused ($1): rejected $(m2 quic_0rtt_rejected_total) accepted $(m2 quic_0rtt_accepted_total) resumed $(m2 quic_handshakes_resumed_total) origin $(count replay-b)"
    replays=$((replays + 1))
    assert_eq "$(count replay-b)" 1 "origin requests after the replay ($1)"
    # The replay's connection waits for a handshake that never comes; until it is gone
    # (timeouts.handshake, then its closing period: ~4 s), the same Initial again would reach
    # that connection, not make a new one.
    sleep 5
}
replay_b "right away"
kill -HUP "$PID_s2"
wait_until 10 grep -q 'generation 2 .* is live' "$T/s2.log" || fail "site 2 reload"
replay_b "after a reload"
log "(b) a replayed 0-RTT flight is refused at the site that accepted it, also after a reload"

# ---- (d) a tiny record table: full -> 1-RTT, counted; never accepted twice ----
gtc d0.out "$T/d" "$Q3" "https://localhost:$Q3/hdr" --wait-for-ticket --session-file="$T/t" --tp-file="$T/t.tp"
relay_start rec3 "$Q3" 15 --record 2
gtc d1.out "$T/d" "$RELAY_PORT" "https://localhost:$Q3/hdr?replay-d" --wait-for-ticket \
    --session-file="$T/t" --tp-file="$T/t.tp"
early_ok d1.out || fail "site 3 refused the first 0-RTT"
sleep 1
acc=1 full=0
for i in $(seq 2 20); do
    gtc "d$i.out" "$T/d" "$Q3" "https://localhost:$Q3/hdr?fill$i" --wait-for-ticket \
        --session-file="$T/t" --tp-file="$T/t.tp"
    if early_ok "d$i.out"; then acc=$((acc + 1)); elif early_refused "d$i.out"; then full=$((full + 1)); fi
done
assert_eq "$acc" 16 "0-RTT handshakes accepted by a 16-record table"
assert_eq "$full" 4 "0-RTT handshakes refused when full"
assert_eq "$(m3 quic_0rtt_refused_full_total)" 4 "site 3 quic_0rtt_refused_full"
assert_eq "$(m3 quic_0rtt_accepted_total)" 16 "site 3 quic_0rtt_accepted"
rj0=$(m3 quic_0rtt_rejected_total)
replay_flight "$Q3" "$T/rec3"
wait_until 5 metric_ge_at "$A3" anyedge_quic_0rtt_rejected_total $((rj0 + 1)) ||
    fail "replay at the full site 3 not refused"
assert_eq "$(m3 quic_0rtt_refused_full_total)" 4 "the replay was refused as a replay, not for space"
assert_eq "$(count replay-d)" 1 "origin requests after the replay at site 3"
log "(d) early_data_records 16: 16 accepted, then 4 refused (quic_0rtt_refused_full 4, 1-RTT); the replayed flight refused (recorded)"

# ---- (c) restart: the records are gone, so earlier tickets lose 0-RTT (not resumption) ----
stop_clean s1
start_edge s1b "$T/s1.yaml" "$A1"
wait_until 10 same_ring || fail "site 1 did not get the ring after its restart"
gtc c1.out "$T/d" "$Q1" "https://localhost:$Q1/hdr?pre" --session-file="$T/pre" --tp-file="$T/pre.tp"
early_refused c1.out || fail "site 1 accepted 0-RTT of a ticket issued before its restart"
assert_eq "$(m1 quic_handshakes_resumed_total)" 1 "site 1 resumed the pre-restart ticket"
assert_eq "$(m1 quic_0rtt_rejected_total)" 1 "site 1 refused its early data"
assert_eq "$(count pre)" 1 "the request, sent again in 1-RTT, reached the origin"
log "(c) after a restart a pre-restart ticket resumes in 1-RTT (0-RTT refused)"

# ---- (a) the OLD ticket at site 2, AGE seconds after it was issued ----
while [ $(($(now_ms) - t_old)) -lt $((AGE * 1000)) ]; do
    sleep 1
    kill -0 "$PID_loop" 2>/dev/null || fail "the load loop ended early ($(ls "$T/loop" | wc -l) files)"
done
age=$((($(now_ms) - t_old) / 1000))
relay_start rec2 "$Q2" 15 --record 2
acc0=$(m2 quic_0rtt_accepted_total)
gtc a1.out "$T/d" "$RELAY_PORT" "https://localhost:$Q2/hdr?old" --session-file="$T/old" --tp-file="$T/old.tp"
early_ok a1.out || fail "site 2 refused 0-RTT of a ${age} s old site-1 ticket"
assert_match "$(cat "$T"/d/hdr*)" "^Early-Data: 1$" "Early-Data: 1 at the origin"
assert_eq "$(count old)" 1 "the 0-RTT request reached the origin once"
assert_ge "$(m2 quic_0rtt_accepted_total)" $((acc0 + 1)) "site 2 0-RTT accepted"
touch "$T/loop/stop"
wait "$PID_loop" || true
runs=0 lacc=0 lref=0
for f in "$T"/loop/*.out; do
    runs=$((runs + 1))
    if early_ok "${f#"$T"/}"; then lacc=$((lacc + 1)); elif early_refused "${f#"$T"/}"; then lref=$((lref + 1)); fi
done
[ -f "$T/loop/failed" ] && fail "load loop runs failed: $(paste -sd ' ' "$T/loop/failed")"
assert_ge "$runs" $((AGE / 5)) "load loop runs during the wait"
assert_eq "$lacc" $((runs - 1)) "load loop runs with 0-RTT accepted (all but the first, a full handshake)"
assert_eq "$lref" 0 "load loop runs with 0-RTT refused"
sleep 1
rj0=$(m2 quic_0rtt_rejected_total)
replay_flight "$Q2" "$T/rec2"
wait_until 5 metric_ge_at "$A2" anyedge_quic_0rtt_rejected_total $((rj0 + 1)) ||
    fail "replay of the old ticket's 0-RTT flight at site 2 not refused"
assert_eq "$(count old)" 1 "origin requests after replaying the old ticket's flight"
replay_b "$(($(now_ms) / 1000 - t_old / 1000)) s later"
log "(a) a ${age} s old site-1 ticket got 0-RTT at site 2 while $lacc/$runs 0-RTT clients (tickets ~2 s old) were accepted there, across a reload; its replayed flight refused, and (b)'s flight refused $replays times"

stop_clean s1b
stop_clean s2
stop_clean s3
