#!/usr/bin/env bash
# anyedge HTTP/3 benchmark: anyedge (QUIC/HTTP/3 -> HTTP/1.1 ae-origin) vs ngtcp2's gtlsserver
# (QUIC/HTTP/3 serving the same payloads from files), issue #4.
#
# One run starts ae-origin, anyedge (1 worker, one `protocol: quic` listener, upstream
# ae-origin, access log off, level warn) and gtlsserver (ngtcp2 example server, GnuTLS, htdocs
# holding a 1 KiB and a 1 MiB file), all with the same self-signed ECDSA P-256 certificate made at
# run time, and drives both with ae-h3load (libcurl-gnutls, HTTP/3 only) in alternating order
# (round 1: anyedge, gtlsserver; round 2: gtlsserver, anyedge; ...) through these scenarios:
#
#   h3_rps    GET 1 KiB, 1 connection x 32 concurrent streams              -> requests/s
#   h3_conn   GET 1 KiB, a new QUIC connection per request (full handshake,
#             no TLS session cache), 8 in parallel                          -> connections/s
#   h3_bulk   GET 1 MiB, 1 connection x 8 concurrent streams                -> MiB/s
#   h3_upload POST 1 MiB to ae-origin's /sink, 1 connection x 8 streams      -> MiB/s sent
#             (reverse proxies only: anyedge, anyedge_base, caddy; gtlsserver has no upstream
#             to take a body and is skipped)
#
# anyedge serves /bytes/1024 and /bytes/1048576 through ae-origin; gtlsserver serves /1k and /1m
# (files of the same sizes). For every run the server's own CPU time (utime+stime of all its
# threads, /proc/PID/stat), ae-origin's CPU time (separately: the upstream hop's cost) and the
# load client's CPU time are measured. A libcurl-based client saturates its core before the
# server does, so CPU per operation is the fair comparison; rates are reported beside it.
#
# Targets (issue #4): anyedge (including its upstream hop) >= 1.00x gtlsserver on req/s (h3_rps,
# h3_conn) and MiB/s (h3_bulk), and no more server CPU per request (h3_rps, h3_conn; h3_bulk per
# MiB, by analogy). anyedge's CPU is its own process; the "+ origin" column adds ae-origin's CPU
# (informational).
#
# The Markdown report (medians across rounds, ratios anyedge/gtlsserver, PASS/MISS per target)
# goes to stdout and to tests/bench/results/h3-<timestamp>.md.
#
# Usage: tests/bench/h3.sh [-r ROUNDS] [-d SECONDS] [-w SECONDS] [-b BUILD_DIR]
#                          [-s "SCENARIOS"] [-t "TARGETS"] [-o FILE] [--no-pin]
# Environment (same meaning, options win): AE_BENCH_ROUNDS (3), AE_BENCH_DURATION (5),
#   AE_BENCH_WARMUP (1), AE_BENCH_STREAMS (32), AE_BENCH_CONN_PAR (8), AE_BENCH_BULK_STREAMS (8),
#   AE_BENCH_PIN (auto|off), AE_BENCH_SCENARIOS, AE_BENCH_TARGETS (anyedge gtlsserver; also
#   caddy: Debian's Caddy 2.6 as an HTTP/3 reverse proxy to the same ae-origin, GOMAXPROCS=1,
#   reported as anyedge/caddy ratios; also
#   anyedge_base: the anyedge configuration run by the baseline build in AE_BASE_BIN, reported as
#   anyedge/anyedge_base CPU per operation, e.g. -t "anyedge anyedge_base" before/after a change),
#   AE_BIN (build dir holding anyedge, ae-origin and ae-h3load; default build/),
#   GTLSSERVER (default: gtlsserver from PATH or /usr/sbin/gtlsserver).
#
# Pinning (auto, with >= 2 CPUs and taskset): the server under test runs on CPU 0 (anyedge
# together with its ae-origin: the upstream hop is part of anyedge's setup), ae-h3load on CPU 1.
#
# Exit status: 0 when every run completed (targets missed are informational), 1 when a server
# failed to start or died, or a run produced no result. Traffic goes to 127.0.0.1 only; every
# process the script starts is ended by its PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_TAG=h3bench
# shellcheck source=tests/bench/common.sh
. "$ROOT/tests/bench/common.sh"

