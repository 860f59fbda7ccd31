#!/usr/bin/env bash
# Shared state when Redis fails: two sites sharing the ticket key ring through one redis-server.
#  1. Redis killed under load (keep-alive wrk at site 1, new-connection wrk at site 2): no client
#     sees an error, both sites notice, a ticket from site 1 still resumes at site 2.
#  2. Redis restarted empty: both reconnect, the cached ring is re-published with the SAME
#     generation, old tickets resume at both sites.
#  3. Garbage in Redis (random bytes, malformed secret, future format, wrong type): logged,
#     counted, never adopted, no hot loop; the sites keep serving and cross-resuming.
#  4. Wrong AUTH password: the site starts with a local ring, logs the AUTH failure, serves.
#  5. A "Redis" that accepts but never answers: bounded startup, timeouts counted, serves.
#  6. Redis down at start, appears later: the site adopts the shared ring and the ticket issued
#     under its local ring still resumes.
. "$(dirname "$0")/lib.sh"

need_redis
command -v wrk >/dev/null || fail "wrk is not installed"

gen_cert edge
O=$(free_port)
start_origin o1 "$O"

# site_conf FILE ID EDGE_PORT ADMIN_PORT REDIS_URL
site_conf() {
    write_site_conf "$1" "$2" tcp "$3" "$4" "$O" \
        "redis: \"$5\", sync_interval: 1s, connect_timeout: 300ms, command_timeout: 300ms"
}

# new_session EDGE_PORT FILE WHAT: a full handshake through the edge, ticket stored in FILE.
new_session() {
    local out
    out=$(EDGE_PORT=$1 s_get -sess_out "$2")
    assert_match "$out" "^New, TLSv1.3" "$3: full handshake"
    assert_match "$out" "^o1" "$3: relayed to the origin"
    [ -s "$2" ] || fail "$3: no session ticket stored"
}

# resumes EDGE_PORT FILE: succeeds when the ticket in FILE resumes there and the request relays.
resumes() {
    local out
    out=$(EDGE_PORT=$1 s_get -sess_in "$2")
    grep -q '^Reused, TLSv1.3' <<<"$out" && grep -q "^o1" <<<"$out"
}
assert_resumes() {
    resumes "$1" "$2" || fail "$3: ticket $(basename "$2") does not resume at 127.0.0.1:$1"
}

# ring_gen_in_redis PORT: the generation line of the ring stored in Redis (empty when none).
ring_gen_in_redis() {
    rcli_at "$1" GET anyedge:ring 2>/dev/null | awk '$1 == "generation" { print $2; exit }'
}
# m_is ADMIN_PORT NAME VALUE / m_gt ADMIN_PORT NAME VALUE: metric tests for wait_until.
m_is() { [ "$(metric_at "$1" "$2")" = "$3" ]; }
m_gt() { [ "$(metric_at "$1" "$2")" -gt "$3" ]; }
# redis_gen_is PORT GLOB: the ring in Redis has a generation matching GLOB.
redis_gen_is() { local g; g=$(ring_gen_in_redis "$1"); [[ $g == $2 ]]; }
# listening PORT...: every port accepts TCP connections.
listening() { local p; for p in "$@"; do ! tcp_refused "$p" || return 1; done; }
alive() { kill -0 "$1" 2>/dev/null || fail "$2 (pid $1) is gone"; }
# logcount NAME REGEX: lines of $T/NAME.log matching REGEX.
logcount() { grep -Ec -- "$2" "$T/$1.log" || true; }
log_gt() { [ "$(logcount "$1" "$2")" -gt "$3" ]; }

