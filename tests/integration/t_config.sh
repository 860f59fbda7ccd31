#!/usr/bin/env bash
# Config checking: `anyedge -t` on bad configs (one error line with FILE:LINE:COL and the key),
# a good config, a missing file, `--config-doc` == docs/config.md, and the shipped examples.
. "$(dirname "$0")/lib.sh"

gen_cert edge
gen_cert other other.example
EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port); O1=$(free_port)

# The base config, one key per line so every error has a known line:
#  1 site / 2 workers / 3 tls / 4 listeners: / 5 listener main / 6 upstreams: / 7 pool: /
#  8 servers / 9 admin / 10 timeouts
base_conf() {
    cat <<EOF
site: { id: 1, name: test }
workers: 2
tls: { cert: $T/edge.pem, key: $T/edge.key }
listeners:
  - { name: main, protocol: tcp, address: "127.0.0.1:$EDGE_PORT", upstream: pool }
upstreams:
  pool:
    servers: [ "127.0.0.1:$O1" ]
admin: { address: "127.0.0.1:$ADMIN_PORT" }
timeouts: { drain: 5s }
EOF
}

base_conf >"$T/good.yaml"
out=$("$ANYEDGE" -t -c "$T/good.yaml" 2>&1) || fail "anyedge -t rejects the good config: $out"
assert_match "$out" "valid" "anyedge -t on the good config says so"

# check_bad NAME SED-SCRIPT LINE KEY-REGEX [MESSAGE-REGEX]: writes the base config edited by
# SED-SCRIPT to $T/NAME.yaml; anyedge -t must exit non-zero with exactly one output line of the
# form FILE:LINE:COL: KEY: message.
nbad=0
check_bad() {
    local name=$1 script=$2 line=$3 key=$4 msg=${5:-.} f="$T/$1.yaml" out rc=0 n
    base_conf | sed -e "$script" >"$f"
    cmp -s "$f" "$T/good.yaml" && fail "$name: the edit did not change the config"
    out=$("$ANYEDGE" -t -c "$f" 2>&1) || rc=$?
    [ "$rc" -ne 0 ] || fail "$name: anyedge -t exits 0 on a bad config"
    n=$(printf '%s\n' "$out" | wc -l)
    assert_eq "$n" 1 "$name: number of output lines ($out)"
    # The file as given, line, column, then the full key path.
    local re="$f:$line:[0-9]+: $key: "
    assert_match "$out" "$re" "$name: FILE:LINE:COL: KEY"
    assert_match "$out" "$msg" "$name: message"
    log "$name (rc=$rc): ${out#anyedge: $T/}"
    nbad=$((nbad + 1))
}

check_bad syntax      's/^workers: 2$/workers: [2/'                          3 'workers' 'expected'
check_bad syntax_quote 's/name: test }/name: "test }/'                      '[0-9]+' '[a-z.]*' '.'
check_bad unknown_key 's/^workers: 2$/workerz: 2/'                           2 'workerz' 'unknown key'
check_bad unknown_sub 's/timeouts: { drain: 5s }/timeouts: { drian: 5s }/'   10 'timeouts\.drian' 'unknown key'
check_bad wrong_type  's/^workers: 2$/workers: abc/'                         2 'workers' 'abc'
check_bad wrong_type2 's/timeouts: { drain: 5s }/timeouts: { drain: [5s] }/' 10 'timeouts\.drain' '.'
check_bad wrong_type3 's/site: { id: 1, name: test }/site: [ 1 ]/'           1 'site' '.'
check_bad workers_range 's/^workers: 2$/workers: 999/'                       2 'workers' '999.*0\.\.256'
check_bad workers_neg 's/^workers: 2$/workers: -1/'                          2 'workers' '.'
check_bad bad_address "s/127.0.0.1:$EDGE_PORT/127.0.0.300:$EDGE_PORT/"       5 'listeners\[0\]\.address' '127\.0\.0\.300'
check_bad hostname_address "s/127.0.0.1:$EDGE_PORT/localhost:$EDGE_PORT/"   5 'listeners\[0\]\.address' 'localhost'
check_bad bad_port    "s/127.0.0.1:$O1/127.0.0.1:70000/"                     8 'upstreams\.pool\.servers(\[0\])?' '70000'
check_bad dup_listener "5a\\  - { name: two, address: \"127.0.0.1:$EDGE_PORT\", upstream: pool }" \
    6 'listeners\[1\]\.address' 'duplicate'
check_bad dup_name    "5a\\  - { name: main, address: \"127.0.0.1:$O1\", upstream: pool }" \
    6 'listeners\[1\]\.name' 'main'
