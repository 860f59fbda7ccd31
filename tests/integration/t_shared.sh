#!/usr/bin/env bash
# Shared state through Redis: two sites share the session-ticket key ring (cross-site
# resumption, rotation propagation, one winner when two sites rotate at once), the site
# registry (liveness, site id conflicts) and the sealed ring (state.kek_file).
. "$(dirname "$0")/lib.sh"

need_redis
gen_cert edge
O1=$(free_port)
REDIS_PORT=$(free_port)
start_origin o1 "$O1"
start_redis "$REDIS_PORT"

# site_conf FILE ID EDGE_PORT ADMIN_PORT [STATE_EXTRA]: a site with its own ports, sharing the
# origin and Redis. STATE_EXTRA is appended inside the state: { } map.
site_conf() {
    write_site_conf "$1" "$2" tcp "$3" "$4" "$O1" \
        "redis: \"redis://127.0.0.1:$REDIS_PORT/0\", sync_interval: 1s, heartbeat: 1s ${5:-}" \
        "log: { access: off }"
}

# sg PORT [s_client args]: s_get against the edge listening on PORT.
sg() { EDGE_PORT=$1 s_get "${@:2}"; }
ctl() { "$ANYEDGECTL" -a "127.0.0.1:$1" "${@:2}"; }
gen_at() { metric_at "$1" anyedge_ring_generation; }
redis_gen() { rcli GET "${1:-anyedge:}ring" | awk '$1 == "generation" { print $2 }'; }
# both_at GEN: both sites report ring generation GEN.
both_at() { [ "$(gen_at "$A1")" = "$1" ] && [ "$(gen_at "$A2")" = "$1" ]; }
done_sum() {
    echo $(($(metric_at "$A1" 'anyedge_ring_rotations_total{result="done"}') +
        $(metric_at "$A2" 'anyedge_ring_rotations_total{result="done"}')))
}
lost_sum() {
    echo $(($(metric_at "$A1" 'anyedge_ring_rotations_total{result="lost"}') +
        $(metric_at "$A2" 'anyedge_ring_rotations_total{result="lost"}')))
}
# site_field SITES_JSON ID FIELD: a field of one site in `anyedgectl sites` output ("absent" if
# the site is not listed).
site_field() {
    python3 -c '
import json, sys
d = json.loads(sys.argv[1])
sites = d["sites"] if isinstance(d, dict) else d
for s in sites:
    if s["id"] == int(sys.argv[2]):
        v = s[sys.argv[3]]
        print(str(v).lower() if isinstance(v, bool) else v)
        sys.exit(0)
print("absent")' "$1" "$2" "$3"
}

E1=$(free_port); A1=$(free_port); E2=$(free_port); A2=$(free_port)
site_conf "$T/s1.yaml" 1 "$E1" "$A1"
site_conf "$T/s2.yaml" 2 "$E2" "$A2"
start_edge s1 "$T/s1.yaml" "$A1"
start_edge s2 "$T/s2.yaml" "$A2"
wait_port "$E1"; wait_port "$E2"

G0=$(redis_gen)
[ -n "$G0" ] || fail "no ring in Redis after two sites started: $(rcli GET anyedge:ring | head -c 200)"
wait_until 5 both_at "$G0" || fail "sites do not share generation $G0: $(gen_at "$A1") / $(gen_at "$A2")"
assert_eq "$(metric_at "$A1" anyedge_redis_connected)" 1 "site 1 anyedge_redis_connected"
assert_eq "$(metric_at "$A2" anyedge_redis_connected)" 1 "site 2 anyedge_redis_connected"
log "both sites on shared ring generation $G0"

