#!/usr/bin/env bash
# Forwarded vs direct HTTP/3 throughput (issue #5 "Benchmark"), in the network-namespace lab
# (tests/lab/netns.sh: client -> router -> site1 | site2, Redis + ae-origin in core, no link
# caps). Two anyedge sites share the ring through Redis; each has site.forward on its core link.
#
#   direct     the route to the anycast /32 points at site1 for the whole run.
#   forwarded  the route points at site1 while the client connects, then moves to site2 0.2 s
#              into the run: every client datagram then goes router -> site2 -> tunnel frame ->
#              site1 (replies go straight from site1 to the client: direct server return).
#              The first 0.2 s are direct (~4 % of a 5 s run; flatters forwarded slightly).
#
# Loads, both over one QUIC connection:
#   download   ae-h3load -c 1 -m 8 -d 5: 1 MiB GETs (/bytes/1048576), 8 streams in flight.
#              Client -> server is mostly ACKs here: the forwarded path carries little data.
#   upload     ae-h3get -n 240 -d 1MiB: 240 POSTs of 1 MiB to ae-origin's /sink, multiplexed:
#              the forwarded path carries the data.
# ROUNDS rounds (default 3); the order direct/forwarded alternates per round. Also reported: the
# forward latency histogram of site1 (anyedge_forward_latency_seconds: receive wall clock minus
# the frame's timestamp, 1 ms resolution; its mean is unbiased, its p50 is a bucket bound).
#
# Usage (root): AE_BIN=build tests/bench/forward.sh   [ROUNDS=3 SECS=5 WORKERS=1]
# Results: one line per run on stdout and a summary table.
set -euo pipefail
AE_SRCDIR=$(cd "$(dirname "$0")/../.." && pwd)
AE_BIN=$(cd "${AE_BIN:-$AE_SRCDIR/build}" && pwd)
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WORKERS=${WORKERS:-1}
UPN=${UPN:-240}
. "$AE_SRCDIR/tests/lab/netns.sh"
BENCH_TAG=forward.sh
# shellcheck source=tests/bench/common.sh
. "$AE_SRCDIR/tests/bench/common.sh"

[ "$(id -u)" = 0 ] || die "needs root (ip netns)"
for b in anyedge ae-origin ae-h3load ae-h3get; do [ -x "$AE_BIN/$b" ] || die "$AE_BIN/$b missing"; done
command -v redis-server >/dev/null || die "redis-server is not installed"

bench_tmpdir ae-fwdbench
# shellcheck disable=SC2317 # invoked by bench_cleanup (EXIT trap), after our processes ended
bench_cleanup_hook() { lab_down; }
trap 'exit 143' TERM
bg() {
    local name=$1
    shift
    "$@" >"$T/$name.log" 2>&1 &
    PIDS+=($!)
}

lab_init "aefb$$-" 2
lab_up || die "could not build the lab"
A=$LAB_ANYCAST
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=localhost" -keyout "$T/edge.key" -out "$T/edge.pem" 2>/dev/null
lab_start_core bg "$AE_BIN/ae-origin" || die "core services do not start"
for n in 1 2; do
    lab_site_conf "$n" "$WORKERS" "$T/edge.pem" "$T/edge.key" quic >"$T/site$n.yaml"
    bg "site$n" ip netns exec "$(lab_ns site$n)" "$AE_BIN/anyedge" -c "$T/site$n.yaml"
    SITE_PID[n]=$!
    lab_wait_tcp "site$n" 127.0.0.1 9901 || die "site$n: admin does not listen"
