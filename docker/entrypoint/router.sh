#!/bin/bash
# Entry point of the lab router (docker/docker-compose.yml, service `router`): BIRD 2 in the
# foreground, as root (it programs the kernel's routes: cap NET_ADMIN), logging to stderr.
# Forwarding, rp_filter and the ECMP hash policy are set by the service's sysctls.
set -euo pipefail
install -d -m 0755 /run/bird
rm -f /run/bird/bird.ctl
exec bird -f -c /etc/bird/bird.conf -s /run/bird/bird.ctl