# ---- 1. cross-site resumption, both directions, TLS 1.3 and 1.2 ----
for v in tls1_3 tls1_2; do
    V=${v/tls1_/TLSv1.}
    out=$(sg "$E1" "-$v" -sess_out "$T/s1_$v")
    assert_match "$out" "^New, $V" "$V: full handshake at site 1"
    out=$(sg "$E2" "-$v" -sess_in "$T/s1_$v")
    assert_match "$out" "^Reused, $V" "$V: session of site 1 resumes at site 2"
    assert_match "$out" "o1" "$V: resumed connection at site 2 relays"
    out=$(sg "$E2" "-$v" -sess_out "$T/s2_$v")
    assert_match "$out" "^New, $V" "$V: full handshake at site 2"
    out=$(sg "$E1" "-$v" -sess_in "$T/s2_$v")
    assert_match "$out" "^Reused, $V" "$V: session of site 2 resumes at site 1"
done
r1=$(metric_at "$A1" 'anyedge_handshakes_total{type="resumed"}')
r2=$(metric_at "$A2" 'anyedge_handshakes_total{type="resumed"}')
assert_eq "$r1" 2 "site 1 resumed handshakes"
assert_eq "$r2" 2 "site 2 resumed handshakes"
log "check 1: cross-site resumption ok (TLS 1.3 + 1.2, both directions; resumed 2+2)"

# ---- 2. rotation propagates; the pre-rotation ticket resumes as 'previous', then retires ----
out=$(sg "$E1" -sess_out "$T/old")
assert_match "$out" "^New, TLSv1.3" "ticket before rotation"
res=$(ctl "$A1" keys rotate)
assert_match "$res" '"ok":true' "keys rotate at site 1"
t0=$(now_ms)
wait_until 5 both_at $((G0 + 1)) ||
    fail "rotation did not reach both sites: $(gen_at "$A1") / $(gen_at "$A2"), want $((G0 + 1))"
log "check 2: generation $G0 -> $((G0 + 1)) on both sites in $(($(now_ms) - t0)) ms"
assert_eq "$(redis_gen)" $((G0 + 1)) "Redis ring generation after one rotation"
st=$(ctl "$A2" status)
assert_match "$st" "\"ring_generation\":$((G0 + 1))" "anyedgectl status at site 2"
p0=$(metric_at "$A2" 'anyedge_tls_ticket_resumptions_total{key="previous"}')
out=$(sg "$E2" -sess_in "$T/old")
assert_match "$out" "^Reused, TLSv1.3" "pre-rotation ticket resumes at site 2"
p1=$(metric_at "$A2" 'anyedge_tls_ticket_resumptions_total{key="previous"}')
assert_eq "$p1" $((p0 + 1)) "site 2 resumptions under key=previous"
for i in 2 3; do
    sleep 1.1 # deliberate rotations a sync interval apart (docs/operations.md)
    ctl "$A1" keys rotate | grep -q '"ok":true' || fail "rotation $i refused"
    wait_until 5 both_at $((G0 + i)) ||
        fail "rotation $i did not reach both sites: $(gen_at "$A1") / $(gen_at "$A2")"
done
u1=$(metric_at "$A1" 'anyedge_tls_ticket_resumptions_total{key="unknown"}')
u2=$(metric_at "$A2" 'anyedge_tls_ticket_resumptions_total{key="unknown"}')
for p in "$E1" "$E2"; do
    out=$(sg "$p" -sess_in "$T/old")
    assert_match "$out" "^New, TLSv1.3" "retired ticket gives a full handshake at :$p"
    assert_match "$out" "o1" "retired ticket: the connection still relays at :$p"
done
assert_eq "$(metric_at "$A1" 'anyedge_tls_ticket_resumptions_total{key="unknown"}')" $((u1 + 1)) \
    "site 1 key=unknown after retirement"
assert_eq "$(metric_at "$A2" 'anyedge_tls_ticket_resumptions_total{key="unknown"}')" $((u2 + 1)) \
    "site 2 key=unknown after retirement"
log "check 2: ticket of generation $G0 resumed as previous at site 2, full handshake at $((G0 + 3))"

