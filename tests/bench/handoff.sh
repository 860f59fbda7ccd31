#!/usr/bin/env bash
# Moved vs direct TCP (TLS) throughput and latency (issue #10 "Benchmark"), in the
# network-namespace lab (tests/lab/netns.sh: client -> router -> site1 | site2, Redis +
# ae-origin in core, no link caps). Both sites run anyedge with a TCP listener on the anycast
# address and `tcp_handoff` on their router-facing interface.
#
# Each run is one curl process, one TLS connection to site1 (keep-alive), three transfers:
#   1. GET /sleep/1000: while it waits, the route stays (direct) or moves to site2 (moved);
#   2. the measured load: GET /bytes/N (download) or POST N bytes to /sink (upload);
#   3. 20 x GET /id (small requests: their median time is the round trip through the path).
# In "moved" runs every client segment of transfers 2 and 3 goes router -> site2 -> capture ->
# hand-off frame -> site1 -> TUN -> socket; replies leave site1 directly. curl's
# %{num_connects} proves one connection. ROUNDS rounds alternate the order direct/moved.
#
# Usage (root): AE_BIN=build tests/bench/handoff.sh   [ROUNDS=3 MB=200 WORKERS=1]
# Results: one line per run and a summary (median MB/s, moved/direct ratios, added latency, and
# each site's anyedge CPU time per MiB transferred: user + system of the process, all threads).
set -euo pipefail
AE_SRCDIR=$(cd "$(dirname "$0")/../.." && pwd)
AE_BIN=$(cd "${AE_BIN:-$AE_SRCDIR/build}" && pwd)
ROUNDS=${ROUNDS:-3}
MB=${MB:-200}
WORKERS=${WORKERS:-1}
. "$AE_SRCDIR/tests/lab/netns.sh"
BENCH_TAG=handoff.sh
# shellcheck source=tests/bench/common.sh
. "$AE_SRCDIR/tests/bench/common.sh"

[ "$(id -u)" = 0 ] || die "needs root (ip netns, BPF)"
for b in anyedge ae-origin; do [ -x "$AE_BIN/$b" ] || die "$AE_BIN/$b missing"; done
command -v redis-server >/dev/null || die "redis-server is not installed"

bench_tmpdir ae-hobench
# shellcheck disable=SC2317 # invoked by bench_cleanup (EXIT trap), after our processes ended
bench_cleanup_hook() { lab_down; }
trap 'exit 143' TERM
bg() {
    local name=$1
    shift
    "$@" >"$T/$name.log" 2>&1 &
    PIDS+=($!)
    printf -v "PID_$name" '%s' $!
}
HZ=$(getconf CLK_TCK)

lab_init "aehb$$-" 2
lab_up || die "could not build the lab"
A=$LAB_ANYCAST
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=localhost" -keyout "$T/edge.key" -out "$T/edge.pem" 2>/dev/null
lab_start_core bg "$AE_BIN/ae-origin" || die "core services do not start"
for n in 1 2; do
    lab_site_conf "$n" "$WORKERS" "$T/edge.pem" "$T/edge.key" tcp \
        'tcp_handoff: { enabled: on, interfaces: [ to-router ] }' >"$T/site$n.yaml"
    bg "site$n" ip netns exec "$(lab_ns site$n)" "$AE_BIN/anyedge" -c "$T/site$n.yaml"
    lab_wait_tcp "site$n" 127.0.0.1 9901 || die "site$n: admin does not listen"
done
smetric() { lab_smetric "$@"; }
for _ in $(seq 150); do lab_peers_ready && break; sleep 0.1; done
lab_peers_ready || die "sites do not see each other"
sleep 1.5
for n in 1 2; do
    [ "$(smetric site$n anyedge_tcp_handoff_enabled)" = 1 ] || die "site$n: tcp_handoff is not on"
done
BYTES=$((MB << 20))
head -c "$BYTES" /dev/urandom >"$T/up.bin"

