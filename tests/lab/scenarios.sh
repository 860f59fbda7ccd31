# Scenarios of tests/lab/lab (sourced by it; each runs in a subshell against a fresh lab that
# `lab run` built: 3 sites under ECMP, Redis, origins o1/o2). Each prints a result table and
# returns non-zero when a promise is broken; each writes $LAB_RESULTS/<scenario>-<ts>.csv (one
# row per second) and .png (gnuplot). docs/lab.md describes them and how to read the output.
#
# Load used by the scenarios (all from the client namespace, to the anycast address):
#   TCP  labtool.py tcp: 20 TLS/TCP keep-alive clients with session tickets, GET /client every
#        200 ms; on a broken connection: reconnect with the ticket and retry once (a request
#        only FAILS when the retry fails too). Records site, origin (X-Origin), Reused.
#   H3   20 ae-h3get downloads (shift), or ae-h3load with 10 connections (the others).
# Every loop and wait is bounded in time; every process is started through lab_bg (PID file)
# so `lab down` ends it.

SC_TCP_CLIENTS=20
SC_H3_DOWNLOADS=20

# ---- bookkeeping ----

sc_begin() {
    SC_NAME=$1
    SC_DIR=$LAB_RUN/sc-$1
    mkdir -p "$SC_DIR"
    : >"$SC_DIR/checks"
    : >"$SC_DIR/marks"
    : >"$SC_DIR/h3.events"
    : >"$SC_DIR/tcp.events"
    SC_T0=$(now_ms)
    SC_TS=$(date +%Y%m%d-%H%M%S)
    if ip netns exec "${LAB_PREFIX}site1" curl -s --max-time 2 "http://127.0.0.1:$LAB_ADMIN/metrics" |
        grep '^anyedge_forward_out_total' >/dev/null; then
        check "build: inter-site QUIC forwarding" INFO "present (anyedge_forward_out_total exported)"
    else
        check "build: inter-site QUIC forwarding" INFO "ABSENT in this build: QUIC flows that change site get stateless resets"
    fi
    check "build: route control" INFO "$(routectl) (anyedge = anyedge ran birdc itself via anycast.announce)"
    sampler_start
    say "scenario $1: route control $(routectl), anyedge $AE_BIN/anyedge"
}

# mark LABEL: an event on the timeline (vertical line in the plot).
mark() {
    printf '%s %s\n' "$(($(now_ms) - SC_T0))" "$1" >>"$SC_DIR/marks"
    say "t=$(( ($(now_ms) - SC_T0) / 1000 ))s: $1"
}

# check NAME PASS|FAIL|INFO DETAIL
check() {
    local name=$1 res=$2
    shift 2
    printf '%s\t%s\t%s\n' "$name" "$res" "$*" >>"$SC_DIR/checks"
}
# ok_if NAME DETAIL CONDITION: PASS when the shell condition (a string, eval'd) holds.
ok_if() {
    if eval "$3" 2>/dev/null; then check "$1" PASS "$2"; else check "$1" FAIL "$2"; fi
}

# ---- metrics sampler: every second, each site's /metrics and the router's ECMP paths ----

