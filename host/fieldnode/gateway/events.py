"""What became of each datagram: the events a gateway's subscribers get."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..wire.frame import Frame

OUTCOMES = ("accepted", "duplicate", "retransmission", "rejected", "failed", "ping", "ignored")


@dataclass(slots=True)
class GatewayEvent:
    """What became of one datagram; subscribers get one per datagram.

    outcome: accepted (stored, 2.04), duplicate (already stored, 2.03), retransmission (a message
    id seen before: the cached answer is repeated), rejected (reason says why), failed (the
    store could not commit: 5.03), ping (CoAP ping answered with RST), ignored (ACK/RST from a
    peer). frame is set when the frame verified.
    """
    outcome: str
    source: tuple
    time: float
    reason: str = ""
    code: int | None = None
    frame: Frame | None = None
    node: str = ""
    command_id: int | None = None
    detail: str = ""


def format_source(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