# ---- two sites, one Redis ----
R=$(free_port)
E1=$(free_port); A1=$(free_port); E2=$(free_port); A2=$(free_port)
start_redis "$R" redis
URL="redis://127.0.0.1:$R/0"
site_conf "$T/s1.yaml" 1 "$E1" "$A1" "$URL"
site_conf "$T/s2.yaml" 2 "$E2" "$A2" "$URL"
start_edge s1 "$T/s1.yaml" "$A1"
wait_port "$E1"
start_edge s2 "$T/s2.yaml" "$A2"
wait_port "$E2"
for a in "$A1" "$A2"; do
    wait_until 5 m_is "$a" anyedge_redis_connected 1 || fail "site with admin $a never connected to Redis"
done
# Rotate once so the ring is not a generation 1 (what a freshly created ring would also be).
wait_until 5 m_gt "$A1" anyedge_ring_generation 0 || fail "site 1 has no shared ring"
"$ANYEDGECTL" -a "127.0.0.1:$A1" keys rotate >/dev/null || fail "keys rotate failed at site 1"
wait_until 5 m_gt "$A1" anyedge_ring_generation 1 && wait_until 5 m_gt "$A2" anyedge_ring_generation 1 ||
    fail "the rotation did not reach both sites"
G0=$(metric_at "$A1" anyedge_ring_generation)
assert_ge "$G0" 2 "site 1 ring generation after a rotation"
RING0=$(rcli_at "$R" GET anyedge:ring)
assert_eq "$(metric_at "$A2" anyedge_ring_generation)" "$G0" "site 2 has the same ring generation"
assert_eq "$(ring_gen_in_redis "$R")" "$G0" "generation stored in Redis"
assert_eq "$(metric_at "$A1" anyedge_ring_shared)" 1 "site 1 uses the shared ring"
assert_eq "$(metric_at "$A2" anyedge_ring_shared)" 1 "site 2 uses the shared ring"
assert_eq $(($(metric_at "$A1" anyedge_ring_republished_total) + \
    $(metric_at "$A2" anyedge_ring_republished_total))) 0 "nothing re-published yet"

# A ticket issued before any trouble, and cross-site resumption as the baseline.
new_session "$E1" "$T/pre.sess" "pre-outage session at site 1"
assert_resumes "$E2" "$T/pre.sess" "baseline: site 1 ticket at site 2"
assert_resumes "$E1" "$T/pre.sess" "baseline: site 1 ticket at site 1"
log "two sites up, shared ring generation $G0"

# ---- 1. Redis killed under load ----
start_bg wrk1 wrk -t2 -c20 -d8s --timeout 5s --latency "https://127.0.0.1:$E1/id"
start_bg wrk2 wrk -t2 -c20 -d8s --timeout 5s --latency -H 'Connection: close' \
    "https://127.0.0.1:$E2/id"
sleep 2
kill -9 "$PID_redis"
T_KILL=$(now_ms)
wait "$PID_redis" 2>/dev/null || true
for a in "$A1" "$A2"; do
    wait_until 3 m_is "$a" anyedge_redis_connected 0 ||
        fail "site with admin $a still reports redis_connected=1 3 s after Redis died"
done
log "redis_connected=0 at both sites $(($(now_ms) - T_KILL)) ms after the kill"
# During the outage (wrk still running): fresh ticket at site 1 resumes at site 2, old one too.
new_session "$E1" "$T/outage.sess" "session at site 1 during the outage"
assert_resumes "$E2" "$T/outage.sess" "outage: site 1 ticket at site 2 (cached ring)"
assert_resumes "$E2" "$T/pre.sess" "outage: pre-outage ticket at site 2"
wait "$PID_wrk1" || fail "wrk1 exited non-zero: $(cat "$T/wrk1.log")"
wait "$PID_wrk2" || fail "wrk2 exited non-zero: $(cat "$T/wrk2.log")"
n1=$(wrk_check "$T/wrk1.log" "keep-alive wrk through site 1")
n2=$(wrk_check "$T/wrk2.log" "new-connection wrk through site 2")
# Max latency (wrk prints it with a unit): the data path must not have waited on Redis.
maxlat_ms() {
    awk '$1 == "Latency" && NF >= 4 { v = $4; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1;
        printf "%d", v * f; exit }' "$1"
}
l1=$(maxlat_ms "$T/wrk1.log"); l2=$(maxlat_ms "$T/wrk2.log")
log "wrk during the outage: site 1 keep-alive $n1 requests (max latency ${l1} ms), site 2" \
    "new-connection $n2 requests (max latency ${l2} ms), 0 errors, 0 non-2xx"
