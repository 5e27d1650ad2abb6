"""The hand-over channel between the workers of one gateway.

With N workers (processes sharing the port), each device belongs to one of them
(store.owners.owner_of): a worker hands a frame of another's device, still undecoded, to its
owner over a Unix datagram socket, and the owner answers the node from the shared port. So one
process holds a device's replay window and writes its frames, wherever the kernel sent the
datagram.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from .sockets import bound_socket

log = logging.getLogger(__name__)

# A datagram handed to its device's worker: the node's host length, port, IPv6 scope id; then
# the host and the datagram as received.
HANDOVER_HEADER = struct.Struct("!BHI")


def handover_address(tag: str, worker: int) -> str:
    """The Unix socket a worker takes handed-over datagrams on: in Linux's abstract namespace,
    so nothing is left on disk when a worker dies."""
    return f"\0fieldnode-gw-{tag}-{worker}"


def pack_handover(data: bytes, addr: Any) -> bytes:
    """The hand-over message for a datagram from the node at addr."""
    host = addr[0].encode()
    scope = addr[3] if len(addr) > 3 else 0
    return HANDOVER_HEADER.pack(len(host), addr[1], scope) + host + data


def unpack_handover(message: bytes) -> tuple[bytes, Any]:
    """(the datagram, the node's address) from a hand-over message."""
    host_len, port, scope = HANDOVER_HEADER.unpack_from(message)
    start = HANDOVER_HEADER.size
    host = message[start:start + host_len].decode()
    addr = (host, port, 0, scope) if ":" in host else (host, port)
    return message[start + host_len:], addr


class PeerLink:
    """The way to one other worker: a Unix datagram socket connected to its hand-over socket.

    Connected, because then poll() says when the peer's queue (net.unix.max_dgram_qlen, often
    only 10 datagrams) has room again; until it has, datagrams wait here, up to MAX_WAITING. A
    datagram that cannot go (peer gone, or too many waiting) is dropped: the node retransmits."""

    MAX_WAITING = 4096

    def __init__(self, loop: asyncio.AbstractEventLoop, address: str) -> None:
        self.loop = loop
        self.address = address
        self.sock: socket.socket | None = None
        self.waiting: collections.deque[bytes] = collections.deque()
        self.waited = 0  # datagrams that found the peer's queue full

    def send(self, data: bytes) -> bool:
        if self.sock is None and not self._connect():
            return False
        if self.waiting:
            if len(self.waiting) >= self.MAX_WAITING:
                return False
            self.waiting.append(data)
            return True
        try:
            self.sock.send(data)
        except BlockingIOError:
            self.waited += 1
            self.waiting.append(data)
            self.loop.add_writer(self.sock, self._flush)
        except OSError:
            self.close()
            return False
        return True

    def _connect(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect(self.address)
        except OSError:  # that worker is not listening (yet, or any more)
            sock.close()
            return False
        self.sock = sock
        return True

    def _flush(self) -> None:
        while self.waiting:
            try:
                self.sock.send(self.waiting[0])
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            self.waiting.popleft()
        self.loop.remove_writer(self.sock)

    def close(self) -> None:
        if self.sock is not None:
            self.loop.remove_writer(self.sock)
            self.sock.close()
            self.sock = None
        self.waiting.clear()



class Handover:
    """A worker's sending end: a PeerLink to each other worker of the group, made when needed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, group: str) -> None:
        self.loop = loop
        self.group = group
        self._peers: dict[int, PeerLink] = {}

    def send(self, owner: int, data: bytes, addr: Any) -> bool:
        """Hands the datagram from addr to worker `owner`; False if it was dropped."""
        peer = self._peers.get(owner)
        if peer is None:
            peer = self._peers[owner] = PeerLink(self.loop, handover_address(self.group, owner))
        return peer.send(pack_handover(data, addr))

    @property
    def waited(self) -> int:
        """Datagrams that found a peer's queue full and waited for room."""
        return sum(peer.waited for peer in self._peers.values())

    def close(self) -> None:
        for peer in self._peers.values():
            peer.close()


class HandedOverProtocol(asyncio.DatagramProtocol):
    """The receiving end: each handed-over datagram goes to deliver(datagram, node address)."""

    def __init__(self, deliver: Callable[[bytes, Any], None]) -> None:
        self.deliver = deliver

    def datagram_received(self, data: bytes, _sender: Any) -> None:
        self.deliver(*unpack_handover(data))

    def error_received(self, exc: Exception) -> None:
        # Only receives (sending is PeerLink's): nothing here is the node's concern.
        log.debug("hand-over socket error: %s", exc)


def bind_receiver(group: str, worker: int) -> socket.socket:
    """The worker's hand-over socket, bound."""
    return bound_socket(socket.AF_UNIX, handover_address(group, worker), False,
                        lambda why: f"worker {worker} cannot take handed-over frames: {why} "
                                    "(is this gateway already running?)")
