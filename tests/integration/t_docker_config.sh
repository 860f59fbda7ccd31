#!/usr/bin/env bash
# The Docker Compose lab (docker/) without a Docker engine (none runs on development machines or
# in CI), in a few seconds:
#   1. `docker-compose -f docker/docker-compose.yml config -q` (Debian's docker-compose 1.29)
#      accepts the compose file;
#   2. the Dockerfile passes grep-level lint: multi-stage, the builder runs `./install.sh deps`
#      and `./install.sh build` (the build steps stay those of the install script), a slim
#      runtime, a non-root USER, a HEALTHCHECK on the admin endpoint, the documented ENTRYPOINT,
#      and every shared library anyedge, anyedgectl and ae-origin link (readelf NEEDED of this
#      build) comes from a package the runtime stage installs;
#   3. every file the compose file or the Dockerfile references exists (bind mounts, build
#      context and Dockerfile, COPY sources, the entry points the services run, BIRD includes),
#      and every service's image is built here (none is pulled from a registry);
#   4. the configs are valid: `bird -p` parses every BIRD config, `anyedge -t` accepts every
#      site config (with a throw-away certificate; without the `anycast` block while this build
#      does not know its keys — the site entry point does the same), `bash -n` every entry point.
. "$(dirname "$0")/lib.sh"

D=$AE_SRCDIR/docker
DF=$D/Dockerfile
COMPOSE=$D/docker-compose.yml
[ -f "$DF" ] || fail "$DF is missing"
[ -f "$COMPOSE" ] || fail "$COMPOSE is missing"

# ---- 1. compose file ----
command -v docker-compose >/dev/null ||
    fail "docker-compose is not installed (./install.sh deps installs Debian's docker-compose)"
out=$(cd "$AE_SRCDIR" && docker-compose -f docker/docker-compose.yml config -q 2>&1) ||
    fail "docker-compose config rejects docker/docker-compose.yml: $out"
(cd "$AE_SRCDIR" && docker-compose -f docker/docker-compose.yml config) >"$T/compose.yml" 2>"$T/compose.err" ||
    fail "docker-compose config: $(cat "$T/compose.err")"
services=$(cd "$AE_SRCDIR" && docker-compose -f docker/docker-compose.yml config --services | sort | tr '\n' ' ')
for s in router site1 site2 site3 redis origin1 origin2 client; do
    [[ " $services" == *" $s "* ]] || fail "compose: no service '$s' (services: $services)"
done
log "check 1: docker-compose config -q passes; services: $services"

# ---- 2. Dockerfile lint ----
# Instructions with continuation lines joined, comments dropped.
sed -e '/^[[:space:]]*#/d' "$DF" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' >"$T/Dockerfile.joined"
J=$T/Dockerfile.joined
nfrom=$(grep -Eci '^FROM[[:space:]]' "$J")
assert_ge "$nfrom" 2 "FROM instructions (multi-stage build)"
grep -Eq '^FROM[[:space:]]+debian:(\$\{DEBIAN_RELEASE\}|bookworm)[[:space:]]+AS[[:space:]]+builder' "$J" ||
    fail "Dockerfile: no 'FROM debian:bookworm AS builder' stage"
grep -Eq '^FROM[[:space:]]+debian:(\$\{DEBIAN_RELEASE\}|bookworm)-slim' "$J" ||
    fail "Dockerfile: the runtime is not based on debian:bookworm-slim"
grep -Eq '^ARG[[:space:]]+DEBIAN_RELEASE=bookworm$' "$J" || fail "Dockerfile: DEBIAN_RELEASE is not bookworm"
# The builder's steps are the install script's: deps and build, nothing hand-copied.
builder=$(awk '/^FROM/ { inb = ($0 ~ /AS[[:space:]]+builder/) } inb' "$J")
grep -Eq '^RUN[[:space:]]+\./install\.sh[[:space:]]+deps([[:space:]]|$)' <<<"$builder" ||
    fail "Dockerfile: the builder does not RUN ./install.sh deps"
grep -Eq '^RUN[[:space:]]+\./install\.sh[[:space:]]+build([[:space:]]|$)' <<<"$builder" ||
    fail "Dockerfile: the builder does not RUN ./install.sh build"
if grep -Eq 'apt-get[[:space:]]+install|cmake[[:space:]]' <<<"$builder"; then
    fail "Dockerfile: the builder installs packages or runs cmake itself; use install.sh"
