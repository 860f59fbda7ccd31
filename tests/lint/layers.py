#!/usr/bin/env python3
"""The layer rule of proxy/ (docs/architecture.md, "Layers"), checked over #include lines.

Every file of proxy/ has a level (the table below). A file may include a proxy/ header of a
lower level, or of its own module (same stem, or a *_int.h of its own folder/module). Upward
calls go through hook structs and ops tables, never through an include. Exit status 1 and one
line per violation when a file includes a header of its own level from another module or of a
higher level, or when a file of proxy/ is missing from the table (a new file must be placed).

Usage: tests/lint/layers.py [SRCDIR]   (ctest: lint.layers)
"""
import os
import re
import sys

# module -> level. A module is a file path under proxy/ without its extension; headers and
# sources of one module share it. Lower levels know nothing of higher ones.
LEVELS = {
    # core: context and building blocks every engine sees
    # (fractions order the core's own headers: each includes only smaller ones)
    "proxy/proxy": 0,  # legacy umbrella header (metrics, runtime, pools, ...): being split
    "proxy/buf": 0.1,
    "proxy/dgram": 0.1,
    "proxy/reason": 0.2,
    "proxy/metrics": 0.5,
    "proxy/runtime": 0.6,  # the runtime snapshot (config, pools) every engine reads
    "proxy/qsecrets": 0.6,
    "proxy/worker": 0.9,  # worker.h: the worker context; worker.c is placed below (wiring)
    # upstream side and shared secrets: pure or main-thread helpers
    "proxy/health": 1.5,
    "proxy/proxy_proto": 1,
    "proxy/upstream/http1": 1,
    # engines
    "proxy/tcp_relay": 2,
    "proxy/quic": 2,
    "proxy/quic_io": 2,
    "proxy/quic_int": 2,
    # above QUIC: the HTTP/3 application and inter-site forwarding
    "proxy/h3": 3,
    "proxy/h3_upstream": 3,
    "proxy/h3_int": 3,
    "proxy/forward": 3,
    # TCP hand-off (uses the forward peer table)
    "proxy/handoff/conntab": 1,
    "proxy/handoff/ippkt": 1,
    "proxy/handoff/sockdiag": 1.5,
    "proxy/handoff/capture": 1,
    "proxy/handoff/handoff": 4,
    # site: main thread
    "proxy/server": 6,
    "proxy/admin": 6,
    "proxy/anycast": 6,
    # entry points
    "proxy/main": 7,
    "proxy/anyedgectl": 7,
}
# sources whose level differs from their module's header
SOURCE_LEVELS = {"proxy/worker.c": 5}
# modules that form one unit (may include each other's headers)
UNITS = [
    {"proxy/quic", "proxy/quic_io", "proxy/quic_int"},
    {"proxy/h3", "proxy/h3_upstream", "proxy/h3_int"},
    {"proxy/server", "proxy/admin", "proxy/anycast"},
]
SKIP = {"proxy/handoff/orphan.bpf.c"}  # the kernel program: no proxy/ includes

INC = re.compile(r'^\s*#\s*include\s+"(proxy/[^"]+)"', re.M)


def module(path):
    return os.path.splitext(path)[0]


def same_unit(a, b):
    return a == b or any(a in u and b in u for u in UNITS)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    src = os.path.abspath(src)
    bad = []
    files = []
    for dp, _, fns in os.walk(os.path.join(src, "proxy")):
        for fn in fns:
            if fn.endswith((".c", ".h")):
                files.append(os.path.relpath(os.path.join(dp, fn), src))
    for rel in sorted(files):
        if rel in SKIP:
            continue
        mod = module(rel)
        if mod not in LEVELS:
            bad.append("%s: not in the layer table (tests/lint/layers.py): place it" % rel)
            continue
        lvl = SOURCE_LEVELS.get(rel, LEVELS[mod])
        text = open(os.path.join(src, rel), encoding="utf-8", errors="replace").read()
        for inc in INC.findall(text):
            im = module(inc)
            if im not in LEVELS:
                bad.append("%s: includes %s, which is not in the layer table" % (rel, inc))
                continue
            if same_unit(mod, im):
                continue
            if im.endswith("_int"):
                bad.append("%s: includes %s, an internal header of another module" % (rel, inc))
            elif LEVELS[im] >= lvl:
                bad.append("%s (level %g): includes %s (level %g): not below it" %
                           (rel, lvl, inc, LEVELS[im]))
    for b in bad:
        print("[layers] " + b)
    if bad:
        print("[layers] FAIL: %d violation(s) of the layer rule" % len(bad))
        return 1
    print("[layers] %d files of proxy/ follow the layer rule" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
