#!/usr/bin/env bash
# Upstream affinity with `balance: hash` (rendezvous hashing, proxy/core/hrw.h), issue #12 item 1:
# two HTTP/3 sites and a TCP site, one Redis, three origins, the same server list at every site
# (written in a different order at site 2: the ranking depends on addresses, not positions).
#  1. `hash_key` without `balance: hash`, and a bad header name, are refused by `anyedge -t`.
#  2. HTTP/3 with `hash_key: header:x-user`: each of 12 users reaches the same origin at site 1
#     and at site 2 (a route shift keeps its server), and the users spread over the origins.
#  3. The origin of user u1 stops: u1 goes to the same next origin at both sites; no user of the
#     two other origins moves (hash_pick_next counted).
#  4. A request without the header is hashed by the client's address (hash_no_key counted).
#  5. TCP with `balance: hash` (client_ip): every connection from 127.0.0.1 reaches one origin.
. "$(dirname "$0")/lib.sh"

need_redis
H3GET=$AE_BIN/ae-h3get
[ -x "$H3GET" ] || fail "ae-h3get was not built (libcurl >= 8 missing?)"
gen_cert edge
O1=$(free_port); O2=$(free_port); O3=$(free_port)
# Origin ids unlikely to appear by chance in openssl s_client's output (TCP part).
start_origin zorigin1 "$O1"
start_origin zorigin2 "$O2"
start_origin zorigin3 "$O3"
REDIS_PORT=$(free_port)
start_redis "$REDIS_PORT"
STATE="redis: \"redis://127.0.0.1:$REDIS_PORT/0\", sync_interval: 1s, heartbeat: 1s"

# ---- 1. configuration ----
E9=$(free_port); A9=$(free_port)
POOL_EXTRA='hash_key: "header:x-user"' write_site_conf "$T/bad1.yaml" 9 quic "$E9" "$A9" "$O1" "$STATE"
out=$("$ANYEDGE" -t -c "$T/bad1.yaml" 2>&1) && fail "hash_key without balance: hash accepted"
assert_match "$out" "hash_key: needs balance: hash" "hash_key without balance hash"
POOL_EXTRA=$'balance: hash\n    hash_key: "header:X-User"' write_site_conf "$T/bad2.yaml" 9 quic "$E9" "$A9" "$O1" "$STATE"
out=$("$ANYEDGE" -t -c "$T/bad2.yaml" 2>&1) && fail "an upper-case header name accepted"
assert_match "$out" "lower-case token" "bad header name"
POOL_EXTRA=$'balance: hash\n    hash_key: cookie:sid' write_site_conf "$T/bad3.yaml" 9 quic "$E9" "$A9" "$O1" "$STATE"
out=$("$ANYEDGE" -t -c "$T/bad3.yaml" 2>&1) && fail "hash_key: cookie accepted"
assert_match "$out" "not client_ip or header:NAME" "unknown hash_key"
log "config: hash_key checks"

# ---- 2. two HTTP/3 sites ----
Q1=$(free_port udp); A1=$(free_port); Q2=$(free_port udp); A2=$(free_port)
POOL_EXTRA=$'balance: hash\n    hash_key: "header:x-user"' \
    write_site_conf "$T/s1.yaml" 1 quic "$Q1" "$A1" "$O1 $O2 $O3" "$STATE"
POOL_EXTRA=$'balance: hash\n    hash_key: "header:x-user"' \
    write_site_conf "$T/s2.yaml" 2 quic "$Q2" "$A2" "$O3 $O1 $O2" "$STATE"
start_edge s1 "$T/s1.yaml" "$A1"
start_edge s2 "$T/s2.yaml" "$A2"

# who PORT USER: the origin id that answered GET /id for USER through the H3 site on PORT.
who() {
    local hdr=()
    [ -z "$2" ] || hdr=(-H "x-user: $2")
    "$H3GET" -k "${hdr[@]}" -o "$T/who.out" "https://127.0.0.1:$1/id" >"$T/who.log" 2>&1 ||
        fail "ae-h3get ${2:-(no header)} via $1: $(tail -2 "$T/who.log")"
    tr -d '\r\n' <"$T/who.out"
}
declare -A AT1
used=""
for i in $(seq 12); do
    a=$(who "$Q1" "u$i")
    b=$(who "$Q2" "u$i")
    [ -n "$a" ] || fail "u$i: empty answer"
    assert_eq "$b" "$a" "u$i: site 2 picks site 1's origin"
    assert_eq "$(who "$Q1" "u$i")" "$a" "u$i: again at site 1"
    AT1[u$i]=$a
    case " $used " in *" $a "*) ;; *) used="$used $a" ;; esac
done
n_used=$(wc -w <<<"$used")
assert_ge "$n_used" 2 "origins used by 12 users"
assert_eq "$(metric_at "$A1" anyedge_hash_pick_next_total)" 0 "site 1 hash_pick_next before the stop"
log "12 users: same origin at both sites ($(for o in $used; do printf '%s:%s ' "$o" "$(printf '%s\n' "${AT1[@]}" | grep -cx "$o")"; done))"

# ---- 3. the origin of u1 stops ----
gone=${AT1[u1]}
stop_pid "$(eval echo "\$PID_$gone")"
n1=$(who "$Q1" u1)
n2=$(who "$Q2" u1)
[ "$n1" != "$gone" ] || fail "u1 still reached the stopped $gone"
assert_eq "$n2" "$n1" "u1's next origin is the same at both sites"
for i in $(seq 2 12); do
    [ "${AT1[u$i]}" = "$gone" ] && continue
    assert_eq "$(who "$Q1" "u$i")" "${AT1[u$i]}" "u$i (not on $gone) stays at site 1"
    assert_eq "$(who "$Q2" "u$i")" "${AT1[u$i]}" "u$i (not on $gone) stays at site 2"
done
assert_ge "$(metric_at "$A1" anyedge_hash_pick_next_total)" 1 "site 1 hash_pick_next"
log "$gone stopped: u1 moved to $n1 at both sites; the other origins' users did not move"

# ---- 4. no header: the client's address ----
nk0=$(metric_at "$A1" anyedge_hash_no_key_total)
x=$(who "$Q1" "")
assert_eq "$(who "$Q1" "")" "$x" "no header: the same origin again (client address)"
assert_eq "$(who "$Q2" "")" "$x" "no header: the same origin at site 2"
assert_eq "$(metric_at "$A1" anyedge_hash_no_key_total)" $((nk0 + 2)) "site 1 hash_no_key"
log "requests without x-user hashed by the client address: $x at both sites"

# ---- 5. TCP, client_ip ----
E3=$(free_port); A3=$(free_port)
POOL_EXTRA="balance: hash" write_site_conf "$T/s3.yaml" 3 tcp "$E3" "$A3" "$O1 $O2 $O3" "$STATE"
start_edge s3 "$T/s3.yaml" "$A3"
wait_port "$E3"
first=""
for i in $(seq 6); do
    out=$(EDGE_PORT=$E3 s_get)
    o=$(grep -ao 'zorigin[123]' <<<"$out" | tail -1 || true)
    [ -n "$o" ] || fail "TCP: no origin id in: $(tail -3 <<<"$out")"
    if [ -z "$first" ]; then first=$o; fi
    assert_eq "$o" "$first" "TCP connection $i from 127.0.0.1"
done
log "TCP balance: hash (client_ip): 6/6 connections to $first"

stop_clean s1
stop_clean s2
stop_clean s3
