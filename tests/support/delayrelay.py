"""A UDP relay on loopback that holds every datagram half a round trip each way: a slow link between
a virtual node and the real gateway (bench/update_transfer.py, tests/test_update_heap.py)."""
from __future__ import annotations

import asyncio
import socket
import threading


class DelayRelay:
    """UDP between the node and the gateway, each datagram held rtt/2 each way. Each of the node's
    sockets (the uplink's, the download's) gets its own upstream socket, so answers go back to
    the socket that asked."""

    def __init__(self, upstream: tuple[str, int], rtt: float) -> None:
        self.upstream = upstream
        self.half = rtt / 2
        self.clients: dict[tuple[str, int], socket.socket] = {}
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.sock.getsockname()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.loop.call_soon_threadsafe(self.loop.add_reader, self.sock.fileno(), self._from_node)

    def _from_node(self) -> None:
        data, addr = self.sock.recvfrom(2048)
        up = self.clients.get(addr)
        if up is None:
            up = self.clients[addr] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            up.bind(("127.0.0.1", 0))
            self.loop.add_reader(up.fileno(), self._from_gateway, up, addr)
        self.loop.call_later(self.half, up.sendto, data, self.upstream)

    def _from_gateway(self, up: socket.socket, client: tuple[str, int]) -> None:
        data = up.recv(2048)
        self.loop.call_later(self.half, self.sock.sendto, data, client)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        for s in (self.sock, *self.clients.values()):
            s.close()
        self.loop.close()
