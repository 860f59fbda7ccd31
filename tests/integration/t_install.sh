#!/usr/bin/env bash
# `./install.sh install` into a staging root (DESTDIR): the binaries, the starting config and its
# certificate, the docs and the systemd unit land in their places with sane modes; the unit
# passes `systemd-analyze verify` without a warning and its ExecStartPre check passes on the
# installed config; a second install keeps the operator's config and key.
. "$(dirname "$0")/lib.sh"

R=$T/root
inst() {
    (cd "$AE_SRCDIR" && DESTDIR=$R PREFIX=/usr/local AE_BUILD_DIR=$AE_BIN ./install.sh install) \
        >"$T/install.log" 2>&1 || fail "install.sh install failed: $(tail -n 5 "$T/install.log")"
}
inst
for f in usr/local/bin/anyedge usr/local/bin/anyedgectl; do
    [ -x "$R/$f" ] || fail "$f not installed"
done
for f in etc/anyedge/anyedge.yaml etc/anyedge/edge.pem etc/anyedge/edge.key \
    etc/systemd/system/anyedge.service usr/local/share/doc/anyedge/operations.md; do
    [ -s "$R/$f" ] || fail "$f not installed"
done
assert_eq "$(stat -c %a "$R/etc/anyedge/edge.key")" 600 "key mode (staged; 0640 group anyedge when installed for real)"
assert_eq "$(stat -c %a "$R/etc/anyedge/anyedge.yaml")" 640 "config mode"
U=$R/etc/systemd/system/anyedge.service
grep -q '@' "$U" && fail "unfilled placeholder in the unit: $(grep '@' "$U")"
assert_match "$(grep '^ExecStart=' "$U")" '^ExecStart=/usr/local/bin/anyedge -c /etc/anyedge/anyedge.yaml$' "ExecStart"
assert_match "$(grep '^ExecReload=' "$U")" 'kill -HUP \$MAINPID' "reload = SIGHUP"
assert_match "$(grep '^KillSignal=' "$U")" '=SIGTERM$' "stop = SIGTERM (drain)"
assert_match "$(grep '^Restart=' "$U")" '=on-failure$' "restart on failure"
stop=$(grep '^TimeoutStopSec=' "$U" | cut -d= -f2)
# timeouts.drain's default, from the config reference ("| `timeouts.drain` | duration | `30s` |").
drain=$("$ANYEDGE" --config-doc | awk -F'|' '$2 ~ /`timeouts.drain`/ { gsub(/[^0-9]/, "", $4); print $4 }')
[ -n "$drain" ] || fail "no default of timeouts.drain in --config-doc"
assert_ge "$stop" $((drain + 5)) "TimeoutStopSec (s) longer than the default drain ($drain s)"

# The unit as systemd reads it, with its paths pointing into the staging root.
if command -v systemd-analyze >/dev/null; then
    mkdir -p "$T/unit"
    sed -e "s|/usr/local/|$R/usr/local/|g" -e "s|/etc/anyedge/|$R/etc/anyedge/|g" "$U" \
        >"$T/unit/anyedge.service"
    rc=0
    out=$(systemd-analyze verify "$T/unit/anyedge.service" 2>&1) || rc=$?
    assert_eq "$rc" 0 "systemd-analyze verify: $out"
    grep -q 'anyedge.service' <<<"$out" && fail "systemd-analyze verify warns: $out"
    log "systemd-analyze verify: clean"
else
    log "systemd-analyze not installed: unit syntax not verified"
fi
# Its start check, on the installed config (relative certificate paths, from another directory).
pre=$(grep '^ExecStartPre=' "$U" | cut -d= -f2- | sed -e "s|/usr/local/|$R/usr/local/|g" \
    -e "s|/etc/anyedge/|$R/etc/anyedge/|g")
out=$(cd / && $pre 2>&1) || fail "the unit's ExecStartPre fails on the installed config: $out"

# A second install keeps what the operator changed.
echo "# mine" >>"$R/etc/anyedge/anyedge.yaml"
k0=$(sha256sum <"$R/etc/anyedge/edge.key")
inst
assert_eq "$(tail -n1 "$R/etc/anyedge/anyedge.yaml")" "# mine" "second install kept the config"
assert_eq "$(sha256sum <"$R/etc/anyedge/edge.key")" "$k0" "second install kept the key"
grep -q "kept .*anyedge.yaml" "$T/install.log" || fail "the second install did not say it kept the config"
log "installed into a staging root: binaries, config, certificate, docs, unit; reinstall keeps the config"