fi
grep -Eq '^COPY[[:space:]]+install\.sh[[:space:]]' <<<"$builder" || fail "Dockerfile: install.sh is not copied in"
# The last stage is the default target: the proxy image.
last=$(awk '/^FROM/ { s = "" } { s = s $0 "\n" } END { printf "%s", s }' "$J")
user=$(grep -E '^USER[[:space:]]' <<<"$last" | tail -n 1 | awk '{ print $2 }' || true)
[ -n "$user" ] || fail "Dockerfile: the final stage sets no USER (it would run as root)"
case "${user%%:*}" in
root | 0) fail "Dockerfile: the final stage runs as root (USER $user)" ;;
esac
grep -Eq "^RUN[[:space:]].*useradd.*[[:space:]]${user%%:*}$" "$J" ||
    fail "Dockerfile: USER $user is never created (useradd)"
hc=$(grep -E '^HEALTHCHECK[[:space:]]' <<<"$last" || true)
[ -n "$hc" ] || fail "Dockerfile: the final stage has no HEALTHCHECK"
grep -Eq 'anyedgectl|9901' <<<"$hc" || fail "Dockerfile: the HEALTHCHECK does not use the admin endpoint: $hc"
grep -Eq '^ENTRYPOINT[[:space:]]+\["anyedge",[[:space:]]*"-c",[[:space:]]*"/etc/anyedge/anyedge\.yaml"\]' <<<"$last" ||
    fail "Dockerfile: ENTRYPOINT is not [\"anyedge\", \"-c\", \"/etc/anyedge/anyedge.yaml\"]"
# Runtime libraries: each NEEDED library of this build must come from a package named in the
# runtime stage (libc6 is in every Debian image).
runtime=$(awk '/^FROM/ { inr = ($0 ~ /AS[[:space:]]+runtime/) } inr' "$J")
[ -n "$runtime" ] || fail "Dockerfile: no 'AS runtime' stage"
libs=$(for b in anyedge anyedgectl ae-origin; do
    readelf -d "$AE_BIN/$b" | awk -F'[][]' '/\(NEEDED\)/ { print $2 }'
done | sort -u | grep -vx 'libc\.so\.6' |
    grep -vE '^lib(asan|ubsan|lsan|tsan)\.so' || true) # sanitizer builds (CI's ASan round)
[ -n "$libs" ] || fail "readelf finds no NEEDED libraries in $AE_BIN/anyedge"
# One dpkg -S for all: lines "pkg[, pkg...]: /path/lib.so.N[.x]".
dpkg -S $libs >"$T/dpkg-S.out" 2>/dev/null || true
for lib in $libs; do
    pkgs=$(awk -v l="$lib" '{ n = split($NF, a, "/"); if (index(a[n], l) == 1) print }' "$T/dpkg-S.out" |
        sed 's/: .*//' | tr ',' '\n' | sed 's/ //g; s/:.*//' | sort -u)
    [ -n "$pkgs" ] || fail "this build needs $lib, which no installed package provides"
    ok=0
    for p in $pkgs; do
        grep -Eq "(^|[[:space:]])$p([[:space:]]|$)" <<<"$runtime" && ok=1
    done
    [ $ok = 1 ] || fail "Dockerfile: this build needs $lib (package: ${pkgs//$'\n'/ }), not installed in the runtime stage"
done
grep -Eq '^RUN[[:space:]].*bird2' <<<"$runtime" || fail "Dockerfile: the runtime stage does not install bird2"
log "check 2: Dockerfile: $nfrom stages, builder runs install.sh deps + build, USER $user," \
    "HEALTHCHECK on the admin endpoint, runtime packages cover readelf NEEDED"

