#!/bin/bash
# Entry point of the lab client (docker/docker-compose.yml, service `client`): route the anycast
# address via the router (Docker's default route leads to the host), then run the command
# (default: sleep, so scenarios run with `docker compose exec client ...`).
set -euo pipefail
ip route replace "${AE_ANYCAST:-192.0.2.10}/32" via "${AE_ROUTER:-10.77.1.1}"
exec "$@"
