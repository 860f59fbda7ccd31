#!/usr/bin/env bash
# Flows survive route shifts (issue #5): authenticated inter-site forwarding of QUIC packets, in
# the network-namespace lab (tests/lab/netns.sh): client -> router -> site1|site2, anycast
# 192.0.2.10 on both sites' loopback, Redis and ae-origin in core. Each site runs anyedge with
# 2 workers, TCP + QUIC listeners on 192.0.2.10:443, site.forward on its core-facing address and
# the shared ring. The router's link to the client is shaped (tbf) so that transfers last a few
# seconds and the route can move in the middle of one.
#  1. A 50 MiB HTTP/3 download starts at site1; mid-transfer the route moves to site2: the
#     download completes with the origin's sha256, site2 forwarded packets to site1 and site1
#     received them (per-site counters), `anyedgectl whereis` names the owner.
#  2. 20 transfers multiplexed on one connection started at site2, route moved back to site1
#     mid-transfer: all 20 complete with the right hash.
#  3. Forged frames to site1's forward port during a forwarded transfer (bad MAC, stale
#     timestamp, site 0, unknown key, version 2, truncated, random): each dropped and counted
#     under its reason; the transfer completes.
#  4. Owner dies: a gtlsclient transfer at site1, route moved to site2, site1's anyedge killed
#     (SIGKILL): the client gets a stateless reset from site2 and reconnects with the ticket
#     site1 gave it: resumed at site2 with 0-RTT accepted; the gaps from the kill to the reset
#     and to the successful response are reported.
#  Also: the forward latency histogram (anyedge_forward_latency_seconds) counts the frames.
# Needs root and `ip netns` (CI runs as root).
. "$(dirname "$0")/lib.sh"
. "$AE_SRCDIR/tests/lab/netns.sh"

lab_test_require
command -v redis-cli >/dev/null || fail "redis-cli is not installed"
[ -x "$AE_BIN/ae-h3get" ] || fail "$AE_BIN/ae-h3get is missing (HTTP/3 test client)"
command -v gtlsclient >/dev/null || fail "gtlsclient (ngtcp2-client) is not installed"

lab_test_up 2
A=$LAB_ANYCAST
CORE=$LAB_CORE_ADDR
RATE=${AE_SHIFT_RATE:-150mbit}
lab_exec router tc qdisc add dev to-client root tbf rate "$RATE" burst 256kb latency 100ms ||
    fail "cannot shape the router's link to the client"
log "lab $LAB_PREFIX up: anycast $A -> $(lab_route), client link shaped to $RATE"
gen_cert edge

lab_start_core start_bg "$ORIGIN" || fail "core services do not start"

start_site() {
    local n=$1
    lab_site_conf "$n" 2 "$T/edge.pem" "$T/edge.key" "tcp quic" "quic: { early_data: on }" \
        >"$T/site$n.yaml"
    start_bg "site$n" ip netns exec "$(lab_ns site$n)" "$ANYEDGE" -c "$T/site$n.yaml"
    lab_wait_tcp "site$n" 127.0.0.1 9901 || fail "site$n: admin does not listen"
}
start_site 1
start_site 2

