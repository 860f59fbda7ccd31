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
                        if (name ~ /^(quic_datagrams_in_total|connections_accepted_total|quic_connections_opened_total|quic_stateless_resets_total|forward_out_total|forward_in_total|forward_resets_owner_dead_total|tcp_handoff_flows_moved_total|tcp_handoff_injected_total|tcp_handoff_returned_total)$/) acc[name] += v
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

# tcp_load SECS: the TCP clients, for SECS seconds; returns once each has had its first answer
# (at most 15 s: on a busy machine Python and 20 TLS handshakes can take seconds), so that the
# scenario's event finds them all connected.
tcp_load() {
    local secs=$1 n=0
    lab_bg tcpload client python3 "$LAB_DIR/labtool.py" tcp --addr "$LAB_ANYCAST" \
        --clients "$SC_TCP_CLIENTS" --interval 0.2 --duration "$secs" --timeout 2 \
        --events "$SC_DIR/tcp.events" --summary "$SC_DIR/tcp.json"
    for _ in $(seq 150); do
        n=$(awk '$2 == "conn" && !($3 in c) { c[$3]; n++ } END { print n + 0 }' "$SC_DIR/tcp.events")
        [ "$n" -ge "$SC_TCP_CLIENTS" ] && return 0
        sleep 0.1
    done
    check "TCP clients connected" INFO "only $n of $SC_TCP_CLIENTS had an answer 15 s after the start"
}
tcp_wait() {
    local i
    for i in $(seq 600); do
        lab_alive tcpload || break
        sleep 0.1
    done
    lab_stop tcpload
}