assert_ge "$n2" 50 "new-connection requests through site 2"
assert_le "$l1" 2000 "site 1 max latency (ms)"
assert_le "$l2" 2000 "site 2 max latency (ms)"
# One connection per request at site 2 (wrk resumes its sessions: resumed under the cached ring).
full2=$(metric_at "$A2" 'anyedge_handshakes_total{type="full"}')
res2=$(metric_at "$A2" 'anyedge_handshakes_total{type="resumed"}')
log "site 2 handshakes: $full2 full, $res2 resumed"
assert_ge $((full2 + res2)) "$n2" "site 2: one handshake per new-connection request"
for a in "$A1" "$A2"; do
    assert_eq "$(metric_at "$a" anyedge_redis_connected)" 0 "still disconnected (admin $a)"
    assert_eq "$(metric_at "$a" anyedge_ring_generation)" "$G0" "cached generation kept (admin $a)"
done
alive "$PID_s1" site1
alive "$PID_s2" site2

# ---- 2. Redis back, EMPTY, on the same port ----
start_redis "$R" redis2
T_UP=$(now_ms)
for a in "$A1" "$A2"; do
    wait_until 15 m_is "$a" anyedge_redis_connected 1 ||
        fail "site with admin $a did not reconnect within 15 s of Redis coming back"
done
RECONNECT_MS=$(($(now_ms) - T_UP))
wait_until 5 redis_gen_is "$R" "?*" ||
    fail "no ring in Redis 5 s after both sites reconnected"
log "both sites reconnected ${RECONNECT_MS} ms after Redis restarted (outage $((T_UP - T_KILL)) ms);" \
    "ring in Redis again after $(($(now_ms) - T_UP)) ms"
assert_eq "$(ring_gen_in_redis "$R")" "$G0" "re-published ring has the pre-outage generation"
[ "$(rcli_at "$R" GET anyedge:ring)" = "$RING0" ] ||
    fail "the ring in Redis after the restart is not the pre-outage ring (same keys expected)"
rp1=$(metric_at "$A1" anyedge_ring_republished_total)
rp2=$(metric_at "$A2" anyedge_ring_republished_total)
log "re-published by site 1: $rp1, site 2: $rp2"
assert_ge $((rp1 + rp2)) 1 "anyedge_ring_republished_total at one site"
assert_match "$(cat "$T/s1.log" "$T/s2.log")" "re-published cached generation $G0" "re-publish log line"
sleep 1.2 # one sync interval: both sites read the re-published ring back
for a in "$A1" "$A2"; do
    assert_eq "$(metric_at "$a" anyedge_ring_generation)" "$G0" "generation after the restart (admin $a)"
done
for e in "$E1" "$E2"; do
    assert_resumes "$e" "$T/pre.sess" "after restart: pre-outage ticket"
    assert_resumes "$e" "$T/outage.sess" "after restart: ticket issued during the outage"
done

