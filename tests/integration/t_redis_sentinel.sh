#!/usr/bin/env bash
# Redis Sentinel (state.sentinels, state.master_name): a primary, a replica and three sentinels
# (`$REDIS_SERVER FILE --sentinel`), all on loopback ports, with AUTH; with AE_SENTINEL_TLS=1
# every server and sentinel speaks TLS only (test CA made here) and the sites use rediss://.
#  1. `anyedge -t` refuses a sentinel list without master_name, master_name without sentinels, a
#     sentinel that is not host:port, sentinels with a unix:// state.redis.
#  2. Two sites (TLS/TCP and HTTP/3) find the master through the sentinels and share the ring.
#  3. Failover under load: wrk on the TCP site, ae-h3load (a new QUIC connection per request) on
#     the HTTP/3 site; the primary is killed (SIGKILL); the sentinels promote the replica; both
#     sites follow it (+switch-master or a new lookup, ROLE checked). 0 failed requests; the
#     timeline (kill -> promoted -> both sites connected) is printed.
#  4. Rotation continues on the new primary and reaches both sites.
#  5. A rotation racing a failover: the replica is cut off, site 1 rotates on the primary (the
#     write acknowledged, never replicated), the primary dies; meanwhile site 2, which never saw
#     that rotation, rotates on the promoted replica. Site 1 then finds Redis holding its
#     generation with other keys: Redis's ring wins, every site ends up with the same keys
#     (ring_conflicts counted), and the fencing tokens carry the instance (unique across a
#     failover that lost the counter).
. "$(dirname "$0")/lib.sh"

need_redis
H3LOAD=$AE_BIN/ae-h3load
[ -x "$H3LOAD" ] || fail "ae-h3load was not built (libcurl >= 8 missing?)"
TLS=${AE_SENTINEL_TLS:-0}
gen_cert edge
O1=$(free_port)
start_origin o1 "$O1"
PW=sentinel-test-pw
MASTER=edgemaster

SRV_TLS=()
CLI_TLS=()
if [ "$TLS" = 1 ]; then
    pki() { openssl "$@" 2>/dev/null || fail "openssl $1 failed"; }
    pki req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=ca" -keyout "$T/ca.key" -out "$T/ca.pem"
    pki req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=redis" \
        -keyout "$T/srv.key" -out "$T/srv.csr"
    printf 'subjectAltName=IP:127.0.0.1\n' >"$T/srv.ext"
    pki x509 -req -in "$T/srv.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 \
        -extfile "$T/srv.ext" -out "$T/srv.pem"
    SRV_TLS=(--tls-cert-file "$T/srv.pem" --tls-key-file "$T/srv.key" --tls-ca-cert-file
        "$T/ca.pem" --tls-auth-clients no --tls-replication yes)
    CLI_TLS=(--tls --cacert "$T/ca.pem")
fi
# rc PORT ARGS...: the CLI against a server or sentinel (TLS when on).
rc() { "$REDIS_CLI" -h 127.0.0.1 -p "$1" "${CLI_TLS[@]}" --no-auth-warning --raw "${@:2}"; }
rca() { rc "$1" -a "$PW" "${@:2}"; }
port_args() { if [ "$TLS" = 1 ]; then echo "--port 0 --tls-port $1"; else echo "--port $1"; fi; }

# start_server NAME PORT [more args]
start_server() {
    local name=$1 port=$2
    shift 2
    # Its own directory: a replica writes the RDB of its full sync there (and any server loads
    # a dump.rdb it finds in its directory at start).
    mkdir -p "$T/$name"
    # shellcheck disable=SC2046
    start_bg "$name" "$REDIS_SERVER" $(port_args "$port") --bind 127.0.0.1 --dir "$T/$name" --save '' \
        --appendonly no --requirepass "$PW" --masterauth "$PW" "${SRV_TLS[@]}" "$@"
    wait_until 10 rca "$port" PING || fail "$name on $port does not answer: $(tail -3 "$T/$name.log")"
}
P0=$(free_port)
P1=$(free_port)
start_server r0 "$P0"
start_server r1 "$P1" --replicaof 127.0.0.1 "$P0"
link_up() { rca "$1" INFO replication | tr -d '\r' | grep -q '^master_link_status:up'; }
wait_until 10 link_up "$P1" || fail "the replica did not sync"

