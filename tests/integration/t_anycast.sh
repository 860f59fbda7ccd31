#!/usr/bin/env bash
# Anycast route control and site drain (proxy/site/anycast.c).
#  (a) mode command, announce/withdraw commands append to $T/route.log, a health-checked pool:
#      announce after rise; origin down -> withdraw after fall; origin back -> announce;
#      `anyedgectl drain` -> withdraw at once, status draining, an open TLS connection and new
#      connections keep working, drained after anycast.drain_timeout; `undrain` -> announce.
#  (b) a hanging announce (`exec sleep 1000`) with command_timeout 1s is killed at its timeout
#      (its PID gone), counted as a failure and retried, while traffic keeps flowing.
#  (c) mode exabgp: the API lines on stdout (and nothing else there); SIGUSR2 drains.
. "$(dirname "$0")/lib.sh"

gen_cert edge
O1=$(free_port)
start_origin o1 "$O1"
UPSTREAMS=$O1
UPSTREAM_EXTRA="health: { tcp: on, interval: 200ms, timeout: 100ms, rise: 1, fall: 1 }"

# status_field KEY: the value of "KEY" inside the "anycast" object of /status.
status_field() {
    curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/status" |
        python3 -c 'import json,sys; v=json.load(sys.stdin)["anycast"]; k=sys.argv[1]
for p in k.split("."): v = v[p] if v is not None else None
print(json.dumps(v) if isinstance(v, (dict, list)) or v is None else v)' "$1"
}
state_is() { [ "$(status_field state)" = "$1" ]; }
lines() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
route_lines() { lines "$T/route.log"; }
last_route() { tail -n 1 "$T/route.log" 2>/dev/null; }
route_is() { [ "$(last_route)" = "$1" ] && [ "$(route_lines)" -eq "$2" ]; }

# ---- (a) command mode: health, hysteresis, drain, undrain ----
EDGE_PORT=$(free_port)
ADMIN_PORT=$(free_port)
EXTRA="anycast:
  mode: command
  prefix: 192.0.2.10/32
  announce: 'echo announce >> $T/route.log; echo \"announced \$ANYEDGE_PREFIX as \$ANYEDGE_ACTION\"'
  withdraw: 'echo withdraw >> $T/route.log'
  interval: 200ms
  rise: 3
  fall: 3
  drain_timeout: 3s" write_conf "$T/edge.yaml"
"$ANYEDGE" -t -c "$T/edge.yaml" >/dev/null || fail "config check"
t0=$(now_ms)
start_edge edge "$T/edge.yaml"
wait_port "$EDGE_PORT"
wait_until 10 route_is announce 1 || fail "no announce after start: $(cat "$T/route.log" 2>/dev/null)"
t_ann=$(($(now_ms) - t0))
assert_ge "$t_ann" 500 "ms to the first announce (rise 3 x 200ms)"
wait_until 5 state_is announced || fail "status state: $(status_field state)"
assert_eq "$(metric anyedge_anycast_announced)" 1 "anycast_announced after start"
assert_eq "$(metric 'anyedge_anycast_transitions_total{to="announced"}')" 1 "transitions to announced"
assert_eq "$(status_field last_command.result)" ok "last command result"
grep -q 'announce\[[0-9]*\]: announced 192.0.2.10/32 as announce' "$T/edge.log" ||
    fail "command output (and its environment) not logged"
log "(a) announced ${t_ann} ms after start"

# Origin down: withdraw after fall; exactly one withdraw.
kill "$PID_o1"
t0=$(now_ms)
wait_until 10 route_is withdraw 2 || fail "no withdraw after the origin died: $(cat "$T/route.log")"
t_wd=$(($(now_ms) - t0))
wait_until 5 state_is withdrawn || fail "status state after origin down: $(status_field state)"
assert_eq "$(metric anyedge_anycast_announced)" 0 "anycast_announced after origin down"
assert_match "$(status_field reason)" "no healthy server" "unhealthy reason"
sleep 1
assert_eq "$(route_lines)" 2 "route commands while down (one withdraw only)"
log "(a) origin down: withdrawn after ${t_wd} ms"

