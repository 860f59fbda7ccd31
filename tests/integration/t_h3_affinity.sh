#!/usr/bin/env bash
# Upstream affinity with `balance: hash` (rendezvous hashing, proxy/core/hrw.h) and the sealed
# affinity cookie (state/affcookie.h), issue #12 item 1: two HTTP/3 sites and a TCP site, one
# real Redis (the shared key ring), three origins that answer /id with their name, the same
# server list at every site (written in a different order at site 2: the ranking depends on
# addresses, not positions).
#  1. Config: hash_key / affinity_cookie without balance: hash, bad header and cookie names, a bad
#     prefix, a header key on a TCP listener are refused by `anyedge -t`.
#  2. HTTP/3, `hash_key: header:x-user`: each of 12 users reaches the same origin at site 1 and at
#     site 2 (a route shift keeps its server); the users spread over the origins.
#  3. Cookie mode (`affinity_cookie: aeaff`): site 1 sets a sealed cookie naming the server; that
#     cookie, sent with another user's header, is honoured at site 1 and at site 2 (sites share
#     the ring) and no new cookie is set; a tampered cookie is ignored (cookie_invalid), the
#     request goes by its key and gets a fresh cookie.
#  4. The origin of user u1 stops: u1 goes to the same next origin at both sites; no user of the
#     two other origins moves (moved counted); a cookie naming the stopped origin is ignored
#     (cookie_down) and replaced.
#  5. A request without the header is hashed by the client's address (no_key counted).
#  6. A third H3 site with `hash_key: cookie:sid` (split cookie fields): sid=uN reaches the
#     origin that x-user: uN reaches at site 1 (the key is the value); no sid is no_key.
#  7. TCP with `balance: hash` (client_ip): every connection from 127.0.0.1 reaches one origin.
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
aff() { metric_at "$1" "anyedge_affinity_total{pool=\"pool\",result=\"$2\"}"; }

# ---- 1. configuration ----
E9=$(free_port); A9=$(free_port)
# refused CASE PROTO POOL_EXTRA PATTERN: anyedge -t refuses the config with a message matching.
refused() {
    POOL_EXTRA=$3 write_site_conf "$T/bad.yaml" 9 "$2" "$E9" "$A9" "$O1" "$STATE"
    out=$("$ANYEDGE" -t -c "$T/bad.yaml" 2>&1) && fail "$1: accepted"
    assert_match "$out" "$4" "$1"
}
refused "hash_key without balance: hash" quic 'hash_key: "header:x-user"' \
    'upstreams.pool.hash_key: needs balance: hash'
refused "upper-case header name" quic $'balance: hash\n    hash_key: "header:X-User"' \
    'lower-case token'
refused "bad cookie name" quic $'balance: hash\n    hash_key: "cookie:a b"' 'token characters'
refused "IPv4 prefix 40" quic $'balance: hash\n    hash_key: "client_ip/40"' \
    'IPv4 prefix length must be 8..32'
refused "IPv6 prefix 8" quic $'balance: hash\n    hash_key: "client_ip/24,8"' \
    'IPv6 prefix length must be 16..128'
refused "unknown key kind" quic $'balance: hash\n    hash_key: "query:user"' \
    'is not client_ip'
refused "affinity_cookie without balance: hash" quic 'affinity_cookie: aeaff' \
    'affinity_cookie: needs balance: hash'
refused "header key on a TCP listener" tcp $'balance: hash\n    hash_key: "header:x-user"' \
    'a TCP listener relays bytes'
POOL_EXTRA=$'balance: hash\n    hash_key: "client_ip/24,56"\n    affinity_cookie: aeaff' \
    write_site_conf "$T/good.yaml" 9 quic "$E9" "$A9" "$O1" "$STATE"
"$ANYEDGE" -t -c "$T/good.yaml" >/dev/null 2>&1 || fail "a valid hash config refused: $("$ANYEDGE" -t -c "$T/good.yaml" 2>&1)"
log "config: 8 bad hash configs refused with their reason, a good one accepted"

# ---- 2. two HTTP/3 sites ----
Q1=$(free_port udp); A1=$(free_port); Q2=$(free_port udp); A2=$(free_port)
POOL=$'balance: hash\n    hash_key: "header:x-user"\n    affinity_cookie: aeaff'
POOL_EXTRA=$POOL write_site_conf "$T/s1.yaml" 1 quic "$Q1" "$A1" "$O1 $O2 $O3" "$STATE"
POOL_EXTRA=$POOL write_site_conf "$T/s2.yaml" 2 quic "$Q2" "$A2" "$O3 $O1 $O2" "$STATE"
start_edge s1 "$T/s1.yaml" "$A1"
start_edge s2 "$T/s2.yaml" "$A2"
same_ring() { [ "$(metric_at "$A1" anyedge_ring_generation)" = "$(metric_at "$A2" anyedge_ring_generation)" ] &&
    [ "$(metric_at "$A1" anyedge_ring_generation)" -gt 0 ]; }
