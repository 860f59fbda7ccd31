#!/usr/bin/env bash
# Prepares this machine to run the Compose lab (docker/docker-compose.yml) on podman, rootful,
# with no container registry: docker/README.md, "On podman". Idempotent; touches only what it
# names below. Needs root and the packages `./install.sh deps` installs (podman, runc,
# catatonit, debootstrap, docker-compose).
#
#   docker/podman-setup.sh          = host + base
#   docker/podman-setup.sh host     podman's engine settings this machine needs, in
#                                   /etc/containers/containers.conf (see below)
#   docker/podman-setup.sh base     the base images `debian:bookworm` and `debian:bookworm-slim`
#                                   made locally (debootstrap --variant=minbase from this
#                                   machine's own Debian mirror, `podman import`), when missing
#   docker/podman-setup.sh check    exit 0 when podman runs a container here; else print why
#
# Settings (host): podman 4.3's defaults do not work on every host. `runtime = "runc"`: crun 1.8
# fails on some cgroup v1 hosts (runc is what Debian's podman falls back to anyway);
# `cgroup_manager = "cgroupfs"`: without systemd as PID 1 the systemd manager cannot work;
# `default_ulimits = []`: the packaged default asks for nofile=1048576, above the hard limit of
# some hosts, and every container start then fails. Each line is written only when podman
# fails without it (`check`), into a block between markers that `host` rewrites and nothing else
# touches.
#
# Environment: AE_DEBIAN_MIRROR (default: `./install.sh mirror`, the URI of this machine's apt
# source for its release), AE_BASE_RELEASE (default bookworm).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REL=${AE_BASE_RELEASE:-bookworm}
CONF=/etc/containers/containers.conf
BEGIN_MARK="# >>> anyedge docker/podman-setup.sh"
END_MARK="# <<< anyedge docker/podman-setup.sh"
LABEL=org.anyedge.lab.base

log() { printf 'podman-setup: %s\n' "$*" >&2; }
die() {
    printf 'podman-setup: ERROR: %s\n' "$*" >&2
    exit 1
}

need_root() { [ "$(id -u)" -eq 0 ] || die "run as root (the lab runs rootful podman)"; }

have_image() { podman image exists "$1" 2>/dev/null; }

# probe IMAGE: runs a trivial container with what the lab needs (a bridge network's namespace,
# capabilities, a sysctl, the init process); prints podman's error on failure.
probe() {
    podman run --rm --init --cap-add NET_ADMIN --sysctl net.ipv4.ip_forward=1 \
        "$1" /bin/true 2>&1
}

