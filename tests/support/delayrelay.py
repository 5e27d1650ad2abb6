"""A UDP relay on loopback that holds every datagram half a round trip each way: a slow link between
a virtual node and the real gateway (bench/update_transfer.py, tests/test_update_heap.py). It can
also be a bad link: datagrams dropped, sent twice, or held back so that later ones overtake them,
each decided by a seeded random generator (tests/test_update_ota.py, the lossy download)."""
from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import Callable


class DelayRelay:
    """UDP between the node and the gateway, each datagram held rtt/2 each way. Each of the node's
    sockets (the uplink's, the download's) gets its own upstream socket, so answers go back to
    the socket that asked."""

    def __init__(self, upstream: tuple[str, int], rtt: float, *, loss: float = 0.0, duplicate: float = 0.0,
                 late: float = 0.0, late_s: float = 0.3, seed: int = 0) -> None:
        """loss, duplicate, late: the share of datagrams (each way) dropped, sent twice, or held
        late_s longer than the rest, so that the datagrams after them arrive first."""
        self.upstream = upstream
        self.half = rtt / 2
        self.loss, self.duplicate, self.late, self.late_s = loss, duplicate, late, late_s
        self.rng = random.Random(seed)
        self.counts = {"relayed": 0, "dropped": 0, "duplicated": 0, "late": 0}
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
        self._forward(lambda: up.sendto(data, self.upstream))

    def _from_gateway(self, up: socket.socket, client: tuple[str, int]) -> None:
        data = up.recv(2048)
        self._forward(lambda: self.sock.sendto(data, client))

    def _forward(self, send: Callable[[], object]) -> None:
        self.counts["relayed"] += 1
        roll = self.rng.random
        if roll() < self.loss:
            self.counts["dropped"] += 1
            return
        delay = self.half
        if roll() < self.late:
            self.counts["late"] += 1
            delay += self.late_s
        self.loop.call_later(delay, send)
        if roll() < self.duplicate:
            self.counts["duplicated"] += 1
            self.loop.call_later(delay, send)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        for s in (self.sock, *self.clients.values()):
            s.close()
        self.loop.close()
