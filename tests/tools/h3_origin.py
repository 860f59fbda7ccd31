#!/usr/bin/env python3
"""Tiny HTTP/1.1 origin for the QUIC cross-site test (tests/integration/t_quic_shared.sh).

  GET|POST /hdr[?x]   200, body = the request line and headers as received (one per line)
  GET /too-early      425 from the origin itself (must pass through the proxy unchanged)
  GET /slow/N         200, N bytes written 16 KiB at a time, 10 ms apart (~1.6 MB/s)
  GET /count/KEY      200, body = how many requests carried "?KEY" so far (replay probe)
Usage: h3_origin.py PORT
"""
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {}
lock = threading.Lock()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        path, _, query = self.path.partition("?")
        if query:
            with lock:
                counts[query] = counts.get(query, 0) + 1
        if path == "/hdr":
            lines = [self.requestline] + ["%s: %s" % (k, v) for k, v in self.headers.items()]
            self.send(200, ("\n".join(lines) + "\n").encode())
        elif path == "/too-early":
            self.send(425, b"origin says too early\n")
        elif path.startswith("/count/"):
            with lock:
                self.send(200, b"%d" % counts.get(path[7:], 0))
        elif path.startswith("/slow/"):
            total = int(path[6:])
            self.send_response(200)
            self.send_header("Content-Length", str(total))
            self.end_headers()
            chunk = b"s" * 16384
            sent = 0
            try:
                while sent < total:
                    k = min(len(chunk), total - sent)
                    self.wfile.write(chunk[:k])
                    self.wfile.flush()
                    sent += k
                    time.sleep(0.01)
            except OSError:
                pass
        else:
            self.send(404, b"not found\n")

    do_GET = do_POST = do_HEAD = do_OPTIONS = do_PUT = do_DELETE = handle_any


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