# ---- 3. referenced files exist ----
nref=0
# Dockerfile COPY sources (not --from), relative to the build context (the repository root).
while read -r -a words; do
    if [ ${#words[@]} -eq 0 ] || [ "${words[0]^^}" != COPY ]; then continue; fi
    args=("${words[@]:1}")
    [[ ${args[0]} == --from=* ]] && continue
    while [[ ${args[0]} == --* ]]; do args=("${args[@]:1}"); done
    for src in "${args[@]:0:${#args[@]}-1}"; do
        [ -e "$AE_SRCDIR/$src" ] || fail "Dockerfile: COPY source '$src' does not exist"
        nref=$((nref + 1))
    done
done <"$J"
# Compose: bind mounts, build contexts and Dockerfiles, entry points baked into the image.
python3 - "$T/compose.yml" "$AE_SRCDIR" "$J" >"$T/refs.out" 2>&1 <<'EOF' || fail "compose references: $(cat "$T/refs.out")"
import os, sys, yaml
conf = yaml.safe_load(open(sys.argv[1]))
src, dockerfile = sys.argv[2], open(sys.argv[3]).read()
bad, n = [], 0
for name, svc in conf["services"].items():
    b = svc.get("build")
    if not b and svc.get("image"):
        # Lab machines and CI reach no registry: every image is built from Debian packages.
        bad.append(f"{name}: image {svc['image']} would be pulled from a registry; build it from docker/Dockerfile")
    if b:
        ctx = b["context"]
        df = os.path.join(ctx, b.get("dockerfile", "Dockerfile"))
        for p in (ctx, df):
            n += 1
            if not os.path.exists(p):
                bad.append(f"{name}: build path {p} does not exist")
        if b.get("target") and f" AS {b['target']}" not in dockerfile:
            bad.append(f"{name}: build target {b['target']} is not a Dockerfile stage")
    for v in svc.get("volumes", []):
        host = v.split(":")[0] if isinstance(v, str) else (v.get("source") if v.get("type") == "bind" else None)
        if host and host.startswith("/"):
            n += 1
            if not os.path.exists(host):
                bad.append(f"{name}: bind mount source {host} does not exist")
    ep = svc.get("entrypoint") or []
    if isinstance(ep, str):
        ep = ep.split()
    if ep and ep[0].startswith("/usr/local/libexec/anyedge-lab/"):
        base = os.path.basename(ep[0])
        f = os.path.join(src, "docker", "entrypoint", base)
        n += 1
        if not os.access(f, os.X_OK):
            bad.append(f"{name}: entry point {f} is missing or not executable")
        if f"docker/entrypoint/{base}" not in dockerfile:
            bad.append(f"{name}: entry point {base} is not copied into the image by the Dockerfile")
        # site.sh runs `bird -u bird`, which keeps these capabilities and dies without them.
        want = {"site.sh": {"NET_ADMIN", "NET_BROADCAST", "NET_RAW"}, "router.sh": {"NET_ADMIN"},
                "client.sh": {"NET_ADMIN"}}.get(base, set())
        missing = want - set(svc.get("cap_add") or [])
        if missing:
            bad.append(f"{name}: {base} needs cap_add {sorted(missing)}")
if bad:
    print("; ".join(bad))
    sys.exit(1)
print(n)
EOF
nref=$((nref + $(head -n 1 "$T/refs.out")))
# BIRD includes, relative to the including file.
for f in "$D"/config/bird/*.conf; do
    for inc in $(sed -n 's/^[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
        [ -f "$(dirname "$f")/$inc" ] || fail "$f includes $inc, which does not exist"
        grep -q "config/bird/$inc:/etc/bird/$inc" "$COMPOSE" ||
            fail "$inc (included by $(basename "$f")) is not mounted next to bird.conf in the compose file"
        nref=$((nref + 1))
    done
done
log "check 3: $nref referenced files and paths exist"

# ---- 4. configs ----
command -v bird >/dev/null || fail "bird (bird2) is not installed"
nb=0
for f in "$D"/config/bird/router.conf "$D"/config/bird/site[0-9].conf; do
    out=$(bird -p -c "$f" 2>&1) || fail "bird -p rejects $f: $out"
    nb=$((nb + 1))
done
doc=$("$ANYEDGE" --config-doc)
anycast_keys=no
[[ $doc == *anycast.announce* ]] && anycast_keys=yes
mkdir -p "$T/etc/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=anyedge.lab" -addext "subjectAltName=DNS:anyedge.lab,IP:192.0.2.10" \
    -keyout "$T/etc/certs/edge.key" -out "$T/etc/certs/edge.pem" 2>/dev/null ||
    fail "openssl could not make a test certificate"
na=0
for f in "$D"/config/site[0-9]/anyedge.yaml; do
    if ! grep -q '^# >>> anycast: BEGIN' "$f" || ! grep -q '^# <<< anycast: END' "$f"; then
        fail "$f: no marked anycast block (the site entry point relies on the markers)"
    fi
    if [ $anycast_keys = yes ]; then
        cp "$f" "$T/etc/anyedge.yaml"
    else
        sed '/^# >>> anycast: BEGIN/,/^# <<< anycast: END/d' "$f" >"$T/etc/anyedge.yaml"
    fi
    out=$("$ANYEDGE" -t -c "$T/etc/anyedge.yaml" 2>&1) || fail "anyedge -t rejects $f: $out"
    na=$((na + 1))
done
for f in "$D"/entrypoint/*.sh; do
    bash -n "$f" || fail "bash -n $f"
done
log "check 4: bird -p: $nb configs; anyedge -t: $na site configs (anycast keys in this build: $anycast_keys)"
