#!/usr/bin/env bash
# anyedge developer entry point (Debian 12 "bookworm"). Idempotent; safe to re-run.
#
#   ./install.sh deps    install build, test and lab packages (bookworm-backports for ngtcp2)
#   ./install.sh build   configure and build into build/
#   ./install.sh demo    deps + build, then run the proxy on 127.0.0.1:8443 (TLS/TCP and QUIC)
#                        in front of ae-origin (demo-config DIR: only write its config and cert)
#   ./install.sh install binaries, /etc/anyedge/anyedge.yaml and a systemd unit (PREFIX, DESTDIR)
#   ./install.sh test    deps, then ctest in build/ and in build-asan/ (ASan + UBSan), then
#                        every libFuzzer harness for a short time in build-fuzz/ (clang)
#   ./install.sh bench   deps + build, then tests/bench/run.sh
#   ./install.sh mirror  print the Debian mirror URI of this machine's apt sources for its release
#                        (docker/podman-setup.sh bootstraps the lab's base image from it)
#
# Environment: AE_TEST_FILTER (ctest -R regex), AE_SKIP_ASAN=1 (skip the sanitizer round),
# AE_SKIP_FUZZ=1 (skip the fuzz round), AE_FUZZ_SECONDS (per harness, default 20), AE_JOBS
# (parallel build jobs, default nproc).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"

JOBS=${AE_JOBS:-$(nproc 2>/dev/null || echo 2)}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

BASE_PKGS=(
    build-essential cmake pkg-config libssl-dev libev-dev libyaml-dev
    libcmocka-dev libgnutls28-dev nettle-dev libbpf-dev xxd
    openssl curl wrk redis-server bird2 haproxy nginx libnginx-mod-stream python3 iproute2
    procps psmisc netcat-openbsd clang-format libclang-rt-14-dev clang valgrind docker-compose gnuplot-nox
    caddy
)
# The Compose lab on a real engine (docker/README.md, "On podman"): rootful podman with runc, its
# network stack, the init process compose's `init: true` asks for, and debootstrap for the
# locally made base image (docker/podman-setup.sh). Not installed in a podman image build (the
# builder stage runs `./install.sh deps` too, and an engine has no use there).
ENGINE_PKGS=(podman runc catatonit netavark aardvark-dns iptables debootstrap)
# QUIC stack, from bookworm-backports (bookworm itself has ngtcp2 0.12 without the GnuTLS crypto
# helper library the QUIC milestone needs). Missing packages only warn.
# Also from there: ngtcp2's gtlsserver (benchmark peer) and libcurl-gnutls 8.x built with
# ngtcp2/nghttp3 (the HTTP/3 test client links it).
# hiredict 1.3 (a maintained hiredis fork with TLS; its shims give the hiredis API and replace
# bookworm's libhiredis-dev 0.14, which has no TLS): the Redis client, rediss:// included.
BP_PKGS=(libngtcp2-dev libngtcp2-crypto-gnutls-dev libnghttp3-dev ngtcp2-client ngtcp2-server
    libcurl3-gnutls libcurl4-gnutls-dev valkey-server valkey-tools libhiredict-dev
    libhiredict-shims-dev)
# Daemons Debian starts on install; tests run their own instances on free ports.
SERVICES=(redis-server:/run/redis/redis-server.pid nginx:/run/nginx.pid
    haproxy:/run/haproxy.pid bird:/run/bird/bird.pid valkey-server:/run/valkey/valkey-server.pid
    caddy:/run/caddy.pid)

log() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# Prints the packages of "$@" that are not installed.
missing_pkgs() {
    local p st
    for p in "$@"; do
        st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
        [ "${st:0:2}" = "ii" ] || printf '%s\n' "$p"
    done
}

# Prints the packages of "$@" not installed from backports (a "~bpo" version): bookworm's own
# builds of these are too old (ngtcp2 0.12, curl without HTTP/3).
missing_bp_pkgs() {
    local p st ver
    for p in "$@"; do
        st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
        ver=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
        if [ "${st:0:2}" != "ii" ] || [[ "$ver" != *bpo* ]]; then
            printf '%s\n' "$p"
        fi
    done
}

# Prints the packages of "$@" that apt knows no installation candidate for.
unavailable_pkgs() {
    local p cand
    for p in "$@"; do
        cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
            printf '%s\n' "$p"
        fi
    done
}