check_bad undef_upstream 's/upstream: pool }/upstream: nope }/'              5 'listeners\[0\]\.upstream' 'nope'
check_bad missing_required 's/, upstream: pool }/ }/'                        5 'listeners\[0\](\.upstream)?' 'upstream'
# balance: hash: pool keys inserted after the servers line (8), so they are lines 9 and 10
check_bad hash_key_no_hash '8a\    hash_key: client_ip'                       9 'upstreams\.pool\.hash_key' 'needs balance: hash'
check_bad hash_key_prefix  '8a\    balance: hash\n    hash_key: "client_ip/33"' 10 'upstreams\.pool\.hash_key' 'IPv4 prefix length must be 8\.\.32'
check_bad hash_tcp_header  '8a\    balance: hash\n    hash_key: "header:x-user"' 5 'listeners\[0\]\.upstream' 'TCP listener relays bytes'
check_bad affinity_cookie_name '8a\    balance: hash\n    affinity_cookie: "a b"' 10 'upstreams\.pool\.affinity_cookie' 'token characters'
check_bad quic_payload_small '$a\quic: { max_udp_payload: 1000 }'           11 'quic\.max_udp_payload' '1200\.\.2048'
check_bad quic_payload_big '$a\quic: { max_udp_payload: 9000 }'             11 'quic\.max_udp_payload' '9000'
check_bad missing_cert "s|$T/edge.pem|$T/missing.pem|"                        3 'tls\.cert' 'missing\.pem'
check_bad cert_not_pem "s|$T/edge.pem|$T/good.yaml|"                          3 'tls\.cert' 'good\.yaml'
check_bad key_mismatch "s|$T/edge.key|$T/other.key|"                          3 'tls\.key' 'other\.key'
check_bad missing_certs_entry \
    "3s|}\$|, certs: [ { cert: other.pem, key: other.key }, { cert: nope.pem, key: other.key } ] }|" \
    3 'tls\.certs\[1\]\.cert' 'nope\.pem'
log "$nbad bad configs rejected with FILE:LINE:COL: KEY"

# The daemon itself refuses a bad config the same way, quickly, and opens no port.
rc=0; out=$(timeout 10 "$ANYEDGE" -c "$T/undef_upstream.yaml" 2>&1) || rc=$?
assert_eq "$rc" 1 "anyedge -c with a bad config: exit status"
assert_match "$out" "$T/undef_upstream.yaml:5:[0-9]+: listeners\[0\]\.upstream: " "daemon error line"

# A config file that does not exist: a clear error naming the file, non-zero exit.
for args in "-t -c" "-c"; do
    rc=0
    # shellcheck disable=SC2086
    out=$(timeout 10 "$ANYEDGE" $args "$T/does-not-exist.yaml" 2>&1) || rc=$?
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "anyedge $args on a missing file: exit status $rc"
    assert_match "$out" "$T/does-not-exist\.yaml: .*(No such file|cannot open|not found)" \
        "anyedge $args on a missing file: error"
    assert_eq "$(printf '%s\n' "$out" | wc -l)" 1 "anyedge $args on a missing file: one line"
done
# A directory instead of a file.
rc=0; out=$("$ANYEDGE" -t -c "$T" 2>&1) || rc=$?
[ "$rc" -ne 0 ] || fail "anyedge -t -c DIRECTORY exits 0"
assert_match "$out" "$T" "anyedge -t -c DIRECTORY names it"

# The reference cannot go stale: --config-doc is byte-identical to docs/config.md.
"$ANYEDGE" --config-doc >"$T/config-doc.md" || fail "anyedge --config-doc exits non-zero"
[ -s "$T/config-doc.md" ] || fail "anyedge --config-doc prints nothing"
cmp "$T/config-doc.md" "$AE_SRCDIR/docs/config.md" ||
    fail "docs/config.md differs from 'anyedge --config-doc' (regenerate it: anyedge --config-doc > docs/config.md)"
log "--config-doc matches docs/config.md ($(wc -c <"$T/config-doc.md") bytes)"

# Shipped examples pass anyedge -t. They use certificate paths relative to their own directory,
# so check copies in a temp dir with generated certificates at those paths, and run from another
# directory to prove relative paths resolve against the config file's directory.
mkdir -p "$T/examples"
cp "$AE_SRCDIR"/conf/examples/*.yaml "$T/examples/"
# The full example of docs/config.md too.
awk '/^```yaml$/ { on = 1; next } /^```$/ { on = 0 } on' "$AE_SRCDIR/docs/config.md" \
    >"$T/examples/config-md-example.yaml"
[ -s "$T/examples/config-md-example.yaml" ] || fail "no yaml example found in docs/config.md"
nex=0
for f in "$T"/examples/*.yaml; do
    # Every relative cert/key path the file names.
    for p in $(grep -Eo '(cert|key): *[^ ,}#]+' "$f" | sed -E 's/^(cert|key): *//' | grep -v '^/' | sort -u); do
        base=${p%.*}
        [ -f "$T/examples/$base.pem" ] && continue
        mkdir -p "$(dirname "$T/examples/$base")"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj "/CN=$(basename "$base").example" -keyout "$T/examples/$base.key" \
            -out "$T/examples/$base.pem" 2>/dev/null
    done
    out=$(cd / && "$ANYEDGE" -t -c "$f" 2>&1) || fail "example $(basename "$f") fails anyedge -t: $out"
    log "example $(basename "$f"): ok"
    nex=$((nex + 1))
done
assert_ge "$nex" 3 "examples checked"
# Without the certificates the examples are rejected (the check above is not vacuous).
rm -rf "$T/examples/certs"
rc=0; out=$("$ANYEDGE" -t -c "$T/examples/full.yaml" 2>&1) || rc=$?
[ "$rc" -ne 0 ] || fail "full.yaml passes without its certificates"
assert_match "$out" "full\.yaml:[0-9]+:[0-9]+: tls\.cert" "full.yaml without certs: error"
