#!/usr/bin/env bash
# Reload under load: 20 SIGHUPs, alternating a valid changed config and an invalid one, while
# wrk loads the TCP listener (keep-alive, and a new TLS connection per request), ae-h3load the
# QUIC listener (multiplexed, and a new QUIC connection per request), and one rate-limited
# download over each protocol lasts through all of them. Asserted: no request error and no
# non-2xx response anywhere, both downloads complete with the origin's bytes (size and sha256),
# exactly 10 reloads ok and 10 failed with the generation following, every invalid config
# refused while the edge serves on, and the edge alive and clean (exit 0, no sanitizer report).
. "$(dirname "$0")/lib.sh"

H3GET=$AE_BIN/ae-h3get
H3LOAD=$AE_BIN/ae-h3load
[ -x "$H3GET" ] && [ -x "$H3LOAD" ] ||
    fail "ae-h3get / ae-h3load were not built (libcurl >= 8 missing?)"

NRELOAD=20     # SIGHUPs: odd ones load a valid changed config, even ones an invalid config
GAP=0.3        # seconds between a reload taking effect and the next SIGHUP
LOAD_SECS=36   # duration of each load generator (the reloads take ~15 s, ~20 s under ASan)
DL_RATE=2000000                    # bytes/s of the two long downloads...
DL_BYTES=$((DL_RATE * 37))         # ...so that each lasts ~37 s, past the last reload

gen_cert edge
O1=$(free_port); O2=$(free_port)
start_origin o1 "$O1"
start_origin o2 "$O2"
EDGE_PORT=$(free_port); QPORT=$(free_port udp); ADMIN_PORT=$(free_port)
CONF=$T/edge.yaml

# conf FILE SERVERS CONNECT_TIMEOUT CLIENT_IDLE: 2 workers, a TCP and a QUIC listener to one pool.
conf() {
    cat >"$1" <<EOF
site: { id: 1, name: test }
workers: 2
tls: { cert: $T/edge.pem, key: $T/edge.key }
listeners:
  - { name: main, protocol: tcp, address: "127.0.0.1:$EDGE_PORT", upstream: pool }
  - { name: h3, protocol: quic, address: "127.0.0.1:$QPORT", upstream: pool }
upstreams:
  pool:
    servers: [ $2 ]
    connect_timeout: $3
admin: { address: "127.0.0.1:$ADMIN_PORT" }
log: { level: info }
timeouts: { client_idle: $4 }
EOF
}
# The two valid configs differ in the pool's servers, its connect timeout and the idle timeout.
conf "$T/a.yaml" "\"127.0.0.1:$O1\", \"127.0.0.1:$O2\"" 3s 60s
conf "$T/b.yaml" "\"127.0.0.1:$O2\"" 2s 50s
# Invalid configs: config A with one fault each.
BAD=(syntax unknown_key bad_value addr_in_use missing_cert)
bad_conf() {
    sed -e "$2" "$T/a.yaml" >"$T/$1.yaml"
    cmp -s "$T/$1.yaml" "$T/a.yaml" && fail "$1: the edit did not change the config"
    return 0
}
bad_conf syntax 's/^workers: \(.*\)$/workers: [\1/'
bad_conf unknown_key 's/^log: { level: info }$/log: { level: info, colour: on }/'
bad_conf bad_value 's/connect_timeout: 3s/connect_timeout: 1ms/'
bad_conf addr_in_use "s/127.0.0.1:$EDGE_PORT/127.0.0.1:$O1/"
bad_conf missing_cert "s|$T/edge.pem|$T/missing.pem|"
for f in a b; do
    "$ANYEDGE" -t -c "$T/$f.yaml" >/dev/null 2>&1 || fail "config $f is invalid"
done
for f in "${BAD[@]}"; do
    [ "$f" = addr_in_use ] && continue # only fails when binding, which -t does not do
    "$ANYEDGE" -t -c "$T/$f.yaml" >/dev/null 2>&1 && fail "config $f passes anyedge -t"
