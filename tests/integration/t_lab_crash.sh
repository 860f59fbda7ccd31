#!/usr/bin/env bash
# ctest wrapper for the netns lab scenario `crash` (docs/lab.md): runs `tests/lab/lab run crash`
# against the binaries in $AE_BIN. The scenario builds its own lab (namespaces with a unique
# prefix, BIRD, Redis, two origins, three anyedge sites), prints its result table, writes its
# CSV/PNG under $LAB_RESULTS (default $AE_BIN/lab-results) and removes the lab, also on failure
# or timeout. Needs root, iproute2 with netns, bird2, redis-server, gnuplot (PNG only).
set -uo pipefail
AE_BIN=${AE_BIN:?AE_BIN (the build directory) must be set}
AE_SRCDIR=${AE_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
if [ "$(id -u)" != 0 ]; then
    echo "[t_lab_crash] FAIL: needs root for network namespaces; run as root (CI does)" >&2
    exit 1
fi
export AE_BIN LAB_RESULTS=${LAB_RESULTS:-$AE_BIN/lab-results}
# bounded: the scenario takes ~1 min; lab's traps tear the lab down on SIGTERM
exec timeout -k 15 300 "$AE_SRCDIR/tests/lab/lab" run crash
