#!/usr/bin/env bash
# Hostile upstream responses through the QUIC listener (issue #11): an HTTP/1.1 origin that
# answers with malformed or hop-by-hop-laden heads and broken bodies. What reaches the HTTP/3
# client follows RFC 9110 §5.5 / §7.6.1 / §8.6 and RFC 9114 §4.2: no CR, LF or NUL in a value,
# no non-token name, no hop-by-hop or Connection-nominated field, Content-Length exactly
# 1*DIGIT and never on a 204; a head it cannot relay is a 502, a body it cannot relay resets
# the stream; and the access log says what the client got and why (upstream_error=...).
. "$(dirname "$0")/lib.sh"

gen_cert edge
O1=$(free_port); EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port); QP=$(free_port)

# A raw origin: one canned response per path, then it closes the connection.
cat >"$T/raw_origin.py" <<'EOF'
import socket, sys, threading
R = {
    "/lf": b"HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: injected=1\r\nContent-Length: 2\r\n\r\nok",
    "/cr": b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: injected=1\r\nContent-Length: 2\r\n\r\nok",
    "/nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "/name": b"HTTP/1.1 200 OK\r\nX(A): b\r\nContent-Length: 2\r\n\r\nok",
    "/conn": b"HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\n"
             b"Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nUpgrade: h2c\r\nX-Other: 2\r\n"
             b"Content-Length: 2\r\n\r\nok",
    "/cl-plus": b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    "/cl-list": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
    "/cl-two": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "/204cl": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n",
    "/103": b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    "/bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n",
    "/short": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",
    "/te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
}
def serve(c):
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            d = c.recv(4096)
            if not d:
                return
            data += d
        path = data.split(b" ")[1].decode()
        c.sendall(R.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
    except OSError:
        pass
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
start_bg raw python3 "$T/raw_origin.py" "$O1"
wait_port "$O1"
UPSTREAMS="$O1" write_conf "$T/edge.yaml"
sed -i "s#^listeners:#listeners:\n  - { name: h3, protocol: quic, address: \"127.0.0.1:$QP\", upstream: pool }#" "$T/edge.yaml"
start_edge edge "$T/edge.yaml"
wait_port "$ADMIN_PORT"
wait_port "$EDGE_PORT"

# get PATH: "status bytes" as the HTTP/3 client saw them ("0 0" when the transfer failed), the
# header lines in $T/h.txt and curl's complaint in $T/get.err.
get() {
    local out
    out=$(timeout 30 "$AE_BIN/ae-h3get" -k -i "$T/h.txt" "https://127.0.0.1:$QP$1" 2>"$T/get.err") || true
    read -r _ st n _ <<<"$out"
    printf '%s %s' "${st:-0}" "${n:-0}"
}
status() { local r; r=$(get "$1"); printf '%s' "${r%% *}"; }
# access PATH: the access log line of the last request for PATH.
access() { grep "ACCESS .*proto=h3 .*path=$1 " "$T/edge.log" | tail -1; }
acc_match() { access "$1" | grep -Eq "$2"; }
acc_ok() { wait_until 5 acc_match "$1" "$2"; }

# ---- 1. field values and names: refused, 502, nothing injected ----
for p in /lf /cr /nul /name; do
    assert_eq "$(status "$p")" 502 "$p: status at the client"
    grep -qi 'injected' "$T/h.txt" && fail "$p: the injected field reached the client"
done
acc_ok /lf 'status=502 .*reason=upstream_bad_response upstream_error=field_value' || fail "/lf access line: $(access /lf)"
acc_ok /cr 'status=502 .*upstream_error=field_value' || fail "/cr access line: $(access /cr)"
acc_ok /nul 'status=502 .*upstream_error=field_value' || fail "/nul access line: $(access /nul)"
acc_ok /name 'status=502 .*upstream_error=header_syntax' || fail "/name access line: $(access /name)"
log "check 1: CR/LF/NUL in values and non-token names -> 502, upstream_error logged"

# ---- 2. hop-by-hop and Connection-nominated fields removed ----
assert_eq "$(get /conn)" "200 2" "/conn status"
for h in x-secret keep-alive proxy-connection upgrade connection; do
    grep -qi "^$h:" "$T/h.txt" && fail "/conn: $h reached the client: $(tr -d '\r' <"$T/h.txt")"
done
grep -qi '^x-other: 2' "$T/h.txt" || fail "/conn: x-other lost: $(tr -d '\r' <"$T/h.txt")"
acc_ok /conn 'status=200 .*reason=done' || fail "/conn access line: $(access /conn)"
log "check 2: Connection, Keep-Alive, Proxy-Connection, Upgrade and X-Secret (nominated) removed"

# ---- 3. Content-Length rules ----
for p in /cl-plus /cl-list; do
    assert_eq "$(status "$p")" 502 "$p"
    acc_ok "$p" 'status=502 .*upstream_error=cl_invalid' || fail "$p access line: $(access "$p")"
done
assert_eq "$(status /cl-two)" 502 "/cl-two"
acc_ok /cl-two 'upstream_error=cl_conflict' || fail "/cl-two access line: $(access /cl-two)"
assert_eq "$(get /204cl)" "204 0" "/204cl: a 204 the client accepts"
grep -qi '^content-length' "$T/h.txt" && fail "/204cl: Content-Length relayed on a 204"
grep -qi '^x-a: 1' "$T/h.txt" || fail "/204cl: x-a lost"
acc_ok /204cl 'status=204 .*reason=done' || fail "/204cl access line: $(access /204cl)"
log "check 3: Content-Length +5 / '5, 5' / two values -> 502; 204 relayed without it"

# ---- 4. interim and upgrade ----
assert_eq "$(get /103)" "200 2" "/103 then 200"
assert_eq "$(status /101)" 502 "/101"
acc_ok /101 'upstream_error=upgrade' || fail "/101 access line: $(access /101)"
assert_eq "$(status /te-gzip)" 502 "Transfer-Encoding: gzip"
acc_ok /te-gzip 'upstream_error=te_unsupported' || fail "/te-gzip access line: $(access /te-gzip)"
log "check 4: 103 skipped, 101 and TE gzip -> 502"

# ---- 5. broken bodies after the head went out: the stream is reset, and the log says so ----
r=$(get /bad-chunk)
[ "$r" = "0 0" ] || [ "${r%% *}" = 200 ] || fail "/bad-chunk: $r"
[ -s "$T/get.err" ] || fail "/bad-chunk: the client saw a complete response"
acc_ok /bad-chunk 'status=200 .*reason=upstream_bad_body upstream_error=chunk_size' ||
    fail "/bad-chunk access line: $(access /bad-chunk)"
r=$(get /short)
[ -s "$T/get.err" ] || fail "/short: the client saw a complete response ($r)"
acc_ok /short 'status=200 .*reason=upstream_truncated upstream_error=incomplete' ||
    fail "/short access line: $(access /short)"
log "check 5: bad chunk / short body -> stream reset (client: $(head -c 80 "$T/get.err")); logged"

# ---- 6. normal lines carry no upstream_error ----
grep "ACCESS .*path=/conn " "$T/edge.log" | grep -q upstream_error && fail "upstream_error on a good response"
kill -0 "$PID_edge" 2>/dev/null || fail "the edge died after the hostile origin"
stop_clean edge
