#!/usr/bin/env bash
# Network-namespace lab for anycast tests: one client, one router, N sites (default 2) and a
# core, connected by veth pairs. Sourced by tests (functions lab_*), or run directly:
#
#   tests/lab/netns.sh up              build a lab; prints its prefix (export AE_LAB_PREFIX=...)
#   tests/lab/netns.sh down            remove it (the lab named by AE_LAB_PREFIX, or the only one)
#   tests/lab/netns.sh shift SITE      point the router's anycast /32 at SITE (site1, 2, ...)
#   tests/lab/netns.sh status          addresses, current anycast next hop, processes inside
#   tests/lab/netns.sh list            labs on this machine (state files and namespaces)
#
# Needs root and iproute2 (`ip netns`). Every namespace name starts with a per-lab prefix
# (default "ae<pid>-", or $AE_LAB_PREFIX), so parallel labs and leftovers never clash. The veth
# pairs are created directly inside the namespaces (never in the root namespace), so deleting
# the namespaces removes them; nothing outside the lab's namespaces is touched except the state
# file $LAB_STATE_DIR/<prefix>.env (default /run/ae-lab) that lets `down` find the lab later.
#
# Topology (N = site number 1..9; all links /30; .1 is the "upstream" end):
#
#   client ── router ──┬── site1 ──┐
#                      ├── site2 ──┼── core   (Redis, origin on 10.77.0.1 = core's loopback)
#                      └── siteN ──┘
#
#   link              subnet           addresses
#   client<->router   10.77.1.0/30     router 10.77.1.1      client 10.77.1.2
#   router<->siteN    10.77.1N.0/30    router 10.77.1N.1     siteN  10.77.1N.2
#   siteN<->core      10.77.2N.0/30    core   10.77.2N.1     siteN  10.77.2N.2  (= forward addr)
#   core services     10.77.0.1/32 on core's lo (Redis :6379, origin :8080 by convention)
#   anycast           192.0.2.10/32 on lo of every site
#
# Routes: client default via router. router: ip_forward=1, 192.0.2.10/32 via site1 (10.77.11.2);
# `shift` replaces that next hop. siteN: default via router (10.77.1N.1; covers the client
# subnet, so replies from the anycast address go back through the router), 10.77.0.1/32 via core
# (10.77.2N.1), and every other site's core link 10.77.2M.0/30 via core: site forward addresses
# (10.77.2N.2) reach each other through core (ip_forward=1 there). rp_filter is 0 everywhere
# (replies from a site the router's /32 does not point at are asymmetric). IPv4 only.
#
# Functions for tests (after `. tests/lab/netns.sh`):
#   lab_init [PREFIX] [NSITES]  set names/addresses (LAB_PREFIX, LAB_NSITES, LAB_ANYCAST, ...)
#   lab_up                      lab_init (if needed) + build; on failure removes what it built
#   lab_down                    idempotent teardown: ends processes still inside the lab's
#                               namespaces (by PID), deletes the namespaces, the state file;
#                               a no-op unless lab_up claimed the prefix (safe in any trap)
#   lab_shift SITE              route the anycast /32 via SITE (site1 | 1 | site2 | 2 ...)
#   lab_route                   prints the site the anycast /32 points at now (e.g. site1)
#   lab_status                  human-readable summary
#   lab_ns NODE                 full namespace name of NODE (client, router, core, site1 ...)
#   lab_exec NODE CMD...        runs CMD in NODE's namespace (ip netns exec execs: same PID)
#   lab_site_addr N             siteN's router-facing address   (10.77.1N.2)
#   lab_site_fwd N              siteN's forward (core-facing) address (10.77.2N.2)
#   lab_wait_tcp NODE ADDR PORT [SECS]   wait until ADDR:PORT accepts TCP from NODE
#   lab_start_core START ORIGIN          Redis and ae-origin in core (see below)
#   lab_site_conf N WORKERS CERT KEY PROTOS [EXTRA]   anyedge config of siteN
#   lab_smetric SITE NAME       a sample of SITE's anyedge /metrics
#   lab_peers_ready             all sites see each other live and share the ring generation
# Variables: LAB_ANYCAST LAB_CLIENT_ADDR LAB_CORE_ADDR LAB_NODES LAB_SITES.

