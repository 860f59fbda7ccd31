#!/usr/bin/env bash
# Upstream affinity (balance: affinity): a resumed TLS session goes back to the origin that
# served the session it resumes (the choice travels in the session ticket); when that origin
# is down, another one is chosen and the client's new ticket names it. TLS 1.3 and 1.2.
# A round_robin pool over the same origins keeps spreading resumptions.
. "$(dirname "$0")/lib.sh"

gen_cert edge
PA=$(free_port); PB=$(free_port); PC=$(free_port)
EDGE_PORT=$(free_port); RR_PORT=$(free_port); ADMIN_PORT=$(free_port)
AFF_PORT=$EDGE_PORT
declare -A OPORT=([origA]=$PA [origB]=$PB [origC]=$PC)
for o in origA origB origC; do
    start_origin "$o" "${OPORT[$o]}"
done
cat >"$T/edge.yaml" <<EOF
site: { id: 1, name: test }
workers: 2
tls: { cert: $T/edge.pem, key: $T/edge.key }
listeners:
  - { name: aff, protocol: tcp, address: "127.0.0.1:$EDGE_PORT", upstream: sticky }
  - { name: rr, protocol: tcp, address: "127.0.0.1:$RR_PORT", upstream: spread }
upstreams:
  sticky:
    balance: affinity
    servers: [ "127.0.0.1:$PA", "127.0.0.1:$PB", "127.0.0.1:$PC" ]
    health: { http: /healthz, interval: 200ms, timeout: 150ms, rise: 1, fall: 1 }
  spread:
    servers: [ "127.0.0.1:$PA", "127.0.0.1:$PB", "127.0.0.1:$PC" ]
admin: { address: "127.0.0.1:$ADMIN_PORT" }
EOF
"$ANYEDGE" -t -c "$T/edge.yaml" >/dev/null || fail "anyedge -t rejects balance: affinity"
start_edge edge "$T/edge.yaml"
wait_port "$EDGE_PORT"

hits() { metric anyedge_affinity_hits_total; }
misses() { metric anyedge_affinity_misses_total; }
# origin_of OUTPUT: the origin id in an s_get output.
origin_of() { grep -o 'orig[ABC]' <<<"$1" | tail -n 1; }
# up ORIGIN: 1 when the edge sees ORIGIN usable in pool sticky.
up() {
    metric "anyedge_upstream_server_up{pool=\"sticky\",server=\"127.0.0.1:${OPORT[$1]}\"}"
}

# up_is ORIGIN 0|1: for wait_until.
up_is() { [ "$(up "$1")" = "$2" ]; }