wait_until 10 same_ring || fail "the two sites do not share a ring"

# who PORT USER [COOKIE]: the origin id that answered GET /id for USER (no x-user when empty),
# sending cookie aeaff=COOKIE when given; the response's Set-Cookie line is left in $T/who.hdr.
who() {
    local hdr=()
    [ -z "$2" ] || hdr+=(-H "x-user: $2")
    [ -z "${3:-}" ] || hdr+=(-H "cookie: theme=dark; aeaff=$3; z=1")
    "$H3GET" -k "${hdr[@]}" -o "$T/who.out" -i "$T/who.hdr" "https://127.0.0.1:$1/id" >"$T/who.log" 2>&1 ||
        fail "ae-h3get ${2:-(no header)} via $1: $(tail -2 "$T/who.log")"
    tr -d '\r\n' <"$T/who.out"
}
# set_cookie: the aeaff value the last response set, empty when none.
set_cookie() { tr -d '\r' <"$T/who.hdr" | sed -n 's/^set-cookie: aeaff=\([^;]*\);.*/\1/Ip' | head -1; }

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
assert_eq "$(aff "$A1" moved)" 0 "site 1 moved before the stop"
assert_eq "$(aff "$A1" hit)" 24 "site 1 hits (2 requests x 12 users)"
assert_eq "$(aff "$A2" hit)" 12 "site 2 hits"
log "12 users: same origin at both sites ($(for o in $used; do printf '%s:%s ' "$o" "$(printf '%s\n' "${AT1[@]}" | grep -cx "$o")"; done))"