S=()
for i in 1 2 3; do
    S[i]=$(free_port)
    {
        if [ "$TLS" = 1 ]; then
            printf 'port 0\ntls-port %s\ntls-cert-file %s\ntls-key-file %s\n' "${S[i]}" \
                "$T/srv.pem" "$T/srv.key"
            printf 'tls-ca-cert-file %s\ntls-auth-clients no\ntls-replication yes\n' "$T/ca.pem"
        else
            printf 'port %s\n' "${S[i]}"
        fi
        printf 'bind 127.0.0.1\ndir %s\n' "$T"
        printf 'sentinel monitor %s 127.0.0.1 %s 2\n' "$MASTER" "$P0"
        printf 'sentinel auth-pass %s %s\n' "$MASTER" "$PW"
        printf 'sentinel down-after-milliseconds %s 1000\n' "$MASTER"
        printf 'sentinel failover-timeout %s 5000\n' "$MASTER"
    } >"$T/sentinel$i.conf"
    start_bg "sentinel$i" "$REDIS_SERVER" "$T/sentinel$i.conf" --sentinel
done
master_port() { rc "${S[1]}" SENTINEL get-master-addr-by-name "$MASTER" 2>/dev/null | sed -n 2p; }
master_is() { [ "$(master_port)" = "$1" ]; }
sentinels_ready() {
    [ "$(master_port)" = "$P0" ] &&
        [ "$(rc "${S[1]}" SENTINEL master "$MASTER" | awk 'p { print; exit } $0 == "num-other-sentinels" { p = 1 }')" = 2 ] &&
        [ "$(rc "${S[1]}" SENTINEL master "$MASTER" | awk 'p { print; exit } $0 == "num-slaves" { p = 1 }')" = 1 ]
}
wait_until 20 sentinels_ready || fail "the sentinels do not see each other and the replica"
log "primary $P0, replica $P1, sentinels ${S[*]:1} (tls=$TLS)"

SCHEME=redis
TLSB=""
if [ "$TLS" = 1 ]; then
    SCHEME=rediss
    TLSB=", tls: { ca: $T/ca.pem }"
fi
SENT="[ \"127.0.0.1:${S[1]}\", \"127.0.0.1:${S[2]}\", \"127.0.0.1:${S[3]}\" ]"
STATE="redis: \"$SCHEME://:$PW@$MASTER:6379/0\", sentinels: $SENT, master_name: $MASTER,
  sync_interval: 1s, heartbeat: 1s, connect_timeout: 500ms, command_timeout: 500ms$TLSB"

# ---- 1. configuration checks ----
check_bad() { # check_bad STATE EXPECTED
    local out
    write_site_conf "$T/bad.yaml" 9 tcp "$(free_port)" "$(free_port)" "$O1" "$1"
    if out=$("$ANYEDGE" -t -c "$T/bad.yaml" 2>&1); then
        fail "anyedge -t accepted state { $1 }"
    fi
    assert_match "$out" "$2" "anyedge -t: state { $1 }"
}
check_bad "redis: \"redis://h:1\", sentinels: [ \"127.0.0.1:1\" ]" "needs master_name"
check_bad "redis: \"redis://h:1\", master_name: m" "need a list of sentinels"
check_bad "redis: \"redis://h:1\", sentinels: [ \"127.0.0.1\" ], master_name: m" "is not host:port"
check_bad "redis: \"redis://h:1\", sentinels: [ \"::1:5\" ], master_name: m" "is not host:port"
check_bad "redis: \"unix:///tmp/x\", sentinels: [ \"127.0.0.1:1\" ], master_name: m" \
    "redis:// or rediss://"
write_site_conf "$T/ok.yaml" 9 tcp "$(free_port)" "$(free_port)" "$O1" "$STATE"
"$ANYEDGE" -t -c "$T/ok.yaml" >/dev/null 2>&1 || fail "a good sentinel config refused: $("$ANYEDGE" -t -c "$T/ok.yaml" 2>&1)"
log "config: 5 bad sentinel settings refused, a good one accepted"

