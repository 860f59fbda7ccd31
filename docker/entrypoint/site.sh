#!/bin/bash
# Entry point of a lab site container (docker/docker-compose.yml, site1..3). Runs as root only
# for what needs it, then runs anyedge as the unprivileged user `anyedge`:
#   1. the anycast address on lo and the route back to the client network via the router
#      (Docker's default route leads to the host, which does not forward between lab networks);
#   2. BIRD (the site's BGP speaker, same container and network namespace as anyedge), as user
#      `bird` with its control socket /run/bird/bird.ctl mode 0660 group `bird`; anyedge's user
#      is in that group, so its anycast.announce/withdraw commands (`birdc ... enable|disable
#      anycast`) work without root;
#   3. anyedge -c /etc/anyedge/anyedge.yaml, as `anyedge` (port 443 is bindable because the
#      service sets net.ipv4.ip_unprivileged_port_start=0 in the container's namespace).
# Environment: AE_ROUTER (required: the router's address on this site's link), AE_ANYCAST
# (default 192.0.2.10), AE_CLIENT_NET (default 10.77.1.0/24).
set -euo pipefail

ANYCAST=${AE_ANYCAST:-192.0.2.10}
ROUTER=${AE_ROUTER:?AE_ROUTER must be the router address on this site link}
CLIENT_NET=${AE_CLIENT_NET:-10.77.1.0/24}
CONF=/etc/anyedge/anyedge.yaml
CTL=/run/bird/bird.ctl

log() { printf 'site.sh: %s\n' "$*" >&2; }

ip addr replace "$ANYCAST/32" dev lo
ip route replace "$CLIENT_NET" via "$ROUTER"

install -d -o bird -g bird -m 0770 /run/bird
rm -f "$CTL" /run/bird/bird.pid
bird -c /etc/bird/bird.conf -s "$CTL" -P /run/bird/bird.pid -u bird -g bird
for _ in $(seq 100); do
    [ -S "$CTL" ] && break
    sleep 0.1
done
[ -S "$CTL" ] || {
    log "BIRD did not create $CTL"
    exit 1
}
log "BIRD up; static protocol 'anycast' disabled until anyedge announces"

run_conf=$CONF
doc=$(anyedge --config-doc)
if [[ $doc != *anycast.announce* ]]; then
    # Placeholder until the anycast keys (issue 6 item 1) are in the build: drop the marked
    # block and announce as soon as the admin endpoint answers (no health-driven withdraw).
    run_conf=/etc/anyedge/anyedge.run.yaml
    sed '/^# >>> anycast: BEGIN/,/^# <<< anycast: END/d' "$CONF" >"$run_conf"
    log "this anyedge has no anycast.* keys: running $run_conf; announcing once admin is up"
    # Double fork: the helper is reparented to the container's init (compose `init: true`),
    # which reaps it, not to anyedge.
    ( (
        for _ in $(seq 300); do
            if anyedgectl -a 127.0.0.1:9901 -t 1 status >/dev/null 2>&1; then
                birdc -s "$CTL" enable anycast >&2
                exit 0
            fi
            sleep 0.2
        done
        log "anyedge admin never answered; route not announced"
    ) & )
fi

exec setpriv --reuid=anyedge --regid=anyedge --init-groups --inh-caps=-all -- \
    anyedge -c "$run_conf"
