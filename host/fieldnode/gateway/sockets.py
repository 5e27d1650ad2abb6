"""Binding the gateway's sockets: the UDP port nodes send to, a worker's hand-over socket."""
from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from ..infra.errors import FieldnodeError


def bound_socket(family: int, address: Any, reuse_port: bool, error: Callable[[str], str]) -> socket.socket:
    """A non-blocking datagram socket bound to address; FieldnodeError(error(reason)) if it cannot be."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # A burst of frames must not overflow the socket while a batch is verified.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise FieldnodeError(error(exc.strerror)) from None
    sock.setblocking(False)
    return sock