codename() {
    local c=""
    if [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        c=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
    fi
    printf '%s' "${c:-bookworm}"
}

# Is SUITE enabled in any apt source (one-line or deb822)?
suite_enabled() {
    local suite=$1 f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        if grep -Eq "^[[:space:]]*deb[[:space:]].*[[:space:]]${suite}([[:space:]]|$)" "$f"; then
            return 0
        fi
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        if awk -v s="$suite" '
            function flush() { if (hit && en) found = 1; hit = 0; en = 1 }
            BEGIN { en = 1 }
            /^[[:space:]]*$/ { flush(); next }
            /^[[:space:]]*#/ { next }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) hit = 1 }
            tolower($1) == "enabled:" && tolower($2) == "no" { en = 0 }
            END { flush(); exit found ? 0 : 1 }' "$f"; then
            return 0
        fi
    done
    return 1
}

# Prints a deb822 stanza for SUITE built from the first enabled "deb" source of the release
# suite: same URIs and Signed-By, so no mirror host is ever named here.
backports_stanza() {
    local rel=$1 suite=$2 f out
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        out=$(awk -v rel="$rel" -v suite="$suite" '
            function flush() {
                if (!done && isdeb && hasrel && en && uris != "") {
                    printf "Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n", uris, suite
                    if (signed != "") printf "Signed-By:%s\n", signed
                    done = 1
                }
                isdeb = 0; hasrel = 0; en = 1; uris = ""; signed = ""; field = ""
            }
            BEGIN { en = 1 }
            /^[[:space:]]*$/ { flush(); next }
            /^#/ { next }
            /^[[:space:]]/ {                     # continuation line (e.g. an inline key)
                if (field == "signed-by") signed = signed "\n" $0
                next
            }
            {
                field = tolower($1); sub(/:$/, "", field)
                if (field == "types") { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1 }
                else if (field == "suites") { for (i = 2; i <= NF; i++) if ($i == rel) hasrel = 1 }
                else if (field == "enabled") { if (tolower($2) == "no") en = 0 }
                else if (field == "uris") { uris = $0; sub(/^[^:]*:[[:space:]]*/, "", uris) }
                else if (field == "signed-by") { signed = $0; sub(/^[^:]*:/, "", signed) }
            }
            END { flush() }' "$f")
        if [ -n "$out" ]; then
            printf '%s\n' "$out"
            return 0
        fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        out=$(awk -v rel="$rel" -v suite="$suite" '
            /^[[:space:]]*deb[[:space:]]/ {
                line = $0; opts = ""
                if (match(line, /\[[^]]*\]/)) {
                    opts = substr(line, RSTART + 1, RLENGTH - 2)
                    line = substr(line, 1, RSTART - 1) substr(line, RSTART + RLENGTH)
                }
                n = split(line, w, /[[:space:]]+/)
                k = (w[1] == "") ? 2 : 1             # skip leading blank field
                if (w[k + 2] != rel) next
                printf "Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n", w[k + 1], suite
                m = split(opts, o, /[[:space:]]+/)
                for (i = 1; i <= m; i++)
                    if (o[i] ~ /^signed-by=/) { sub(/^signed-by=/, "", o[i]); printf "Signed-By: %s\n", o[i] }
                exit
            }' "$f")
        if [ -n "$out" ]; then
            printf '%s\n' "$out"
            return 0
        fi
    done
    return 1
}

# Enables <codename>-backports; returns 0 when it changed the apt configuration.
enable_backports() {
    local rel suite dst=/etc/apt/sources.list.d/anyedge-backports.sources stanza
    rel=$(codename)
    suite="$rel-backports"
    if suite_enabled "$suite"; then
        return 1
    fi
    stanza=$(backports_stanza "$rel" "$suite") ||
        die "no enabled 'deb' source for suite $rel found in /etc/apt; cannot derive $suite"
    log "enabling $suite in $dst"
    printf '# Written by anyedge install.sh: the mirror of the %s source, suite %s.\n%s\n' \
        "$rel" "$suite" "$stanza" | $SUDO tee "$dst" >/dev/null
    return 0
}

stop_services() {
    local entry svc pidfile pid systemd=0
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        systemd=1
    fi
    for entry in "${SERVICES[@]}"; do
        svc=${entry%%:*}
        pidfile=${entry#*:}
        if [ "$systemd" = 1 ]; then
            if systemctl is-active --quiet "$svc" 2>/dev/null; then
                log "stopping system service $svc (tests start their own)"
                $SUDO systemctl stop "$svc" || warn "could not stop $svc"
            fi
            continue
        fi
        [ -s "$pidfile" ] || continue
        pid=$(head -n1 "$pidfile" | tr -dc '0-9')
        if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
            continue
        fi
        log "stopping system service $svc (pid $pid; tests start their own)"
        if command -v service >/dev/null; then
            $SUDO service "$svc" stop >/dev/null 2>&1 || true
        fi
        if kill -0 "$pid" 2>/dev/null; then
            $SUDO kill "$pid" 2>/dev/null || warn "could not stop $svc (pid $pid)"
        fi
    done
}

# Are we inside a podman container or a podman/buildah image build (/run/.containerenv)? Not
# /.dockerenv: some VM images keep it from the Docker image they were made from (this one
# does), so a Docker build installs the engine packages too, uselessly but harmlessly.
in_container() {
    [ -e /run/.containerenv ]
}

apt_install() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

cmd_deps() {
    local missing missing_bp unavail changed=0 rel
    rel=$(codename)
    command -v dpkg-query >/dev/null || die "this script supports Debian 12 (apt/dpkg) only"
    local want_pkgs=("${BASE_PKGS[@]}")
    if in_container; then
        log "deps: inside a container: not installing ${ENGINE_PKGS[*]}"
    else
        want_pkgs+=("${ENGINE_PKGS[@]}")
    fi
    mapfile -t missing < <(missing_pkgs "${want_pkgs[@]}")
    mapfile -t missing_bp < <(missing_bp_pkgs "${BP_PKGS[@]}")
    if [ ${#missing[@]} -eq 0 ] && [ ${#missing_bp[@]} -eq 0 ]; then
        log "deps: all packages installed"
        return 0
    fi
    if enable_backports; then
        changed=1
    fi
    # Without new packages to fetch from the base suites and with backports already known to
    # lack the QUIC packages, don't hit the network on every run.
    if [ $changed = 0 ] && [ ${#missing[@]} -eq 0 ]; then
        mapfile -t unavail < <(unavailable_pkgs "${missing_bp[@]}")
        if [ ${#unavail[@]} -eq ${#missing_bp[@]} ]; then
            warn "not available from $rel-backports: ${unavail[*]} (QUIC will not build)"
            return 0
        fi
    fi
    log "apt-get update"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing: ${missing[*]}"
        apt_install "${missing[@]}"
    fi
    if [ ${#missing_bp[@]} -gt 0 ]; then
        local want=() p
        mapfile -t unavail < <(unavailable_pkgs "${missing_bp[@]}")
        for p in "${missing_bp[@]}"; do
            if printf '%s\n' "${unavail[@]}" | grep -qx "$p"; then
                warn "$p is not available (from $rel-backports); the build needs it"
            else
                want+=("$p")
            fi
        done
        if [ ${#want[@]} -gt 0 ]; then
            log "installing from $rel-backports: ${want[*]}"
            apt_install -t "$rel-backports" "${want[@]}" ||
                warn "installing ${want[*]} from $rel-backports failed; the build needs them"
        fi
    fi
    stop_services
}

# configure DIR [cmake args...]
configure_build() {
    local dir=$1
    shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
    cmake --build "$dir" -j"$JOBS"
}

cmd_build() {
    configure_build build
}

# run_ctest DIR LABEL [CTEST_ARGS...]: runs ctest, prints its summary, returns its status.
run_ctest() {
    local dir=$1 label=$2 logf rc=0
    shift 2
    local args=(--test-dir "$dir" --output-on-failure -j"$JOBS" "$@")
    if [ -n "${AE_TEST_FILTER:-}" ]; then
        args+=(-R "$AE_TEST_FILTER")
    fi
    logf=$(mktemp)
    ctest "${args[@]}" 2>&1 | tee "$logf" || rc=$?
    SUMMARY+=("[$label] $(grep -E 'tests passed|No tests were found' "$logf" | tail -n1)")
    while IFS= read -r line; do
        SUMMARY+=("[$label] $line")
    done < <(grep -E '^[[:space:]]+[0-9]+ - ' "$logf" || true)
    rm -f "$logf"
    return $rc
}

cmd_test() {
    local rc=0
    SUMMARY=()
    cmd_deps
    log "build (RelWithDebInfo) and test in build/"
    if configure_build build; then
        run_ctest build normal || rc=1
    else
        SUMMARY+=("[normal] build failed")
        rc=1
    fi
    if [ "${AE_SKIP_ASAN:-0}" != 1 ]; then
        log "build with ASan+UBSan and test in build-asan/"
        if configure_build build-asan -DANYEDGE_SANITIZE=ON; then
            ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
                UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
                run_ctest build-asan asan -LE 'valkey|engine|asan_skip' || rc=1 # see tests/CMakeLists.txt
        else
            SUMMARY+=("[asan] build failed")
            rc=1
        fi
    fi
    if [ "${AE_SKIP_FUZZ:-0}" != 1 ]; then
        # tests/fuzz/: clang, everything instrumented; only the fuzz.* ctest cases, each
        # harness for AE_FUZZ_SECONDS over a copy of its seed corpus, JOBS at a time.
        log "build the fuzzers (clang) and run each for ${AE_FUZZ_SECONDS:-20}s in build-fuzz/"
        if cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
            -DAE_FUZZ=ON -DANYEDGE_TESTS=OFF -DAE_FUZZ_SECONDS="${AE_FUZZ_SECONDS:-20}" &&
            cmake --build build-fuzz -j"$JOBS" --target fuzz; then
            run_ctest build-fuzz fuzz || rc=1
        else
            SUMMARY+=("[fuzz] build failed")
            rc=1
        fi
    fi
    printf '\n==> test summary\n'
    printf '%s\n' "${SUMMARY[@]}"
    if [ $rc -ne 0 ]; then
        printf '==> FAILED\n'
    else
        printf '==> all passed\n'
    fi
    return $rc
}

# self_signed KEY CERT: a self-signed ECDSA P-256 certificate for localhost / 127.0.0.1.
self_signed() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$1" -out "$2" 2>/dev/null || die "openssl req failed"
    chmod 600 "$1"
}

# demo_config DIR: the demo's certificate (DIR/edge.pem, edge.key) and config (DIR/anyedge.yaml:
# conf/examples/standalone.yaml with its paths made relative to DIR), each only when missing.
demo_config() {
    local d=$1
    mkdir -p "$d"
    if [ ! -s "$d/edge.pem" ] || [ ! -s "$d/edge.key" ]; then
        log "creating a self-signed ECDSA P-256 certificate in $d/"
        self_signed "$d/edge.key" "$d/edge.pem"
    fi
    if [ ! -s "$d/anyedge.yaml" ]; then
        sed -e 's|demo/edge\.|edge.|' conf/examples/standalone.yaml >"$d/anyedge.yaml"
    elif ! grep -q 'protocol: quic' "$d/anyedge.yaml"; then
        log "note: $d/anyedge.yaml predates the demo's QUIC listener; remove it to get the new one"
    fi
}

cmd_demo() {
    local d="$ROOT/demo" origin_pid
    cmd_deps
    cmd_build
    demo_config "$d"
    build/ae-origin -l 127.0.0.1:8080 -i demo &
    origin_pid=$!
    # shellcheck disable=SC2064 # expand the pid now
    trap "kill $origin_pid 2>/dev/null || true" EXIT
    trap 'exit 130' INT TERM
    cat <<'EOT'

anyedge demo: 127.0.0.1:8443 over TLS/TCP and over QUIC (HTTP/3), relayed to a demo origin on
127.0.0.1:8080; standalone (no Redis). From another terminal:

  curl -k https://127.0.0.1:8443/                     TLS over TCP (Debian's curl has no HTTP/3)
  build/ae-h3get -k https://127.0.0.1:8443/           HTTP/3 over QUIC with the project's own
                                                      client: index, status, bytes, sha256
  build/ae-h3get -k -n 10 -S https://127.0.0.1:8443/  10 requests on one QUIC connection
  build/anyedgectl -c demo/anyedge.yaml status        the site, its listeners, the pool's health
  curl -s http://127.0.0.1:9901/metrics | grep -E '^anyedge_(quic|h3)_'   QUIC/HTTP/3 counters

Config: demo/anyedge.yaml (reload: build/anyedgectl -c demo/anyedge.yaml reload).
Ctrl-C drains and stops it.

EOT
    # Not exec: the EXIT trap must outlive the proxy to stop the origin.
    build/anyedge -c "$d/anyedge.yaml"
}

# cmd_install: installs the binaries, a starting config and a systemd unit (docs/operations.md,
# "Install as a service"). Environment: PREFIX (default /usr/local), DESTDIR (a staging root: no
# user is created, systemd is not told), AE_BUILD_DIR (default build/, built when missing).
cmd_install() {
    local prefix=${PREFIX:-/usr/local} dest=${DESTDIR:-} bdir=${AE_BUILD_DIR:-$ROOT/build}
    local etc="$dest/etc/anyedge" unitdir="$dest/etc/systemd/system"
    if [ ! -x "$bdir/anyedge" ] || [ ! -x "$bdir/anyedgectl" ]; then
        [ -z "${AE_BUILD_DIR:-}" ] || die "no anyedge / anyedgectl in $bdir"
        cmd_deps
        cmd_build
    fi
    log "installing into ${dest:-/}: $prefix/bin, /etc/anyedge, /etc/systemd/system"
    install -d "$dest$prefix/bin" "$dest$prefix/share/doc/anyedge" "$etc" "$unitdir"
    install -m 0755 "$bdir/anyedge" "$bdir/anyedgectl" "$dest$prefix/bin/"
    install -m 0644 docs/operations.md docs/config.md "$dest$prefix/share/doc/anyedge/"
    if [ -z "$dest" ] && ! getent passwd anyedge >/dev/null; then
        useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin \
            --user-group anyedge || die "cannot create the system user anyedge"
    fi
    # The config and the certificate are the operator's once they exist: never overwritten.
    if [ ! -e "$etc/anyedge.yaml" ]; then
        sed -e 's|demo/edge\.|edge.|' conf/examples/standalone.yaml >"$etc/anyedge.yaml"
        chmod 0640 "$etc/anyedge.yaml"
        log "wrote $etc/anyedge.yaml (the standalone example: edit its listeners and upstreams)"
    else
        log "kept $etc/anyedge.yaml"
    fi
    if [ ! -e "$etc/edge.pem" ] && [ ! -e "$etc/edge.key" ]; then
        self_signed "$etc/edge.key" "$etc/edge.pem"
        log "wrote a self-signed certificate $etc/edge.pem (replace it with your own)"
    fi
    if [ -z "$dest" ]; then
        # The service runs as anyedge: it reads its config and key through the group.
        chgrp anyedge "$etc/anyedge.yaml" "$etc/edge.key" "$etc/edge.pem"
        chmod 0640 "$etc/edge.key"
    fi
    sed -e "s|@BINDIR@|$prefix/bin|g" -e "s|@DOCDIR@|$prefix/share/doc/anyedge|g" \
        dist/anyedge.service >"$unitdir/anyedge.service"
    chmod 0644 "$unitdir/anyedge.service"
    if [ -z "$dest" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        log "installed; start it with: systemctl enable --now anyedge"
    else
        log "installed (systemd is not running here: enable the unit where it is)"
    fi
}

# cmd_mirror: the first URI of the first enabled "deb" source of this release, the same source
# enable_backports derives backports from (so the repository never names a mirror host).
cmd_mirror() {
    local rel uris
    rel=$(codename)
    uris=$(backports_stanza "$rel" "$rel" | sed -n 's/^URIs:[[:space:]]*//p') ||
        die "no enabled 'deb' source for suite $rel found in /etc/apt"
    [ -n "$uris" ] || die "no enabled 'deb' source for suite $rel found in /etc/apt"
    printf '%s\n' "${uris%% *}"
}

cmd_bench() {
    cmd_deps
    cmd_build
    [ -x tests/bench/run.sh ] || [ -f tests/bench/run.sh ] || die "tests/bench/run.sh does not exist yet"
    bash tests/bench/run.sh "$@"
}

usage() {
    awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case "$cmd" in
    deps) cmd_deps ;;
    build) cmd_build ;;
    demo) cmd_demo ;;
    demo-config) demo_config "${1:?usage: ./install.sh demo-config DIR}" ;;
    install) cmd_install ;;
    test) cmd_test ;;
    bench) cmd_bench "$@" ;;
    mirror) cmd_mirror ;;
    -h | --help | help)
        usage
        ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