# Origin back: announce again.
start_origin o1 "$O1"
wait_until 10 route_is announce 3 || fail "no announce after the origin came back: $(cat "$T/route.log")"
wait_until 5 state_is announced || fail "status after origin back: $(status_field state)"
assert_eq "$(edge_curl /id)" o1 "relay after origin back"

# Drain: withdraw at once, keep serving the open connection and new ones.
ka_open c1 "$EDGE_PORT"
assert_eq "$(ka_get c1 /id)" "200 o1" "keep-alive connection before drain"
t0=$(now_ms)
out=$("$ANYEDGECTL" -a "127.0.0.1:$ADMIN_PORT" drain) || fail "anyedgectl drain: $out"
assert_match "$out" '"state":"draining"' "anyedgectl drain answer"
wait_until 2 route_is withdraw 4 || fail "no immediate withdraw on drain: $(cat "$T/route.log")"
t_dr=$(($(now_ms) - t0))
assert_le "$t_dr" 1000 "ms from drain to withdraw"
assert_eq "$(status_field state)" draining "status state during drain"
assert_eq "$(status_field site)" draining "status site during drain"
assert_eq "$(metric anyedge_anycast_draining)" 1 "anycast_draining gauge"
assert_eq "$(ka_get c1 /id)" "200 o1" "open TLS connection during drain"
assert_eq "$(edge_curl /id)" o1 "new connection during drain (still accepted)"
"$ANYEDGECTL" -a "127.0.0.1:$ADMIN_PORT" drain >/dev/null || fail "second drain"
sleep 1
assert_eq "$(route_lines)" 4 "no announce while draining (healthy site)"
wait_until 5 state_is drained || fail "not drained after drain_timeout: $(status_field state)"
assert_eq "$(ka_get c1 /id)" "200 o1" "open TLS connection after drained"
kill -0 "$PID_edge" || fail "the process exited after the drain"
log "(a) drain: withdrawn ${t_dr} ms after anyedgectl drain, drained after 3 s, connection alive"

# Undrain: announce after rise.
out=$("$ANYEDGECTL" -a "127.0.0.1:$ADMIN_PORT" undrain) || fail "anyedgectl undrain: $out"
wait_until 10 route_is announce 5 || fail "no announce after undrain: $(cat "$T/route.log")"
wait_until 5 state_is announced || fail "status after undrain: $(status_field state)"
assert_eq "$(metric 'anyedge_anycast_transitions_total{to="draining"}')" 1 "transitions to draining"
assert_eq "$(metric 'anyedge_anycast_transitions_total{to="drained"}')" 1 "transitions to drained"
assert_eq "$(metric anyedge_anycast_command_failures_total)" 0 "command failures (a)"
ka_close c1

# SIGTERM: withdraw before exiting.
stop_clean edge
assert_eq "$(last_route)" withdraw "route after SIGTERM"
log "(a) route log: $(tr '\n' ' ' <"$T/route.log")"

# ---- (b) a hanging announce is killed at its timeout; traffic flows meanwhile ----
EDGE_PORT=$(free_port)
ADMIN_PORT=$(free_port)
EXTRA="anycast:
  mode: command
  prefix: 192.0.2.10/32
  announce: 'echo \$\$ >> $T/hang.pids; exec sleep 1000'
  withdraw: 'echo withdraw >> $T/hang.route'
  command_timeout: 1s
  interval: 200ms
  rise: 1" write_conf "$T/hang.yaml"
start_edge hang "$T/hang.yaml"
wait_port "$EDGE_PORT"
wait_until 10 test -s "$T/hang.pids" || fail "the hanging announce never started"
t0=$(now_ms)
pid1=$(head -n 1 "$T/hang.pids")
kill -0 "$pid1" || fail "hanging announce $pid1 not running"
ok=0
while [ $(($(now_ms) - t0)) -lt 2500 ]; do
    r=$(edge_curl /id) || true
    [ "$r" = o1 ] || fail "request during the hanging announce: '$r'"
    ok=$((ok + 1))
    kill -0 "$pid1" 2>/dev/null || break