# TLS 1.3: openssl s_client, the session in $T/sess13 (-sess_out saves the last ticket).
# TLS 1.2: s_client writes -sess_out only from the new-session callback, which OpenSSL does not
# call for a resumed TLS 1.2 handshake, so a renewed 1.2 ticket would be lost: a persistent
# python client keeps its latest session instead (one connection per input line).
cat >"$T/c12.py" <<'PY'
import re, socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
sess = None
for _ in sys.stdin:
    try:
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10),
                            server_hostname="localhost", session=sess)
        s.sendall(b"GET /id HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        buf = b""
        while True:
            try:
                d = s.recv(65536)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                d = b""
            if not d:
                break
            buf += d
        m = re.search(rb"orig[ABC]", buf)
        print("Reused" if s.session_reused else "New", m.group(0).decode() if m else "-",
              flush=True)
        sess = s.session
        s.close()
    except Exception as e:
        print("ERR", type(e).__name__, flush=True)
PY
coproc C12 { python3 -u "$T/c12.py" "$AFF_PORT"; }
AE_PIDS+=("$C12_PID")

# conn VERSION: one connection (resuming when there is a session); prints "New|Reused ORIGIN".
conn() {
    local out line
    if [ "$1" = 1.3 ]; then
        if [ -f "$T/sess13" ]; then
            out=$(s_get -tls1_3 -sess_in "$T/sess13" -sess_out "$T/sess13")
        else
            out=$(s_get -tls1_3 -sess_out "$T/sess13")
        fi
        printf '%s %s' "$(grep -Eo '^(New|Reused)' <<<"$out" | head -n 1)" "$(origin_of "$out")"
    else
        echo >&"${C12[1]}"
        read -r -t 20 line <&"${C12[0]}" || line="ERR timeout"
        printf '%s' "$line"
    fi
}

# resume_n N VERSION EXPECT: N resumptions, each must resume; prints how many reached EXPECT.
resume_n() {
    local n=$1 v=$2 want=$3 i r same=0
    for i in $(seq "$n"); do
        r=$(conn "$v")
        assert_match "$r" "^Reused " "TLS $v resumption $i resumes"
        [ "${r#Reused }" = "$want" ] && same=$((same + 1))
    done
    printf '%s' "$same"
}

declare -A FIRST
for v in 1.3 1.2; do
    h0=$(hits); m0=$(misses)
    r=$(conn "$v")
    assert_match "$r" "^New orig" "TLS $v first handshake is full"
    o=${r#New }
    FIRST[$v]=$o
    same=$(resume_n 10 "$v" "$o")
    log "TLS $v: full handshake on $o; $same/10 resumptions on $o"
    assert_eq "$same" 10 "TLS $v: resumptions on the origin of the session"
    assert_eq "$(($(hits) - h0))" 10 "TLS $v: affinity hits"
    assert_eq "$(($(misses) - m0))" 0 "TLS $v: affinity misses"
done

# The round_robin pool over the same origins keeps spreading resumed sessions.
EDGE_PORT=$RR_PORT
out=$(s_get -sess_out "$T/rr")
seen=""
for i in $(seq 6); do
    out=$(s_get -sess_in "$T/rr" -sess_out "$T/rr")
    assert_match "$out" "^Reused, " "round_robin resumption $i"
    seen="$seen $(origin_of "$out")"
done
EDGE_PORT=$AFF_PORT
distinct=$(tr ' ' '\n' <<<"$seen" | sort -u | grep -c .)
log "round_robin resumptions reached:$seen"
assert_ge "$distinct" 2 "round_robin pool spreads resumptions"
assert_eq "$(metric anyedge_affinity_hits_total)" 20 "no affinity counting on round_robin"

# kill_origin NAME: SIGKILL that origin and wait until the health check takes it down.
kill_origin() {
    local v="PID_$1"
    kill -9 "${!v}"
    wait "${!v}" 2>/dev/null || true
    wait_until 10 up_is "$1" 0 || fail "$1 not marked down"
}

# Kill the origin of each session in turn: the next resumption goes elsewhere (a miss), and
# the new ticket it gets keeps the client on the new origin (hits).
for v in 1.3 1.2; do
    x=${FIRST[$v]}
    kill_origin "$x"
    h0=$(hits); m0=$(misses)
    r=$(conn "$v")
    assert_match "$r" "^Reused orig" "TLS $v resumption after the kill resumes"
    y=${r#Reused }
    [ "$y" != "$x" ] || fail "TLS $v: reached $x after killing it"
    assert_eq "$(($(misses) - m0))" 1 "TLS $v: a miss after the kill"
    same=$(resume_n 10 "$v" "$y")
    log "TLS $v: $x killed; next resumption on $y (miss), then $same/10 on $y"
    assert_eq "$same" 10 "TLS $v: resumptions on the new origin"
    assert_eq "$(($(hits) - h0))" 10 "TLS $v: hits after the new ticket"
    assert_eq "$(($(misses) - m0))" 1 "TLS $v: misses after the new ticket"
    # The old origin comes back: the client stays where its new ticket says.
    start_origin "$x" "${OPORT[$x]}"
    wait_until 10 up_is "$x" 1 || fail "$x not back up"
    same=$(resume_n 3 "$v" "$y")
    log "TLS $v: $x back up; $same/3 resumptions still on $y"
    assert_eq "$same" 3 "TLS $v: remembered origin after the old one is back"
done

# A ticket with no affinity record (issued by the round_robin listener, same keys) resumes on
# the affinity listener as a miss, and its new ticket then sticks.
m0=$(misses); h0=$(hits)
out=$(s_get -sess_in "$T/rr" -sess_out "$T/rr")
assert_match "$out" "^Reused, " "record-less ticket resumes"
y=$(origin_of "$out")
assert_eq "$(($(misses) - m0))" 1 "record-less ticket is a miss"
cp "$T/rr" "$T/sess13"
same=$(resume_n 3 1.3 "$y")
assert_eq "$same" 3 "record-less ticket renewed with a record"
assert_eq "$(($(hits) - h0))" 3 "hits after renewal"

grep -q 'affinity=hit' "$T/edge.log" || fail "access log has no affinity=hit"
grep -q 'affinity=miss' "$T/edge.log" || fail "access log has no affinity=miss"
curl -s "http://127.0.0.1:$ADMIN_PORT/status" | grep -q '"balance":"affinity"' ||
    fail "/status does not show balance affinity"
stop_clean edge