# ---- 3. both sites asked to rotate at the same moment: exactly one rotation ----
# A request within one sync interval of the last rotation is absorbed: start a sync interval
# after check 2's last rotation (each round ends with a longer pause too).
sleep 1.1
for round in 1 2 3; do
    g=$(redis_gen)
    wait_until 5 both_at "$g" || fail "race $round: sites not settled on $g"
    d0=$(done_sum); l0=$(lost_sum)
    ctl "$A1" keys rotate >"$T/race1" 2>&1 &
    p1=$!
    ctl "$A2" keys rotate >"$T/race2" 2>&1 &
    p2=$!
    rc1=0; wait $p1 || rc1=$?
    rc2=0; wait $p2 || rc2=$?
    wait_until 5 both_at $((g + 1)) ||
        fail "race $round: generation $g -> $(gen_at "$A1") / $(gen_at "$A2"), want $((g + 1))"
    sleep 1.2 # one sync interval: a second rotation would show by now
    assert_eq "$(gen_at "$A1")" $((g + 1)) "race $round: site 1 generation"
    assert_eq "$(gen_at "$A2")" $((g + 1)) "race $round: site 2 generation"
    assert_eq "$(redis_gen)" $((g + 1)) "race $round: Redis ring generation"
    d1=$(done_sum); l1=$(lost_sum)
    assert_eq $((d1 - d0)) 1 "race $round: rotations done (sum over sites)"
    log "check 3 round $round: gen $g -> $((g + 1)); done +$((d1 - d0)), lost +$((l1 - l0));" \
        "ctl rc $rc1/$rc2: $(tr -d '\n' <"$T/race1") | $(tr -d '\n' <"$T/race2")"
done

# ---- 4. site registry: both live; site 2 stopped cleanly -> it leaves the registry (not live
# at the next read, ~1 heartbeat); site 2 killed -> not live once its record expires (5 beats) ----
sites=$(ctl "$A1" sites)
assert_eq "$(site_field "$sites" 1 live)" true "site 1 live in the registry"
assert_eq "$(site_field "$sites" 2 live)" true "site 2 live in the registry"
assert_eq "$(site_field "$sites" 1 self)" true "site 1 is self at site 1"
assert_eq "$(site_field "$sites" 2 self)" false "site 2 is not self at site 1"
site2_gone() {
    local j
    j=$(ctl "$A1" sites) || return 1
    [ "$(site_field "$j" 2 live)" != true ]
}
t0=$(now_ms)
stop_clean s2
wait_until 9 site2_gone || fail "site 2 still live 9 s after it stopped: $(ctl "$A1" sites)"
dt=$(($(now_ms) - t0))
assert_match "$(cat "$T/s2.log")" "left the site registry \(site 2\)" "clean stop: leave log line"
assert_le "$dt" 3500 "clean stop: time until site 1 sees site 2 gone (ms)"
sites=$(ctl "$A1" sites)
log "check 4: site 2 stopped cleanly, not live at site 1 after $dt ms (state $(site_field "$sites" 2 state))"
# The same site id starts again at once (its record is gone), then dies without leaving.
start_edge s2b "$T/s2.yaml" "$A2"
wait_until 5 eval '[ "$(site_field "$(ctl "$A1" sites)" 2 live)" = true ]' ||
    fail "restarted site 2 not live at site 1 within 5 s: $(ctl "$A1" sites)"
t0=$(now_ms)
kill -KILL "$PID_s2b"
exit_status "$PID_s2b" >/dev/null
wait_until 10 site2_gone || fail "killed site 2 still live 10 s later: $(ctl "$A1" sites)"
dt=$(($(now_ms) - t0))
assert_ge "$dt" 2500 "killed site: not gone before its record expires (ms)"
assert_le "$dt" 8000 "killed site: time until site 1 sees it gone (ms)"
log "check 4: site 2 killed, not live at site 1 after $dt ms (record expiry)"

