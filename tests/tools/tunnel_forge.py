#!/usr/bin/env python3
"""Forged and malformed tunnel frames (state/tunnel.h) for the route-shift test.

    tunnel_forge.py RING_FILE DEST_IP DEST_PORT
    tunnel_forge.py RING_FILE cid SITE WORKER     prints a QUIC-LB CID (hex) of SITE/WORKER
    tunnel_forge.py RING_FILE handoff DEST_IP DEST_PORT ANYCAST
                                                  TCP hand-off frames ("AEh1"), see below

RING_FILE holds the shared ring as stored in Redis (text format, plain secrets). Sends, to the
forward endpoint DEST, one frame of each kind and prints "<kind> <count>" per kind sent:
  mac      authentic frame with one flipped MAC bit (and one with a flipped datagram byte)
  stale    authentic frame (current tunnel key) stamped 60 s in the past
  site     authentic frame with origin site id 0
  key      frame naming a key id that is not in the ring
  version  frame with version 2
  short    truncated frames (header only, one byte short of the MAC)
  magic    random bytes
The authentic frames carry a short-header QUIC packet with a random DCID, for 192.0.2.10:443.

handoff: sends to the hand-off endpoint DEST (a site's forward port + 1) and prints
"<reason> <count>" per drop reason the receiver must count:
  mac       a segment frame with one flipped MAC bit; one MAC'd with the QUIC tunnel key
  stale     authentic segment frame stamped 60 s in the past
  type      authentic frame of unknown type 9
  body      authentic query frame one byte short
  not_held  authentic segment (TCP ACK, valid checksum) for a 4-tuple no site holds
  syn       authentic segment carrying a SYN for the same tuple
  replay    the not_held frame sent again, byte for byte
Authentic frames come from origin site 7 with fresh sequence numbers.
"""
import hashlib
import hmac
import os
import socket
import struct
import sys
import time


def hkdf(secret, label, n=32):
    prk = hmac.new(b"anyedge-ring", secret, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + label + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:n]


def current_key(ring_text):
    for line in ring_text.splitlines():
        f = line.split()
        if not f or f[0] != "key":
            continue
        kv = dict(x.split("=", 1) for x in f[1:] if "=" in x)
        if kv.get("state") == "current":
            return int(kv["id"]), bytes.fromhex(kv["secret"])
    raise SystemExit("no current key with a plain secret in the ring")


def mapped(ip):
    return b"\x00" * 10 + b"\xff\xff" + socket.inet_aton(ip)


def frame(key, key_id, site=1, ts=None, version=1, dgram=None):
    if ts is None:
        ts = int(time.time() * 1000)
    if dgram is None:
        dgram = bytes([0x40]) + os.urandom(17 + 40)  # short header, random DCID
    hdr = b"AEt1" + bytes([version, 0x05]) + struct.pack(">HQQ", site, key_id, ts)
    hdr += mapped("10.77.1.2") + struct.pack(">H", 40000)
    hdr += mapped("192.0.2.10") + struct.pack(">H", 443)
    hdr += struct.pack(">H", len(dgram))
    body = hdr + dgram
    return body + hmac.new(key, body, hashlib.sha256).digest()[:16]


def csum16(data):
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp4(src, sport, dst, dport, flags, payload=b""):
    """An IPv4 TCP segment with valid checksums."""
    th = struct.pack(">HHIIBBHHH", sport, dport, 12345, 67890, 5 << 4, flags, 65535, 0, 0) + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">BBH", 0, 6, len(th))
    th = th[:16] + struct.pack(">H", csum16(pseudo + th)) + th[18:]
    ih = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(th), 1, 0x4000, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ih = ih[:10] + struct.pack(">H", csum16(ih)) + ih[12:]
    return ih + th


