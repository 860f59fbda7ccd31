# BIRD 2 for the namespace lab (tests/lab/netns.sh): eBGP from each site to the router, ECMP
# into the router's kernel table. Sourced after netns.sh (by tests/lab/lab); needs a built lab
# (lab_up) and a per-lab run directory $LAB_RUN (configs, control sockets, logs, pid files).
#
#   router  AS 65000, one eBGP session per site (neighbor siteN AS 6500N, on the router<->siteN
#           link), imports only the anycast /32, `merge paths on` in its kernel protocol: equal
#           BGP paths from several sites become one multipath route (ECMP). The router hashes
#           flows on the 5-tuple (fib_multipath_hash_policy=1) so one client's connections spread
#           over the sites. The static /32 netns.sh installs is removed (BIRD owns the route).
#   siteN   AS 6500N (session "uplink"), `protocol static anycast` (192.0.2.10/32 via "lo"), DISABLED at start,
#           exported to the router. Announce = `birdc -s $LAB_RUN/bird-siteN.ctl enable anycast`,
#           withdraw = `... disable anycast` (lab_bird_cmd N announce|withdraw prints them).
# Timers: keepalive 1 s, hold 3 s, connect retry 1 s, so sessions come up in ~1-2 s.
#
# Functions:
#   lab_bird_up                 writes configs, starts bird in router and every site (pids in
#                               $LAB_RUN/bird-*.pid), waits for every BGP session to be Established
#   lab_bird_ctl NODE           control socket path of NODE's bird (router, site1, ...)
#   lab_bird_cmd N ACTION       the shell command that announces/withdraws siteN's route
#   lab_bird_announce N / lab_bird_withdraw N    run it now
#   lab_bird_enabled N          succeeds when siteN's `anycast` protocol is enabled (up)
#   lab_bird_paths              router: the sites the anycast /32 points at now ("site1 site3",
#                               or "none"), from the kernel table (what packets follow)
#   lab_bird_wait_paths WANT [SECS]   waits until lab_bird_paths prints WANT
#   lab_bird_down               stops the bird processes (by pid file); lab_down covers it too

LAB_ROUTER_AS=65000

lab_bird_ctl() { printf '%s/bird-%s.ctl' "$LAB_RUN" "$1"; }

lab_bird_cmd() {
    local n=${1#site} verb
    case "$2" in
    announce) verb=enable ;;
    withdraw) verb=disable ;;
    *) return 1 ;;
    esac
    printf 'birdc -s %s %s anycast' "$(lab_bird_ctl "site$n")" "$verb"
}

_lab_birdc() {
    local node=$1
    shift
    birdc -s "$(lab_bird_ctl "$node")" "$@"
}

lab_bird_announce() { _lab_birdc "site${1#site}" enable anycast >/dev/null; }
lab_bird_withdraw() { _lab_birdc "site${1#site}" disable anycast >/dev/null; }
lab_bird_enabled() {
    _lab_birdc "site${1#site}" show protocols anycast 2>/dev/null | awk '$1 == "anycast" && $4 == "up" { f = 1 } END { exit !f }'
}

_lab_bird_router_conf() {
    local n
    cat <<EOF
# router: AS $LAB_ROUTER_AS, eBGP to every site, ECMP into the kernel (written by tests/lab/bird.sh)
router id $LAB_ROUTER_CLIENT_ADDR;
log "$LAB_RUN/bird-router.log" all;
protocol device { scan time 1; }
protocol kernel {
    ipv4 { import none; export where net = $LAB_ANYCAST/32; };
    merge paths on limit 16;   # equal BGP paths from several sites -> one multipath route
    learn off;
    scan time 5;
}
template bgp site {
    hold time 3; keepalive time 1; connect retry time 1; connect delay time 1;
    ipv4 { import where net = $LAB_ANYCAST/32; export none; };
}
EOF
    for n in $(seq 1 "$LAB_NSITES"); do
        printf 'protocol bgp site%d from site { local 10.77.1%d.1 as %d; neighbor 10.77.1%d.2 as %d; }\n' \
            "$n" "$n" "$LAB_ROUTER_AS" "$n" "$((65000 + n))"
    done
}

_lab_bird_site_conf() {
    local n=$1
    cat <<EOF
# site$n: AS $((65000 + n)); the anycast /32 is announced while protocol "anycast" is enabled
router id 10.77.1$n.2;
log "$LAB_RUN/bird-site$n.log" all;
protocol device { scan time 1; }
protocol static anycast {
    disabled yes;              # announce: birdc enable anycast; withdraw: birdc disable anycast
    ipv4;
    route $LAB_ANYCAST/32 via "lo";
}
protocol bgp uplink {
    local 10.77.1$n.2 as $((65000 + n));
    neighbor 10.77.1$n.1 as $LAB_ROUTER_AS;
    hold time 3; keepalive time 1; connect retry time 1; connect delay time 1;
    ipv4 { import none; export where proto = "anycast"; };
}
EOF
}

# _lab_bird_start NODE: bird in NODE's namespace, foreground (-f), in its own session; pid file.
_lab_bird_start() {
    local node=$1 conf=$LAB_RUN/bird-$1.conf
    bird -p -c "$conf" || return 1
    setsid ip netns exec "$LAB_PREFIX$node" bird -f -c "$conf" -s "$(lab_bird_ctl "$node")" \
        </dev/null >"$LAB_RUN/bird-$node.out" 2>&1 &
    echo $! >"$LAB_RUN/bird-$node.pid"
}

lab_bird_up() {
    local n i
    command -v bird >/dev/null && command -v birdc >/dev/null || {
        echo "lab: bird/birdc not installed (Debian package bird2)" >&2
        return 1
    }
    mkdir -p "$LAB_RUN"
    ip -n "$LAB_PREFIX"router route del "$LAB_ANYCAST/32" 2>/dev/null || true
    _lab_sysctl router net.ipv4.fib_multipath_hash_policy=1 || return 1
    _lab_bird_router_conf >"$LAB_RUN/bird-router.conf"
    _lab_bird_start router || return 1
    for n in $(seq 1 "$LAB_NSITES"); do
        _lab_bird_site_conf "$n" >"$LAB_RUN/bird-site$n.conf"
        _lab_bird_start "site$n" || return 1
    done
    # Every session Established (bounded: 15 s).
    for i in $(seq 150); do
        if [ "$(_lab_birdc router show protocols 2>/dev/null | awk '$2 == "BGP" && $6 == "Established"' | wc -l)" = "$LAB_NSITES" ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "lab: BGP sessions not all Established after 15 s:" >&2
    _lab_birdc router show protocols >&2 || true
    return 1
}

lab_bird_down() {
    local f p
    for f in "$LAB_RUN"/bird-*.pid; do
        [ -f "$f" ] || continue
        p=$(cat "$f")
        kill -TERM "$p" 2>/dev/null || true
        rm -f "$f"
    done
}

lab_bird_paths() {
    local out n vias=()
    out=$(ip -n "$LAB_PREFIX"router route show "$LAB_ANYCAST/32" 2>/dev/null)
    for n in $(seq 1 "$LAB_NSITES"); do
        if grep -Eq "via $(lab_site_addr "$n")( |\$)" <<<"$out"; then vias+=("site$n"); fi
    done
    if [ ${#vias[@]} = 0 ]; then printf 'none'; else printf '%s' "${vias[*]}"; fi
}

lab_bird_wait_paths() {
    local want=$1 secs=${2:-10} i
    for i in $(seq $((secs * 10))); do
        [ "$(lab_bird_paths)" = "$want" ] && return 0
        sleep 0.1
    done
    return 1
}