LAB_STATE_DIR=${LAB_STATE_DIR:-/run/ae-lab}
LAB_ANYCAST=192.0.2.10
LAB_CLIENT_ADDR=10.77.1.2
LAB_ROUTER_CLIENT_ADDR=10.77.1.1
LAB_CORE_ADDR=10.77.0.1

lab_init() {
    LAB_PREFIX=${1:-${AE_LAB_PREFIX:-ae$$-}}
    LAB_NSITES=${2:-${AE_LAB_SITES:-2}}
    if ! [[ $LAB_NSITES =~ ^[1-9]$ ]]; then
        echo "lab: 1..9 sites, not '$LAB_NSITES'" >&2
        return 1
    fi
    if ! [[ $LAB_PREFIX =~ ^[A-Za-z0-9_.-]{1,24}$ ]]; then
        echo "lab: bad prefix '$LAB_PREFIX'" >&2
        return 1
    fi
    LAB_SITES=()
    local n
    for n in $(seq 1 "$LAB_NSITES"); do LAB_SITES+=("site$n"); done
    LAB_NODES=(client router core "${LAB_SITES[@]}")
}

lab_ns() { printf '%s%s' "$LAB_PREFIX" "$1"; }
lab_exec() {
    local node=$1
    shift
    ip netns exec "$LAB_PREFIX$node" "$@"
}
lab_site_addr() { printf '10.77.1%d.2' "${1#site}"; }
lab_site_fwd() { printf '10.77.2%d.2' "${1#site}"; }

# _lab_link NODE_A IF_A ADDR_A NODE_B IF_B ADDR_B (addresses with /len)
_lab_link() {
    ip -n "$LAB_PREFIX$1" link add "$2" type veth peer name "$5" netns "$LAB_PREFIX$4" &&
        ip -n "$LAB_PREFIX$1" addr add "$3" dev "$2" &&
        ip -n "$LAB_PREFIX$4" addr add "$6" dev "$5" &&
        ip -n "$LAB_PREFIX$1" link set "$2" up &&
        ip -n "$LAB_PREFIX$4" link set "$5" up
}

_lab_sysctl() {
    local node=$1
    shift
    ip netns exec "$LAB_PREFIX$node" sysctl -qw "$@" >/dev/null
}