# ---- 5. a second instance with site id 1 refuses to start; site 1 keeps serving ----
inst0=$(rcli GET anyedge:site:1 | grep -o 'instance=[0-9a-f]*')
E3=$(free_port); A3=$(free_port)
site_conf "$T/dup.yaml" 1 "$E3" "$A3"
start_bg dup "$ANYEDGE" -c "$T/dup.yaml"
wait_until 10 eval '! kill -0 $PID_dup' || fail "instance with a duplicate site id keeps running"
rc=$(exit_status "$PID_dup")
[ "$rc" -ne 0 ] || fail "duplicate site id: exit status 0"
[ "$rc" -lt 126 ] || fail "duplicate site id: killed by a signal (exit status $rc), not a clean refusal"
grep -Eq 'runtime error|AddressSanitizer|LeakSanitizer' "$T/dup.log" &&
    fail "duplicate site id: sanitizer report: $(grep -E 'ERROR|runtime error' "$T/dup.log" | head -3)"
grep -Eq 'site id 1 .*(already registered|live instance)' "$T/dup.log" ||
    fail "duplicate site id: no clear log line: $(tail -n 5 "$T/dup.log")"
assert_eq "$(rcli GET anyedge:site:1 | grep -o 'instance=[0-9a-f]*')" "$inst0" \
    "site 1's registry record untouched"
out=$(sg "$E1")
assert_match "$out" "o1" "site 1 still serves after the refused start"
assert_eq "$(site_field "$(ctl "$A1" sites)" 1 live)" true "site 1 still live"
log "check 5: duplicate site id refused (exit $rc): $(grep -o 'site id 1 [^:]*' "$T/dup.log" | head -1)"
stop_clean s1

# ---- 6. sealed ring (state.kek_file), fresh prefix ----
head -c 32 /dev/urandom >"$T/kek"; chmod 600 "$T/kek"
head -c 32 /dev/urandom >"$T/kek2"; chmod 600 "$T/kek2"
K1=$(free_port); KA1=$(free_port); K2=$(free_port); KA2=$(free_port); K3=$(free_port); KA3=$(free_port)
site_conf "$T/k1.yaml" 1 "$K1" "$KA1" ", prefix: \"sealed:\", kek_file: $T/kek"
site_conf "$T/k2.yaml" 2 "$K2" "$KA2" ", prefix: \"sealed:\", kek_file: $T/kek"
site_conf "$T/k3.yaml" 3 "$K3" "$KA3" ", prefix: \"sealed:\", kek_file: $T/kek2"
start_edge k1 "$T/k1.yaml" "$KA1"
start_edge k2 "$T/k2.yaml" "$KA2"
wait_port "$K1"; wait_port "$K2"
ring=$(rcli GET sealed:ring)
assert_match "$ring" "sealed=" "sealed ring in Redis"
grep -q 'secret=' <<<"$ring" && fail "sealed ring holds a plain secret"
SG=$(redis_gen sealed:)
wait_until 5 eval '[ "$(gen_at $KA1)" = "$SG" ] && [ "$(gen_at $KA2)" = "$SG" ]' ||
    fail "sealed ring: sites not on generation $SG"
out=$(sg "$K1" -sess_out "$T/k1sess")
assert_match "$out" "^New, TLSv1.3" "sealed: full handshake at site 1"
out=$(sg "$K2" -sess_in "$T/k1sess")
assert_match "$out" "^Reused, TLSv1.3" "sealed: session of site 1 resumes at site 2"
out=$(sg "$K2" -tls1_2 -sess_out "$T/k2sess")
out=$(sg "$K1" -tls1_2 -sess_in "$T/k2sess")
assert_match "$out" "^Reused, TLSv1.2" "sealed: TLS 1.2 session of site 2 resumes at site 1"

start_edge k3 "$T/k3.yaml" "$KA3"
wait_port "$K3"
wait_until 5 eval '[ "$(metric_at $KA3 anyedge_ring_errors_total)" -ge 1 ]' || true
e0=$(metric_at "$KA3" anyedge_ring_errors_total)
assert_ge "$e0" 1 "wrong KEK: ring errors"
wait_until 5 eval '[ "$(metric_at $KA3 anyedge_ring_errors_total)" -gt "$e0" ]' ||
    fail "wrong KEK: ring errors do not rise (stuck at $e0)"