# The base image every probe and every lab image start from.
cmd_base() {
    need_root
    local mirror dir t0 img
    if have_image "debian:$REL" && have_image "debian:$REL-slim"; then
        log "debian:$REL and debian:$REL-slim exist (podman images; 'podman rmi' them to rebuild)"
        return 0
    fi
    command -v debootstrap >/dev/null || die "debootstrap is not installed (./install.sh deps)"
    mirror=${AE_DEBIAN_MIRROR:-$("$ROOT/install.sh" mirror)}
    dir=$(mktemp -d /var/tmp/anyedge-base.XXXXXX)
    # shellcheck disable=SC2064 # expand now
    trap "rm -rf '$dir'" EXIT
    t0=$(date +%s)
    log "debootstrap --variant=minbase $REL from $mirror (a few minutes)"
    nice -n 10 debootstrap --variant=minbase "$REL" "$dir/root" "$mirror" >"$dir/debootstrap.log" 2>&1 || {
        tail -n 20 "$dir/debootstrap.log" >&2
        die "debootstrap failed"
    }
    # What Debian's official images drop: package caches, logs, the machine id.
    rm -rf "$dir"/root/var/cache/apt/archives/*.deb "$dir"/root/var/lib/apt/lists/* \
        "$dir"/root/var/log/* "$dir"/root/tmp/*
    : >"$dir/root/etc/machine-id"
    # As in Debian's official images: package scripts do not start daemons inside an image
    # build (the builder installs redis-server, nginx, haproxy, bird2).
    printf '#!/bin/sh\nexit 101\n' >"$dir/root/usr/sbin/policy-rc.d"
    chmod 0755 "$dir/root/usr/sbin/policy-rc.d"
    img=$(tar -C "$dir/root" --numeric-owner -c . |
        podman import --change 'CMD ["bash"]' --change "LABEL $LABEL=debootstrap-$REL" \
            --message "debootstrap --variant=minbase $REL $mirror" - "debian:$REL")
    podman tag "$img" "debian:$REL-slim"
    rm -rf "$dir"
    trap - EXIT
    log "imported debian:$REL and debian:$REL-slim ($(podman image inspect -f '{{.Size}}' "debian:$REL") bytes) in $(($(date +%s) - t0)) s"
}

# conf_lines: the settings the block holds now.
conf_lines() {
    [ -f "$CONF" ] || return 0
    awk -v b="$BEGIN_MARK" -v e="$END_MARK" 'index($0, b) == 1 { in_b = 1; next }
        index($0, e) == 1 { in_b = 0 } in_b && !/^\[/' "$CONF"
}

# write_conf LINE...: rewrites the marked block (under [containers] / [engine]) with LINEs.
write_conf() {
    local tmp
    mkdir -p "$(dirname "$CONF")"
    tmp=$(mktemp)
    if [ -f "$CONF" ]; then
        awk -v b="$BEGIN_MARK" -v e="$END_MARK" 'index($0, b) == 1 { in_b = 1 }
            !in_b { print } index($0, e) == 1 { in_b = 0 }' "$CONF" >"$tmp"
    fi
    if grep -Eq '^\[' "$tmp"; then
        # Our keys belong to tables the file may already open; a second [containers] table
        # is an error in TOML. Keep it simple: refuse rather than edit someone's file.
        rm -f "$tmp"
        die "$CONF has its own tables; add these settings by hand: $*"
    fi
    {
        cat "$tmp"
        printf '%s (the Compose lab on podman; rewritten by it)\n' "$BEGIN_MARK"
        printf '[containers]\n'
        printf '%s\n' "$@" | grep -E '^default_ulimits' || true
        printf '[engine]\n'
        printf '%s\n' "$@" | grep -Ev '^default_ulimits' || true
        printf '%s\n' "$END_MARK"
    } >"$CONF"
    rm -f "$tmp"
    log "wrote to $CONF: $*"
}

cmd_host() {
    need_root
    command -v podman >/dev/null || die "podman is not installed (./install.sh deps)"
    have_image "debian:$REL-slim" || cmd_base
    local lines=() out
    mapfile -t lines < <(conf_lines)
    if out=$(probe "debian:$REL-slim"); then
        log "podman runs containers here${lines:+ (with: ${lines[*]})}"
        return 0
    fi
    log "podman run fails with the current settings: $out"
    # The settings that make podman 4.3 work where its defaults do not; add them all (each one
    # alone is harmless on a host that does not need it), then check again.
    lines=('default_ulimits = []' 'cgroup_manager = "cgroupfs"' 'runtime = "runc"')
    command -v runc >/dev/null || die "runc is not installed (./install.sh deps)"
    write_conf "${lines[@]}"
    out=$(probe "debian:$REL-slim") || die "podman still cannot run a container: $out"
    log "podman runs containers here (with: ${lines[*]})"
}

# cmd_check: podman present and able to run the probe container. Exit 0 = yes, 1 = no (why on
# stderr).
cmd_check() {
    local out
    [ "$(id -u)" -eq 0 ] || die "not root"
    command -v podman >/dev/null || die "podman is not installed"
    have_image "debian:$REL-slim" || die "no debian:$REL-slim image (docker/podman-setup.sh base)"
    out=$(probe "debian:$REL-slim") || die "podman cannot run a container: $out"
    log "podman runs containers here"
}

case "${1:-all}" in
all)
    cmd_base
    cmd_host
    ;;
base) cmd_base ;;
host) cmd_host ;;
check) cmd_check ;;
*)
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