done

# use_conf NAME: makes $T/NAME.yaml the live config file (atomic rename).
use_conf() {
    cp "$T/$1.yaml" "$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
}
gen() { metric anyedge_config_generation; }
ok_reloads() { metric 'anyedge_reloads_total{result="ok"}'; }
failed_reloads() { metric 'anyedge_reloads_total{result="failed"}'; }
metric_is() { [ "$(metric "$1")" = "$2" ]; }
running() { kill -0 "$1" 2>/dev/null; }
sha() { sha256sum <"$1" | cut -d' ' -f1; }

use_conf a
start_edge edge "$CONF"
wait_port "$EDGE_PORT"
assert_match "$(edge_curl /id)" '^o[12]$' "TCP listener relays"
out=$("$H3GET" -k "https://127.0.0.1:$QPORT/id") || fail "QUIC listener: $out"
assert_match "$out" '^0 200 2 ' "QUIC listener relays"
assert_eq "$(gen)" 1 "initial generation"

# The origin's /bytes/N content is deterministic: the expected digest comes from the origin.
curl -s --max-time 60 -o "$T/want.bin" "http://127.0.0.1:$O1/bytes/$DL_BYTES"
assert_eq "$(fsize "$T/want.bin")" "$DL_BYTES" "origin /bytes/$DL_BYTES size"
WANT=$(sha "$T/want.bin")
rm -f "$T/want.bin"

# ---- the long downloads and the load ----
t_start=$(now_ms)
start_bg dl_tcp curl -sk --max-time 120 --limit-rate "$DL_RATE" -o "$T/dl_tcp.bin" \
    "https://127.0.0.1:$EDGE_PORT/bytes/$DL_BYTES"
start_bg dl_h3 "$H3GET" -k -r "$DL_RATE" -o "$T/dl_h3.bin" \
    "https://127.0.0.1:$QPORT/bytes/$DL_BYTES"
start_bg wrk_ka wrk -t1 -c8 -d"${LOAD_SECS}s" --timeout 10s "https://127.0.0.1:$EDGE_PORT/id"
start_bg wrk_close wrk -t1 -c4 -d"${LOAD_SECS}s" --timeout 10s -H 'Connection: close' \
    "https://127.0.0.1:$EDGE_PORT/id"
start_bg h3_mux "$H3LOAD" -k -c 2 -m 4 -d "$LOAD_SECS" -t 20 "https://127.0.0.1:$QPORT/bytes/1024"
start_bg h3_new "$H3LOAD" -k -N -c 2 -m 1 -d "$LOAD_SECS" -t 20 "https://127.0.0.1:$QPORT/id"
LOADS="wrk_ka wrk_close h3_mux h3_new"
wait_bytes "$T/dl_tcp.bin" 1 10 || fail "the TCP download did not start"
wait_bytes "$T/dl_h3.bin" 1 10 || fail "the HTTP/3 download did not start"
sleep 1