def hframe(key, key_id, ftype, body, site=7, ts=None, seq=None):
    if ts is None:
        ts = int(time.time() * 1000)
    if seq is None:
        hframe.seq += 1
        seq = hframe.seq
    hdr = b"AEh1" + bytes([1, ftype]) + struct.pack(">HQQQH", site, key_id, ts, seq, len(body))
    data = hdr + body
    return data + hmac.new(key, data, hashlib.sha256).digest()[:16]


hframe.seq = int(time.time() * 1e9)


def handoff(ring, dest, anycast):
    kid, secret = current_key(ring)
    key = hkdf(secret, b"tcp-handoff")
    qkey = hkdf(secret, b"tunnel")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = {}

    def send(kind, data):
        s.sendto(data, dest)
        sent[kind] = sent.get(kind, 0) + 1
        time.sleep(0.01)

    ack = tcp4("10.77.1.2", 7, anycast, 443, 0x10, b"x" * 10)  # ACK, port 7: nobody's
    syn = tcp4("10.77.1.2", 7, anycast, 443, 0x02)
    good = hframe(key, kid, 3, ack)
    send("mac", good[:-1] + bytes([good[-1] ^ 1]))
    send("mac", hframe(qkey, kid, 3, ack))
    send("stale", hframe(key, kid, 3, ack, ts=int(time.time() * 1000) - 60000))
    send("type", hframe(key, kid, 9, b"\x00" * 44))
    send("body", hframe(key, kid, 1, b"\x00" * 43))
    send("not_held", good)
    send("syn", hframe(key, kid, 3, syn))
    send("replay", good)
    for k, v in sorted(sent.items()):
        print(k, v)
    # The receiver tells the sender of a segment it does not hold: an authentic ANSWER
    # "not mine" (query id 0) for that tuple, once per not_held segment.
    s.settimeout(1.0)
    told = 0
    try:
        while True:
            data = s.recv(2048)
            body = data[34:-16]
            if (data[:4] == b"AEh1" and data[5] == 2 and len(body) == 45 and body[44] == 0
                    and hmac.compare_digest(hmac.new(key, data[:-16], hashlib.sha256).digest()[:16],
                                            data[-16:])):
                told += 1
    except socket.timeout:
        pass
    print("not_held_answers", told, file=sys.stderr)


def make_cid(kid, secret, site, worker):
    """state/cid.h: epoch|16, then AES-128-ECB(key, site:12 worker:8 zero:4 nonce:104)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = hkdf(secret, b"quic-cid", 16)
    sid = (site << 12 | worker << 4).to_bytes(3, "big")
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    block = enc.update(sid + os.urandom(13)) + enc.finalize()
    return bytes([(kid % 7) << 5 | 16]) + block


def main():
    ring = open(sys.argv[1]).read()
    if sys.argv[2] == "cid":
        kid, secret = current_key(ring)
        print(make_cid(kid, secret, int(sys.argv[3]), int(sys.argv[4])).hex())
        return
    if sys.argv[2] == "handoff":
        handoff(ring, (sys.argv[3], int(sys.argv[4])), sys.argv[5])
        return
    dest = (sys.argv[2], int(sys.argv[3]))
    kid, secret = current_key(ring)
    key = hkdf(secret, b"tunnel")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = {}

    def send(kind, data):
        s.sendto(data, dest)
        sent[kind] = sent.get(kind, 0) + 1

    good = frame(key, kid)
    send("mac", good[:-1] + bytes([good[-1] ^ 1]))
    send("mac", good[:70] + bytes([good[70] ^ 0x80]) + good[71:])
    send("stale", frame(key, kid, ts=int(time.time() * 1000) - 60000))
    send("site", frame(key, kid, site=0))
    send("key", frame(key, kid + 1000))
    send("version", frame(key, kid, version=2))
    send("short", good[:62])
    send("short", good[:-1])
    for _ in range(3):
        send("magic", os.urandom(200))
    for k, v in sorted(sent.items()):
        print(k, v)


if __name__ == "__main__":
    main()
