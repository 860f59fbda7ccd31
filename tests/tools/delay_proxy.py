#!/usr/bin/env python3
"""A proxy that adds a fixed one-way delay in each direction (tests/bench/zero_rtt.sh).

Usage: delay_proxy.py udp|tcp LISTEN_PORT TARGET_PORT DELAY_MS SECONDS
  udp: relays datagrams between one client (the first source address seen... each new source
       gets its own upstream socket) and 127.0.0.1:TARGET_PORT
  tcp: accepts connections on 127.0.0.1:LISTEN_PORT, one upstream connection each
Every byte or datagram is held DELAY_MS milliseconds before it is passed on (so the round trip
grows by twice DELAY_MS); order is kept. Exits after SECONDS. Loopback only.
"""
import asyncio
import sys


def main():
    proto, listen, target, delay_ms, secs = sys.argv[1:6]
    listen, target = int(listen), int(target)
    delay = float(delay_ms) / 1000.0
    asyncio.run(run(proto, listen, target, delay, float(secs)))


async def run(proto, listen, target, delay, secs):
    loop = asyncio.get_running_loop()
    if proto == "tcp":
        async def pipe(reader, writer):
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(creader, cwriter):
            try:
                ureader, uwriter = await asyncio.open_connection("127.0.0.1", target)
            except OSError:
                cwriter.close()
                return
            # Delays overlap: each direction is one ordered pipe, each chunk waits `delay`
            # after it was read (a stream of small requests sees the delay once each).
            await asyncio.gather(pipe(creader, uwriter), pipe(ureader, cwriter))

        server = await asyncio.start_server(handle, "127.0.0.1", listen)
        async with server:
            await asyncio.sleep(secs)
        return

    class Back(asyncio.DatagramProtocol):
        def __init__(self, front, client):
            self.front, self.client = front, client

        def datagram_received(self, data, addr):
            loop.call_later(delay, self.front.sendto, data, self.client)

    class Front(asyncio.DatagramProtocol):
        def __init__(self):
            self.backs = {}

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            back = self.backs.get(addr)
            if back is None:
                self.backs[addr] = back = []
                loop.create_task(self.open_back(addr, back, data))
                return
            if isinstance(back, list):
                back.append(data)
                return
            loop.call_later(delay, back.sendto, data)

        async def open_back(self, addr, pending, first):
            t, _ = await loop.create_datagram_endpoint(
                lambda: Back(self.transport, addr), remote_addr=("127.0.0.1", target))
            self.backs[addr] = t
            for d in [first] + pending:
                loop.call_later(delay, t.sendto, d)

    await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", listen))
    await asyncio.sleep(secs)


if __name__ == "__main__":
    main()