done
metrics() { lab_exec "$1" curl -s --max-time 5 http://127.0.0.1:9901/metrics; }
smetric() { lab_smetric "$@"; }
for _ in $(seq 150); do lab_peers_ready && break; sleep 0.1; done
lab_peers_ready || die "sites do not see each other"
sleep 1.5
head -c $((1 << 20)) /dev/urandom >"$T/up.bin"
# latency histogram of site1 as "le count" lines (cumulative) plus "sum S"
lat_snap() {
    metrics site1 | awk '/^anyedge_forward_latency_seconds_bucket/ {
        match($1, /le="[^"]*"/); print substr($1, RSTART + 4, RLENGTH - 5), $2 }
        /^anyedge_forward_latency_seconds_sum/ { print "sum", $2 }'
}

# udp_drops: UDP datagrams dropped for full receive buffers (RcvbufErrors) in the client's,
# site1's and site2's namespaces, as "client site1 site2".
udp_drops() {
    local n out=""
    for n in client site1 site2; do
        out="$out $(lab_exec "$n" awk '/^Udp:/ { if (h) { print $6; exit } h = 1 }' /proc/net/snmp)"
    done
    echo "$out"
}

# site_cpu: CPU ticks (utime+stime, all threads) of site1 and site2, as "site1 site2".
site_cpu() { echo "$(cpu_ticks "${SITE_PID[1]}") $(cpu_ticks "${SITE_PID[2]}")"; }

# run KIND LOAD: prints "MBps fwd_datagrams rcvbuf_drops(client/site1/site2) site1_ms/MB site2_ms/MB"
run() {
    local kind=$1 load=$2 t0 t1 pid line bytes secs f0 f1 d0 d1 c0 c1
    lab_shift site1
    f0=$(smetric site1 'anyedge_forwarded_datagrams_total{direction="in",site="2"}')
    read -r -a d0 <<<"$(udp_drops)"
    read -r -a c0 <<<"$(site_cpu)"
    t0=$(date +%s%N)
    if [ "$load" = download ]; then
        lab_exec client "$AE_BIN/ae-h3load" -k -c 1 -m 8 -d "$SECS" \
            "https://$A/bytes/1048576" >"$T/load.out" 2>"$T/load.err" &
    else
        lab_exec client "$AE_BIN/ae-h3get" -k -n "$UPN" -d "$T/up.bin" "https://$A/sink" \
            >"$T/load.out" 2>"$T/load.err" &
    fi
    pid=$!
    if [ "$kind" = forwarded ]; then
        sleep 0.2
        lab_shift site2
    fi
    wait "$pid" || die "$load ($kind) failed: $(tail -3 "$T/load.err" "$T/load.out")"
    t1=$(date +%s%N)
    lab_shift site1
    f1=$(smetric site1 'anyedge_forwarded_datagrams_total{direction="in",site="2"}')
    read -r -a d1 <<<"$(udp_drops)"
    read -r -a c1 <<<"$(site_cpu)"
    if [ "$load" = download ]; then
        line=$(cat "$T/load.out")
        bytes=$(awk '{ for (i = 1; i < NF; i++) if ($i == "bytes") print $(i + 1) }' <<<"$line")
        secs=$(awk '{ for (i = 1; i < NF; i++) if ($i == "seconds") print $(i + 1) }' <<<"$line")
        [ "$(awk '{ for (i = 1; i < NF; i++) if ($i == "errors") print $(i + 1) }' <<<"$line")" = 0 ] ||
            die "download errors: $line"
    else
        local ok
        ok=$(awk -v n=$((1 << 20)) '$2 == 200 && $3 ~ /^[0-9]+$/' "$T/load.out" | wc -l)
        [ "$ok" = "$UPN" ] || die "upload: $ok of $UPN POSTs ok: $(head -3 "$T/load.out")"
        bytes=$((UPN << 20))
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    fi
    awk -v b="$bytes" -v s="$secs" -v f=$((f1 - f0)) -v d="$((d1[0] - d0[0]))/$((d1[1] - d0[1]))/$((d1[2] - d0[2]))" \
        -v c1=$((c1[0] - c0[0])) -v c2=$((c1[1] - c0[1])) -v h="$CLK_TCK" \
        'BEGIN { printf "%.1f %d %s %.2f %.2f\n", b / s / 1e6, f, d, c1 / h * 1e3 / (b / 1e6), c2 / h * 1e3 / (b / 1e6) }'
}

declare -A sum cnt
lat0=$(lat_snap)
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="direct forwarded"; else order="forwarded direct"; fi
    for load in download upload; do
        for kind in $order; do
            read -r mbps fwd drops cpu1 cpu2 <<<"$(run "$kind" "$load")"
            printf 'round %d %-9s %-9s %8.1f MB/s  CPU ms/MB site1 %5.2f site2 %5.2f  datagrams forwarded site2->site1: %d  UDP rcvbuf drops client/site1/site2: %s\n' \
                "$round" "$load" "$kind" "$mbps" "$cpu1" "$cpu2" "$fwd" "$drops"
            sum[$load.$kind]=$(awk -v a="${sum[$load.$kind]:-0}" -v b="$mbps" 'BEGIN { print a + b }')
            cnt[$load.$kind]=$((${cnt[$load.$kind]:-0} + 1))
            if [ "$kind" = forwarded ] && [ "$fwd" -lt 100 ]; then
                die "forwarded $load run forwarded only $fwd datagrams"
            fi
        done
    done
done
lat1=$(lat_snap)
echo
printf '%-9s %12s %12s %7s\n' load direct forwarded ratio
for load in download upload; do
    d=$(awk -v s="${sum[$load.direct]}" -v n="${cnt[$load.direct]}" 'BEGIN { printf "%.1f", s / n }')
    f=$(awk -v s="${sum[$load.forwarded]}" -v n="${cnt[$load.forwarded]}" 'BEGIN { printf "%.1f", s / n }')
    printf '%-9s %9s MB/s %7s MB/s %6.2fx\n' "$load" "$d" "$f" "$(awk -v a="$f" -v b="$d" 'BEGIN { print a / b }')"
done
# Forward latency over all forwarded runs: the histogram's delta.
paste <(echo "$lat0") <(echo "$lat1") | awk '
    $1 == "sum" { sum = $4 - $2; next }
    { le[n] = $1; c[n++] = $4 - $2 }
    END {
        total = c[n - 1]
        for (i = 0; i < n; i++) if (c[i] >= 0.5 * total) { p50 = le[i]; break }
        for (i = 0; i < n; i++) if (c[i] >= 0.99 * total) { p99 = le[i]; break }
        printf "forward latency at site1 over %d frames: mean %.3f ms, p50 <= %s s, p99 <= %s s\n",
            total, (total > 0 ? 1000 * sum / total : 0), p50, p99 }'
