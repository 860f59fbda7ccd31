#!/usr/bin/env python3
"""The layer rule of proxy/ (docs/architecture.md, "Layers of proxy/"), checked over #include lines.

proxy/ has one folder per layer; every folder has a level (FOLDERS below; a few modules carry
their own level, MODULES). A file may include
  - a proxy/ header of a lower level, or
  - any header of its own folder, including the folder's internal headers (*_int.h).
Upward calls go through hook structs and ops tables, never through an include. Exit status 1 and
one line per violation when a file includes a header of its own level from another folder or of
a higher level, an internal header of another folder, or when a file lies in a folder missing
from the table (a new folder must be placed).

Usage: tests/lint/layers.py [SRCDIR]   (ctest: lint.layers)
"""
import os
import re
import sys

# folder -> level. Lower levels know nothing of higher ones.
FOLDERS = {
    "proxy/core": 0,  # buffers, datagram descriptor, reasons, metrics, runtime, worker context
    "proxy/upstream": 1,  # PROXY encoder, health checks, HTTP/1.1 response parser (pure)
    "proxy/tcp": 2,  # the TLS <-> TCP relay
    "proxy/quic": 2,  # QUIC endpoint and connections (hooks + application ops upward)
    "proxy/h3": 3,  # the HTTP/3 application (implements the QUIC application ops)
    "proxy/forward": 3,  # inter-site QUIC forwarding (registers the QUIC hooks)
    "proxy/handoff": 4,  # TCP hand-off engine (uses the forward peer table)
    "proxy/worker": 5,  # one worker thread: wires the engines
    "proxy/site": 6,  # main thread: start-up, keys, anycast, admin
    "proxy/ctl": 7,  # anyedgectl
    "proxy": 7,  # main.c
}
# modules (path without extension) whose level differs from their folder's: the hand-off's
# building blocks sit low so the TCP relay can register connections.
MODULES = {
    "proxy/handoff/conntab": 1,
    "proxy/handoff/ippkt": 1,
    "proxy/handoff/capture": 1,
    "proxy/handoff/sockdiag": 1,
}
SKIP = {"proxy/handoff/orphan.bpf.c"}  # the kernel program: no proxy/ includes

INC = re.compile(r'^\s*#\s*include\s+"(proxy/[^"]+)"', re.M)


def module(path):
    return os.path.splitext(path)[0]


def folder(path):
    return os.path.dirname(path)


def level(path):
    """The level of a file or header, or None when its folder is not placed."""
    m = module(path)
    if m in MODULES:
        return MODULES[m]
    return FOLDERS.get(folder(path))


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
        lvl = level(rel)
        if lvl is None:
            bad.append("%s: its folder is not in the layer table (tests/lint/layers.py): place it" % rel)
            continue
        text = open(os.path.join(src, rel), encoding="utf-8", errors="replace").read()
        for inc in INC.findall(text):
            il = level(inc)
            if il is None:
                bad.append("%s: includes %s, whose folder is not in the layer table" % (rel, inc))
            elif not os.path.exists(os.path.join(src, inc)):
                bad.append("%s: includes %s, which does not exist" % (rel, inc))
            elif folder(inc) == folder(rel):
                continue
            elif module(inc).endswith("_int"):
                bad.append("%s: includes %s, an internal header of another folder" % (rel, inc))
            elif il >= lvl:
                bad.append("%s (level %g): includes %s (level %g): not below it" % (rel, lvl, inc, il))
    for b in bad:
        print("[layers] " + b)
    if bad:
        print("[layers] FAIL: %d violation(s) of the layer rule" % len(bad))
        return 1
    print("[layers] %d files of proxy/ follow the layer rule" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