done
wait_until 3 bash -c "! kill -0 $pid1 2>/dev/null" || fail "announce $pid1 still alive after its timeout"
t_kill=$(($(now_ms) - t0))
assert_le "$t_kill" 2500 "ms until the hanging announce was gone"
for _ in $(seq 5); do
    r=$(edge_curl /id) || true
    [ "$r" = o1 ] || fail "request after the kill: '$r'"
    ok=$((ok + 1))
done
wait_until 5 metric_ge anyedge_anycast_command_failures_total 1 || fail "failure not counted"
assert_eq "$(metric anyedge_anycast_announced)" 0 "announced with a hanging command"
grep -q 'announce\[[0-9]*\] still running after 1000 ms: terminating it' "$T/hang.log" ||
    fail "timeout not logged"
# It is retried (backoff 1 s): a second announce attempt with a new PID.
pids_ge() { [ "$(lines "$T/hang.pids")" -ge "$1" ]; }
wait_until 5 pids_ge 2 || fail "the failed announce was not retried"
assert_eq "$(status_field last_command.result)" timeout "last command result (b)"
log "(b) hanging announce $pid1 killed ${t_kill} ms after it started; $ok requests ok meanwhile;" \
    "retried ($(lines "$T/hang.pids") attempts)"
stop_clean hang
while read -r p; do
    kill -0 "$p" 2>/dev/null && fail "announce process $p survived the exit"
done <"$T/hang.pids"
assert_eq "$(tail -n 1 "$T/hang.route" 2>/dev/null)" withdraw "withdraw at exit after a cancelled announce"

# ---- (c) exabgp mode: API lines on stdout; SIGUSR2 drains ----
EDGE_PORT=$(free_port)
ADMIN_PORT=$(free_port)
EXTRA="anycast: { mode: exabgp, prefix: 192.0.2.10/32, interval: 200ms, rise: 2, fall: 2 }" \
    write_conf "$T/exa.yaml"
"$ANYEDGE" -c "$T/exa.yaml" >"$T/exa.out" 2>"$T/exa.log" &
PID_exa=$!
AE_PIDS+=($PID_exa)
wait_port "$ADMIN_PORT"
A="announce route 192.0.2.10/32 next-hop self"
W="withdraw route 192.0.2.10/32 next-hop self"
wait_until 10 grep -qx "$A" "$T/exa.out" || fail "exabgp: no announce line: $(cat "$T/exa.out")"
kill -USR2 "$PID_exa"
wait_until 2 grep -qx "$W" "$T/exa.out" || fail "exabgp: no withdraw on SIGUSR2: $(cat "$T/exa.out")"
wait_until 2 state_is draining || fail "exabgp: state after SIGUSR2: $(status_field state)"
assert_eq "$(edge_curl /id)" o1 "exabgp: relays while draining"
"$ANYEDGECTL" -a "127.0.0.1:$ADMIN_PORT" undrain >/dev/null || fail "exabgp: undrain"
announces_eq() { [ "$(grep -cx "$A" "$T/exa.out")" -eq "$1" ]; }
wait_until 5 announces_eq 2 || fail "exabgp: no announce after undrain"
stop_pid "$PID_exa"
assert_eq "$(exit_status "$PID_exa")" 0 "exabgp: exit status"
printf '%s\n' "$A" "$W" "$A" "$W" >"$T/exa.want"
diff "$T/exa.want" "$T/exa.out" || fail "exabgp: stdout is not exactly the API lines"
if grep -Eq 'runtime error|AddressSanitizer|LeakSanitizer' "$T/exa.log"; then
    fail "exabgp: sanitizer report"
fi
log "(c) exabgp stdout: $(tr '\n' '|' <"$T/exa.out")"