ROUNDS=${AE_BENCH_ROUNDS:-3}
DURATION=${AE_BENCH_DURATION:-5}
WARMUP=${AE_BENCH_WARMUP:-1}
STREAMS=${AE_BENCH_STREAMS:-32}
CONN_PAR=${AE_BENCH_CONN_PAR:-8}
BULK_STREAMS=${AE_BENCH_BULK_STREAMS:-8}
PIN=${AE_BENCH_PIN:-auto}
SCENARIOS=${AE_BENCH_SCENARIOS:-"h3_rps h3_conn h3_bulk h3_upload"}
TARGETS=${AE_BENCH_TARGETS:-"anyedge gtlsserver"}
AE_BIN=${AE_BIN:-$ROOT/build}
OUT=""

bench_parse_args "$@"
bench_check_times
for v in STREAMS CONN_PAR BULK_STREAMS; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ] || [ "${!v}" -gt 100 ]; then
        die "$v must be 1..100"
    fi
done
bench_check_words scenario "$SCENARIOS" h3_rps h3_conn h3_bulk h3_upload
bench_check_words target "$TARGETS" anyedge gtlsserver anyedge_base caddy

ANYEDGE=$AE_BIN/anyedge
ORIGIN=$AE_BIN/ae-origin
H3LOAD=$AE_BIN/ae-h3load
H3GET=$AE_BIN/ae-h3get
for b in "$ANYEDGE" "$ORIGIN" "$H3LOAD" "$H3GET"; do
    [ -x "$b" ] || die "no $(basename "$b") in $AE_BIN (build first with libcurl HTTP/3, or set AE_BIN / -b)"
done
if [[ " $TARGETS " == *" anyedge_base "* ]] && [ ! -x "${AE_BASE_BIN:-}/anyedge" ]; then
    die "anyedge_base needs AE_BASE_BIN, a build directory holding the baseline anyedge"
fi
GTLSSERVER=${GTLSSERVER:-$(command -v gtlsserver || echo /usr/sbin/gtlsserver)}
if [[ " $TARGETS " == *" gtlsserver "* ]] && [ ! -x "$GTLSSERVER" ]; then
    die "gtlsserver is not installed (ngtcp2-server)"
fi
CADDY=${CADDY:-$(command -v caddy || echo /usr/bin/caddy)}
if [[ " $TARGETS " == *" caddy "* ]] && [ ! -x "$CADDY" ]; then
    die "caddy is not installed (apt-get install caddy)"
fi
for cmd in openssl python3 curl; do
    command -v "$cmd" >/dev/null || die "$cmd is not installed"
done
"$H3LOAD" -k -d 1 -n 1 -t 1 https://127.0.0.1:9/ >/dev/null 2>&1 && true
[ $? -ne 77 ] || die "libcurl has no HTTP/3 (ae-h3load exit 77)"

bench_tmpdir ae-h3bench
declare -A SRV_PORT=() SRV_PID=()
FAILED=0

# ---- CPU placement ----
bench_pin "server (anyedge + ae-origin, or gtlsserver) on CPU 0; ae-h3load on CPU 1 (taskset)"
SRV_CPU=("${SUT_CPU[@]}")

# ---- helpers ----

# wait_h3 URL [SECONDS]: an HTTP/3 GET of URL completes.
wait_h3() {
    local url=$1 secs=${2:-10}
    for _ in $(seq $((secs * 2))); do
        if timeout 5 "$H3LOAD" -k -d 1 -n 1 -t 2 "$url" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    return 1
}

# ae_metrics TARGET NAME...: that anyedge target's /metrics samples, space-separated (0 when
# absent).
ae_metrics() {
    local port=$ADMIN_PORT
    [ "$1" = anyedge_base ] && port=$BASE_ADMIN_PORT
    shift
    bench_metrics "$port" "$@"
}