_lab_build() {
    local node n m
    mkdir -p "$LAB_STATE_DIR"
    printf 'LAB_PREFIX=%q\nLAB_NSITES=%q\nLAB_CREATED=%q\n' "$LAB_PREFIX" "$LAB_NSITES" \
        "$(date +%s)" >"$LAB_STATE_DIR/${LAB_PREFIX}.env"
    for node in "${LAB_NODES[@]}"; do
        ip netns add "$LAB_PREFIX$node" || return 1
        # Before any interface exists, so every interface inherits rp_filter=0.
        _lab_sysctl "$node" net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 || return 1
        ip -n "$LAB_PREFIX$node" link set lo up || return 1
    done
    _lab_link client to-router "$LAB_CLIENT_ADDR/30" router to-client "$LAB_ROUTER_CLIENT_ADDR/30" ||
        return 1
    ip -n "$LAB_PREFIX"core addr add "$LAB_CORE_ADDR/32" dev lo || return 1
    for n in $(seq 1 "$LAB_NSITES"); do
        _lab_link router "to-site$n" "10.77.1$n.1/30" "site$n" to-router "10.77.1$n.2/30" || return 1
        _lab_link core "to-site$n" "10.77.2$n.1/30" "site$n" to-core "10.77.2$n.2/30" || return 1
        ip -n "$LAB_PREFIX"site$n addr add "$LAB_ANYCAST/32" dev lo || return 1
        ip -n "$LAB_PREFIX"site$n route add default via "10.77.1$n.1" || return 1
        ip -n "$LAB_PREFIX"site$n route add "$LAB_CORE_ADDR/32" via "10.77.2$n.1" || return 1
        for m in $(seq 1 "$LAB_NSITES"); do
            [ "$m" = "$n" ] && continue
            ip -n "$LAB_PREFIX"site$n route add "10.77.2$m.0/30" via "10.77.2$n.1" || return 1
        done
    done
    ip -n "$LAB_PREFIX"client route add default via "$LAB_ROUTER_CLIENT_ADDR" || return 1
    _lab_sysctl router net.ipv4.ip_forward=1 || return 1
    _lab_sysctl core net.ipv4.ip_forward=1 || return 1
    ip -n "$LAB_PREFIX"router route add "$LAB_ANYCAST/32" via "$(lab_site_addr 1)" || return 1
    # Belt and braces: rp_filter off on every interface that exists now.
    for node in "${LAB_NODES[@]}"; do
        _lab_sysctl "$node" net.ipv4.conf.all.rp_filter=0 || return 1
        for n in $(ip -n "$LAB_PREFIX$node" -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
            _lab_sysctl "$node" "net.ipv4.conf.$n.rp_filter=0" || return 1
        done
    done
}

# lab_up: builds the lab (lab_init first if the caller did not). Returns non-zero, with the
# partial lab removed, on any failure.
lab_up() {
    [ -n "${LAB_PREFIX:-}" ] || lab_init || return 1
    if [ "$(id -u)" != 0 ]; then
        echo "lab: needs root (ip netns)" >&2
        return 1
    fi
    if ! ip netns list >/dev/null 2>&1; then
        echo "lab: 'ip netns' is unavailable" >&2
        return 1
    fi
    local clash
    clash=$(ip netns list | awk -v p="$LAB_PREFIX" 'index($1, p) == 1 { printf "%s ", $1 }')
    if [ -n "$clash" ]; then
        # Not ours: leave them alone (lab_down stays a no-op for this prefix).
        echo "lab: namespaces with prefix $LAB_PREFIX exist already: $clash" >&2
        return 1
    fi
    LAB_OWNED=1
    if ! _lab_build; then
        echo "lab: building the lab $LAB_PREFIX failed; removing it" >&2
        lab_down
        return 1
    fi
}

# lab_down: removes this lab (LAB_PREFIX) and only it. Safe to call any number of times, with a
# partially built lab, or before lab_up (it acts only once lab_up has claimed the prefix, i.e.
# found no namespace with it, or when LAB_OWNED=1 is set, as `netns.sh down` does). Processes still running inside the lab's namespaces
# (which only this lab's users can have started) get SIGTERM, then SIGKILL after 3 s, by PID;
# otherwise a deleted namespace would live on as long as they do.
lab_down() {
    [ -n "${LAB_PREFIX:-}" ] && [ "${LAB_OWNED:-0}" = 1 ] || return 0
    local nss=() ns pids=() p alive
    # This lab's namespaces: PREFIX + a node name (also sites beyond LAB_NSITES, in case the lab
    # was built with more sites than this caller knows of).
    for ns in $(ip netns list 2>/dev/null | awk -v p="$LAB_PREFIX" \
        'index($1, p) == 1 && substr($1, length(p) + 1) ~ /^(client|router|core|site[0-9])$/ { print $1 }'); do
        nss+=("$ns")
    done
    for ns in "${nss[@]}"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do pids+=("$p"); done
    done
    if [ ${#pids[@]} -gt 0 ]; then
        for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        for _ in $(seq 30); do
            alive=0
            for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
            [ $alive = 0 ] && break
            sleep 0.1
        done
        for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    fi
    for ns in "${nss[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -f "$LAB_STATE_DIR/${LAB_PREFIX}.env" 2>/dev/null || true
    return 0
}

# lab_shift SITE: the router's anycast /32 now goes to SITE ("site2" or "2").
lab_shift() {
    local n=${1#site}
    if ! [[ $n =~ ^[1-9]$ ]] || [ "$n" -gt "$LAB_NSITES" ]; then
        echo "lab: no site '$1' (sites: ${LAB_SITES[*]})" >&2
        return 1
    fi
    ip -n "$LAB_PREFIX"router route replace "$LAB_ANYCAST/32" via "$(lab_site_addr "$n")"
}

# lab_route: prints the site the router's anycast /32 points at (or "none").
lab_route() {
    local via n
    via=$(ip -n "$LAB_PREFIX"router route show "$LAB_ANYCAST/32" 2>/dev/null |
        awk '{ for (i = 1; i < NF; i++) if ($i == "via") print $(i + 1) }')
    for n in $(seq 1 "$LAB_NSITES"); do
        if [ "$via" = "$(lab_site_addr "$n")" ]; then
            printf 'site%d' "$n"
            return 0
        fi
    done
    printf 'none'
}

# lab_wait_tcp NODE ADDR PORT [SECS]: waits until ADDR:PORT accepts a TCP connection made from
# NODE's namespace.
lab_wait_tcp() {
    local node=$1 addr=$2 port=$3 secs=${4:-10}
    for _ in $(seq $((secs * 20))); do
        if ip netns exec "$LAB_PREFIX$node" bash -c "exec 3<>/dev/tcp/$addr/$port" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

lab_status() {
    local node n existing pids
    existing=$(ip netns list 2>/dev/null | awk '{print $1}')
    printf 'lab %s (%d sites)\n' "$LAB_PREFIX" "$LAB_NSITES"
    printf '  %-8s %-22s %s\n' node namespace 'addresses / processes'
    for node in "${LAB_NODES[@]}"; do
        if ! grep -qxF "$LAB_PREFIX$node" <<<"$existing"; then
            printf '  %-8s %-22s %s\n' "$node" "$LAB_PREFIX$node" MISSING
            continue
        fi
        printf '  %-8s %-22s %s\n' "$node" "$LAB_PREFIX$node" "$(ip -n "$LAB_PREFIX$node" -o -4 addr show |
            awk '$4 != "127.0.0.1/8" { printf "%s %s  ", $2, $4 }')"
        pids=$(ip netns pids "$LAB_PREFIX$node" 2>/dev/null | tr '\n' ' ')
        [ -n "$pids" ] && printf '  %-8s %-22s pids: %s\n' "" "" "$pids"
    done
    printf '  anycast %s -> %s (router: %s)\n' "$LAB_ANYCAST" "$(lab_route)" \
        "$(ip -n "$LAB_PREFIX"router route show "$LAB_ANYCAST/32" 2>/dev/null)"
    printf '  core services on %s (Redis :6379, origin :8080 by convention)\n' "$LAB_CORE_ADDR"
    for n in $(seq 1 "$LAB_NSITES"); do
        printf '  site%d: router-facing %s, forward %s\n' "$n" "$(lab_site_addr "$n")" "$(lab_site_fwd "$n")"
    done
}

# ---- anyedge in the lab (conventions shared by the lab tests and benchmarks) ----
# Redis on $LAB_CORE_ADDR:6379 and ae-origin on $LAB_CORE_ADDR:8080 in core; each site's anyedge
# has its admin endpoint on 127.0.0.1:9901 inside the site's namespace.

# lab_start_core START ORIGIN: starts Redis (no persistence) and the ae-origin binary ORIGIN (id
# "origin") in core through the caller's launcher `START NAME CMD...` (which backgrounds CMD and
# records its PID), then waits until both listen; returns 1 (message on stderr) if one does not.
lab_start_core() {
    local start=$1 origin_bin=$2
    "$start" redis ip netns exec "$LAB_PREFIX"core redis-server --port 6379 --bind "$LAB_CORE_ADDR" \
        --protected-mode no --save '' --appendonly no
    "$start" origin ip netns exec "$LAB_PREFIX"core "$origin_bin" -l "$LAB_CORE_ADDR:8080" -i origin -q
    if ! lab_wait_tcp core "$LAB_CORE_ADDR" 6379; then
        echo "lab: redis does not listen on $LAB_CORE_ADDR:6379" >&2
        return 1
    fi
    if ! lab_wait_tcp core "$LAB_CORE_ADDR" 8080; then
        echo "lab: origin does not listen on $LAB_CORE_ADDR:8080" >&2
        return 1
    fi
}

# lab_site_conf N WORKERS CERT KEY PROTOS [EXTRA]: prints the anyedge configuration of siteN:
# site id N (name siteN, site.forward on $(lab_site_fwd N):4434), WORKERS workers, access log
# off, certificate CERT and key KEY, one listener on the anycast address port 443 per protocol
# of PROTOS ("tcp", "quic": named tcp and h3) to the pool of the origin in core, admin on
# 127.0.0.1:9901, shared state in core's Redis (sync_interval and heartbeat 1s), then the YAML
# lines EXTRA at top level.
lab_site_conf() {
    local n=$1 workers=$2 cert=$3 key=$4 protos=$5 extra=${6:-} p
    printf 'site: { id: %s, name: site%s, forward: "%s:4434" }\n' "$n" "$n" "$(lab_site_fwd "$n")"
    printf 'workers: %s\nlog: { access: off }\ntls: { cert: %s, key: %s }\nlisteners:\n' \
        "$workers" "$cert" "$key"
    for p in $protos; do
        case "$p" in
        tcp) printf '  - { name: tcp, protocol: tcp, address: "%s:443", upstream: pool }\n' "$LAB_ANYCAST" ;;
        quic) printf '  - { name: h3, protocol: quic, address: "%s:443", upstream: pool }\n' "$LAB_ANYCAST" ;;
        *) echo "lab: unknown listener protocol '$p'" >&2; return 1 ;;
        esac
    done
    cat <<EOF
upstreams:
  pool:
    servers: [ "$LAB_CORE_ADDR:8080" ]
admin: { address: "127.0.0.1:9901" }
state: { redis: "redis://$LAB_CORE_ADDR:6379/0", sync_interval: 1s, heartbeat: 1s }
EOF
    [ -z "$extra" ] || printf '%s\n' "$extra"
}

# lab_smetric SITE NAME: a sample of SITE's anyedge /metrics (0 when absent).
lab_smetric() {
    lab_exec "$1" curl -s --max-time 5 http://127.0.0.1:9901/metrics |
        awk -v k="$2" '$1 == k { v = $2 } END { printf "%d", (v == "" ? 0 : v) }'
}

# lab_peers_ready: every site's registry lists all sites live, and all sites have the same ring
# generation.
lab_peers_ready() {
    local n out g g1=""
    for n in $(seq 1 "$LAB_NSITES"); do
        out=$(lab_exec "site$n" curl -s --max-time 3 http://127.0.0.1:9901/sites) || return 1
        [ "$(grep -o '"live":true' <<<"$out" | wc -l)" -ge "$LAB_NSITES" ] || return 1
    done
    for n in $(seq 1 "$LAB_NSITES"); do
        g=$(lab_smetric "site$n" anyedge_ring_generation)
        [ -n "$g1" ] || g1=$g
        [ "$g" = "$g1" ] || return 1
    done
}

# ---- command line ----

_lab_pick() {
    LAB_OWNED=1
    # The lab to act on: $AE_LAB_PREFIX, else the only state file in $LAB_STATE_DIR.
    if [ -n "${AE_LAB_PREFIX:-}" ]; then
        if [ -f "$LAB_STATE_DIR/${AE_LAB_PREFIX}.env" ]; then
            # shellcheck disable=SC1090
            . "$LAB_STATE_DIR/${AE_LAB_PREFIX}.env"
            lab_init "$LAB_PREFIX" "$LAB_NSITES"
        else
            lab_init "$AE_LAB_PREFIX"
        fi
        return
    fi
    local files=("$LAB_STATE_DIR"/*.env)
    if [ ! -e "${files[0]}" ]; then
        echo "lab: no lab found in $LAB_STATE_DIR (set AE_LAB_PREFIX)" >&2
        return 3
    fi
    if [ ${#files[@]} -gt 1 ]; then
        echo "lab: several labs; set AE_LAB_PREFIX to one of:" >&2
        for f in "${files[@]}"; do basename "$f" .env >&2; done
        return 1
    fi
    # shellcheck disable=SC1090
    . "${files[0]}"
    lab_init "$LAB_PREFIX" "$LAB_NSITES"
}

_lab_main() {
    set -euo pipefail
    local cmd=${1:-}
    case "$cmd" in
    up)
        lab_init "${AE_LAB_PREFIX:-ae$$-}"
        lab_up
        lab_status
        echo "export AE_LAB_PREFIX=$LAB_PREFIX"
        ;;
    down)
        local rc=0
        _lab_pick || rc=$?
        if [ $rc = 3 ]; then
            echo "lab: nothing to remove"
            return 0
        fi
        [ $rc = 0 ] || return $rc
        lab_down
        echo "lab $LAB_PREFIX removed"
        ;;
    shift)
        [ $# -eq 2 ] || { echo "usage: $0 shift SITE" >&2; exit 2; }
        _lab_pick
        lab_shift "$2"
        echo "anycast $LAB_ANYCAST -> $(lab_route)"
        ;;
    status)
        _lab_pick
        lab_status
        ;;
    list)
        echo "state files in $LAB_STATE_DIR:"
        ls "$LAB_STATE_DIR" 2>/dev/null | sed 's/\.env$//; s/^/  /'
        echo "namespaces that look like lab namespaces:"
        ip netns list | awk '$1 ~ /^ae[0-9A-Za-z_.]*-(client|router|core|site[0-9])$/ { print "  " $1 }'
        ;;
    *)
        echo "usage: $0 up|down|shift SITE|status|list   (lab chosen by AE_LAB_PREFIX; AE_LAB_SITES=N for up)" >&2
        exit 2
        ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    _lab_main "$@"
fi
