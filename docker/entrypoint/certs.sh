#!/bin/bash
# One-shot service `certs` (docker/docker-compose.yml): a self-signed ECDSA P-256 certificate
# for the anycast name, shared by all sites through the `certs` volume (the sites need the same
# certificate for a client's session to resume at any of them). Kept across runs; remove the
# volume (`docker compose down -v`) for a new one.
set -euo pipefail
d=${1:-/certs}
if [ -s "$d/edge.pem" ] && [ -s "$d/edge.key" ]; then
    echo "certs.sh: $d/edge.pem exists"
    exit 0
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
    -subj "/CN=anyedge.lab" \
    -addext "subjectAltName=DNS:anyedge.lab,DNS:localhost,IP:192.0.2.10" \
    -keyout "$d/edge.key" -out "$d/edge.pem" 2>/dev/null
chown anyedge:anyedge "$d/edge.key" "$d/edge.pem"
chmod 0600 "$d/edge.key"
chmod 0644 "$d/edge.pem"
echo "certs.sh: wrote $d/edge.pem and $d/edge.key"