sampler_start() {
    (
        end=$(($(date +%s) + 170))
        while [ ! -f "$SC_DIR/stop" ] && [ "$(date +%s)" -lt "$end" ]; do
            t=$(now_ms)
            for n in $(seq 1 "$LAB_NSITES"); do
                ip netns exec "${LAB_PREFIX}site$n" curl -s --max-time 0.5 \
                    "http://127.0.0.1:$LAB_ADMIN/metrics" 2>/dev/null | awk -v ms="$t" -v s="site$n" '
                    /^anyedge_/ {
                        name = $1; v = $NF
                        if (name ~ /^anyedge_handshakes_total\{.*type="resumed"/ || name ~ /^anyedge_quic_handshakes_resumed_total/) { acc["handshakes_resumed"] += v; next }
                        sub(/\{.*/, "", name); sub(/^anyedge_/, "", name)
                        if (name ~ /^(quic_datagrams_in_total|connections_accepted_total|quic_connections_opened_total|quic_stateless_resets_total|forward_out_total|forward_in_total|forward_resets_owner_dead_total)$/) acc[name] += v
                    }
                    END { for (k in acc) printf "%s %s %s %s\n", ms, s, k, acc[k] }'
            done
            printf '%s router paths %s\n' "$t" "$(lab_bird_paths | tr ' ' ,)"
            r=$((1000 - ($(now_ms) - t)))
            [ $r -gt 0 ] && sleep "$(printf '0.%03d' "$r")"
        done >>"$SC_DIR/samples"
    ) &
    echo $! >"$LAB_RUN/sampler.pid"
}

# ---- load ----

tcp_load() {
    local secs=$1
    lab_bg tcpload client python3 "$LAB_DIR/labtool.py" tcp --addr "$LAB_ANYCAST" \
        --clients "$SC_TCP_CLIENTS" --interval 0.2 --duration "$secs" --timeout 2 \
        --events "$SC_DIR/tcp.events" --summary "$SC_DIR/tcp.json"
}
tcp_wait() {
    local i
    for i in $(seq 600); do
        lab_alive tcpload || break
        sleep 0.1
    done
    lab_stop tcpload
}

# tcp_analyze AT_MS FROM_SITE [WINDOW_MS]: labtool's TCP run around the event at AT_MS (ms after
# the scenario start) that moved clients off FROM_SITE; tcp_stat KEY prints one number of it.
# moved: clients whose last answer before AT came from FROM_SITE; of them, moved_kept kept their
# connection through [AT, AT + WINDOW) (no reset, no reconnect: the TCP hand-off),
# moved_resumed reconnected with Reused after AT; resets_window: resets of all clients in
# [AT, AT + WINDOW) (WINDOW default: to the end of the run).
tcp_analyze() {
    python3 - "$SC_DIR/tcp.events" "$SC_DIR/tcp.json" "${1:-0}" "${2:-none}" "$SC_T0" "${3:-0}" <<'EOF' >"$SC_DIR/tcp.analysis"
import json, sys
evf, sumf, at, frm, t0 = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
win = int(sys.argv[6])
at = t0 + at if at else 0
until = at + win if win else 1 << 62
per = {}
for line in open(evf):
    p = line.split()
    if len(p) < 3: continue
    ms, kind, c = int(p[0]), p[1], int(p[2])
    per.setdefault(c, []).append((ms, kind, p[3:]))
st = json.load(open(sumf)) if sumf and open(sumf).read(1) else []
ok = sum(s["ok"] for s in st); failed = sum(s["failed"] for s in st)
resets = sum(s["resets"] for s in st)
recon = sum(s["reconnects_after_first"] for s in st); reused = sum(s["reused_after_first"] for s in st)
changes = sum(s["origin_changes"] for s in st)
gaps = sorted(g for s in st for g in s["gaps_ms"])
moved = moved_resumed = moved_same = moved_back_ok = moved_kept = 0
resets_window = sum(1 for evs in per.values() for e in evs if e[1] == "reset" and at <= e[0] < until)
for c, evs in per.items():
    before = [e for e in evs if e[0] < at and e[1] == "req" and e[2][0] == "ok"] if at else []
    if not before or before[-1][2][1] != frm: continue
    moved += 1
    origin = before[-1][2][2]
    after = [e for e in evs if e[0] >= at]
    conns = [e for e in after if e[1] == "conn" and e[2][0] != frm]
    if any(e[2][1] == "reused=1" for e in conns): moved_resumed += 1
    oks = [e for e in after if e[1] == "req" and e[2][0] == "ok"]
    if oks and all(e[2][2] == origin for e in oks): moved_same += 1
    if oks and oks[-1][2][1] != frm: moved_back_ok += 1
    inwin = [e for e in after if e[0] < until]
    if not any(e[1] in ("reset", "conn") for e in inwin) and any(e[1] == "req" and e[2][0] == "ok" for e in inwin):
        moved_kept += 1
med = gaps[len(gaps) // 2] if gaps else 0
print("clients=%d ok=%d failed=%d resets=%d reconnects=%d reconnects_reused=%d origin_changes=%d "
      "moved=%d moved_resumed=%d moved_same_origin=%d moved_served_elsewhere=%d gaps=%d gap_med_ms=%d gap_max_ms=%d "
      "moved_kept=%d resets_window=%d"
      % (len(st), ok, failed, resets, recon, reused, changes, moved, moved_resumed, moved_same,
         moved_back_ok, len(gaps), med, gaps[-1] if gaps else 0, moved_kept, resets_window))
EOF
}
tcp_stat() { tr ' ' '\n' <"$SC_DIR/tcp.analysis" | awk -F= -v k="$1" '$1 == k { print $2 }'; }

# h3_downloads N PATH: N concurrent ae-h3get downloads; each appends "ms ok|fail rc output" to
# h3.events when it ends.
h3_downloads() {
    local n=$1 path=$2 i
    for i in $(seq "$n"); do
        lab_bg "h3get-$i" client bash -c '
            out=$(timeout 90 "$0" -k "https://'"$LAB_ANYCAST"'$1" 2>&1); rc=$?
            out=$(tail -n 1 <<<"$out")
            r=fail; [ $rc = 0 ] && r=ok
            echo "$(date +%s%3N) $r $rc $out" >>"$2"' "$AE_BIN/ae-h3get" "$path" "$SC_DIR/h3.events"
        sleep 0.05
    done
}
h3_downloads_wait() {
    local n=$1 secs=$2 i
    for i in $(seq $((secs * 10))); do
        [ "$(wc -l <"$SC_DIR/h3.events")" -ge "$n" ] && return 0
        sleep 0.1
    done
    return 1
}

# h3_load SECS [TIMEOUT]: ae-h3load, 10 connections x 1 stream, GET /client, per-transfer
# timeout TIMEOUT s (default 5).
h3_load() {
    lab_bg h3load client "$AE_BIN/ae-h3load" -k -c 10 -m 1 -d "$1" -t "${2:-5}" "https://$LAB_ANYCAST/client"
}
h3_load_wait() {
    local i
    for i in $(seq 600); do
        lab_alive h3load || break
        sleep 0.1
    done
    lab_stop h3load
    H3L=$(grep -E '^requests ' "$LAB_RUN/h3load.log" | tail -n 1)
    h3l() { awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i + 1) }' <<<"$H3L"; }
}

site_delta_start() {
    local n
    for n in $(seq 1 "$LAB_NSITES"); do
        eval "SD_$1_site$n=$(smetric "site$n" "anyedge_$1")"
    done
}
site_delta() {
    local v
    v=$(smetric "$2" "anyedge_$1")
    eval "echo \$(( v - \${SD_$1_$2:-0} ))"
}
# handoff_counters: the TCP hand-off counters summed over the sites (flows claimed by another
# site, segments injected, segments given back to the kernel).
handoff_counters() {
    printf 'hand-off: %s flows moved, %s segments injected, %s given back' \
        "$(sum_sites_metric anyedge_tcp_handoff_flows_moved_total)" \
        "$(sum_sites_metric anyedge_tcp_handoff_injected_total)" \
        "$(sum_sites_metric anyedge_tcp_handoff_returned_total)"
}
sum_sites_metric() {
    local n t=0
    for n in $(seq 1 "$LAB_NSITES"); do t=$((t + $(smetric "site$n" "$1"))); done
    echo $t
}

# route_gap SITE_SET_BEFORE SITE_SET_AFTER: ms until the router's paths equal AFTER (max 5 s).
route_wait_ms() {
    local want=$1 t0 i
    t0=$(now_ms)
    for i in $(seq 500); do
        [ "$(lab_bird_paths)" = "$want" ] && { echo $(($(now_ms) - t0)); return 0; }
        sleep 0.01
    done
    echo -1
    return 1
}

# ---- end: CSV, PNG, table ----

# sc_csv_now: writes the timeline so far to $SC_DIR/now.csv and prints its path.
sc_csv_now() {
    python3 "$LAB_DIR/labtool.py" timeline --t0 "$SC_T0" --events "$SC_DIR/tcp.events" \
        --samples "$SC_DIR/samples" --sites "$LAB_NSITES" --out "$SC_DIR/now.csv" >/dev/null 2>&1
    printf '%s' "$SC_DIR/now.csv"
}

sc_end() {
    local csv png rc=0
    touch "$SC_DIR/stop"
    local p
    p=$(lab_pid sampler) && { kill "$p" 2>/dev/null; rm -f "$LAB_RUN/sampler.pid"; }
    csv=$LAB_RESULTS/$SC_NAME-$SC_TS.csv
    png=$LAB_RESULTS/$SC_NAME-$SC_TS.png
    touch "$SC_DIR/samples"
    awk '{ print $1, $2 }' "$SC_DIR/h3.events" >"$SC_DIR/h3.timeline"
    if python3 "$LAB_DIR/labtool.py" timeline --t0 "$SC_T0" --events "$SC_DIR/tcp.events" \
        --samples "$SC_DIR/samples" --sites "$LAB_NSITES" --h3 "$SC_DIR/h3.timeline" --out "$csv"; then
        cp "$SC_DIR/marks" "${csv%.csv}.marks"
        plot "$csv" "$png" "$SC_DIR/marks" || say "gnuplot failed (no PNG)"
    else
        say "timeline failed (no CSV)"
    fi
    printf '\n%s\n' "scenario $SC_NAME (route control: $(routectl)) — results"
    printf '%-34s %-5s %s\n' CHECK RESULT DETAIL
    printf '%-34s %-5s %s\n' ---------------------------------- ----- ------------------------------
    while IFS=$'\t' read -r name res detail; do
        printf '%-34s %-5s %s\n' "$name" "$res" "$detail"
        [ "$res" = FAIL ] && rc=1
    done <"$SC_DIR/checks"
    printf 'timeline: %s\nplot:     %s\n' "$csv" "$png"
    if [ $rc = 0 ]; then say "scenario $SC_NAME: PASS"; else say "scenario $SC_NAME: FAIL"; fi
    return $rc
}

# plot CSV PNG MARKS: two panels sharing the time axis: client requests per second (TCP ok /
# failed / resets / Reused reconnects, H3 completions), and per-site QUIC datagrams in plus the
# route state (site announced: a band at the bottom).
plot() {
    command -v gnuplot >/dev/null || { say "gnuplot not installed: no PNG"; return 0; }
    local csv=$1 png=$2 marks=$3 arrows="" ms label col ns=$LAB_NSITES
    while read -r ms label; do
        arrows="$arrows set arrow from $((ms / 1000)).$(((ms % 1000) / 100)), graph 0 to $((ms / 1000)).$(((ms % 1000) / 100)), graph 1 nohead dt 2 lc rgb '#555555';"
        arrows="$arrows set label '$label' at $((ms / 1000)).$(((ms % 1000) / 100)), graph 0.97 rotate by 90 right font ',7' tc rgb '#333333';"
    done <"$marks"
    # columns: 1 t, 2 ok, 3 failed, 4 resets, 5 resumed, 6 h3_ok, 7 h3_failed, then per site 8
    # (route, pkts_in, tcp_accepted, quic_opened, resets_sent, fwd_out, fwd_in, resumed_hs)
    local site_plots="" route_plots="" n base
    for n in $(seq 1 "$ns"); do
        base=$((8 + (n - 1) * 8))
        site_plots="$site_plots '$csv' using 1:$((base + 1)) with lines lw 1.5 title 'site$n QUIC pkts in',"
        site_plots="$site_plots '$csv' using 1:$((base + 5)) with lines dt 3 lw 1.2 title 'site$n fwd out',"
        route_plots="$route_plots '$csv' using 1:(\$$base > 0 ? $n : NaN) with points pt 5 ps 0.6 title 'site$n announced',"
    done
    gnuplot <<EOF
set terminal pngcairo size 860,560 font ",8"
set output '$png'
set datafile separator ','
set key outside right top
set grid
set multiplot layout 3,1 title '$SC_NAME ($(basename "$csv" .csv))'
set lmargin 10; set rmargin 26
unset xlabel
set ylabel 'requests/s'
$arrows
plot '$csv' using 1:2 with lines lw 2 lc rgb '#1a9850' title 'TCP ok', \
     '' using 1:(\$3 > 0 ? \$3 : NaN) with points pt 13 ps 1.2 lc rgb '#d73027' title 'TCP failed', \
     '' using 1:(\$4 > 0 ? \$4 : NaN) with points pt 6 ps 1.0 lc rgb '#fc8d59' title 'TCP resets', \
     '' using 1:(\$5 > 0 ? \$5 : NaN) with points pt 7 ps 0.8 lc rgb '#4575b4' title 'TCP Reused reconnects', \
     '' using 1:(\$6 > 0 ? \$6 : NaN) with points pt 9 ps 0.9 lc rgb '#542788' title 'H3 downloads done', \
     '' using 1:(\$7 > 0 ? \$7 : NaN) with points pt 11 ps 1.0 lc rgb '#b2182b' title 'H3 downloads failed'
set ylabel 'datagrams/s'
plot ${site_plots%,}
set ylabel 'route'
set yrange [0.5:$ns.5]
set ytics 1
set xlabel 'seconds since scenario start'
plot ${route_plots%,}
unset multiplot
EOF
}
scenario_shift() {
    local rc ms paths q1 dl_ok dl_fail bad sizes fwd_in1 fwd_out
    local size=$((10 * 1024 * 1024))
    sc_begin shift
    # the downloads must last a few seconds: 200 Mbit/s from the router to the client
    tc -n "${LAB_PREFIX}router" qdisc add dev to-client root tbf rate 200mbit burst 256kb latency 100ms ||
        check "rate limit (tc tbf)" INFO "tc failed: downloads may finish before the shift"
    tcp_load 24
    sleep 3
    site_delta_start quic_connections_opened_total
    site_delta_start forward_in_total
    site_delta_start forward_out_total
    mark "20 H3 downloads start"
    h3_downloads "$SC_H3_DOWNLOADS" "/bytes/$size"
    sleep 2.5
    q1=$(site_delta quic_connections_opened_total site1)
    mark "withdraw site1"
    lab_bird_withdraw 1
    ms=$(route_wait_ms "site2 site3")
    ok_if "route withdrawn (router)" "paths $(lab_bird_paths) after ${ms} ms" '[ "$ms" -ge 0 ]'
    SHIFT_AT=$(($(now_ms) - SC_T0))
    h3_downloads_wait "$SC_H3_DOWNLOADS" 60 || true
    mark "downloads ended"
    dl_ok=$(awk '$2 == "ok"' "$SC_DIR/h3.events" | wc -l)
    dl_fail=$(awk '$2 != "ok"' "$SC_DIR/h3.events" | wc -l)
    # ae-h3get prints "0 200 BYTES SHA": every one complete and identical
    bad=$(awk -v sz="$size" '$2 == "ok" && !($5 == 200 && $6 == sz) ' "$SC_DIR/h3.events" | wc -l)
    sizes=$(awk '$2 == "ok" { print $7 }' "$SC_DIR/h3.events" | sort -u | wc -l)
    fwd_in1=$(site_delta forward_in_total site1)
    fwd_out=$(($(site_delta forward_out_total site2) + $(site_delta forward_out_total site3)))
    check "H3 downloads at site1 at the shift" "$([ "$q1" -ge 1 ] && echo PASS || echo FAIL)" \
        "$q1 of $SC_H3_DOWNLOADS QUIC connections opened at site1 (ECMP)"
    ok_if "H3 downloads complete (forwarded)" \
        "$dl_ok/$SC_H3_DOWNLOADS ok, $dl_fail failed, $bad wrong size/status, $sizes distinct digests; tunnel: site2+3 forwarded $fwd_out datagrams, site1 received $fwd_in1" \
        '[ "$dl_ok" = "$SC_H3_DOWNLOADS" ] && [ "$bad" = 0 ] && [ "$sizes" = 1 ]'
    if [ "$dl_fail" -gt 0 ]; then
        check "  failed downloads" INFO "$(awk '$2 != "ok" { $1 = ""; print }' "$SC_DIR/h3.events" | sort | uniq -c | head -n 3 | tr '\n' ';')"
    fi
    tcp_wait
    mark "TCP clients end"
    tcp_analyze "$SHIFT_AT" site1
    check "TCP clients at site1 at the shift" "$([ "$(tcp_stat moved)" -ge 1 ] && echo PASS || echo FAIL)" \
        "$(tcp_stat moved) of $(tcp_stat clients)"
    ok_if "  kept their connection (TCP hand-off)" "$(tcp_stat moved_kept)/$(tcp_stat moved) without a reset or reconnect; $(handoff_counters)" \
        '[ "$(tcp_stat moved_kept)" = "$(tcp_stat moved)" ]'
    ok_if "  same upstream (affinity)" "$(tcp_stat moved_same_origin)/$(tcp_stat moved) kept their X-Origin" \
        '[ "$(tcp_stat moved_same_origin)" = "$(tcp_stat moved)" ]'
    ok_if "TCP failed requests = 0, resets = 0" "$(tcp_stat ok) ok, $(tcp_stat failed) failed (after 1 retry), $(tcp_stat resets) resets, reconnects $(tcp_stat reconnects) ($(tcp_stat reconnects_reused) Reused), gap median $(tcp_stat gap_med_ms) ms max $(tcp_stat gap_max_ms) ms" \
        '[ "$(tcp_stat failed)" = 0 ] && [ "$(tcp_stat resets)" = 0 ]'
    ok_if "TCP origin changes (all clients)" "$(tcp_stat origin_changes)" '[ "$(tcp_stat origin_changes)" = 0 ]'
    tc -n "${LAB_PREFIX}router" qdisc del dev to-client root 2>/dev/null || true
    sc_end
}

scenario_crash() {
    local ms0 ms p res0 r r2
    sc_begin crash
    tcp_load 22
    # a 15 s transfer timeout: longer than the site registry's expiry (5 heartbeats), so the
    # clients see what the surviving sites do about the dead owner's CIDs (forward, then reset)
    h3_load 20 15
    sleep 5
    site_delta_start quic_stateless_resets_total
    site_delta_start quic_handshakes_resumed_total
    site_delta_start quic_0rtt_accepted_total
    site_delta_start forward_resets_owner_dead_total
    mark "kill -9 site1 anyedge"
    p=$(lab_pid anyedge-site1)
    kill -KILL "$p"
    CRASH_AT=$(($(now_ms) - SC_T0))
    ms=$(route_wait_ms "site2 site3")
    ok_if "route withdrawn (watchdog + BGP)" "router paths '$(lab_bird_paths)' ${ms} ms after the kill (watchdog log: $(grep -m1 withdraw "$LAB_RUN/watchdog-site1.log" 2>/dev/null | cut -d" " -f2-))" \
        '[ "$ms" -ge 0 ] && [ "$ms" -le 3000 ]'
    mark "route withdrawn"
    tcp_wait
    h3_load_wait
    tcp_analyze "$CRASH_AT" site1
    check "TCP clients at site1 at the crash" "$([ "$(tcp_stat moved)" -ge 1 ] && echo PASS || echo FAIL)" "$(tcp_stat moved) of $(tcp_stat clients)"
    ok_if "  recovered at another site" "$(tcp_stat moved_served_elsewhere)/$(tcp_stat moved) served by site2/3 afterwards" \
        '[ "$(tcp_stat moved_served_elsewhere)" = "$(tcp_stat moved)" ]'
    ok_if "  resumed (Reused)" "$(tcp_stat moved_resumed)/$(tcp_stat moved)" '[ "$(tcp_stat moved_resumed)" = "$(tcp_stat moved)" ]'
    ok_if "  same upstream (affinity)" "$(tcp_stat moved_same_origin)/$(tcp_stat moved)" '[ "$(tcp_stat moved_same_origin)" = "$(tcp_stat moved)" ]'
    ok_if "TCP recovery gap (max <= 5 s)" "median $(tcp_stat gap_med_ms) ms, max $(tcp_stat gap_max_ms) ms over $(tcp_stat gaps) interruptions; failed requests $(tcp_stat failed) (retry also failed; expected during the gap)" \
        '[ "$(tcp_stat gap_max_ms)" -le 5000 ]'
    res0=$(($(site_delta quic_stateless_resets_total site2) + $(site_delta quic_stateless_resets_total site3)))
    r=$(($(site_delta quic_handshakes_resumed_total site2) + $(site_delta quic_handshakes_resumed_total site3)))
    check "H3 load (ae-h3load, 10 conns)" INFO "$H3L"
    ok_if "H3 clients recovered" "requests $(h3l requests), errors $(h3l errors) (in flight at the crash), new QUIC connections $(h3l connections)" \
        '[ "$(h3l requests)" -ge 1 ] && [ "$(h3l connections)" -gt 10 ]'
    # Two valid recoveries: packets that reach site2/3 after the route moved get a stateless
    # reset (the owner is dead); packets that reach site1's host before it moved get an ICMP
    # port unreachable from its kernel (anyedge died, the host did not), which ends the client's
    # connection at once. Either way only requests in flight at the kill may fail: at most one
    # per H3 load connection (10 connections, 1 stream each); the reset count says which
    # path it was.
    ok_if "  by stateless reset at site2/3 or ICMP" "$res0 resets sent (owner dead: $(($(site_delta forward_resets_owner_dead_total site2) + $(site_delta forward_resets_owner_dead_total site3)))); H3 errors $(h3l errors)" \
        '[ "$res0" -ge 1 ] || [ "$(h3l errors)" -le 10 ]'
    # H3 recovery gap (1 s resolution): kill -> first second with a resumed QUIC handshake at site2/3
    r2=$(awk -F, -v k=$((CRASH_AT / 1000)) 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
        $1 >= k && ($(c["site2_resumed_hs"]) + $(c["site3_resumed_hs"]) + $(c["site2_resets_sent"]) + $(c["site3_resets_sent"])) > 0 { print $1 - k; exit }' \
        "$(sc_csv_now)")
    check "H3 recovery gap" INFO "${r2:-?} s (1 s resolution) from the kill to the first reset/resumed QUIC handshake at site2/3"
    ok_if "  resumed QUIC handshakes at site2/3" "$r resumed, 0-RTT accepted $(($(site_delta quic_0rtt_accepted_total site2) + $(site_delta quic_0rtt_accepted_total site3)))" \
        '[ "$r" -ge 1 ]'
    # site1 back
    mark "site1 restarted"
    rm -f "$LAB_RUN/anyedge-site1.pid"
    site_start 1
    if site_wait 1; then
        [ "$(routectl)" = lab ] && lab_bird_announce 1
        ms=$(route_wait_ms "site1 site2 site3")
        ok_if "site1 back: route re-announced" "${ms} ms after it listens (by $(routectl))" '[ "$ms" -ge 0 ]'
    else
        check "site1 back" FAIL "anyedge did not start again"
    fi
    sc_end
}

scenario_drain() {
    local ms st out
    sc_begin drain
    tcp_load 24
    h3_load 22
    sleep 5
    mark "anyedgectl drain site2"
    out=$(ip netns exec "${LAB_PREFIX}site2" "$AE_BIN/anyedgectl" -a "127.0.0.1:$LAB_ADMIN" drain 2>&1)
    rc=$?
    ok_if "anyedgectl drain" "exit $rc: $(head -c 160 <<<"$out" | tr '\n' ' ')" '[ $rc = 0 ]'
    ms=$(route_wait_ms "site1 site3")
    ok_if "route withdrawn by anyedge" "router paths '$(lab_bird_paths)' (${ms} ms)" '[ "$ms" -ge 0 ]'
    DRAIN_AT=$(($(now_ms) - SC_T0))
    # anyedge_anycast_draining: 0 active, 1 draining, 2 drained
    st=$(smetric site2 anyedge_anycast_draining)
    for _ in $(seq 150); do
        st=$(smetric site2 anyedge_anycast_draining)
        [ "$st" = 2 ] && break
        sleep 0.1
    done
    [ "$st" = 2 ] && mark "site2 drained"
    ok_if "site2 reports drained (/status)" "anyedge_anycast_draining=${st:-none} (2 = drained) within 15 s of the drain (drain_timeout 8s)" '[ "$st" = 2 ]'
    tcp_wait
    h3_load_wait
    # until the drain deadline (timeouts.drain 10 s) site2 keeps its connections: the moved
    # clients' segments are handed to it; at the deadline it closes them and they resume
    tcp_analyze "$DRAIN_AT" site2 5000
    ok_if "TCP failed requests = 0" "$(tcp_stat ok) ok, $(tcp_stat failed) failed, $(tcp_stat resets) resets, $(tcp_stat moved) clients moved off site2, $(tcp_stat moved_resumed) Reused" \
        '[ "$(tcp_stat failed)" = 0 ]'
    ok_if "  kept their connection 5 s after the withdrawal (TCP hand-off)" "$(tcp_stat moved_kept)/$(tcp_stat moved), $(tcp_stat resets_window) resets in that time; $(handoff_counters)" \
        '[ "$(tcp_stat moved_kept)" = "$(tcp_stat moved)" ] && [ "$(tcp_stat resets_window)" = 0 ]'
    ok_if "  closed at the drain deadline, resumed (Reused)" "$(tcp_stat moved_resumed)/$(tcp_stat moved)" '[ "$(tcp_stat moved_resumed)" = "$(tcp_stat moved)" ]'
    ok_if "H3 failed requests = 0" "$H3L" '[ "$(h3l errors)" = 0 ] && [ "$(h3l requests)" -ge 1 ]'
    out=$(ip netns exec "${LAB_PREFIX}site2" "$AE_BIN/anyedgectl" -a "127.0.0.1:$LAB_ADMIN" undrain 2>&1)
    rc=$?
    mark "undrain site2"
    ms=-1
    [ $rc = 0 ] && ms=$(route_wait_ms "site1 site2 site3")
    ok_if "undrain re-announces" "anyedgectl undrain exit $rc; paths '$(lab_bird_paths)' (${ms} ms)" '[ $rc = 0 ] && [ "$ms" -ge 0 ]'
    sc_end
}

scenario_redis_loss() {
    local ms n c=0
    sc_begin redis-loss
    tcp_load 24
    h3_load 22
    sleep 4
    mark "Redis stopped"
    lab_stop redis
    for _ in $(seq 100); do
        c=0
        for n in $(seq 1 "$LAB_NSITES"); do [ "$(smetric "site$n" anyedge_redis_connected)" = 0 ] && c=$((c + 1)); done
        [ $c = "$LAB_NSITES" ] && break
        sleep 0.1
    done
    ok_if "sites notice (redis_connected 0)" "$c/$LAB_NSITES sites" '[ $c = "$LAB_NSITES" ]'
    sleep 2
    mark "withdraw site1 (Redis down)"
    lab_bird_withdraw 1
    ms=$(route_wait_ms "site2 site3")
    MOVE_AT=$(($(now_ms) - SC_T0))
    ok_if "route withdrawn" "${ms} ms" '[ "$ms" -ge 0 ]'
    sleep 6
    mark "announce site1"
    lab_bird_announce 1
    tcp_wait
    h3_load_wait
    tcp_analyze "$MOVE_AT" site1
    ok_if "TCP failed requests = 0" "$(tcp_stat ok) ok, $(tcp_stat failed) failed, $(tcp_stat resets) resets" '[ "$(tcp_stat failed)" = 0 ]'
    ok_if "moved clients continue without Redis" "$(tcp_stat moved) clients moved off site1: $(tcp_stat moved_kept) kept their connection (TCP hand-off), $(tcp_stat moved_resumed) resumed (Reused) elsewhere, $(tcp_stat moved_same_origin) same origin; $(handoff_counters)" \
        '[ "$(tcp_stat moved)" -ge 1 ] && [ $(($(tcp_stat moved_kept) + $(tcp_stat moved_resumed))) -ge "$(tcp_stat moved)" ] && [ "$(tcp_stat moved_same_origin)" = "$(tcp_stat moved)" ]'
    ok_if "H3 failed requests = 0" "$H3L" '[ "$(h3l errors)" = 0 ] && [ "$(h3l requests)" -ge 1 ]'
    c=0
    for n in $(seq 1 "$LAB_NSITES"); do lab_alive "anyedge-site$n" && c=$((c + 1)); done
    ok_if "every anyedge still running" "$c/$LAB_NSITES" '[ $c = "$LAB_NSITES" ]'
    sc_end
}

scenario_scale_out() {
    local ms f3
    sc_begin scale-out
    mark "stop site3"
    lab_stop anyedge-site3
    ms=$(route_wait_ms "site1 site2")
    ok_if "start: 2 sites under ECMP" "paths '$(lab_bird_paths)' (${ms} ms after stopping site3)" '[ "$ms" -ge 0 ]'
    tcp_load 22
    h3_load 20
    sleep 5
    mark "site3 starts"
    site_start 3
    site_wait 3 || check "site3 starts" FAIL "anyedge does not listen"
    [ "$(routectl)" = lab ] && lab_bird_announce 3
    ms=$(route_wait_ms "site1 site2 site3")
    SCALE_AT=$(($(now_ms) - SC_T0))
    ok_if "site3 announced (3-way ECMP)" "${ms} ms after it listens" '[ "$ms" -ge 0 ]'
    sleep 1
    site_delta_start forward_out_total
    tcp_wait
    h3_load_wait
    f3=$(site_delta forward_out_total site3)
    tcp_analyze "$SCALE_AT" none
    ok_if "TCP failed requests = 0, resets = 0 (re-hashed flows handed off)" "$(tcp_stat ok) ok, $(tcp_stat failed) failed, $(tcp_stat resets) resets, $(tcp_stat reconnects_reused)/$(tcp_stat reconnects) reconnects Reused; $(handoff_counters)" \
        '[ "$(tcp_stat failed)" = 0 ] && [ "$(tcp_stat resets)" = 0 ]'
    ok_if "H3 flows re-hashed continue (0 errors)" "$H3L; site3 forwarded $(smetric site3 anyedge_forward_out_total) datagrams to the owners, sent $(smetric site3 anyedge_forward_resets_owner_dead_total) stateless resets for owner dead/unknown" \
        '[ "$(h3l errors)" = 0 ] && [ "$(h3l requests)" -ge 1 ]'
    sc_end
}