# ---- 3. garbage in Redis ----
# garbage_round WHAT FILE PATTERN EXPECT: stores FILE's bytes as anyedge:ring (FILE "hash": make
# it a hash), then requires at both sites: ring_errors_total rises, a new log line matching
# PATTERN, generation unchanged, alive, no Redis hot loop, cross-site resumption. EXPECT
# "repair": the sites overwrite the unreadable value with their ring (same generation);
# "keep": they must leave it alone (it claims a generation >= theirs, or is not a string).
garbage_round() {
    local what=$1 file=$2 pat=$3 expect=$4 a i e1 e2 l1 l2 c1 c2 got seen n
    # Start from the good ring: a value a previous "keep" round left behind is re-read (and
    # counted) at every sync, and a read of it still in flight would be taken for this round's.
    # Settled = neither site counts a ring error over more than one sync interval.
    printf '%s' "$GOOD" | rcli_at "$R" -x SET anyedge:ring >/dev/null
    for n in 1 2 3 4 5 6; do
        e1=$(metric_at "$A1" anyedge_ring_errors_total)
        e2=$(metric_at "$A2" anyedge_ring_errors_total)
        sleep 1.3
        [ "$(metric_at "$A1" anyedge_ring_errors_total)" = "$e1" ] &&
            [ "$(metric_at "$A2" anyedge_ring_errors_total)" = "$e2" ] && break
        [ "$n" -lt 6 ] || fail "$what: ring errors still rising after the good ring was put back"
    done
    l1=$(logcount s1 "$pat"); l2=$(logcount s2 "$pat")
    if [ "$file" = hash ]; then
        rcli_at "$R" DEL anyedge:ring >/dev/null
        rcli_at "$R" HSET anyedge:ring a b >/dev/null
    else
        rcli_at "$R" -x SET anyedge:ring <"$file" >/dev/null
    fi
    # A site repairing an unreadable value can do so before the other one reads it: then only
    # the repairing site sees it. A value that stays must be seen by both.
    if [ "$expect" = repair ]; then
        wait_until 5 eval 'm_gt "$A1" anyedge_ring_errors_total "$e1" ||
            m_gt "$A2" anyedge_ring_errors_total "$e2"' ||
            fail "$what: anyedge_ring_errors_total did not rise at either site"
        sleep 0.3
    else
        wait_until 5 m_gt "$A1" anyedge_ring_errors_total "$e1" &&
            wait_until 5 m_gt "$A2" anyedge_ring_errors_total "$e2" ||
            fail "$what: anyedge_ring_errors_total did not rise at both sites"
    fi
    seen=""
    for i in 1 2; do
        a=$([ $i = 1 ] && echo "$A1" || echo "$A2")
        m_gt "$a" anyedge_ring_errors_total "$([ $i = 1 ] && echo "$e1" || echo "$e2")" || continue
        seen="$seen site$i"
        wait_until 3 log_gt "s$i" "$pat" "$([ $i = 1 ] && echo "$l1" || echo "$l2")" ||
            fail "$what: site $i counted a ring error but logged no new line /$pat/"
    done
    # No hot loop: over 2 s a site sends a handful of commands (sync, heartbeat, list).
    c1=$(metric_at "$A1" anyedge_redis_commands_total)
    c2=$(metric_at "$A2" anyedge_redis_commands_total)
    sleep 2
    c1=$(($(metric_at "$A1" anyedge_redis_commands_total) - c1))
    c2=$(($(metric_at "$A2" anyedge_redis_commands_total) - c2))
    assert_le "$c1" 40 "$what: Redis commands by site 1 in 2 s"
    assert_le "$c2" 40 "$what: Redis commands by site 2 in 2 s"
    for a in "$A1" "$A2"; do
        assert_eq "$(metric_at "$a" anyedge_ring_generation)" "$G0" "$what: generation kept (admin $a)"
        assert_eq "$(metric_at "$a" anyedge_redis_connected)" 1 "$what: still connected (admin $a)"
    done
    alive "$PID_s1" "$what: site 1"
    alive "$PID_s2" "$what: site 2"
    case $expect in
    repair)
        wait_until 3 redis_gen_is "$R" "$G0" ||
            fail "$what: the sites did not repair the ring in Redis"
        assert_match "$(rcli_at "$R" GET anyedge:ring | head -1)" '^anyedge-ring 1$' "$what: repaired ring format"
        ;;
    keep)
        if [ "$file" = hash ]; then
            got=$(rcli_at "$R" TYPE anyedge:ring)
            assert_eq "$got" hash "$what: the wrong-type value is left alone"
        else
            cmp -s <(rcli_at "$R" GET anyedge:ring) <(cat "$file"; echo) ||
                fail "$what: the sites overwrote a value that claims a generation >= theirs"
        fi
        ;;
    esac
    assert_resumes "$E2" "$T/pre.sess" "$what: pre-outage ticket at site 2"
    assert_resumes "$E1" "$T/pre.sess" "$what: pre-outage ticket at site 1"
    new_session "$E2" "$T/g.sess" "$what: new session at site 2"
    assert_resumes "$E1" "$T/g.sess" "$what: site 2 ticket at site 1"
    log "$what: errors counted and logged at:$seen; generation $G0 kept ($expect)," \
        "commands in 2 s: $c1/$c2"
}

