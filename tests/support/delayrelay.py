"""A UDP relay on loopback that holds every datagram half a round trip each way: a slow link between
a virtual node and the real gateway (bench/update_transfer.py, tests/test_update_heap.py). It can
also be a bad link: datagrams dropped, sent twice, or held back so that later ones overtake them,
each decided by a seeded random generator (tests/test_update_ota.py, the lossy download)."""
from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import socket
import threading
import time
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
        # Datagrams wait in a heap for a sender thread that sleeps until each is due: asyncio's
        # timers wake through epoll, in whole milliseconds rounded up, which made every hop up to
        # a millisecond longer than asked (2 ms a round trip of 20: a tenth of the figure measured).
        self._due: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._closing = False
        self.lateness: list[float] = []  # how long after its time each datagram went: the relay's error
        self._sender = threading.Thread(target=self._send_due, daemon=True)
        self._sender.start()
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
        self._later(delay, send)
        if roll() < self.duplicate:
            self.counts["duplicated"] += 1
            self._later(delay, send)

    def _later(self, delay: float, send: Callable[[], object]) -> None:
        with self._cv:
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._seq), send))
            self._cv.notify()

    def _send_due(self) -> None:
        with self._cv:
            while not self._closing:
                if not self._due:
                    self._cv.wait()
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                due, _, send = heapq.heappop(self._due)
                self.lateness.append(time.monotonic() - due)
                try:
                    send()
                except OSError:  # a socket closed under it at the end
                    pass

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._sender.join(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        for s in (self.sock, *self.clients.values()):
            s.close()
        self.loop.close()
