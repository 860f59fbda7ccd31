#!/usr/bin/env bash
# Client port change on a multi-worker site (issue #5, item 4): a client that changes its
# source port mid-transfer keeps its connection. The new 4-tuple is hashed by SO_REUSEPORT to
# either worker; when it lands on the worker that does not own the connection, that worker
# decodes the owner from the DCID and hands the datagrams over (in-process hand-off,
# anyedge_forward_handoffs_total), and the owner's ngtcp2 sees a new path (migration).
#
# Loopback only, one 2-worker anyedge, HTTP/3 via gtlsclient (ngtcp2 + GnuTLS). Attempts
# alternate two kinds of port change, each in the middle of a transfer of a few seconds:
#  - active migration (`--change-local-addr=1s`: the client moves to a new socket and validates
#    the new path) during a 4 MiB download from a slow origin (tests/tools/h3_origin.py
#    /slow/N, ~1.6 MB/s);
#  - NAT rebinding (`--change-local-addr=200ms --nat-rebinding`: the source port just changes,
#    no path validation by the client) during a 32 MiB POST to ae-origin's /echo (so client
#    data keeps flowing from the new port; in a pure download the client has nothing to send
#    after a NAT rebinding, ignores what the server still sends to the old port, and the
#    connection idles out: a gtlsclient artefact, a real NAT drops those packets and the client's
#    next ACK or keep-alive comes from the new port).
# Every attempt must complete with the right sha256 on one connection (one QUIC connection
# opened per run); runs repeat (new random client ports) until at least one crossed workers
# (hand-off counter rose) and at least MIN runs were made, at most 10.
. "$(dirname "$0")/lib.sh"

command -v gtlsclient >/dev/null || fail "gtlsclient (ngtcp2-client) is not installed"
TOOLS=$AE_SRCDIR/tests/tools
MIN=${AE_MIGRATION_MIN_RUNS:-4}
MAX=10
SIZE=$((4 << 20))

gen_cert edge
OP=$(free_port)
EP=$(free_port)
QPORT=$(free_port udp)
QECHO=$(free_port udp)
ADMIN_PORT=$(free_port)
start_bg origin python3 "$TOOLS/h3_origin.py" "$OP"
wait_port "$OP"
start_origin echo "$EP"
cat >"$T/edge.yaml" <<EOF
site: { id: 1, name: mig }
workers: 2
log: { access: off }
tls: { cert: $T/edge.pem, key: $T/edge.key }
listeners:
  - { name: h3, protocol: quic, address: "127.0.0.1:$QPORT", upstream: slow }
  - { name: h3echo, protocol: quic, address: "127.0.0.1:$QECHO", upstream: echo }
upstreams:
  slow:
    servers: [ "127.0.0.1:$OP" ]
  echo:
    servers: [ "127.0.0.1:$EP" ]
admin: { address: "127.0.0.1:$ADMIN_PORT" }
EOF
start_edge edge "$T/edge.yaml"

sha_slow=$(curl -s "http://127.0.0.1:$OP/slow/$SIZE" | sha256sum | cut -d' ' -f1)
[ ${#sha_slow} = 64 ] || fail "no reference hash from the origin"
UP=$((32 << 20))
head -c $UP /dev/urandom >"$T/up.bin"
sha_up=$(sha256sum <"$T/up.bin" | cut -d' ' -f1)

runs=0
crossed=0
while [ $runs -lt $MAX ]; do
    runs=$((runs + 1))
    rm -rf "$T/dl"
    mkdir -p "$T/dl"
    if [ $((runs % 2)) = 1 ]; then
        mode="active migration, download"
        args=(--change-local-addr=1s "127.0.0.1" "$QPORT" "https://localhost:$QPORT/slow/$SIZE")
        file=$T/dl/$SIZE
        sha=$sha_slow
        bytes=$SIZE
    else
        mode="NAT rebinding, upload"
        args=(--change-local-addr=200ms --nat-rebinding -m POST -d "$T/up.bin" "127.0.0.1" "$QECHO"
            "https://localhost:$QECHO/echo")
        file=$T/dl/echo
        sha=$sha_up
        bytes=$UP
    fi
    h0=$(metric anyedge_forward_handoffs_total)
    o0=$(metric anyedge_quic_connections_opened_total)
    d0=$(metric anyedge_forward_handoffs_dropped_total)
    t0=$(now_ms)
    timeout 60 gtlsclient --exit-on-all-streams-close --download="$T/dl" "${args[@]}" \
        >"$T/c$runs.out" 2>&1 || fail "run $runs ($mode): gtlsclient failed: $(tail -3 "$T/c$runs.out")"
    ms=$(($(now_ms) - t0))
    got=$(sha256sum <"$file" 2>/dev/null | cut -d' ' -f1)
    [ "$got" = "$sha" ] || fail "run $runs ($mode): sha256 mismatch, $(stat -c %s "$file" 2>/dev/null ||
        echo 0) of $bytes bytes: $(grep -v '^ *$' "$T/c$runs.out" | tail -2)"
    # The client really moved: gtlsclient logs the change and its new local port.
    newaddr=$(grep -A1 '^Changing local address' "$T/c$runs.out" | sed -n 's/^Local address is now //p')
    [ -n "$newaddr" ] || fail "run $runs ($mode): gtlsclient did not change its local address"
    opened=$(($(metric anyedge_quic_connections_opened_total) - o0))
    handoffs=$(($(metric anyedge_forward_handoffs_total) - h0))
    dropped=$(($(metric anyedge_forward_handoffs_dropped_total) - d0))
    assert_eq "$opened" 1 "run $runs ($mode): QUIC connections opened (the port change is no new connection)"
    assert_eq "$dropped" 0 "run $runs ($mode): hand-offs dropped"
    if [ "$handoffs" -gt 0 ]; then
        crossed=$((crossed + 1))
        where="new port hashed to the other worker: $handoffs datagrams handed off to the owner"
    else
        where="new port hashed to the owning worker: no hand-off"
    fi
    log "run $runs ($mode): $bytes bytes in $ms ms, sha256 ok, client moved to $newaddr," \
        "1 connection; $where"
    [ $crossed -ge 1 ] && [ $runs -ge "$MIN" ] && break
done
assert_ge "$crossed" 1 "runs whose new client port crossed workers (of $runs)"
log "port changes that crossed workers (hand-off): $crossed of $runs runs; all $runs transfers" \
    "completed on their original connection"