# ---- 2. two sites through the sentinels ----
E1=$(free_port); A1=$(free_port); Q2=$(free_port udp); A2=$(free_port)
write_site_conf "$T/s1.yaml" 1 tcp "$E1" "$A1" "$O1" "$STATE" "log: { access: off }"
write_site_conf "$T/s2.yaml" 2 quic "$Q2" "$A2" "$O1" "$STATE" "log: { access: off }"
start_edge s1 "$T/s1.yaml" "$A1"
start_edge s2 "$T/s2.yaml" "$A2"
ctl() { "$ANYEDGECTL" -a "127.0.0.1:$1" "${@:2}"; }
gen_at() { metric_at "$1" anyedge_ring_generation; }
# rotate ADMIN_PORT: keys rotate, asked again (up to 10 s) while the site answers 503 "a ring
# sync or rotation is in progress; try again" (a sync after a reconnect may still be running);
# prints the last answer.
rotate() {
    local out i
    for i in $(seq 50); do
        out=$(ctl "$1" keys rotate 2>&1) || true
        case "$out" in *"in progress"*) sleep 0.2 ;; *) break ;; esac
    done
    printf '%s\n' "$out"
}
gen_is() { [ "$(gen_at "$1")" = "$2" ]; }
keys_at() { ctl "$1" status | grep -o '"ring_keys":\[[^]]*\]'; }
same_ring() {
    local g1 g2
    g1=$(gen_at "$A1")
    g2=$(gen_at "$A2")
    [ -n "$g1" ] && [ "$g1" -gt 0 ] && [ "$g1" = "$g2" ] && [ "$(keys_at "$A1")" = "$(keys_at "$A2")" ]
}
connected() { [ "$(metric_at "$1" anyedge_redis_connected)" = 1 ] && [ "$(metric_at "$1" anyedge_redis_subscribed)" = 1 ]; }
wait_until 10 connected "$A1" || fail "site 1 not connected through the sentinels: $(grep -i redis "$T/s1.log" | tail -3)"
wait_until 10 connected "$A2" || fail "site 2 not connected through the sentinels: $(grep -i redis "$T/s2.log" | tail -3)"
wait_until 10 same_ring || fail "the sites do not share a ring"
grep -q "redis sentinel 127.0.0.1:[0-9]*: master $MASTER at 127.0.0.1:$P0" "$T/s1.log" ||
    fail "no log line naming the master: $(grep -i sentinel "$T/s1.log" | head -3)"
G0=$(gen_at "$A1")
log "both sites on master $MASTER at $P0, shared ring generation $G0 $(keys_at "$A1")"

# ---- 3. failover under load ----
LOAD_SECS=16
start_bg wrk_ka wrk -t1 -c4 -d"${LOAD_SECS}s" --timeout 10s "https://127.0.0.1:$E1/id"
start_bg h3_new "$H3LOAD" -k -N -c 2 -m 1 -d "$LOAD_SECS" -t 20 "https://127.0.0.1:$Q2/id"
sleep 3
sw1=$(metric_at "$A1" anyedge_redis_master_switches_total)
t_kill=$(now_ms)
kill -KILL "$PID_r0"
wait_until 30 master_is "$P1" || fail "the sentinels did not promote the replica"
t_promoted=$(now_ms)
followed() { connected "$1" && [ "$(metric_at "$1" anyedge_redis_master_switches_total)" -ge 1 ]; }
wait_until 20 followed "$A1" || fail "site 1 did not follow the new master: $(grep -i redis "$T/s1.log" | tail -4)"
t_s1=$(now_ms)
wait_until 20 followed "$A2" || fail "site 2 did not follow the new master: $(grep -i redis "$T/s2.log" | tail -4)"
t_s2=$(now_ms)
assert_eq "$(rca "$P1" ROLE | head -1)" master "ROLE of the promoted replica"
for p in wrk_ka h3_new; do
    v=PID_$p
    rc=0
    wait "${!v}" || rc=$?
    [ "$rc" = 0 ] || fail "$p exited $rc: $(tail -n 5 "$T/$p.log")"
