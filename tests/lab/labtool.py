#!/usr/bin/env python3
"""Helpers for tests/lab/lab (the netns lab scenarios). Standard library only.

  labtool.py tcp --addr A --clients N --interval S --duration S --events FILE --summary FILE
      N TLS-over-TCP clients (threads), each keeping one keep-alive connection and sending
      "GET /client" every S seconds. The answer names the origin (X-Origin header) and the site
      (the body starts with the upstream connection's source address, the site's core-facing
      address 10.77.2N.2). On a connection error the client reconnects at once with its TLS
      session (ticket) and retries the request once: that is how HTTP clients treat a reset
      keep-alive connection for an idempotent request. A request counts as FAILED only if that
      retry fails too (or no answer within the timeout); every broken connection counts as a
      reset; every reconnection records whether the session was resumed ("Reused").
      Events (one line each, "ms kind client ..."): req ok SITE ORIGIN | req fail REASON |
      reset REASON port=P | conn SITE reused=0|1 port=P (P: the connection's local port, to
      find its flow 10.77.1.2:P in the sites' logs).  Summary: JSON per client.
  labtool.py timeline --t0 MS --events FILE --samples FILE --sites N --out CSV [--h3 FILE]
      per-second CSV: requests ok/failed, resets, resumptions (TCP Reused reconnects), H3
      completions/failures, and per site the deltas of its /metrics counters and whether the
      router routes the anycast /32 to it; then, per site, its TCP hand-off counters (flows
      it found an owner for, segments it injected, segments it gave back to its kernel).
"""
import argparse
import json
import socket
import ssl
import sys
import threading
import time


def now_ms():
    return int(time.time() * 1000)


def site_of(body):
    ip = body.split(" ", 1)[0]
    parts = ip.split(".")
    if len(parts) == 4 and parts[0] == "10" and parts[1] == "77" and parts[2].startswith("2"):
        return "site" + parts[2][1:]
    return "?"