# ---- 20 reloads ----
G=1; OK=0; FAILED=0; RTIMES=
for i in $(seq "$NRELOAD"); do
    t0=$(now_ms)
    if [ $((i % 2)) -eq 1 ]; then
        # valid: B, A, B, ...
        if [ $(((i + 1) / 2 % 2)) -eq 1 ]; then name=b; else name=a; fi
        use_conf "$name"
        kill -HUP "$PID_edge"
        G=$((G + 1)); OK=$((OK + 1))
        wait_until 10 metric_is anyedge_config_generation "$G" ||
            fail "reload $i ($name): generation is $(gen), expected $G"
        assert_eq "$(ok_reloads)" "$OK" "reload $i ($name): reloads_total{ok}"
    else
        name=${BAD[$(((i / 2 - 1) % ${#BAD[@]}))]}
        use_conf "$name"
        kill -HUP "$PID_edge"
        FAILED=$((FAILED + 1))
        wait_until 10 metric_is 'anyedge_reloads_total{result="failed"}' "$FAILED" ||
            fail "reload $i ($name): reloads_total{failed} is $(failed_reloads), expected $FAILED"
        assert_eq "$(gen)" "$G" "reload $i ($name): generation kept"
        assert_match "$(edge_curl /id)" '^o[12]$' "reload $i ($name): still relaying"
    fi
    RTIMES="$RTIMES $(($(now_ms) - t0))"
    sleep "$GAP"
done
t_reloads=$(now_ms)
# The downloads and the load were running through every reload.
for p in dl_tcp dl_h3 $LOADS; do
    v=PID_$p
    running "${!v}" ||
        fail "$p ended before the last reload ($(((t_reloads - t_start) / 1000)) s after its start)"
done
log "$NRELOAD reloads in $(((t_reloads - t_start) / 1000)) s (ms each, SIGHUP to checked:" \
    "${RTIMES# }); loads and downloads still running"

# ---- results ----
for p in $LOADS dl_tcp dl_h3; do
    v=PID_$p
    rc=0
    wait "${!v}" || rc=$?
    [ "$rc" = 0 ] || fail "$p exited $rc: $(tail -n 5 "$T/$p.log")"
done
t_end=$(now_ms)
n_ka=$(wrk_check "$T/wrk_ka.log" "wrk keep-alive")
n_close=$(wrk_check "$T/wrk_close.log" "wrk Connection: close")
# h3load_check NAME: asserts 0 errors and 0 non-2xx on ae-h3load's totals line; prints requests.
h3load_check() {
    local line
    line=$(grep '^requests ' "$T/$1.log") || fail "$1: no totals line: $(tail -n 5 "$T/$1.log")"
    assert_eq "$(awk '{ print $6 }' <<<"$line")" 0 "$1: errors ($line)"
    assert_eq "$(awk '{ print $8 }' <<<"$line")" 0 "$1: non2xx ($line)"
    assert_ge "$(awk '{ print $2 }' <<<"$line")" 1 "$1: requests"
    awk '{ print $2 }' <<<"$line"
}
n_mux=$(h3load_check h3_mux)
n_new=$(h3load_check h3_new)
for p in dl_tcp dl_h3; do
    assert_eq "$(fsize "$T/$p.bin")" "$DL_BYTES" "$p: size"
    assert_eq "$(sha "$T/$p.bin")" "$WANT" "$p: sha256"
done
assert_match "$(cat "$T/dl_h3.log")" "^0 200 $DL_BYTES $WANT\$" \
    "ae-h3get's own account of the download"

assert_eq "$(ok_reloads)" $((NRELOAD / 2)) "reloads_total{ok}"
assert_eq "$(failed_reloads)" $((NRELOAD / 2)) "reloads_total{failed}"
assert_eq "$(gen)" $((1 + NRELOAD / 2)) "generation"
assert_eq "$(grep -c 'reload failed, keeping generation' "$T/edge.log")" $((NRELOAD / 2)) \
    "'reload failed' log lines"
assert_eq "$(metric anyedge_h3_responses_5xx_total)" 0 "HTTP/3 5xx responses"
running "$PID_edge" || fail "the edge died"
assert_match "$(edge_curl /id)" '^o[12]$' "TCP listener after the reloads"
out=$("$H3GET" -k "https://127.0.0.1:$QPORT/id") || fail "QUIC listener after the reloads: $out"
assert_match "$out" '^0 200 2 ' "QUIC listener after the reloads"
log "under $NRELOAD reloads ($(ok_reloads) ok, $(failed_reloads) failed, generation $(gen)):" \
    "wrk keep-alive $n_ka, wrk Connection: close $n_close, h3load multiplexed $n_mux," \
    "h3load new connections $n_new requests, 0 errors, 0 non-2xx; TCP and HTTP/3 downloads of" \
    "$DL_BYTES bytes intact ($(((t_end - t_start) / 1000)) s)"
stop_clean edge