done
n_ka=$(wrk_check "$T/wrk_ka.log" "wrk during the failover")
line=$(grep '^requests ' "$T/h3_new.log") || fail "h3load: no totals line: $(tail -n 5 "$T/h3_new.log")"
assert_eq "$(awk '{ print $6 }' <<<"$line")" 0 "h3load errors ($line)"
assert_eq "$(awk '{ print $8 }' <<<"$line")" 0 "h3load non2xx ($line)"
n_h3=$(awk '{ print $2 }' <<<"$line")
log "failover: primary killed at 0 ms, replica promoted at $((t_promoted - t_kill)) ms, site 1" \
    "connected to it at $((t_s1 - t_kill)) ms, site 2 at $((t_s2 - t_kill)) ms;" \
    "requests during the run: TCP $n_ka, HTTP/3 new connections $n_h3, 0 failed" \
    "(site 1 switches $sw1 -> $(metric_at "$A1" anyedge_redis_master_switches_total))"

# ---- 4. rotation continues on the new primary ----
wait_until 10 same_ring || fail "the sites disagree after the failover"
G1=$(gen_at "$A1")
assert_match "$(rotate "$A1")" '"ok":true' "keys rotate at site 1 after the failover"
wait_until 10 gen_is "$A2" $((G1 + 1)) || fail "site 2 did not get the rotation: $(gen_at "$A2")"
wait_until 5 same_ring || fail "different keys after the rotation"
log "rotation after the failover: generation $G1 -> $((G1 + 1)) at both sites"

# ---- 5. a rotation racing a failover ----
# The old primary comes back; the sentinels make it a replica of the new one.
start_server r0b "$P0"
wait_until 30 link_up "$P0" || fail "the old primary did not become a replica: $(rca "$P0" ROLE | head -1)"
sleep 1.2 # let the sync interval pass: a rotation right after another is absorbed
G2=$(gen_at "$A1")
K_before=$(keys_at "$A1")
kill -STOP "$PID_s2"                  # site 2 will not see site 1's rotation
kill -STOP "$PID_r0b"                 # the replica ...
rca "$P1" CLIENT KILL TYPE replica >/dev/null # ... loses its link: nothing more reaches it
assert_match "$(rotate "$A1")" '"ok":true' "keys rotate at site 1 (racing)"
wait_until 5 gen_is "$A1" $((G2 + 1)) || fail "site 1 did not rotate"
K_lost=$(keys_at "$A1")
assert_eq "$(rca "$P1" GET anyedge:ring | awk '$1 == "generation" { print $2 }')" $((G2 + 1)) \
    "generation on the primary"
kill -KILL "$PID_r1" # acknowledged, never replicated
kill -STOP "$PID_s1"
kill -CONT "$PID_r0b"
kill -CONT "$PID_s2"
wait_until 30 master_is "$P0" || fail "the sentinels did not promote $P0"
assert_eq "$(rca "$P0" GET anyedge:ring | awk '$1 == "generation" { print $2 }')" "$G2" \
    "the promoted replica never got generation $((G2 + 1))"
wait_until 20 connected "$A2" || fail "site 2 did not reach the new primary"
sleep 1.2
assert_eq "$(gen_at "$A2")" "$G2" "site 2's generation before its rotation"
assert_match "$(rotate "$A2")" '"ok":true' "keys rotate at site 2 on the new primary"
wait_until 5 gen_is "$A2" $((G2 + 1)) || fail "site 2 did not rotate"
K_won=$(keys_at "$A2")
[ "$K_won" != "$K_lost" ] || fail "the two rotations made the same keys?"
kill -CONT "$PID_s1"
wait_until 15 same_ring || fail "site 1 kept its lost keys: $(keys_at "$A1") vs $(keys_at "$A2")"
assert_eq "$(keys_at "$A1")" "$K_won" "site 1 holds the keys that survived"
assert_eq "$(gen_at "$A1")" $((G2 + 1)) "site 1 generation"
assert_ge "$(metric_at "$A1" anyedge_ring_conflicts_total)" 1 "site 1 ring_conflicts_total"
grep -q "a rotation lost in a failover" "$T/s1.log" || fail "no conflict log line at site 1"
log "racing rotation: site 1's generation $((G2 + 1)) $K_lost was lost with the primary;" \
    "site 2 rotated on the new primary to $K_won; site 1 adopted it (conflict counted;" \
    "before the race: $K_before; fence counter on the new primary: $(rca "$P0" GET anyedge:ring:fence))"
# The promoted replica still serves the sites, and a request still works at both.
assert_match "$(EDGE_PORT=$E1 s_get)" "o1" "site 1 relays"

stop_clean s1
stop_clean s2