class Client(threading.Thread):
    def __init__(self, idx, a, ev, lock):
        super().__init__(daemon=True)
        self.idx, self.a, self.ev, self.lock = idx, a, ev, lock
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        if a.tls12:
            self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.session = None
        self.sock = None
        self.port = 0
        self.buf = b""
        self.st = {"client": idx, "ok": 0, "failed": 0, "resets": 0, "conns": 0, "reused": 0,
                   "origins": [], "sites": [], "first_origin": None, "last_site": None,
                   "gaps_ms": [], "reconnects_after_first": 0, "reused_after_first": 0,
                   "origin_changes": 0}
        self.fail_since = None

    def log(self, *parts):
        line = "%d %s %d %s\n" % (now_ms(), parts[0], self.idx, " ".join(str(p) for p in parts[1:]))
        with self.lock:
            self.ev.write(line)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock, self.buf, self.port = None, b"", 0

    def connect(self):
        raw = socket.create_connection((self.a.addr, 443), timeout=self.a.timeout)
        s = self.ctx.wrap_socket(raw, server_hostname="localhost", session=self.session)
        s.settimeout(self.a.timeout)
        self.sock = s
        self.port = s.getsockname()[1]
        self.st["conns"] += 1
        reused = 1 if s.session_reused else 0
        self.st["reused"] += reused
        if self.st["conns"] > 1:
            self.st["reconnects_after_first"] += 1
            self.st["reused_after_first"] += reused
        return reused

    def recv_more(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("closed by peer")
        self.buf += d

    def get(self):
        self.sock.sendall(b"GET /client HTTP/1.1\r\nHost: localhost\r\n\r\n")
        while b"\r\n\r\n" not in self.buf:
            self.recv_more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split()[1]
        clen, origin = 0, "?"
        for l in lines[1:]:
            k, _, v = l.partition(":")
            k = k.strip().lower()
            if k == "content-length":
                clen = int(v)
            elif k == "x-origin":
                origin = v.strip()
        while len(self.buf) < clen:
            self.recv_more()
        body, self.buf = self.buf[:clen], self.buf[clen:]
        if status != "200":
            raise RuntimeError("status " + status)
        # the ticket arrives after the handshake (TLS 1.3): keep the newest session
        if self.sock.session is not None:
            self.session = self.sock.session
        return site_of(body.decode("latin-1")), origin

    def one(self, pending_conn):
        if self.sock is None:
            reused = self.connect()
            pending_conn.append(reused)
        site, origin = self.get()
        for reused in pending_conn:
            self.log("conn", site, "reused=%d" % reused, "port=%d" % self.port)
        pending_conn.clear()
        return site, origin

    def request(self):
        pending = []
        for attempt in (0, 1):
            try:
                site, origin = self.one(pending)
                st = self.st
                st["ok"] += 1
                if st["first_origin"] is None:
                    st["first_origin"] = origin
                if st["origins"] and st["origins"][-1] != origin:
                    st["origin_changes"] += 1
                if not st["origins"] or st["origins"][-1] != origin:
                    st["origins"].append(origin)
                if not st["sites"] or st["sites"][-1] != site:
                    st["sites"].append(site)
                st["last_site"] = site
                if self.fail_since is not None:
                    st["gaps_ms"].append(now_ms() - self.fail_since)
                    self.fail_since = None
                self.log("req", "ok", site, origin)
                return
            except Exception as e:  # any error: the connection is gone
                reason = type(e).__name__
                port = self.port
                self.close()
                pending.clear()
                if self.fail_since is None:
                    self.fail_since = now_ms()
                if attempt == 0:
                    self.st["resets"] += 1
                    self.log("reset", reason, "port=%d" % port)
                else:
                    self.st["failed"] += 1
                    self.log("req", "fail", reason)

    def run(self):
        end = time.monotonic() + self.a.duration
        nxt = time.monotonic()
        while time.monotonic() < end:
            self.request()
            nxt += self.a.interval
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
            else:
                nxt = time.monotonic()
        self.close()


def cmd_tcp(a):
    lock = threading.Lock()
    with open(a.events, "w", buffering=1) as ev:
        cs = [Client(i, a, ev, lock) for i in range(a.clients)]
        for c in cs:
            c.start()
            time.sleep(a.stagger)
        for c in cs:
            c.join(a.duration + 3 * a.timeout + 5)
    with open(a.summary, "w") as f:
        json.dump([c.st for c in cs], f)


def cmd_timeline(a):
    t0 = a.t0
    rows = {}

    def row(ms):
        sec = (ms - t0) // 1000
        if sec not in rows:
            rows[sec] = {"ok": 0, "failed": 0, "resets": 0, "resumed": 0, "h3_ok": 0, "h3_failed": 0}
        return rows[sec]

    with open(a.events) as f:
        for line in f:
            p = line.split()
            if len(p) < 3:
                continue
            ms, kind = int(p[0]), p[1]
            r = row(ms)
            if kind == "req":
                r["ok" if p[3] == "ok" else "failed"] += 1
            elif kind == "reset":
                r["resets"] += 1
            elif kind == "conn" and p[4] == "reused=1":
                r["resumed"] += 1
    if a.h3:
        with open(a.h3) as f:
            for line in f:
                p = line.split()  # ms ok|fail
                if len(p) >= 2:
                    row(int(p[0]))["h3_ok" if p[1] == "ok" else "h3_failed"] += 1
    # samples: "ms siteN metric value" or "ms router paths site1,site2"
    metrics = ["quic_datagrams_in_total", "connections_accepted_total",
               "quic_connections_opened_total", "quic_stateless_resets_total",
               "forward_out_total", "forward_in_total", "handshakes_resumed"]
    # after every site's columns above, so that the plot's column numbers stay as they were
    ho_metrics = ["tcp_handoff_flows_moved_total", "tcp_handoff_injected_total",
                  "tcp_handoff_returned_total"]
    last = {}
    per = {}
    routes = {}
    with open(a.samples) as f:
        for line in f:
            p = line.split()
            if len(p) < 4:
                continue
            ms, who, name, val = int(p[0]), p[1], p[2], p[3]
            sec = (ms - t0) // 1000
            if who == "router":
                routes[sec] = val.split(",") if val != "none" else []
                continue
            v = float(val)
            key = (who, name)
            # counters start at 0 with the process: a site first seen later (started during
            # the scenario) or restarted (value went down) counts from 0
            if key in last or sec > 1:
                prev = last.get(key, 0.0)
                d = per.setdefault(sec, {})
                d[key] = d.get(key, 0) + (v - prev if v >= prev else v)
            last[key] = v
    secs = sorted(set(rows) | set(per) | set(routes))
    if not secs:
        secs = [0]
    lo, hi = max(0, min(secs)), max(secs)
    sites = ["site%d" % n for n in range(1, a.sites + 1)]
    hdr = ["t", "ok", "failed", "resets", "resumed", "h3_ok", "h3_failed"]
    for s in sites:
        hdr += [s + "_route", s + "_pkts_in", s + "_tcp_accepted", s + "_quic_opened",
                s + "_resets_sent", s + "_fwd_out", s + "_fwd_in", s + "_resumed_hs"]
    for s in sites:
        hdr += [s + "_ho_moved", s + "_ho_injected", s + "_ho_returned"]
    cur_routes = []
    with open(a.out, "w") as f:
        f.write(",".join(hdr) + "\n")
        for sec in range(lo, hi + 1):
            r = rows.get(sec, {"ok": 0, "failed": 0, "resets": 0, "resumed": 0, "h3_ok": 0, "h3_failed": 0})
            if sec in routes:
                cur_routes = routes[sec]
            out = [sec, r["ok"], r["failed"], r["resets"], r["resumed"], r["h3_ok"], r["h3_failed"]]
            d = per.get(sec, {})
            for s in sites:
                out.append(1 if s in cur_routes else 0)
                for m in metrics:
                    out.append(int(d.get((s, m), 0)))
            for s in sites:
                for m in ho_metrics:
                    out.append(int(d.get((s, m), 0)))
            f.write(",".join(str(x) for x in out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tcp")
    t.add_argument("--addr", default="192.0.2.10")
    t.add_argument("--clients", type=int, default=20)
    t.add_argument("--interval", type=float, default=0.2)
    t.add_argument("--duration", type=float, default=20)
    t.add_argument("--timeout", type=float, default=3)
    t.add_argument("--stagger", type=float, default=0.02)
    t.add_argument("--tls12", action="store_true")
    t.add_argument("--events", required=True)
    t.add_argument("--summary", required=True)
    m = sub.add_parser("timeline")
    m.add_argument("--t0", type=int, required=True)
    m.add_argument("--events", required=True)
    m.add_argument("--samples", required=True)
    m.add_argument("--sites", type=int, required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--h3")
    a = ap.parse_args()
    {"tcp": cmd_tcp, "timeline": cmd_timeline}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