e1=$(metric_at "$KA3" anyedge_ring_errors_total)
grep -q 'MAC does not verify' "$T/k3.log" || fail "wrong KEK: no log line: $(grep -i ring "$T/k3.log" | tail -3)"
kill -0 "$PID_k3" 2>/dev/null || fail "wrong KEK: site 3 died"
assert_match "$(ctl "$KA3" status)" '"shared_ring":false' "wrong KEK: site 3 has no shared ring"
out=$(sg "$K3" -sess_out "$T/k3sess")
assert_match "$out" "^New, TLSv1.3" "wrong KEK: site 3 serves (full handshake)"
assert_match "$out" "o1" "wrong KEK: site 3 relays"
out=$(sg "$K3" -sess_in "$T/k3sess")
assert_match "$out" "^Reused, TLSv1.3" "wrong KEK: site 3 resumes with its local keys"
out=$(sg "$K1" -sess_in "$T/k3sess")
assert_match "$out" "^New, TLSv1.3" "site 1 cannot open site 3's local ticket"
assert_eq "$(redis_gen sealed:)" "$SG" "wrong KEK: the ring in Redis is untouched"
assert_eq "$(rcli GET sealed:ring)" "$ring" "wrong KEK: the ring in Redis is byte-identical"
log "check 6: sealed ring gen $SG shared by sites 1+2; wrong-KEK site ring_errors $e0 -> $e1, serves locally"

stop_clean k3

# ---- 6b. forged rings (issue #11): whoever can write to Redis but has no KEK cannot relabel a
# key, raise the generation or bring back an older ring; the sites count it and keep theirs ----
errs() { echo $(($(metric_at "$KA1" anyedge_ring_errors_total) + $(metric_at "$KA2" anyedge_ring_errors_total))); }
forged_round() {
    local what=$1 value=$2 e
    e=$(errs)
    printf '%s' "$value" | rcli -x SET sealed:ring >/dev/null
    wait_until 5 eval '[ "$(errs)" -gt "$e" ]' || fail "$what: no ring error counted"
    for a in "$KA1" "$KA2"; do
        assert_eq "$(gen_at "$a")" "$SG2" "$what: generation kept (admin $a)"
    done
    out=$(sg "$K2" -sess_in "$T/k1sess2")
    assert_match "$out" "^Reused, TLSv1.3" "$what: sessions still resume across the sites"
    log "check 6b: $what: refused ($(($(errs) - e)) ring error(s) counted), generation $SG2 kept"
}
OLD=$(rcli GET sealed:ring)
ctl "$KA1" keys rotate >/dev/null
wait_until 5 eval '[ "$(redis_gen sealed:)" = "$((SG + 1))" ] && [ "$(gen_at $KA1)" = "$((SG + 1))" ] &&
    [ "$(gen_at $KA2)" = "$((SG + 1))" ]' || fail "sealed ring: the rotation did not reach both sites"
SG2=$((SG + 1))
GOOD=$(rcli GET sealed:ring)
out=$(sg "$K1" -sess_out "$T/k1sess2")
forged_round "relabelled key (id=99 before a sealed secret)" "$(sed -E '0,/ sealed=/s// id=99 sealed=/' <<<"$GOOD")"
forged_round "raised generation" "$(sed -E "s/^generation .*/generation $((SG2 + 5))/" <<<"$GOOD")"
forged_round "swapped key states" "$(sed -E 's/state=next/state=XX/; s/state=current/state=next/; s/state=XX/state=current/' <<<"$GOOD")"
forged_round "MAC line removed" "$(grep -v '^mac ' <<<"$GOOD")"
forged_round "replayed older ring (generation $SG, MAC valid)" "$OLD"
wait_until 5 eval '[ "$(redis_gen sealed:)" = "$SG2" ]' ||
    fail "the sites did not put generation $SG2 back after the replay"
stop_clean k2
stop_clean k1
