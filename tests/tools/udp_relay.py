#!/usr/bin/env python3
"""UDP relay between a QUIC client and anyedge sites (tests/integration/t_quic_shared.sh).

Usage: udp_relay.py LISTEN_PORT TARGET_PORT DIR SECONDS [options]
  --switch-after BYTES --switch-to PORT
        once BYTES server->client bytes have been relayed, send the client's datagrams to PORT
        instead (another site) and relay only that site's answers; the time is written to
        DIR/switched (milliseconds since the epoch)
  --blackhole  never forward server->client datagrams (an address that does not exist)
  --record N   save the client's first N datagrams as DIR/c2s.<i>
Always writes DIR/stats ("c2s_bytes c2s_dgrams s2c_bytes s2c_dgrams s2c_before_2nd") at exit,
which is after SECONDS at most. One client only (the first source address seen).
"""
import argparse
import os
import select
import socket
import time

ap = argparse.ArgumentParser()
ap.add_argument("listen", type=int)
ap.add_argument("target", type=int)
ap.add_argument("dir")
ap.add_argument("seconds", type=float)
ap.add_argument("--switch-after", type=int, default=0)
ap.add_argument("--switch-to", type=int, default=0)
ap.add_argument("--blackhole", action="store_true")
ap.add_argument("--record", type=int, default=0)
a = ap.parse_args()

front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
front.bind(("127.0.0.1", a.listen))
back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
back.bind(("127.0.0.1", 0))
target = ("127.0.0.1", a.target)
client = None
c2s = [0, 0]
s2c = [0, 0]
s2c_before_2nd = 0
switched = False
end = time.time() + a.seconds
last_write = 0.0


def write_stats():
    with open(os.path.join(a.dir, "stats.tmp"), "w") as f:
        f.write("%d %d %d %d %d\n" % (c2s[0], c2s[1], s2c[0], s2c[1], s2c_before_2nd))
    os.rename(os.path.join(a.dir, "stats.tmp"), os.path.join(a.dir, "stats"))


with open(os.path.join(a.dir, "ready"), "w") as f:
    f.write("1\n")
while time.time() < end:
    r, _, _ = select.select([front, back], [], [], 0.05)
    for s in r:
        data, addr = s.recvfrom(65536)
        if s is front:
            if client is None:
                client = addr
            if addr != client:
                continue
            if c2s[1] < a.record:
                with open(os.path.join(a.dir, "c2s.%d" % c2s[1]), "wb") as f:
                    f.write(data)
            c2s[0] += len(data)
            c2s[1] += 1
            back.sendto(data, target)
        else:
            if addr != target or client is None:
                continue  # a site we switched away from: as if it were down
            s2c[0] += len(data)
            s2c[1] += 1
            if c2s[1] < 2:
                s2c_before_2nd += len(data)
            if not a.blackhole:
                front.sendto(data, client)
            if a.switch_after and not switched and s2c[0] >= a.switch_after:
                switched = True
                target = ("127.0.0.1", a.switch_to)
                with open(os.path.join(a.dir, "switched"), "w") as f:
                    f.write("%d\n" % int(time.time() * 1000))
    if time.time() - last_write > 0.2:
        write_stats()
        last_write = time.time()
write_stats()
