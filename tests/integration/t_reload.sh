#!/usr/bin/env bash
# Reload: SIGHUPs under keep-alive and new-connection load lose nothing and switch the upstream
# set and log level; invalid configs (SIGHUP or anyedgectl reload) keep the old one and report
# FILE:LINE:COL; listeners added by a reload accept, removed ones stop accepting while their
# established connections keep working.
. "$(dirname "$0")/lib.sh"

gen_cert edge
O1=$(free_port); O2=$(free_port); O3=$(free_port)
start_origin o1 "$O1"
start_origin o2 "$O2"
start_origin o3 "$O3"
EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port); P2=$(free_port)
CONF=$T/edge.yaml
CTL=("$ANYEDGECTL" -a "127.0.0.1:$ADMIN_PORT")

# Config A: pool = o1, log level info, access log on. Config B: pool = o2 + o3, log level
# warn, access log off.
# Config C: A plus a second listener on P2.
UPSTREAMS="$O1" EXTRA="log: { level: info }" write_conf "$T/a.yaml"
UPSTREAMS="$O2 $O3" EXTRA="log: { level: warn, access: off }" write_conf "$T/b.yaml"
UPSTREAMS="$O1" EXTRA="log: { level: info }" \
    LISTENER_EXTRA="}
  - { name: extra, address: \"127.0.0.1:$P2\", upstream: pool" write_conf "$T/c.yaml"
for f in a b c; do
    "$ANYEDGE" -t -c "$T/$f.yaml" >/dev/null || fail "config $f is invalid"
done
grep -q "$P2" "$T/c.yaml" || fail "config c has no second listener"

# use_conf NAME: makes $T/NAME.yaml the live config file (atomic rename).
use_conf() {
    cp "$1" "$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
}
gen() { metric anyedge_config_generation; }
ok_reloads() { metric 'anyedge_reloads_total{result="ok"}'; }
failed_reloads() { metric 'anyedge_reloads_total{result="failed"}'; }
metric_is() { [ "$(metric "$1")" = "$2" ]; }
# ids N: the origin ids of N new connections through the edge, sorted and unique.
ids() {
    local i out=""
    for i in $(seq "$1"); do
        out="$out $(edge_curl /id)"
    done
    tr ' ' '\n' <<<"$out" | sed '/^$/d' | sort -u | tr '\n' ' '
}

use_conf "$T/a.yaml"
start_edge edge "$CONF"
wait_port "$EDGE_PORT"
assert_eq "$(ids 4)" "o1 " "generation 1 relays to o1 only"
assert_eq "$(gen)" 1 "initial generation"

# ---- (a) valid reloads under load ----
wrk -t2 -c50 -d8s --timeout 5s "https://127.0.0.1:$EDGE_PORT/id" >"$T/wrk-ka.out" 2>&1 &
WRK1=$!
wrk -t1 -c8 -d8s --timeout 5s -H 'Connection: close' \
    "https://127.0.0.1:$EDGE_PORT/id" >"$T/wrk-close.out" 2>&1 &
WRK2=$!
sleep 1.5
NRELOAD=5
for i in $(seq $NRELOAD); do
    if [ $((i % 2)) -eq 1 ]; then use_conf "$T/b.yaml"; else use_conf "$T/a.yaml"; fi
    kill -HUP "$PID_edge"
    wait_until 5 metric_is anyedge_config_generation $((1 + i)) ||
        fail "reload $i: generation is $(gen), expected $((1 + i))"
    sleep 1
done
wait "$WRK1" || fail "wrk (keep-alive) exited $?"
wait "$WRK2" || fail "wrk (Connection: close) exited $?"
n_ka=$(wrk_check "$T/wrk-ka.out" "keep-alive load during reloads")
n_close=$(wrk_check "$T/wrk-close.out" "new-connection load during reloads")
# The no-keepalive load really made a connection per request (it would hide accept problems
# otherwise): connections accepted ~ requests.
acc=$(metric anyedge_connections_accepted_total)
assert_ge "$acc" "$n_close" "connections accepted vs Connection: close requests"
log "wrk during $NRELOAD reloads: keep-alive $n_ka requests, Connection: close $n_close" \
    "requests ($acc connections accepted), 0 socket errors, 0 non-2xx"
assert_eq "$(gen)" $((1 + NRELOAD)) "generation after $NRELOAD reloads"
assert_eq "$(ok_reloads)" "$NRELOAD" "reloads_total{ok}"
assert_eq "$(failed_reloads)" 0 "reloads_total{failed}"
assert_match "$("${CTL[@]}" status)" "\"generation\":$((1 + NRELOAD))[,}]" "status generation"

# The last reload loaded B: new connections go to o2 and o3 only.
assert_eq "$(ids 6)" "o2 o3 " "after reloading B: origins"
# Log settings follow the config: B (level warn) did not log its "is live" info line, A did;
# B has the access log off.
for g in $(seq 2 $((1 + NRELOAD))); do
    n=$(grep -c "configuration generation $g from .* is live" "$T/edge.log" || true)
    assert_eq "$n" $((g % 2)) "info line 'generation $g is live' (level info in A, warn in B)"
done
nacc=$(grep -c ' ACCESS ' "$T/edge.log" || true)
edge_curl /id >/dev/null
sleep 0.2
assert_eq "$(grep -c ' ACCESS ' "$T/edge.log" || true)" "$nacc" "access lines with log.access off"

# Back to A through anyedgectl reload: prints the result, exits 0; o1 only; access lines again.
use_conf "$T/a.yaml"
out=$("${CTL[@]}" reload) || fail "anyedgectl reload of a valid config exits non-zero: $out"
assert_match "$out" "$((2 + NRELOAD))" "anyedgectl reload prints the new generation"
assert_eq "$(gen)" $((2 + NRELOAD)) "generation after anyedgectl reload"
assert_eq "$(ids 4)" "o1 " "after reloading A: origins"
sleep 0.2
n2=$(grep -c ' ACCESS ' "$T/edge.log" || true)
assert_ge "$n2" $((nacc + 4)) "access lines with log.access on"
G=$(gen)
OK=$(ok_reloads)

# ---- (b) invalid configs keep the running generation ----
# bad_conf NAME SED-SCRIPT KEY: $T/NAME.yaml = config A edited by SED-SCRIPT.
bad_conf() {
    sed -e "$2" "$T/a.yaml" >"$T/$1.yaml"
    cmp -s "$T/$1.yaml" "$T/a.yaml" && fail "$1: the edit did not change the config"
    return 0
}
bad_conf syntax 's/^workers: \(.*\)$/workers: [\1/'
bad_conf unknown_key 's/^log: { level: info }$/log: { level: info, colour: on }/'
bad_conf bad_address "s/127.0.0.1:$EDGE_PORT/127.0.0.1:99999/"
bad_conf addr_in_use "s/127.0.0.1:$EDGE_PORT/127.0.0.1:$O1/"
bad_conf missing_cert "s|$T/edge.pem|$T/missing.pem|"
declare -A KEY=([syntax]='workers' [unknown_key]='log\.colour' [bad_address]='listeners\[0\]\.address'
    [addr_in_use]='listeners\[0\]\.address' [missing_cert]='tls\.cert')
nfail=0
for name in syntax unknown_key bad_address addr_in_use missing_cert; do
    use_conf "$T/$name.yaml"
    pat="$CONF:[0-9]+:[0-9]+: ${KEY[$name]}: "
    # Via SIGHUP: the error is logged with FILE:LINE:COL and the key.
    kill -HUP "$PID_edge"
    nfail=$((nfail + 1))
    wait_until 5 metric_is 'anyedge_reloads_total{result="failed"}' "$nfail" ||
        fail "$name: SIGHUP: reloads_total{failed} is $(failed_reloads), expected $nfail"
    line=$(grep 'reload failed' "$T/edge.log" | tail -n 1)
    assert_match "$line" "keeping generation $G: $pat" "$name: SIGHUP error log line"
    # Via anyedgectl: non-zero exit, the error printed.
    rc=0; out=$("${CTL[@]}" reload 2>&1) || rc=$?
    [ "$rc" -ne 0 ] || fail "$name: anyedgectl reload exits 0 on a bad config: $out"
    assert_match "$out" "$pat" "$name: anyedgectl reload output"
    nfail=$((nfail + 1))
    assert_eq "$(failed_reloads)" "$nfail" "$name: reloads_total{failed} after anyedgectl"
    # The old config keeps serving, unchanged.
    assert_eq "$(gen)" "$G" "$name: generation"
    assert_eq "$(ids 2)" "o1 " "$name: still relaying with config A"
    log "$name: rejected (anyedgectl rc=$rc): $(head -n 2 <<<"$out" | tail -n 1)"
done
assert_eq "$(ok_reloads)" "$OK" "reloads_total{ok} after the failed reloads"
# A valid reload still works after the failures.
use_conf "$T/a.yaml"
kill -HUP "$PID_edge"
wait_until 5 metric_is anyedge_config_generation $((G + 1)) || fail "valid reload after failures"
G=$(gen)

# ---- (c) listeners added and removed by reload ----
tcp_refused "$P2" || fail "port $P2 accepts before the listener exists"
use_conf "$T/c.yaml"
out=$("${CTL[@]}" reload) || fail "reload adding a listener failed: $out"
assert_eq "$(gen)" $((G + 1)) "generation after adding a listener"
wait_until 2 test "$(curl -sk --max-time 5 "https://127.0.0.1:$P2/id")" = o1 ||
    fail "the added listener on $P2 does not relay"
assert_eq "$(EDGE_PORT=$P2 edge_curl /id)" o1 "added listener relays"
assert_eq "$(edge_curl /id)" o1 "the kept listener still relays"
# An established keep-alive connection on the listener about to go away.
ka_open held "$P2"
assert_eq "$(ka_get held /id)" "200 o1" "held connection before removal"
use_conf "$T/a.yaml"
out=$("${CTL[@]}" reload) || fail "reload removing a listener failed: $out"
assert_eq "$(gen)" $((G + 2)) "generation after removing a listener"
wait_until 2 tcp_refused "$P2" || fail "the removed listener on $P2 still accepts"
for _ in 1 2 3; do
    tcp_refused "$P2" || fail "the removed listener on $P2 accepted a connection"
    sleep 0.1
done
assert_eq "$(edge_curl /id)" o1 "the kept listener relays after the removal"
# The established connection keeps working, more than once, until the client closes it.
assert_eq "$(ka_get held /id)" "200 o1" "held connection after removal"
sleep 0.5
assert_eq "$(ka_get held /)" "200 hello from o1" "held connection after removal, second request"
assert_eq "$(ka_peek held)" open "held connection is still open"
ka_close held
wait_until 5 metric_is anyedge_connections_active 0 ||
    fail "connections still active after the held one closed: $(metric anyedge_connections_active)"
# The same port can be added again.
use_conf "$T/c.yaml"
"${CTL[@]}" reload >/dev/null || fail "re-adding the listener failed"
wait_until 2 test "$(curl -sk --max-time 5 "https://127.0.0.1:$P2/id")" = o1 ||
    fail "the re-added listener on $P2 does not relay"
log "listener $P2 added (accepts), removed (refused, held connection kept working), re-added"

stop_pid "$PID_edge"
assert_eq "$(exit_status "$PID_edge")" 0 "exit status after SIGTERM"