GOOD=$RING0
head -c 256 /dev/urandom >"$T/garbage.bin"
garbage_round "random garbage" "$T/garbage.bin" "invalid ring in Redis" repair
# (b) the real ring with a malformed secret (not hex, too short): same generation, so the
# publish script refuses to overwrite it (it never replaces a generation >= its own).
sed -E '0,/secret=[0-9a-f]+/s//secret=zz0011/' <<<"$GOOD" | head -c -1 >"$T/badsecret.txt"
grep -q 'secret=zz0011' "$T/badsecret.txt" || fail "could not build the bad-secret ring"
garbage_round "bad secret" "$T/badsecret.txt" "invalid ring in Redis" keep
# (c) a future format: the bare header (no generation: unreadable, repaired), then a whole
# future-format ring with a newer generation (never adopted, never overwritten).
printf 'anyedge-ring 9' >"$T/future0.txt"
garbage_round "future format header" "$T/future0.txt" "invalid ring in Redis" repair
sed -E -e '1s/.*/anyedge-ring 9/' -e "s/^generation .*/generation $((G0 + 1))/" <<<"$GOOD" |
    head -c -1 >"$T/future.txt"
garbage_round "future format ring" "$T/future.txt" "invalid ring in Redis" keep
# (d) wrong type.
garbage_round "wrong type" hash "cannot read anyedge:ring" keep
# Clean up the key: the sites re-publish their ring, same generation.
rp=$(($(metric_at "$A1" anyedge_ring_republished_total) + $(metric_at "$A2" anyedge_ring_republished_total)))
rcli_at "$R" DEL anyedge:ring >/dev/null
wait_until 5 redis_gen_is "$R" "$G0" ||
    fail "the sites did not re-publish after the key was deleted"
assert_ge $(($(metric_at "$A1" anyedge_ring_republished_total) + \
    $(metric_at "$A2" anyedge_ring_republished_total))) $((rp + 1)) "re-published after DEL"
assert_resumes "$E2" "$T/pre.sess" "after the garbage: pre-outage ticket at site 2"
stop_clean s1
stop_clean s2

# ---- 4. wrong AUTH password ----
RA=$(free_port); E4=$(free_port); A4=$(free_port)
start_bg redis_auth "$REDIS_SERVER" --port "$RA" --bind 127.0.0.1 --save '' --appendonly no \
    --requirepass secret
wait_port "$RA"
site_conf "$T/s4.yaml" 4 "$E4" "$A4" "redis://:Wr0ngPassw0rd@127.0.0.1:$RA/0"
start_edge s4 "$T/s4.yaml" "$A4"
wait_port "$E4"
wait_until 5 m_gt "$A4" anyedge_redis_errors_total 1 ||
    fail "wrong AUTH: redis_errors_total does not rise"
