#!/usr/bin/env bash
# The demo (`./install.sh demo`): the config and certificate it writes (`./install.sh demo-config
# DIR`, the same function) start anyedge, and both listeners answer — TLS over TCP with curl,
# QUIC/HTTP/3 with the project's client — and anyedgectl reads the site's status. Its ports
# (8443, 8080, 9901) are moved to free ones here; nothing else is changed.
. "$(dirname "$0")/lib.sh"

H3GET=$AE_BIN/ae-h3get
[ -x "$H3GET" ] || fail "ae-h3get was not built (libcurl >= 8 missing?)"

D=$T/demo
(cd "$AE_SRCDIR" && ./install.sh demo-config "$D") >"$T/demo-config.log" 2>&1 ||
    fail "install.sh demo-config failed: $(cat "$T/demo-config.log")"
for f in anyedge.yaml edge.pem edge.key; do
    [ -s "$D/$f" ] || fail "demo-config wrote no $f"
done
assert_eq "$(stat -c %a "$D/edge.key")" 600 "the demo key's mode"
grep -q 'protocol: quic' "$D/anyedge.yaml" || fail "the demo config has no QUIC listener"
# A second run keeps what is there.
cp "$D/anyedge.yaml" "$T/before.yaml"
echo "# edited" >>"$D/anyedge.yaml"
(cd "$AE_SRCDIR" && ./install.sh demo-config "$D") >/dev/null 2>&1
assert_eq "$(tail -n1 "$D/anyedge.yaml")" "# edited" "demo-config kept an existing config"

EDGE=$(free_port); ORIG=$(free_port); ADMIN_PORT=$(free_port)
QFREE=$(free_port udp)
# One port for both listeners, free for TCP and UDP alike.
for _ in $(seq 20); do
    python3 -c "
import socket, sys
t = socket.socket(); t.bind(('127.0.0.1', $QFREE))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', $QFREE))
" 2>/dev/null && break
    QFREE=$(free_port udp)
done
EDGE=$QFREE
sed -i -e "s/127\.0\.0\.1:8443/127.0.0.1:$EDGE/g" -e "s/127\.0\.0\.1:8080/127.0.0.1:$ORIG/" \
    -e "s/127\.0\.0\.1:9901/127.0.0.1:$ADMIN_PORT/" "$D/anyedge.yaml"
grep -Eq '8443|8080|9901' "$D/anyedge.yaml" && fail "a demo port was not moved: $(cat "$D/anyedge.yaml")"
"$ANYEDGE" -t -c "$D/anyedge.yaml" >/dev/null || fail "the demo config fails anyedge -t"
start_origin demo "$ORIG"
cd / # relative paths resolve against the config's directory, not the current one
start_edge edge "$D/anyedge.yaml"
cd "$T"
wait_port "$ADMIN_PORT"
wait_port "$EDGE"

assert_eq "$(curl -sk --max-time 10 "https://127.0.0.1:$EDGE/id")" demo "TLS over TCP through the demo"
out=$("$H3GET" -k "https://127.0.0.1:$EDGE/id") || fail "ae-h3get failed: $out"
assert_match "$out" '^0 200 4 ' "HTTP/3 through the demo"
out=$("$H3GET" -k -n 10 -S "https://127.0.0.1:$EDGE/id") || fail "ae-h3get -n 10 failed: $out"
assert_eq "$(grep -c ' 200 4 ' <<<"$out")" 10 "10 multiplexed HTTP/3 requests"
assert_match "$(tail -n1 <<<"$out")" '^connections 1$' "on one QUIC connection"
st=$("$ANYEDGECTL" -c "$D/anyedge.yaml" status) || fail "anyedgectl status failed"
assert_match "$st" '"demo-h3"' "anyedgectl status names the QUIC listener"
assert_ge "$(metric anyedge_h3_responses_2xx_total)" 11 "HTTP/3 2xx responses counted"
log "demo config: TLS/TCP and HTTP/3 on 127.0.0.1:$EDGE answer; anyedgectl status ok"
stop_clean edge
