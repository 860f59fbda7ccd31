#!/usr/bin/env bash
# The Compose lab (docker/docker-compose.yml) on a real container engine: rootful podman with
# Debian's docker-compose 1.29 (docker/README.md, "On podman"). Runs `docker/lab.sh run shift
# crash`: builds the images (layers cached across runs; the first build takes minutes), `up`,
# the netns lab's `shift` and `crash` scenarios on containers with their result tables, then
# `down`, which removes every container, network and volume of the lab, also on failure or
# timeout (the images stay cached). The podman host settings and the locally made base image
# come from docker/podman-setup.sh, which lab.sh runs first.
#
# Exit 77 (ctest: skipped) only when this machine cannot make the namespaces a container is
# made of (`unshare --mount --uts --ipc --net --pid --fork true` fails as root: e.g. inside an
# unprivileged container). Everything else that stops the lab is a failure: not root, podman or
# docker-compose not installed (./install.sh deps installs them), podman unable to run a
# container after docker/podman-setup.sh, the lab not coming up, a FAIL row.
set -uo pipefail
AE_SRCDIR=${AE_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
say() { printf '[t_compose_lab] %s\n' "$*"; }
if [ "$(id -u)" != 0 ]; then
    say "FAIL: needs root (rootful podman); run as root (CI does)" >&2
    exit 1
fi
if ! out=$(unshare --mount --uts --ipc --net --pid --fork true 2>&1); then
    say "SKIP: this machine cannot create the namespaces containers need (unshare: $out)"
    exit 77
fi
for c in podman docker-compose debootstrap; do
    command -v "$c" >/dev/null || {
        say "FAIL: $c is not installed (./install.sh deps installs it)" >&2
        exit 1
    }
done
# One fixed project: a run killed hard leaves objects that the next run's `up` removes.
PROJECT=${AE_LAB_PROJECT:-anyedge-lab-ci}
t0=$(date +%s)
# Bounded below ctest's timeout: lab.sh's EXIT trap runs `down` on SIGTERM.
AE_ENGINE=podman AE_LAB_PROJECT=$PROJECT \
    timeout -k 60 1500 "$AE_SRCDIR/docker/lab.sh" run shift crash
rc=$?
say "docker/lab.sh run shift crash: rc $rc, $(($(date +%s) - t0)) s"
left=$(podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null)
[ -z "$left" ] || {
    say "FAIL: containers left behind: $left" >&2
    rc=1
}
[ $rc = 0 ] && say passed || say "FAILED (rc=$rc)"
exit $rc