assert_eq "$(metric_at "$A4" anyedge_redis_connected)" 0 "wrong AUTH: redis_connected"
assert_eq "$(metric_at "$A4" anyedge_ring_shared)" 0 "wrong AUTH: local ring"
assert_match "$(cat "$T/s4.log")" "AUTH failed.*(WRONGPASS|invalid|password)" "wrong AUTH: log line"
if grep -q Wr0ngPassw0rd "$T/s4.log"; then fail "wrong AUTH: the password appears in the log"; fi
new_session "$E4" "$T/s4.sess" "wrong AUTH: TLS"
assert_resumes "$E4" "$T/s4.sess" "wrong AUTH: local resumption"
log "wrong AUTH: serving with a local ring, redis_errors_total=$(metric_at "$A4" anyedge_redis_errors_total)"
stop_clean s4

# ---- 5. a Redis that accepts and never answers ----
BH=$(free_port); E5=$(free_port); A5=$(free_port)
start_bg blackhole python3 -c '
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
held = []
while True:
    c, _ = s.accept()
    held.append(c)  # never read, never answer
' "$BH"
wait_port "$BH"
site_conf "$T/s5.yaml" 5 "$E5" "$A5" "redis://127.0.0.1:$BH/0"
t0=$(now_ms)
start_edge s5 "$T/s5.yaml"
wait_until 5 listening "$E5" "$A5" ||
    fail "black-hole Redis: the site did not start within 5 s"
STARTUP_MS=$(($(now_ms) - t0))
log "black-hole Redis: site serving ${STARTUP_MS} ms after start"
assert_le "$STARTUP_MS" 3000 "black-hole Redis: startup time (ms)"
new_session "$E5" "$T/s5.sess" "black-hole Redis: TLS"
assert_resumes "$E5" "$T/s5.sess" "black-hole Redis: local resumption"
wait_until 5 m_gt "$A5" anyedge_redis_timeouts_total 1 ||
    fail "black-hole Redis: redis_timeouts_total does not rise"
assert_eq "$(metric_at "$A5" anyedge_redis_connected)" 0 "black-hole Redis: redis_connected"
assert_eq "$(metric_at "$A5" anyedge_redis_connects_total)" 0 "black-hole Redis: never connected"
assert_eq "$(metric_at "$A5" anyedge_ring_shared)" 0 "black-hole Redis: local ring"
log "black-hole Redis: redis_timeouts_total=$(metric_at "$A5" anyedge_redis_timeouts_total)"
stop_clean s5

# ---- 6. Redis down at start, appears later ----
R6=$(free_port); E6=$(free_port); A6=$(free_port)
site_conf "$T/s6.yaml" 6 "$E6" "$A6" "redis://127.0.0.1:$R6/0"
start_edge s6 "$T/s6.yaml" "$A6"
wait_port "$E6"
assert_eq "$(metric_at "$A6" anyedge_redis_connected)" 0 "Redis down at start: redis_connected"
assert_eq "$(metric_at "$A6" anyedge_ring_generation)" 0 "Redis down at start: no shared ring"
new_session "$E6" "$T/s6.sess" "Redis down at start: TLS"
assert_resumes "$E6" "$T/s6.sess" "Redis down at start: local resumption"
start_redis "$R6" redis6
t0=$(now_ms)
wait_until 15 m_is "$A6" anyedge_redis_connected 1 && wait_until 3 m_gt "$A6" anyedge_ring_generation 0 ||
    fail "Redis appeared: the site did not adopt a shared ring within 15 s"
log "Redis appeared: shared ring adopted after $(($(now_ms) - t0)) ms"
assert_eq "$(metric_at "$A6" anyedge_ring_shared)" 1 "Redis appeared: shared ring in use"
assert_eq "$(ring_gen_in_redis "$R6")" "$(metric_at "$A6" anyedge_ring_generation)" "Redis appeared: ring in Redis"
assert_resumes "$E6" "$T/s6.sess" "Redis appeared: ticket from the local ring (decrypt-only)"
new_session "$E6" "$T/s6b.sess" "Redis appeared: new session"
assert_resumes "$E6" "$T/s6b.sess" "Redis appeared: ticket under the shared ring"
stop_clean s6
