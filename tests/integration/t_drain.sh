#!/usr/bin/env bash
# Shutdown: SIGTERM/SIGINT stop accepting at once, let in-flight connections finish and exit 0;
# timeouts.drain bounds the wait and the connections cut at its end are counted.
. "$(dirname "$0")/lib.sh"

gen_cert edge
O1=$(free_port)
start_origin o1 "$O1"
UPSTREAMS=$O1

# wait_exit PID SECONDS T0_MS: waits for PID to end; prints the milliseconds since T0_MS.
wait_exit() {
    local pid=$1 secs=$2 t0=$3 i
    for i in $(seq $((secs * 100))); do
        kill -0 "$pid" 2>/dev/null || { printf '%s' $(($(now_ms) - t0)); return 0; }
        sleep 0.01
    done
    fail "pid $pid still running ${secs}s after the signal"
}

# new_edge NAME DRAIN: a fresh edge (own ports) with timeouts.drain DRAIN; sets EDGE_PORT,
# ADMIN_PORT and EDGE_PID.
new_edge() {
    local name=$1 drain=$2
    EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port)
    EXTRA="timeouts: { drain: $drain }" write_conf "$T/$name.yaml"
    start_edge "$name" "$T/$name.yaml"
    wait_port "$EDGE_PORT"
    local v="PID_$name"
    EDGE_PID=${!v}
    assert_eq "$(edge_curl /id)" o1 "$name: relays before the signal"
}

active_ge() { [ "$(metric anyedge_connections_active)" -ge "$1" ]; }

# graceful SIGNAL NAME SLEEP_MS: a request to /sleep/SLEEP_MS is in flight when SIGNAL arrives.
graceful() {
    local sig=$1 name=$2 ms=$3 t0 t_ref t_exit t_done cpid code rc
    new_edge "$name" 10s
    curl -sk --max-time 20 -o "$T/$name.body" -w '%{http_code}' \
        "https://127.0.0.1:$EDGE_PORT/sleep/$ms" >"$T/$name.code" 2>/dev/null &
    cpid=$!
    local t_req
    t_req=$(now_ms)
    wait_until 5 active_ge 1 || fail "$name: the slow request never reached the edge"
    sleep 0.3 # the request is at the origin now
    t0=$(now_ms)
    kill -"$sig" "$EDGE_PID"

    # New connections are refused right away.
    wait_until 1 tcp_refused "$EDGE_PORT" || fail "$name: still accepting 1 s after SIG$sig"
    t_ref=$(($(now_ms) - t0))
    rc=0; curl -sk --max-time 3 -o /dev/null "https://127.0.0.1:$EDGE_PORT/id" 2>/dev/null || rc=$?
    [ "$rc" -ne 0 ] || fail "$name: a new HTTPS request succeeded during the drain"
    # ... while the in-flight request is still running and the daemon waits for it.
    kill -0 "$cpid" 2>/dev/null || fail "$name: the in-flight request ended before its time"
    kill -0 "$EDGE_PID" 2>/dev/null || fail "$name: the daemon exited with a request in flight"
    assert_eq "$(metric anyedge_draining)" 1 "$name: anyedge_draining during the drain"
    for _ in 1 2 3; do
        tcp_refused "$EDGE_PORT" || fail "$name: accepted a connection during the drain"
        sleep 0.1
    done

    # The in-flight request completes with its full response.
    wait "$cpid" || fail "$name: the in-flight request failed (curl exit $?)"
    t_done=$(($(now_ms) - t0))
    assert_eq "$(cat "$T/$name.code")" 200 "$name: in-flight response status"
    assert_eq "$(cat "$T/$name.body")" "slept $ms" "$name: in-flight response body"

    # Then the process exits 0, promptly (not at the 10 s drain timeout), and not before the
    # request was done: the request needed ms - (t0 - t_req) more after the signal.
    t_exit=$(wait_exit "$EDGE_PID" 8 "$t0")
    assert_eq "$(exit_status "$EDGE_PID")" 0 "$name: exit status after SIG$sig"
    assert_ge "$t_exit" $((ms - (t0 - t_req) - 100)) "$name: ms from SIG$sig to exit"
    assert_le "$t_exit" $((t_done + 1500)) "$name: ms from SIG$sig to exit"
    local logtxt
    logtxt=$(cat "$T/$name.log")
    assert_match "$logtxt" "SIG$sig: stop accepting" "$name: drain start logged"
    assert_match "$logtxt" "drain complete, exiting" "$name: drain end logged"
    if grep -q "drain timeout" "$T/$name.log"; then
        fail "$name: the drain timed out: $(grep 'drain timeout' "$T/$name.log")"
    fi
    log "$name: SIG$sig with /sleep/$ms in flight: refused new connections after ${t_ref} ms," \
        "request done at ${t_done} ms, exit 0 at ${t_exit} ms after the signal"
}

# (a) SIGTERM with a slow request in flight.
graceful TERM term 2000

# (b) Drain timeout: an idle keep-alive connection and a request that would take 10 s are cut
# after timeouts.drain = 1s.
new_edge forced 1s
ka_open idle "$EDGE_PORT"
assert_eq "$(ka_get idle /id)" "200 o1" "forced: keep-alive connection relays"
curl -sk --max-time 20 -o "$T/forced.body" -w '%{http_code}' \
    "https://127.0.0.1:$EDGE_PORT/sleep/10000" >"$T/forced.code" 2>/dev/null &
cpid=$!
wait_until 5 active_ge 2 || fail "forced: expected 2 active connections, got $(metric anyedge_connections_active)"
sleep 0.3
assert_eq "$(metric anyedge_drain_forced_closes_total)" 0 "forced: drain_forced_closes before"
t0=$(now_ms)
kill -TERM "$EDGE_PID"
wait_until 1 tcp_refused "$EDGE_PORT" || fail "forced: still accepting after SIGTERM"
# Half-way through the drain nothing has been cut yet.
sleep 0.4
assert_eq "$(ka_peek idle)" open "forced: idle connection before the drain timeout"
assert_eq "$(metric anyedge_drain_forced_closes_total)" 0 "forced: drain_forced_closes mid-drain"
t_exit=$(wait_exit "$EDGE_PID" 5 "$t0")
assert_eq "$(exit_status "$EDGE_PID")" 0 "forced: exit status"
assert_ge "$t_exit" 950 "forced: ms from SIGTERM to exit (drain 1s)"
assert_le "$t_exit" 2000 "forced: ms from SIGTERM to exit (drain 1s)"
rc=0; wait "$cpid" || rc=$?
[ "$rc" -ne 0 ] || fail "forced: the 10 s request completed: $(cat "$T/forced.code") $(cat "$T/forced.body")"
assert_eq "$(ka_peek idle)" closed "forced: idle connection after the drain timeout"
# The forced closes are counted: "drain timeout: closing N remaining connections" per worker.
forced=$(awk '/drain timeout: closing [0-9]+ remaining/ {
    for (i = 1; i <= NF; i++) if ($i == "closing") n += $(i + 1) } END { print n + 0 }' "$T/forced.log")
assert_eq "$forced" 2 "forced: connections cut at the drain timeout (log)"
log "forced: drain 1s with 2 open connections: exit 0 at ${t_exit} ms after SIGTERM," \
    "$forced forced closes logged"

# (c) SIGINT behaves like SIGTERM.
graceful INT int 1000