# ---- 3. the sealed cookie ----
who "$Q1" u1 >/dev/null
C1=$(set_cookie)
[ ${#C1} -eq 51 ] || fail "site 1 set no 51-character aeaff cookie: '$(cat "$T/who.hdr")'"
tr -d '\r' <"$T/who.hdr" | grep -qi '^set-cookie: aeaff=[^;]*; Path=/; HttpOnly; Secure; SameSite=Lax$' ||
    fail "Set-Cookie attributes: $(grep -i set-cookie "$T/who.hdr")"
# A user whose header hashes to another origin than u1's: the cookie must win over the header.
other=""
for i in $(seq 2 12); do
    [ "${AT1[u$i]}" != "${AT1[u1]}" ] && { other=u$i; break; }
done
[ -n "$other" ] || fail "all users on one origin"
c0=$(aff "$A2" cookie)
assert_eq "$(who "$Q1" "$other" "$C1")" "${AT1[u1]}" "$other with u1's cookie at site 1"
assert_eq "$(set_cookie)" "" "no new cookie when the cookie names the server that answered"
assert_eq "$(who "$Q2" "$other" "$C1")" "${AT1[u1]}" "$other with u1's cookie at site 2"
assert_eq "$(set_cookie)" "" "no new cookie at site 2"
assert_eq "$(aff "$A2" cookie)" $((c0 + 1)) "site 2 cookie honoured"
# Tampered: one character of the sealed part changed (the same length, still base64url).
mid=${C1:30:1}
[ "$mid" = A ] && rep=B || rep=A
BAD=${C1:0:30}$rep${C1:31}
ci0=$(aff "$A2" cookie_invalid)
assert_eq "$(who "$Q2" "$other" "$BAD")" "${AT1[$other]}" "tampered cookie ignored: $other's own origin"
N=$(set_cookie)
[ ${#N} -eq 51 ] && [ "$N" != "$BAD" ] || fail "no fresh cookie after a tampered one: '$N'"
assert_eq "$(who "$Q2" u1 "${C1:0:40}")" "${AT1[u1]}" "truncated cookie ignored"
assert_eq "$(who "$Q2" u1 "garbage!")" "${AT1[u1]}" "garbage cookie ignored"
assert_eq "$(aff "$A2" cookie_invalid)" $((ci0 + 3)) "site 2 cookie_invalid (tampered, truncated, garbage)"
# The fresh cookie from site 2 names the other user's origin and works at site 1.
assert_eq "$(who "$Q1" u1 "$N")" "${AT1[$other]}" "site 2's cookie honoured at site 1"
# What the origin sees: the split cookie field lines joined into one Cookie line (RFC 9114
# §4.2.1), the proxy's own aeaff crumb left out, the application's crumbs kept in order.
"$H3GET" -k -H "x-user: u1" -H "cookie: theme=dark; aeaff=$C1" -H "cookie: z=1" -H "cookie: aeaff2=x" \
    -o "$T/ck.out" "https://127.0.0.1:$Q1/cookie" >"$T/ck.log" 2>&1 || fail "GET /cookie: $(tail -2 "$T/ck.log")"
assert_eq "$(tr -d '\r\n' <"$T/ck.out")" "1 theme=dark; z=1; aeaff2=x" "cookie lines at the origin"
"$H3GET" -k -H "x-user: u1" -H "cookie: aeaff=$C1" -o "$T/ck.out" "https://127.0.0.1:$Q1/cookie" \
    >"$T/ck.log" 2>&1 || fail "GET /cookie: $(tail -2 "$T/ck.log")"
assert_eq "$(tr -d '\r\n' <"$T/ck.out")" "0 " "only the affinity cookie: no Cookie line at the origin"
log "cookie: set by site 1, honoured at both sites over the header; tampered/truncated/garbage ignored and counted; origins get one Cookie line without it"

# ---- 4. the origin of u1 stops ----
gone=${AT1[u1]}
stop_pid "$(eval echo "\$PID_$gone")"
n1=$(who "$Q1" u1)
n2=$(who "$Q2" u1)
[ "$n1" != "$gone" ] || fail "u1 still reached the stopped $gone"
assert_eq "$n2" "$n1" "u1's next origin is the same at both sites"
stay=0
for i in $(seq 2 12); do
    [ "${AT1[u$i]}" = "$gone" ] && continue
    assert_eq "$(who "$Q1" "u$i")" "${AT1[u$i]}" "u$i (not on $gone) stays at site 1"
    assert_eq "$(who "$Q2" "u$i")" "${AT1[u$i]}" "u$i (not on $gone) stays at site 2"
    stay=$((stay + 1))
done
assert_ge "$(aff "$A1" moved)" 1 "site 1 moved"
# u1's cookie names the stopped origin: ignored, the key's next origin, a new cookie.
assert_eq "$(who "$Q2" u1 "$C1")" "$n1" "a cookie naming the stopped origin: u1's next origin"
N2=$(set_cookie)
[ ${#N2} -eq 51 ] || fail "no new cookie after the cookie's origin stopped"
assert_eq "$(who "$Q1" u5 "$N2")" "$n1" "the replacement cookie names $n1"
log "$gone stopped: u1 moved to $n1 at both sites; $stay users of the other origins did not move; its cookie was replaced"

# ---- 5. no header: the client's address ----
nk0=$(aff "$A1" no_key)
x=$(who "$Q1" "")
assert_eq "$(who "$Q1" "")" "$x" "no header: the same origin again (client address)"
assert_eq "$(who "$Q2" "")" "$x" "no header: the same origin at site 2"
assert_eq "$(aff "$A1" no_key)" $((nk0 + 2)) "site 1 no_key"
log "requests without x-user hashed by the client address: $x at both sites"
log "site 1: $(curl -s "http://127.0.0.1:$A1/metrics" | grep '^anyedge_affinity_total' | sed 's/anyedge_affinity_total{pool="pool",result=//' | tr '\n' ' ')"

# ---- 6. hash_key cookie:sid at a third H3 site: the key is the value, whatever carries it ----
Q4=$(free_port udp); A4=$(free_port)
POOL_EXTRA=$'balance: hash\n    hash_key: "cookie:sid"' \
    write_site_conf "$T/s4.yaml" 4 quic "$Q4" "$A4" "$O2 $O3 $O1" "$STATE"
start_edge s4 "$T/s4.yaml" "$A4"
# by_sid PORT SID: like who, with the user in cookie sid (among other cookies) instead of x-user.
by_sid() {
    "$H3GET" -k -H "cookie: a=1; sid=$2" -H "cookie: b=2" -o "$T/sid.out" "https://127.0.0.1:$1/id" \
        >"$T/sid.log" 2>&1 || fail "ae-h3get sid=$2 via $1: $(tail -2 "$T/sid.log")"
    tr -d '\r\n' <"$T/sid.out"
}
checked=0
for i in $(seq 2 12); do
    [ "${AT1[u$i]}" = "$gone" ] && continue
    assert_eq "$(by_sid "$Q4" "u$i")" "${AT1[u$i]}" "cookie sid=u$i at site 4 = x-user: u$i at site 1"
    checked=$((checked + 1))
done
nk4=$(aff "$A4" no_key)
"$H3GET" -k -H "cookie: a=1; sidx=u2" -o /dev/null "https://127.0.0.1:$Q4/id" >/dev/null 2>&1 ||
    fail "request without sid"
assert_eq "$(aff "$A4" no_key)" $((nk4 + 1)) "site 4 no_key (sidx is not sid)"
log "hash_key cookie:sid: $checked users reach the origin their x-user header reaches at site 1"

# ---- 7. TCP, client_ip ----
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
# Each attempt counts: with the stopped origin ranked first for 127.0.0.1, the first connections
# try it, fail and move on until passive checks hold it out.
assert_ge "$(( $(aff "$A3" hit) + $(aff "$A3" moved) ))" 6 "TCP choices counted"
log "TCP balance: hash (client_ip): 6/6 connections to $first"

stop_clean s1
stop_clean s2
stop_clean s3
stop_clean s4