# run KIND LOAD: prints "MBps rtt_ms_median conns injected"
run() {
    local kind=$1 load=$2 i0 out
    lab_shift site1
    i0=$(smetric site1 anyedge_tcp_handoff_injected_total)
    a0=$(smetric site1 anyedge_connections_accepted_total)
    c1_0=$(cpu_ticks "$PID_site1")
    c2_0=$(cpu_ticks "$PID_site2")
    local args=(-sk --resolve "edge:443:$A" -o /dev/null -w '%{size_download} %{size_upload} %{time_total} %{num_connects}\n'
        "https://edge/sleep/1000" --next)
    if [ "$load" = download ]; then
        args+=(-sk --resolve "edge:443:$A" -o /dev/null -w '%{size_download} %{size_upload} %{time_total} %{num_connects}\n'
            "https://edge/bytes/$BYTES")
    else
        args+=(-sk --resolve "edge:443:$A" -o /dev/null -w '%{size_download} %{size_upload} %{time_total} %{num_connects}\n'
            -X POST -H 'Content-Type: application/octet-stream' --data-binary "@$T/up.bin" "https://edge/sink")
    fi
    for _ in $(seq 20); do
        args+=(--next -sk --resolve "edge:443:$A" -o /dev/null -w '%{size_download} %{size_upload} %{time_total} %{num_connects}\n'
            "https://edge/id")
    done
    lab_exec client timeout 120 curl "${args[@]}" >"$T/run.out" 2>"$T/run.err" &
    local pid=$!
    if [ "$kind" = moved ]; then
        # curl reads an upload body before it connects: shift only once site1 has the connection
        for _ in $(seq 100); do
            [ "$(smetric site1 anyedge_connections_accepted_total)" -gt "$a0" ] && break
            sleep 0.05
        done
        sleep 0.1
        lab_shift site2
    fi
    wait "$pid" || die "$kind $load run failed: $(cat "$T/run.err")"
    local c1 c2 rtt
    c1=$(($(cpu_ticks "$PID_site1") - c1_0))
    c2=$(($(cpu_ticks "$PID_site2") - c2_0))
    rtt=$(awk 'NR > 2 { print 1000 * $3 }' "$T/run.out" | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f", a[int((NR + 1) / 2)] }')
    out=$(awk -v load="$load" '
        NR == 2 { n = (load == "download" ? $1 : $2); mbps = n / 1048576 / $3; mb = n / 1048576 }
        { conns += $4 }
        END { printf "%.1f %d %.0f", mbps, conns, mb }' "$T/run.out")
    local mbps conns mb
    read -r mbps conns mb <<<"$out"
    # CPU ms per MiB transferred (clock ticks -> ms), per site
    printf '%s %s %d %d %s %s\n' "$mbps" "$rtt" "$conns" \
        $(($(smetric site1 anyedge_tcp_handoff_injected_total) - i0)) \
        "$(awk -v t="$c1" -v mb="$mb" -v hz="$HZ" 'BEGIN { printf "%.2f", t * 1000 / hz / mb }')" \
        "$(awk -v t="$c2" -v mb="$mb" -v hz="$HZ" 'BEGIN { printf "%.2f", t * 1000 / hz / mb }')"
}

declare -A R
for r in $(seq 1 "$ROUNDS"); do
    for load in download upload; do
        if [ $((r % 2)) = 1 ]; then order="direct moved"; else order="moved direct"; fi
        for kind in $order; do
            line=$(run "$kind" "$load")
            read -r mbps rtt conns inj cpu1 cpu2 <<<"$line"
            [ "$conns" = 1 ] || die "$kind $load used $conns connections"
            if [ "$kind" = moved ]; then
                [ "$inj" -ge 100 ] || die "moved $load: site1 injected only $inj segments (site2: orphans $(smetric site2 anyedge_tcp_handoff_orphans_total), returned $(smetric site2 anyedge_tcp_handoff_returned_total); route $(lab_route); $(cat "$T/run.out" | head -3 | tr "\n" " "))"
            else
                [ "$inj" = 0 ] || die "direct $load: site1 injected $inj segments"
            fi
            log "round $r $load $kind: $mbps MB/s, small-request time median $rtt ms, 1 connection," \
                "$inj segments injected; CPU ms/MiB site1 $cpu1, site2 $cpu2"
            R[$load.$kind]+="$mbps "
            R[$load.$kind.cpu1]+="$cpu1 "
            R[$load.$kind.cpu2]+="$cpu2 "
            R[$load.$kind.rtt]+="$rtt "
        done
    done
done
med() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
printf '\n| load | direct MB/s | moved MB/s | moved/direct | small request direct | moved | added | CPU ms/MiB direct (site1) | moved (site1 + site2) |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for load in download upload; do
    d=$(med <<<"${R[$load.direct]}")
    m=$(med <<<"${R[$load.moved]}")
    rd=$(med <<<"${R[$load.direct.rtt]}")
    rm=$(med <<<"${R[$load.moved.rtt]}")
    cd1=$(med <<<"${R[$load.direct.cpu1]}")
    cm1=$(med <<<"${R[$load.moved.cpu1]}")
    cm2=$(med <<<"${R[$load.moved.cpu2]}")
    awk -v l="$load" -v d="$d" -v m="$m" -v rd="$rd" -v rm="$rm" -v cd1="$cd1" -v cm1="$cm1" -v cm2="$cm2" 'BEGIN {
        printf "| %s | %.1f | %.1f | %.2fx | %.2f ms | %.2f ms | %+.2f ms | %.2f | %.2f + %.2f |\n", l, d, m, m / d, rd, rm, rm - rd, cd1, cm1, cm2 }'
done
printf '\n(%d rounds, %d MiB per transfer, %d worker(s) per site; medians)\n' "$ROUNDS" "$MB" "$WORKERS"