# tcp_analyze AT_MS FROM_SITE: labtool's TCP run around the event at AT_MS (ms after the
# scenario start, taken just before the action that moves the route) that moves clients off
# FROM_SITE ("none": no site in particular); tcp_stat KEY prints one number of it.
#   whole run: clients ok failed resets reconnects reconnects_reused origin_changes, gaps
#     gap_med_ms gap_max_ms (interruptions: first failure -> next answer)
#   after AT, all clients: resets_after, failed_after; reset_first_ms, reset_last_ms (first and
#     last reset, ms after AT; -1: none); continued (served after AT on the connection they had
#     at AT: no reset, no reconnection after AT), reconnected (reconnected after AT),
#     reconnected_reused (of those, every reconnection after AT resumed TLS: Reused)
#   moved: clients whose last answer before AT came from FROM_SITE; of them moved_continued
#     (the TCP hand-off kept their connection), moved_reconnected_reused (did not continue,
#     reconnected, every time with Reused), moved_resumed (reconnected with Reused at another
#     site), moved_same_origin (every answer after AT from the origin they had),
#     moved_served_elsewhere (last answer from another site), moved_resets (their resets
#     after AT)
# The resets after AT are listed in $SC_DIR/tcp.resets, one "+MS client port=P reason" a line
# (P finds the flow 10.77.1.2:P in the sites' "tcp handoff:" log lines).
tcp_analyze() {
    python3 - "$SC_DIR/tcp.events" "$SC_DIR/tcp.json" "${1:-0}" "${2:-none}" "$SC_T0" "$SC_DIR/tcp.resets" <<'EOF' >"$SC_DIR/tcp.analysis"
import json, sys
evf, sumf, at, frm, t0, resf = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
at = t0 + at if at else 0
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
k = dict.fromkeys(("resets_after", "failed_after", "continued", "reconnected", "reconnected_reused",
                   "moved", "moved_continued", "moved_reconnected_reused", "moved_resumed",
                   "moved_same_origin", "moved_served_elsewhere", "moved_resets"), 0)
rs = []
for c, evs in sorted(per.items()):
    after = [e for e in evs if e[0] >= at]
    oks = [e for e in after if e[1] == "req" and e[2][0] == "ok"]
    conns = [e for e in after if e[1] == "conn"]
    cres = [e for e in after if e[1] == "reset"]
    rs += [(e[0] - at, c, e[2][1] if len(e[2]) > 1 else "port=?", e[2][0]) for e in cres]
    k["failed_after"] += sum(1 for e in after if e[1] == "req" and e[2][0] == "fail")
    cont = bool(oks) and not conns and not cres
    rec_reused = bool(conns) and all(e[2][1] == "reused=1" for e in conns)
    k["continued"] += cont
    k["reconnected"] += bool(conns)
    k["reconnected_reused"] += rec_reused
    before = [e for e in evs if e[0] < at and e[1] == "req" and e[2][0] == "ok"] if at else []
    if not before or before[-1][2][1] != frm: continue
    k["moved"] += 1
    origin = before[-1][2][2]
    k["moved_continued"] += cont
    k["moved_reconnected_reused"] += rec_reused
    k["moved_resumed"] += any(e[2][0] != frm and e[2][1] == "reused=1" for e in conns)
    k["moved_same_origin"] += bool(oks) and all(e[2][2] == origin for e in oks)
    k["moved_served_elsewhere"] += bool(oks) and oks[-1][2][1] != frm
    k["moved_resets"] += len(cres)
rs.sort()
k["resets_after"] = len(rs)
k["reset_first_ms"] = rs[0][0] if rs else -1
k["reset_last_ms"] = rs[-1][0] if rs else -1
with open(resf, "w") as f:
    f.writelines("+%d %d %s %s\n" % r for r in rs)
med = gaps[len(gaps) // 2] if gaps else 0
print("clients=%d ok=%d failed=%d resets=%d reconnects=%d reconnects_reused=%d origin_changes=%d "
      "gaps=%d gap_med_ms=%d gap_max_ms=%d "
      % (len(st), ok, failed, resets, recon, reused, changes, len(gaps), med, gaps[-1] if gaps else 0)
      + " ".join("%s=%d" % kv for kv in k.items()))
EOF
}
# tcp_resets_detail: the resets after AT, when (ms after AT) and whose (client:port@+ms, the
# first 6), for a check's detail.
tcp_resets_detail() {
    if [ "$(tcp_stat resets_after)" = 0 ]; then
        printf '0 resets'
        return
    fi
    local whose=""
    [ "$(tcp_stat moved)" = 0 ] || whose=" ($(tcp_stat moved_resets) on the moved clients' connections)"
    printf '%s resets%s at +%s..+%s ms: %s' "$(tcp_stat resets_after)" "$whose" \
        "$(tcp_stat reset_first_ms)" "$(tcp_stat reset_last_ms)" \
        "$(awk 'NR > 6 { printf ",..."; exit }
            { sub(/^port=/, "", $3); printf "%sc%s:%s@%s", (NR > 1 ? "," : ""), $2, $3, $1 }' "$SC_DIR/tcp.resets")"
}
tcp_stat() { tr ' ' '\n' <"$SC_DIR/tcp.analysis" | awk -F= -v k="$1" '$1 == k { print $2 }'; }

# moved_ok_if NAME: the clients tcp_analyze found at FROM_SITE either continued on their
# connection (TCP hand-off) or reconnected with TLS resumption (Reused); how many of each.
moved_ok_if() {
    ok_if "$1" "$(tcp_stat moved_continued) continued on the same connection (TCP hand-off), $(tcp_stat moved_reconnected_reused) reconnected with Reused, of $(tcp_stat moved)" \
        '[ "$(tcp_stat moved)" -ge 1 ] && [ $(($(tcp_stat moved_continued) + $(tcp_stat moved_reconnected_reused))) = "$(tcp_stat moved)" ]'
}
# tcp_no_resets_ok_if EVENT: the promise of a route change that leaves every site running: no
# TCP request failed and no connection was reset, over the whole run.
tcp_no_resets_ok_if() {
    ok_if "TCP failed requests = 0, resets = 0" "$(tcp_stat ok) ok, $(tcp_stat failed) failed (after 1 retry), $(tcp_stat resets) resets, reconnects $(tcp_stat reconnects) ($(tcp_stat reconnects_reused) Reused); after $1: $(tcp_resets_detail)" \
        '[ "$(tcp_stat failed)" = 0 ] && [ "$(tcp_stat resets)" = 0 ]'
}

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
# handoff_check MOVED|INFO: one row with the TCP hand-off counters summed over the sites (flows
# a receiving site found the owner of, segments the owners injected, segments given back to the
# receiving site's kernel, which answers them with a RST) and per site, with the reasons for
# giving back when the build labels them. MOVED: the scenario moved TCP flows, so PASS only when
# flows were moved and segments injected. When segments were given back, one more INFO row with
# the sites' log lines that say why (or, without reason labels and log lines, what can be silent).
handoff_check() {
    local n m i r why per="" tm=0 ti=0 tr=0 res=INFO labelled=0 logged
    for n in $(seq 1 "$LAB_NSITES"); do
        read -r m i r why < <(ip netns exec "${LAB_PREFIX}site$n" curl -s --max-time 2 \
            "http://127.0.0.1:$LAB_ADMIN/metrics" 2>/dev/null | awk '
            { name = $1; v = $NF; sub(/\{.*/, "", name) }
            name == "anyedge_tcp_handoff_flows_moved_total" { m += v }
            name == "anyedge_tcp_handoff_injected_total" { i += v }
            name == "anyedge_tcp_handoff_returned_total" {
                r += v
                if (v > 0 && match($1, /reason="[^"]*"/))
                    why = why (why == "" ? "" : ",") substr($1, RSTART + 8, RLENGTH - 9) ":" v
            }
            END { printf "%d %d %d %s\n", m, i, r, (why == "" ? "-" : why) }')
        tm=$((tm + m)) ti=$((ti + i)) tr=$((tr + r))
        per="$per${per:+, }site$n $m/$i/$r"
        [ "$why" = - ] || { per="$per ($why)"; labelled=1; }
    done
    if [ "$1" = MOVED ]; then
        res=FAIL
        [ "$tm" -ge 1 ] && [ "$ti" -ge 1 ] && res=PASS
    fi
    check "TCP hand-off (sum over sites)" "$res" \
        "$tm flows moved, $ti segments injected, $tr given back (RST); per site moved/injected/given back: $per"
    [ "$tr" = 0 ] && return
    logged=$(handoff_log_reasons)
    if [ -n "$logged" ]; then
        check "  given back: site logs" INFO "$logged"
    elif [ $labelled = 0 ]; then
        check "  given back: site logs" INFO "none logged: given back silently (no usable peer or keys yet, over the query budget, a RST, or a flow given back before)"
    fi
}
# handoff_log_reasons: the sites' "tcp handoff:" log lines about giving flows back, counted
# (flow addresses blanked).
handoff_log_reasons() {
    local n l out=""
    for n in $(seq 1 "$LAB_NSITES"); do
        l=$(sed -n 's/^.* tcp handoff: //p' "$LAB_RUN/anyedge-site$n.log" 2>/dev/null |
            grep -E 'RST|resetting|giving|given back' |
            sed -E 's/[0-9a-fA-F.:]+>[0-9a-fA-F.:]+/FLOW/g' | sort | uniq -c |
            awk '{ c = $1; $1 = ""; printf "%s%sx%s", (NR > 1 ? "; " : ""), c, $0 }')
        [ -n "$l" ] && out="$out${out:+ | }site$n: $l"
    done
    printf '%s' "$out"
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

# plot CSV PNG MARKS: three panels sharing the time axis: client requests per second (TCP ok /
# failed / resets / Reused reconnects, H3 completions), per site QUIC datagrams in, forwarded
# out and TCP segments injected by the hand-off, and the route state (site announced).
plot() {
    command -v gnuplot >/dev/null || { say "gnuplot not installed: no PNG"; return 0; }
    local csv=$1 png=$2 marks=$3 arrows="" ms label col ns=$LAB_NSITES
    while read -r ms label; do
        arrows="$arrows set arrow from $((ms / 1000)).$(((ms % 1000) / 100)), graph 0 to $((ms / 1000)).$(((ms % 1000) / 100)), graph 1 nohead dt 2 lc rgb '#555555';"
        arrows="$arrows set label '$label' at $((ms / 1000)).$(((ms % 1000) / 100)), graph 0.97 rotate by 90 right font ',7' tc rgb '#333333';"
    done <"$marks"
    # columns: 1 t, 2 ok, 3 failed, 4 resets, 5 resumed, 6 h3_ok, 7 h3_failed, then per site 8
    # (route, pkts_in, tcp_accepted, quic_opened, resets_sent, fwd_out, fwd_in, resumed_hs),
    # then per site 3 (ho_moved, ho_injected, ho_returned)
    local site_plots="" route_plots="" n base
    for n in $(seq 1 "$ns"); do
        base=$((8 + (n - 1) * 8))
        site_plots="$site_plots '$csv' using 1:$((base + 1)) with lines lw 1.5 title 'site$n QUIC pkts in',"
        site_plots="$site_plots '$csv' using 1:$((base + 5)) with lines dt 3 lw 1.2 title 'site$n fwd out',"
        site_plots="$site_plots '$csv' using 1:$((8 + ns * 8 + (n - 1) * 3 + 1)) with lines dt 4 lw 1.2 title 'site$n TCP injected',"
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
set ylabel 'packets/s'
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
    SHIFT_AT=$(($(now_ms) - SC_T0))
    lab_bird_withdraw 1
    ms=$(route_wait_ms "site2 site3")
    ok_if "route withdrawn (router)" "paths $(lab_bird_paths) after ${ms} ms" '[ "$ms" -ge 0 ]'
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
    moved_ok_if "  continued or resumed (Reused)"
    ok_if "  same upstream (affinity)" "$(tcp_stat moved_same_origin)/$(tcp_stat moved) kept their X-Origin" \
        '[ "$(tcp_stat moved_same_origin)" = "$(tcp_stat moved)" ]'
    tcp_no_resets_ok_if "the withdrawal"
    handoff_check MOVED
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
    CRASH_AT=$(($(now_ms) - SC_T0))
    kill -KILL "$p"
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
    # site1's connections died with its anyedge: their resets are expected. The other clients'
    # flows that the route change moved between site2 and site3 are handed off: no reset.
    ok_if "  other clients: 0 resets" "$(($(tcp_stat resets_after) - $(tcp_stat moved_resets))) resets of the $(($(tcp_stat clients) - $(tcp_stat moved))) clients not at site1; after the kill: $(tcp_resets_detail)" \
        '[ "$(tcp_stat resets_after)" = "$(tcp_stat moved_resets)" ]'
    handoff_check INFO
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
    DRAIN_AT=$(($(now_ms) - SC_T0))
    out=$(ip netns exec "${LAB_PREFIX}site2" "$AE_BIN/anyedgectl" -a "127.0.0.1:$LAB_ADMIN" drain 2>&1)
    rc=$?
    ok_if "anyedgectl drain" "exit $rc: $(head -c 160 <<<"$out" | tr '\n' ' ')" '[ $rc = 0 ]'
    ms=$(route_wait_ms "site1 site3")
    ok_if "route withdrawn by anyedge" "router paths '$(lab_bird_paths)' (${ms} ms)" '[ "$ms" -ge 0 ]'
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
    # site2 keeps serving its TCP connections while it drains and once drained (it does not
    # close them); the other sites hand their segments to it, so none is reset.
    tcp_analyze "$DRAIN_AT" site2
    check "TCP clients at site2 at the drain" "$([ "$(tcp_stat moved)" -ge 1 ] && echo PASS || echo FAIL)" \
        "$(tcp_stat moved) of $(tcp_stat clients)"
    moved_ok_if "  continued or resumed (Reused)"
    tcp_no_resets_ok_if "the drain"
    handoff_check MOVED
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
    MOVE_AT=$(($(now_ms) - SC_T0))
    lab_bird_withdraw 1
    ms=$(route_wait_ms "site2 site3")
    ok_if "route withdrawn" "${ms} ms" '[ "$ms" -ge 0 ]'
    sleep 6
    mark "announce site1"
    lab_bird_announce 1
    tcp_wait
    h3_load_wait
    tcp_analyze "$MOVE_AT" site1
    # the hand-off works from the cached peer table and key ring while Redis is away
    check "TCP clients at site1 at the withdrawal" "$([ "$(tcp_stat moved)" -ge 1 ] && echo PASS || echo FAIL)" \
        "$(tcp_stat moved) of $(tcp_stat clients)"
    moved_ok_if "  continued or resumed without Redis"
    ok_if "  same upstream (affinity)" "$(tcp_stat moved_same_origin)/$(tcp_stat moved) kept their X-Origin" \
        '[ "$(tcp_stat moved_same_origin)" = "$(tcp_stat moved)" ]'
    tcp_no_resets_ok_if "the withdrawal"
    handoff_check MOVED
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
    SCALE_AT=$(($(now_ms) - SC_T0))
    site_start 3
    site_wait 3 || check "site3 starts" FAIL "anyedge does not listen"
    [ "$(routectl)" = lab ] && lab_bird_announce 3
    ms=$(route_wait_ms "site1 site2 site3")
    ok_if "site3 announced (3-way ECMP)" "${ms} ms after it listens" '[ "$ms" -ge 0 ]'
    sleep 1
    site_delta_start forward_out_total
    tcp_wait
    h3_load_wait
    f3=$(site_delta forward_out_total site3)
    tcp_analyze "$SCALE_AT" none
    # re-hashed flows (to site3, and between site1 and site2) are handed to their sites
    ok_if "TCP clients continued or resumed (Reused)" "$(tcp_stat continued) of $(tcp_stat clients) continued on their connection through the re-hash, $(tcp_stat reconnected_reused) reconnected with Reused, $(($(tcp_stat reconnected) - $(tcp_stat reconnected_reused))) reconnected without" \
        '[ $(($(tcp_stat continued) + $(tcp_stat reconnected_reused))) = "$(tcp_stat clients)" ]'
    tcp_no_resets_ok_if "site3's start"
    handoff_check MOVED
    ok_if "H3 flows re-hashed continue (0 errors)" "$H3L; site3 forwarded $(smetric site3 anyedge_forward_out_total) datagrams to the owners, sent $(smetric site3 anyedge_forward_resets_owner_dead_total) stateless resets for owner dead/unknown" \
        '[ "$(h3l errors)" = 0 ] && [ "$(h3l requests)" -ge 1 ]'
    sc_end
}

