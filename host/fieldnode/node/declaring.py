"""A board's frame format v2 declaration, as its node will make it (firmware/lib/fnode/declare.py):
each sensor's readings in board order, then the node's heap readings. Lets a board be checked
before it is flashed: the node sends its declaration in one frame of at most 512 bytes."""
from __future__ import annotations

from typing import Any

from ..wire.declaration import Reading, encode_declaration
from .drivers import DRIVERS

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
HEALTH = (("heap.free", "B", "node"), ("heap.low", "B", "node"), ("heap.block", "B", "node"))
# The node's frames travel in its 512-byte CoAP buffer (fnode/uplink.py) behind a 13-byte CoAP head.
NODE_FRAME_MAX = 512 - 13
# The envelope around a declaration's payload, at its largest: tag and array (2), the protected
# header (27), the unprotected map (1), the payload's bstr head (3), a 32-byte tag (34, alg 5).
_ENVELOPE_MAX = 2 + 27 + 1 + 3 + 34


def short_name(i: int) -> str:
    n = len(_ALPHABET)
    return _ALPHABET[i] if i < n else _ALPHABET[(i - n) // n] + _ALPHABET[(i - n) % n]


def board_readings(doc: dict[str, Any]) -> list[Reading]:
    """The declaration's readings (sensors whose driver is unknown are left out: the board check
    names them)."""
    rows: list[tuple[str, str, str]] = []
    for sensor in doc.get("sensors", []):
        driver = DRIVERS.get(sensor.get("driver")) if isinstance(sensor, dict) else None
        if driver is None:
            continue
        for (_suffix, unit), name in zip(driver.readings(sensor), driver.reading_names(sensor), strict=True):
            rows.append((name, unit or "", str(sensor.get("name"))))
    rows.extend(HEALTH)
    return [Reading(short_name(i), name, unit, sensor) for i, (name, unit, sensor) in enumerate(rows)]


def declaration_frame_max(doc: dict[str, Any]) -> int:
    """The largest the board's declaration frame can be (with the 32-byte tag)."""
    return _ENVELOPE_MAX + len(encode_declaration(board_readings(doc)))