smetric() { lab_smetric "$@"; }
fwd_out() { smetric "$1" "anyedge_forwarded_datagrams_total{direction=\"out\",site=\"$2\"}"; }
fwd_in() { smetric "$1" "anyedge_forwarded_datagrams_total{direction=\"in\",site=\"$2\"}"; }
tdrop() { smetric "$1" "anyedge_tunnel_drops_total{reason=\"$2\"}"; }
# fwd_latency SITE: "count p50 p99 mean_ms" of anyedge_forward_latency_seconds (pNN: upper
# bound of the bucket holding the quantile).
fwd_latency() {
    lab_exec "$1" curl -s --max-time 5 http://127.0.0.1:9901/metrics | awk 'BEGIN { n = 0 }
        /^anyedge_forward_latency_seconds_bucket/ {
            match($1, /le="[^"]*"/); le[n] = substr($1, RSTART + 4, RLENGTH - 5); c[n++] = $2 }
        /^anyedge_forward_latency_seconds_sum/ { sum = $2 }
        /^anyedge_forward_latency_seconds_count/ { cnt = $2 }
        END {
            p50 = p99 = "-"
            for (i = 0; i < n; i++) {
                if (p50 == "-" && c[i] >= 0.5 * cnt) p50 = le[i]
                if (p99 == "-" && c[i] >= 0.99 * cnt) p99 = le[i]
            }
            printf "%d %s %s %.3f\n", cnt, p50, p99, (cnt > 0 ? 1000 * sum / cnt : 0) }'
}
wait_until 15 lab_peers_ready || fail "sites do not see each other live in the registry"
sleep 1.5 # one peer-table refresh (every second) after both records are live
log "both sites live in the registry, ring generation $(smetric site1 anyedge_ring_generation)"

# Expected hashes, from the origin itself.
BIG=52428800
SMALL=5242880
sha_big=$(lab_exec core curl -s "http://$CORE:8080/bytes/$BIG" | sha256sum | cut -d' ' -f1)
sha_small=$(lab_exec core curl -s "http://$CORE:8080/bytes/$SMALL" | sha256sum | cut -d' ' -f1)

# h3get_bg NAME ARGS...: ae-h3get in the client namespace, output in $T/NAME.out.
h3get_bg() {
    local name=$1
    shift
    lab_exec client timeout 120 "$AE_BIN/ae-h3get" -k "$@" >"$T/$name.out" 2>"$T/$name.err" &
    printf -v "PID_$name" '%s' $!
    AE_PIDS+=($!)
}
# wait_metric SITE NAME MIN SECS
wait_metric() {
    for _ in $(seq $(($4 * 10))); do
        [ "$(smetric "$1" "$2")" -ge "$3" ] && return 0
        sleep 0.1
    done
    return 1
}

# ---- 1. 50 MiB download, route shift mid-transfer ----
assert_eq "$(lab_route)" site1 "route before check 1"
o21=$(fwd_out site2 1)
i12=$(fwd_in site1 2)
h3get_bg big -o "$T/big.bin" "https://$A/bytes/$BIG"
wait_bytes "$T/big.bin" $((8 << 20)) 30 || fail "download did not reach 8 MiB ($(cat "$T/big.err"))"
at=$(fsize "$T/big.bin")
lab_shift site2
t_shift=$(now_ms)
wait "$PID_big" || fail "download after the shift failed: $(cat "$T/big.out" "$T/big.err")"
t_done=$(now_ms)
read -r _ st bytes sha <"$T/big.out"
assert_eq "$st" 200 "status of the 50 MiB download"
assert_eq "$bytes" "$BIG" "bytes of the 50 MiB download"
assert_eq "$sha" "$sha_big" "sha256 of the 50 MiB download"
fo=$(($(fwd_out site2 1) - o21))
fi=$(($(fwd_in site1 2) - i12))
assert_ge "$fo" 100 "site2 datagrams forwarded to site1"
assert_ge "$fi" 100 "site1 datagrams received from site2"
log "check 1: 50 MiB download shifted to site2 at $((at >> 20)) MiB, completed $((t_done - t_shift)) ms" \
    "later, sha256 ok; site2 forwarded $fo datagrams to site1, site1 accepted $fi"
# Forward latency histogram at site1 (one observation per accepted frame; 1 ms resolution).
lat=$(fwd_latency site1)
read -r lcount lp50 lp99 lmean <<<"$lat"
assert_ge "$lcount" "$fi" "site1 forward latency observations (>= frames accepted)"
log "check 1: site1 forward latency over $lcount frames: p50 <= ${lp50}s, p99 <= ${lp99}s," \
    "mean ${lmean} ms"

# whereis: CIDs made from the ring in Redis (tests/tools/tunnel_forge.py cid SITE WORKER).
redis-cli -h "$CORE" -p 6379 GET anyedge:ring >"$T/ring.txt" 2>/dev/null ||
    lab_exec core redis-cli -h "$CORE" -p 6379 GET anyedge:ring >"$T/ring.txt"
grep -q '^key ' "$T/ring.txt" || fail "cannot read the ring from Redis"
cid11=$(python3 "$AE_SRCDIR/tests/tools/tunnel_forge.py" "$T/ring.txt" cid 1 1)
out=$(lab_exec site2 "$ANYEDGECTL" whereis "$cid11")
assert_match "$out" '"site":1,"worker":1,"self":false,"alive":true' "whereis (site1's CID at site2)"
assert_match "$out" '"action":"forward"' "whereis action at site2"
out=$(lab_exec site1 "$ANYEDGECTL" whereis "$cid11")
assert_match "$out" '"self":true,"alive":true' "whereis (site1's CID at site1)"
out=$(lab_exec site2 "$ANYEDGECTL" whereis 00 2>&1 || true)
assert_match "$out" 'HTTP 400' "whereis with a short CID"
log "whereis at site2 for a CID of site1/worker 1: $(lab_exec site2 "$ANYEDGECTL" whereis "$cid11")"

# ---- 2. 20 transfers on one connection, route moved back to site1 mid-transfer ----
o12=$(fwd_out site1 2)
h3get_bg multi -n 20 -o "$T/multi.bin" "https://$A/bytes/$SMALL"
wait_bytes "$T/multi.bin" $((1 << 20)) 30 || fail "parallel transfers did not start ($(cat "$T/multi.err"))"
lab_shift site1
wait "$PID_multi" || fail "parallel transfers after the shift failed: $(cat "$T/multi.out" "$T/multi.err")"
ok=$(awk -v h="$sha_small" -v n="$SMALL" '$2 == 200 && $3 == n && $4 == h' "$T/multi.out" | wc -l)
assert_eq "$ok" 20 "parallel transfers complete with the right hash ($(head -c 400 "$T/multi.out"))"
fo=$(($(fwd_out site1 2) - o12))
assert_ge "$fo" 100 "site1 datagrams forwarded to site2"
log "check 2: 20 x 5 MiB on one connection from site2, shifted back to site1: 20/20 ok," \
    "site1 forwarded $fo datagrams to site2"

# ---- 3. forged frames during a forwarded transfer ----
assert_eq "$(lab_route)" site1 "route before check 3"
h3get_bg forged -o "$T/forged.bin" "https://$A/bytes/$BIG"
wait_bytes "$T/forged.bin" $((4 << 20)) 30 || fail "download for check 3 did not start"
lab_shift site2 # site2 forwards to site1 while site1 receives the forgeries
declare -A before
for r in mac stale site key version short magic; do before[$r]=$(tdrop site1 $r); done
lab_exec core python3 "$AE_SRCDIR/tests/tools/tunnel_forge.py" "$T/ring.txt" \
    "$(lab_site_fwd 1)" 4434 >"$T/forge.out" || fail "tunnel_forge.py failed"
sleep 0.5
while read -r r n; do
    got=$(($(tdrop site1 "$r") - before[$r]))
    assert_eq "$got" "$n" "site1 tunnel drops for reason $r"
done <"$T/forge.out"
wait "$PID_forged" || fail "transfer during the forgeries failed: $(cat "$T/forged.out" "$T/forged.err")"
read -r _ st bytes sha <"$T/forged.out"
assert_eq "$sha" "$sha_big" "sha256 of the download during the forgeries"
log "check 3: forged frames dropped by reason ($(tr '\n' ' ' <"$T/forge.out")); forwarded download ok"
lab_shift site1

# ---- 4. owner dies after the shift; the client comes back with its ticket in 0-RTT ----
# gtlsclient downloads from site1 and keeps the session ticket site1 sent it (the ring's ticket
# key: valid at every site); the route moves to site2, which forwards; site1 is killed: site2
# answers the client's next packets with a stateless reset (the owner is dead), and a new
# gtlsclient run with that ticket resumes at site2 with 0-RTT accepted.
SESS=$T/sess
TPF=$T/tp
rm -rf "$T/dl4" "$T/dl5"
mkdir -p "$T/dl4" "$T/dl5"
lab_exec client timeout 120 gtlsclient --exit-on-all-streams-close --session-file="$SESS" \
    --tp-file="$TPF" --download="$T/dl4" "$A" 443 "https://localhost/bytes/$BIG" \
    >"$T/dies.out" 2>&1 &
PID_dies=$!
AE_PIDS+=($!)
wait_bytes "$T/dl4/$BIG" $((4 << 20)) 30 || fail "download for check 4 did not start ($(tail -3 "$T/dies.out"))"
[ -s "$SESS" ] && [ -s "$TPF" ] || fail "gtlsclient kept no ticket / transport parameters from site1"
o21=$(fwd_out site2 1)
r0=$(smetric site2 anyedge_forward_resets_owner_dead_total)
lab_shift site2
wait_metric site2 "anyedge_forward_out_total" 1 5 || true
sleep 0.3
kill -KILL "$PID_site1"
t_kill=$(now_ms)
wait "$PID_dies" || true
t_err=$(now_ms)
gap=$((t_err - t_kill))
got=$(fsize "$T/dl4/$BIG")
[ "$got" -lt "$BIG" ] || fail "the download survived its owner's death?"
grep -q "SR token" "$T/dies.out" ||
    fail "gtlsclient saw no stateless reset: $(grep -v '^ *$' "$T/dies.out" | tail -3)"
resets=$(($(smetric site2 anyedge_forward_resets_owner_dead_total) - r0))
assert_ge "$resets" 1 "site2 resets because the owner is dead"
assert_le "$gap" 5000 "time from the owner's death to the client's error (ms)"
z0=$(smetric site2 anyedge_quic_0rtt_accepted_total)
e0=$(smetric site2 anyedge_h3_early_data_requests_total)
lab_exec client timeout 20 gtlsclient --exit-on-all-streams-close --session-file="$SESS" \
    --tp-file="$TPF" --download="$T/dl5" "$A" 443 "https://localhost/bytes/1000" \
    >"$T/reconnect.out" 2>&1 || fail "reconnect at site2 failed: $(tail -3 "$T/reconnect.out")"
t_ok=$(now_ms)
assert_eq "$(fsize "$T/dl5/1000")" 1000 "bytes of the request after the reconnect"
grep -q "type=0RTT" "$T/reconnect.out" || fail "gtlsclient sent no 0-RTT packet to site2"
grep -q "Early data was rejected" "$T/reconnect.out" && fail "site2 rejected the early data"
assert_eq "$(smetric site2 anyedge_quic_0rtt_accepted_total)" $((z0 + 1)) "site2 0-RTT accepted"
assert_eq "$(smetric site2 anyedge_h3_early_data_requests_total)" $((e0 + 1)) \
    "site2 requests forwarded from 0-RTT"
log "check 4: site1 killed after the shift at $((got >> 20)) MiB: stateless reset ends the client's" \
    "connection ${gap} ms after the kill (site2 sent $resets resets for a dead owner); the client" \
    "resumed at site2 with its ticket, 0-RTT accepted, response $((t_ok - t_kill)) ms after the kill" \
    "($((t_ok - t_err)) ms for the new connection)"
whereis_dead() {
    lab_exec site2 "$ANYEDGECTL" whereis "$cid11" | grep -q '"alive":false.*"action":"reset"'
}
wait_until 6 whereis_dead ||
    fail "whereis after site1 died: $(lab_exec site2 "$ANYEDGECTL" whereis "$cid11")"
log "whereis after the owner died: $(lab_exec site2 "$ANYEDGECTL" whereis "$cid11")"
stop_pid "$PID_site2"