# url TARGET SCENARIO
url() {
    local t=$1 s=$2 port=${SRV_PORT[$1]}
    case "$t/$s" in
    anyedge*/h3_bulk | caddy/h3_bulk) printf 'https://127.0.0.1:%s/bytes/1048576' "$port" ;;
    anyedge*/h3_upload | caddy/h3_upload) printf 'https://127.0.0.1:%s/sink' "$port" ;;
    anyedge*/* | caddy/*) printf 'https://127.0.0.1:%s/bytes/1024' "$port" ;;
    gtlsserver/h3_bulk) printf 'https://127.0.0.1:%s/1m' "$port" ;;
    gtlsserver/*) printf 'https://127.0.0.1:%s/1k' "$port" ;;
    esac
}

# ---- setup ----
log "temp dir $T; $PIN_DESC"
read -r ORIGIN_PORT ADMIN_PORT BASE_ADMIN_PORT AE_PORT GT_PORT BASE_PORT CADDY_PORT <<<"$(free_ports 3 4)"
SRV_PORT=([anyedge]=$AE_PORT [gtlsserver]=$GT_PORT [anyedge_base]=$BASE_PORT [caddy]=$CADDY_PORT)

bench_cert
mkdir -p "$T/htdocs"
head -c 1024 /dev/urandom >"$T/htdocs/1k"
head -c 1048576 /dev/urandom >"$T/htdocs/1m"

# Origin: with the server under test (its hop is part of anyedge's setup).
bench_start_origin "${SRV_CPU[@]}"

cat >"$T/anyedge.yaml" <<EOF
workers: 1
tls:
  cert: $T/cert.pem
  key: $T/key.pem
listeners:
  - name: h3
    protocol: quic
    address: "127.0.0.1:$AE_PORT"
    upstream: origin
upstreams:
  origin:
    servers: ["127.0.0.1:$ORIGIN_PORT"]
admin:
  address: "127.0.0.1:$ADMIN_PORT"
log:
  level: warn
  access: off
EOF

# anyedge_base: the same configuration on its own ports, run by the baseline build's anyedge.
sed -e "s/127.0.0.1:$AE_PORT\"/127.0.0.1:$BASE_PORT\"/" -e "s/127.0.0.1:$ADMIN_PORT\"/127.0.0.1:$BASE_ADMIN_PORT\"/" \
    "$T/anyedge.yaml" >"$T/anyedge_base.yaml"
if [[ " $TARGETS " == *" anyedge_base "* ]]; then
    bench_base_setup "$T/anyedge_base_bin"
fi

# Caddy: HTTP/3 reverse proxy to the same ae-origin, one OS thread for Go code (GOMAXPROCS=1),
# no admin endpoint, no access log, no automatic HTTPS (the bench certificate; clients that dial
# the address send no SNI, so default_sni picks it), TCP and UDP on
# CADDY_PORT.
cat >"$T/Caddyfile" <<EOF
{
	admin off
	auto_https off
	default_sni localhost
	servers {
		protocols h1 h2 h3
	}
}
https://127.0.0.1:$CADDY_PORT {
	tls $T/cert.pem $T/key.pem
	reverse_proxy 127.0.0.1:$ORIGIN_PORT
}
EOF

start_server() {
    local t=$1 pid
    case "$t" in
    anyedge)
        "${SRV_CPU[@]}" "$ANYEDGE" -c "$T/anyedge.yaml" >"$T/anyedge.log" 2>&1 &
        ;;
    anyedge_base)
        "${SRV_CPU[@]}" "$T/anyedge_base_bin" -c "$T/anyedge_base.yaml" >"$T/anyedge_base.log" 2>&1 &
        ;;
    caddy)
        HOME=$T XDG_DATA_HOME=$T XDG_CONFIG_HOME=$T GOMAXPROCS=1 "${SRV_CPU[@]}" "$CADDY" run \
            --config "$T/Caddyfile" --adapter caddyfile >"$T/caddy.log" 2>&1 &
        ;;
    gtlsserver)
        "${SRV_CPU[@]}" "$GTLSSERVER" --htdocs="$T/htdocs" 127.0.0.1 "$GT_PORT" \
            "$T/key.pem" "$T/cert.pem" -q >"$T/gtlsserver.log" 2>&1 &
        ;;
    esac
    pid=$!
    PIDS+=("$pid")
    SRV_PID[$t]=$pid
    wait_h3 "$(url "$t" h3_rps)" 10 || die "$t did not answer HTTP/3 on udp/${SRV_PORT[$t]}"
    log "$t: pid $pid on udp 127.0.0.1:${SRV_PORT[$t]}"
}

for t in $TARGETS; do
    start_server "$t"
done
if [[ " $TARGETS " == *" anyedge "* ]]; then
    wait_port "$ADMIN_PORT" 10 || die "anyedge admin endpoint did not start"
fi
if [[ " $TARGETS " == *" anyedge_base "* ]]; then
    wait_port "$BASE_ADMIN_PORT" 10 || die "anyedge_base admin endpoint did not start"
fi

# Sanity: the right sizes with status 200; gtlsserver's bodies are the files.
for t in $TARGETS; do
    for s in h3_rps h3_bulk; do
        want=1024
        [ "$s" = h3_bulk ] && want=1048576
        read -r _ st n sha <<<"$(timeout 60 "$H3GET" -k "$(url "$t" "$s")" 2>/dev/null | head -n1)" || true
        if [ "${st:-}" != 200 ] || [ "${n:-}" != "$want" ]; then
            die "$t: $(url "$t" "$s") returned status ${st:-none}, ${n:-0} bytes (want 200, $want)"
        fi
        if [ "$t" = gtlsserver ]; then
            f=$T/htdocs/1k
            [ "$s" = h3_bulk ] && f=$T/htdocs/1m
            [ "$sha" = "$(sha256sum <"$f" | cut -d' ' -f1)" ] || die "gtlsserver: wrong body for $f"
        fi
    done
    # Uploads: ae-origin's /sink answers the byte count it received.
    if [[ " $SCENARIOS " == *" h3_upload "* ]] && [ "$t" != gtlsserver ]; then
        [ -f "$T/up.bin" ] || head -c 1048576 /dev/urandom >"$T/up.bin"
        read -r _ st n sha <<<"$(timeout 60 "$H3GET" -k -d "$T/up.bin" "$(url "$t" h3_upload)" 2>/dev/null | head -n1)" || true
        [ "${st:-}" = 200 ] && [ "${sha:-}" = "$(printf '1048576\n' | sha256sum | cut -d' ' -f1)" ] ||
            die "$t: POST 1 MiB to $(url "$t" h3_upload): status ${st:-none}, the origin did not get 1048576 bytes"
    fi
done
log "sanity: 200 with 1 KiB / 1 MiB bodies from every target"

# ---- runs ----
RESULTS=$T/results.tsv
printf 'round\tscenario\ttarget\trequests\tbytes\tseconds\tsrv_cpu\torigin_cpu\tclient_cpu\terrors\tnon2xx\tconns\tother_cpu\tdg_in\tdg_out\n' \
    >"$RESULTS"

# run_load SECONDS SCENARIO TARGET: runs ae-h3load, prints its totals line.
run_load() {
    local secs=$1 s=$2 t=$3 args=()
    case "$s" in
    h3_rps) args=(-c 1 -m "$STREAMS") ;;
    h3_conn) args=(-N -c "$CONN_PAR" -m 1) ;;
    h3_bulk) args=(-c 1 -m "$BULK_STREAMS") ;;
    h3_upload) args=(-c 1 -m "$BULK_STREAMS" -u 1048576) ;;
    esac
    timeout -k 5 $((secs + 60)) "${LOAD_CPU[@]}" "$H3LOAD" -k -d "$secs" -t 30 "${args[@]}" \
        "$(url "$t" "$s")" 2>"$T/h3load.err" || true
}

# field NAME LINE: value after NAME in ae-h3load's "requests N bytes N ..." line.
field() {
    awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' <<<"$2"
}

one_run() {
    local round=$1 s=$2 t=$3 pid c0 c1 o0 o1 b0 b1 out
    local i0=0 d0=0 i1=0 d1=0
    pid=${SRV_PID[$t]}
    [ "$s/$t" != h3_upload/gtlsserver ] || return 0 # a file server takes no uploads
    kill -0 "$pid" 2>/dev/null || {
        log "$t (pid $pid) is not running"
        return 1
    }
    if [ "$WARMUP" -gt 0 ]; then
        run_load "$WARMUP" "$s" "$t" >/dev/null
    fi
    sleep 0.3
    if [[ "$t" == anyedge* ]]; then
        read -r i0 d0 <<<"$(ae_metrics "$t" anyedge_quic_datagrams_in_total anyedge_quic_datagrams_out_total)"
    fi
    c0=$(cpu_ticks "$pid")
    o0=$(cpu_ticks "$ORIGIN_PID")
    b0=$(busy_ticks)
    out=$(run_load "$DURATION" "$s" "$t")
    sleep 0.3 # let the server finish closing
    c1=$(cpu_ticks "$pid")
    o1=$(cpu_ticks "$ORIGIN_PID")
    b1=$(busy_ticks)
    if [[ "$t" == anyedge* ]]; then
        read -r i1 d1 <<<"$(ae_metrics "$t" anyedge_quic_datagrams_in_total anyedge_quic_datagrams_out_total)"
    fi
    if [[ "$out" != requests* ]]; then
        log "round $round $s $t: ae-h3load produced no result:"
        sed 's/^/    /' "$T/h3load.err" >&2
        return 1
    fi
    local req bytes secs ccpu errs non2xx conns
    req=$(field requests "$out")
    bytes=$(field bytes "$out")
    [ "$s" != h3_upload ] || bytes=$(field sent "$out") # per MiB sent, not of the short answers
    secs=$(field seconds "$out")
    ccpu=$(field cpu "$out")
    errs=$(field errors "$out")
    non2xx=$(field non2xx "$out")
    conns=$(field connections "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$s" "$t" "$req" \
        "$bytes" "$secs" \
        "$(awk -v c=$((c1 - c0)) -v h="$CLK_TCK" 'BEGIN { printf "%.3f", c / h }')" \
        "$(awk -v c=$((o1 - o0)) -v h="$CLK_TCK" 'BEGIN { printf "%.3f", c / h }')" \
        "$ccpu" "$errs" "$non2xx" "$conns" \
        "$(awk -v b=$((b1 - b0)) -v c=$((c1 - c0 + o1 - o0)) -v w="$ccpu" -v h="$CLK_TCK" \
            'BEGIN { o = (b - c) / h - w; printf "%.3f", o < 0 ? 0 : o }')" \
        $((i1 - i0)) $((d1 - d0)) >>"$RESULTS"
    log "round $round $s $t: $req requests, $(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB, $secs s, server CPU $(awk -v c=$((c1 - c0)) -v h="$CLK_TCK" \
        'BEGIN { printf "%.2f", c / h }') s, origin CPU $(awk -v c=$((o1 - o0)) -v h="$CLK_TCK" \
        'BEGIN { printf "%.2f", c / h }') s, client CPU $ccpu s, $errs errors, $non2xx non-2xx"
    [ "$req" -gt 0 ] || return 1
}

bench_rounds
for t in $TARGETS; do
    kill -0 "${SRV_PID[$t]}" 2>/dev/null || {
        log "$t died during the runs"
        FAILED=1
    }
done

# ---- report ----
bench_report_init h3-
GT_VER=$(dpkg-query -W -f '${Version}' ngtcp2-server 2>/dev/null || echo unknown)
CURL_VER=$(curl-config --version 2>/dev/null || echo "libcurl ?")
NG_VER=$(dpkg-query -W -f '${Version}' libngtcp2-16 2>/dev/null || pkg-config --modversion libngtcp2 2>/dev/null || echo '?')
GNUTLS_VER=$(pkg-config --modversion gnutls 2>/dev/null || echo '?')

python3 - "$RESULTS" >"$T/report.md" <<EOF
import csv, statistics, sys

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
targets = "$TARGETS".split()
scen_order = "$SCENARIOS".split()
MiB = 1048576.0
info = {
    "h3_rps": ("GET 1 KiB, 1 conn x $STREAMS streams", "req/s", "µs/req"),
    "h3_conn": ("GET 1 KiB, new connection per request (x $CONN_PAR parallel)", "conn/s", "µs/conn"),
    "h3_bulk": ("GET 1 MiB, 1 conn x $BULK_STREAMS streams", "MiB/s", "ms/MiB"),
    "h3_upload": ("POST 1 MiB, 1 conn x $BULK_STREAMS streams", "MiB/s", "ms/MiB"),
}

def ops(r):
    if r["scenario"] in ("h3_bulk", "h3_upload"):
        return float(r["bytes"]) / MiB
    return float(r["requests"])

def scale(s):  # CPU seconds per op -> display unit
    return 1e3 if s in ("h3_bulk", "h3_upload") else 1e6

agg = {}
for r in rows:
    o, secs = ops(r), float(r["seconds"])
    if o <= 0 or secs <= 0:
        continue
    s = r["scenario"]
    d = agg.setdefault((s, r["target"]), {k: [] for k in ("rate", "cpu", "ocpu", "tot", "cli", "util", "cutil", "bg", "din", "dout")})
    d.setdefault("err", 0)
    d.setdefault("non2xx", 0)
    d.setdefault("n", 0)
    d["rate"].append(o / secs)
    d["cpu"].append(float(r["srv_cpu"]) * scale(s) / o)
    d["ocpu"].append(float(r["origin_cpu"]) * scale(s) / o)
    d["tot"].append((float(r["srv_cpu"]) + float(r["origin_cpu"])) * scale(s) / o)
    d["cli"].append(float(r["client_cpu"]) * scale(s) / o)
    d["util"].append(100.0 * float(r["srv_cpu"]) / secs)
    d["cutil"].append(100.0 * float(r["client_cpu"]) / secs)
    d["bg"].append(100.0 * float(r["other_cpu"]) / secs)
    d["din"].append(float(r["dg_in"]) / float(r["requests"]) if float(r["requests"]) else 0)
    d["dout"].append(float(r["dg_out"]) / float(r["requests"]) if float(r["requests"]) else 0)
    d["err"] += int(r["errors"])
    d["non2xx"] += int(r["non2xx"])
    d["n"] += 1

med = statistics.median
print("## Results (median of %s rounds)" % "$ROUNDS")
print()
print("| scenario | server | rate | server CPU per op | ae-origin CPU per op | server + origin CPU per op | server CPU busy | client CPU busy | client CPU per op | other load | runs | errors / non-2xx |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in scen_order:
    label, unit, cunit = info[s]
    for t in targets:
        d = agg.get((s, t))
        if not d:
            print("| %s | %s | – | – | – | – | – | – | – | – | 0 | – |" % (label, t))
            continue
        proxy = t.startswith("anyedge") or t == "caddy"
        oc = "%.1f %s" % (med(d["ocpu"]), cunit) if proxy else "–"
        tot = "%.1f %s" % (med(d["tot"]), cunit) if proxy else "%.1f %s" % (med(d["cpu"]), cunit)
        print("| %s | %s | %.0f %s | %.1f %s | %s | %s | %.0f %% | %.0f %% | %.1f %s | %.0f %% | %d | %d / %d |" % (
            label, t, med(d["rate"]), unit, med(d["cpu"]), cunit, oc, tot, med(d["util"]),
            med(d["cutil"]), med(d["cli"]), cunit, med(d["bg"]), d["n"], d["err"], d["non2xx"]))
print()
print("server CPU = utime+stime of the server process (all threads) over the run; per op = per request")
print("(h3_rps), per new connection + request (h3_conn), per MiB of response body (h3_bulk), per MiB of request")
print("body (h3_upload). ae-origin is")
print("anyedge's upstream (gtlsserver reads files itself). CPU busy: CPU time / wall time (100 % = one")
print("core). other load: CPU used by anything else on the machine during the run (100 % = one core).")
print()
if "anyedge" in targets:
    lines = []
    for s in scen_order:
        d = agg.get((s, "anyedge"))
        if d and med(d["din"]) > 0:
            lines.append("| %s | %.2f | %.2f |" % (info[s][0], med(d["din"]), med(d["dout"])))
    if lines:
        print("anyedge's own datagram counters (anyedge_quic_datagrams_in/out_total) per request, median:")
        print()
        print("| scenario | datagrams in / request | datagrams out / request |")
        print("|---|---:|---:|")
        print("\n".join(lines))
        print()

if "anyedge" in targets and "anyedge_base" in targets:
    print("## This build against the baseline: anyedge / anyedge_base, server CPU per operation")
    print()
    print("Baseline: ${AE_BASE_DESC:-}. Lower is better; a change passes when no path is more than 5 %")
    print("worse (ratio of the medians <= 1.05). In brackets the per-round ratios, in round order.")
    print()
    print("| scenario | CPU/op base | CPU/op this build | ratio (per round) | rate ratio | result |")
    print("|---|---:|---:|---:|---:|---|")
    by = {(r["round"], r["scenario"], r["target"]): r for r in rows}
    for s in scen_order:
        a, b = agg.get((s, "anyedge_base")), agg.get((s, "anyedge"))
        if not a or not b:
            continue
        label, unit, cunit = info[s]
        cr = []
        for k in sorted({r["round"] for r in rows}, key=int):
            x, y = by.get((k, s, "anyedge_base")), by.get((k, s, "anyedge"))
            if x and y and ops(x) > 0 and ops(y) > 0 and float(x["srv_cpu"]) > 0:
                cr.append("%.3f" % ((float(y["srv_cpu"]) / ops(y)) / (float(x["srv_cpu"]) / ops(x))))
        rc = med(b["cpu"]) / med(a["cpu"])
        print("| %s | %.1f %s | %.1f %s | %.3fx (%s) | %.3fx | %s |" % (
            label, med(a["cpu"]), cunit, med(b["cpu"]), cunit, rc, ", ".join(cr),
            med(b["rate"]) / med(a["rate"]), "PASS" if rc <= 1.05 else "MISS"))
    print()

if "anyedge" in targets and "gtlsserver" in targets:
    print("## anyedge / gtlsserver (ratios of the medians) and issue #4 targets")
    print()
    print("| scenario | metric | anyedge | gtlsserver | ratio | target | result |")
    print("|---|---|---:|---:|---:|---:|---|")
    for s in scen_order:
        a, g = agg.get((s, "anyedge")), agg.get((s, "gtlsserver"))
        label, unit, cunit = info[s]
        if not a or not g:
            print("| %s | – | – | – | – | – | n/a |" % label)
            continue
        rr = med(a["rate"]) / med(g["rate"])
        print("| %s | rate | %.0f %s | %.0f %s | %.2f× | ≥ 1.00× | %s |" % (
            label, med(a["rate"]), unit, med(g["rate"]), unit, rr, "PASS" if rr >= 1.0 else "MISS"))
        cr = med(a["cpu"]) / med(g["cpu"])
        tag = " (by analogy)" if s == "h3_bulk" else ""
        print("| %s | server CPU per op | %.1f %s | %.1f %s | %.2f× | ≤ 1.00×%s | %s |" % (
            label, med(a["cpu"]), cunit, med(g["cpu"]), cunit, cr, tag, "PASS" if cr <= 1.0 else "MISS"))
        tr = med(a["tot"]) / med(g["cpu"])
        print("| %s | server + origin CPU per op | %.1f %s | %.1f %s | %.2f× | (informational) | – |" % (
            label, med(a["tot"]), cunit, med(g["cpu"]), cunit, tr))
    print()
    print("Per-round ratios anyedge/gtlsserver (the two ran back to back in each round):")
    print()
    print("| round | scenario | rate ratio | server CPU/op ratio |")
    print("|---:|---|---:|---:|")
    by = {(r["round"], r["scenario"], r["target"]): r for r in rows}
    for r in sorted({(r["round"], r["scenario"]) for r in rows}, key=lambda k: (int(k[0]), scen_order.index(k[1]))):
        a, g = by.get((r[0], r[1], "anyedge")), by.get((r[0], r[1], "gtlsserver"))
        if not a or not g or ops(a) <= 0 or ops(g) <= 0:
            continue
        ra = (ops(a) / float(a["seconds"])) / (ops(g) / float(g["seconds"]))
        ca = (float(a["srv_cpu"]) / ops(a)) / (float(g["srv_cpu"]) / ops(g)) if float(g["srv_cpu"]) > 0 else float("nan")
        print("| %s | %s | %.2f× | %.2f× |" % (r[0], r[1], ra, ca))
    print()

if "anyedge" in targets and "caddy" in targets:
    print("## anyedge / Caddy (both reverse proxies to the same ae-origin; ratios of the medians)")
    print()
    print("| scenario | rate ratio | server CPU per op ratio | server + origin CPU per op ratio |")
    print("|---|---:|---:|---:|")
    for s in scen_order:
        a, c = agg.get((s, "anyedge")), agg.get((s, "caddy"))
        if not a or not c:
            continue
        print("| %s | %.2f× | %.2f× | %.2f× |" % (info[s][0], med(a["rate"]) / med(c["rate"]),
            med(a["cpu"]) / med(c["cpu"]), med(a["tot"]) / med(c["tot"])))
    print()

print("<details><summary>All runs</summary>")
print()
print("| round | scenario | server | requests | MiB | seconds | server CPU s | origin CPU s | client CPU s | other CPU s | connections | errors | non-2xx | datagrams in/out (anyedge) |")
print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print("| %s | %s | %s | %s | %.1f | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (r["round"], r["scenario"],
        r["target"], r["requests"], float(r["bytes"]) / MiB, r["seconds"], r["srv_cpu"], r["origin_cpu"],
        r["client_cpu"], r["other_cpu"], r["conns"], r["errors"], r["non2xx"],
        "%s / %s" % (r["dg_in"], r["dg_out"]) if r["target"].startswith("anyedge") else "–"))
print()
print("</details>")
EOF

{
    printf '# anyedge HTTP/3 benchmark %s\n\n' "$STAMP"
    printf -- '- machine: %s CPU(s), %s; kernel %s\n' "$(nproc)" "$CPU_MODEL" "$(uname -r)"
    printf -- '- anyedge %s (git %s, %s); gtlsserver (ngtcp2-server %s); libngtcp2 %s; GnuTLS %s; client ae-h3load on %s\n' \
        "${AE_VER:-?}" "$AE_GIT" "$AE_BIN" "$GT_VER" "$NG_VER" "$GNUTLS_VER" "$CURL_VER"
    printf -- '- anyedge: 1 worker, one quic listener -> HTTP/1.1 ae-origin (/bytes/N), access log off; gtlsserver: --htdocs with 1 KiB / 1 MiB files, -q\n'
    printf -- '- same self-signed ECDSA P-256 certificate; TLS 1.3 (QUIC v1); client does not verify (-k)\n'
    printf -- '- %s round(s), %ss per run after %ss warm-up, targets alternating; %s; total %ss\n' \
        "$ROUNDS" "$DURATION" "$WARMUP" "$PIN_DESC" "$ELAPSED"
    printf -- '- h3_conn: ae-h3load -N (fresh connection, no reuse, no TLS session cache: full handshakes)\n'
    printf '\n'
    cat "$T/report.md"
} >"$OUT"
bench_finish
