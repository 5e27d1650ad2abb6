"""Frame format v2's declaration (docs/frame-format.md, "Declaration"): what each short name in a
node's v2 telemetry stands for (full name, unit, sensor), its id, its parsing with the refusals
(`bad-declaration`), and the book of declarations a receiver knows by (device, id)."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import cbor2

from .frame import STR_ERRORS, FrameRejected

DECLARATION_ID_SIZE = 4
SHORT_NAME_MAX = 2  # characters
DECLARATION_MAX_READINGS = 255


@dataclass(frozen=True, slots=True)
class Reading:
    """One declared reading: what a short name in a v2 telemetry frame stands for."""
    short: str
    name: str
    unit: str  # "" when the reading has no unit
    sensor: str


@dataclass(frozen=True, slots=True)
class Declaration:
    """A node's declaration: its id (first bytes of the SHA-256 of its payload) and readings."""
    did: bytes
    readings: tuple[Reading, ...]
    payload: bytes
    names: dict[str, tuple[str, str]] = field(init=False, compare=False)  # short -> (name, unit)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", {r.short: (r.name, r.unit) for r in self.readings})


def declaration_id(payload: bytes) -> bytes:
    """The id of a declaration: the first 4 bytes of the SHA-256 of its payload bytes as sent."""
    return hashlib.sha256(payload).digest()[:DECLARATION_ID_SIZE]


def encode_declaration(readings: list[Reading] | tuple[Reading, ...]) -> bytes:
    """The declaration payload: an array of [short, name, unit, sensor] arrays (cbor2 writes the
    shortest definite heads, which is the node's encoding)."""
    return cbor2.dumps([[r.short, r.name, r.unit, r.sensor] for r in readings])


def _bad(detail: str) -> FrameRejected:
    return FrameRejected("bad-declaration", detail)


def parse_declaration(payload: bytes) -> Declaration:
    """A Declaration from its payload bytes, or FrameRejected('bad-declaration') naming what is
    wrong (not CBOR, not the shape, a short name used twice, a full name declared twice)."""
    stream = io.BytesIO(payload)
    try:
        doc = cbor2.CBORDecoder(stream, str_errors=STR_ERRORS).decode()
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise _bad(f"payload is not CBOR ({type(exc).__name__})") from None
    if stream.tell() != len(payload):
        raise _bad(f"payload is not CBOR ({len(payload) - stream.tell()} bytes after it)")
    if type(doc) is not list or not 0 < len(doc) <= DECLARATION_MAX_READINGS:
        raise _bad(f"payload is not an array of 1..{DECLARATION_MAX_READINGS} readings")
    readings: list[Reading] = []
    shorts: set[str] = set()
    names: set[str] = set()
    for entry in doc:
        if (type(entry) is not list or len(entry) != 4 or any(type(x) is not str for x in entry)):
            raise _bad("a reading is not [short name, name, unit, sensor], all text")
        short, name, unit, sensor = entry
        if not 1 <= len(short) <= SHORT_NAME_MAX:
            raise _bad(f"short name {short!r} is not 1 or 2 characters")
        if not name:
            raise _bad(f"short name {short!r} has an empty full name")
        if short in shorts:
            raise _bad(f"short name {short!r} is declared twice")
        if name in names:
            raise _bad(f"reading {name!r} is declared twice")
        shorts.add(short)
        names.add(name)
        readings.append(Reading(short, name, unit, sensor))
    return Declaration(declaration_id(payload), tuple(readings), payload)


class DeclarationBook:
    """The declarations a receiver knows, by (device, declaration id). A gateway fills it from its
    database; decode and monitor from the declarations they see (and a gateway database)."""

    def __init__(self) -> None:
        self._known: dict[tuple[bytes, bytes], Declaration] = {}

    def add(self, device: bytes, declaration: Declaration) -> None:
        self._known[(bytes(device), declaration.did)] = declaration

    def get(self, device: bytes, did: bytes) -> Declaration | None:
        return self._known.get((bytes(device), did))

    def __len__(self) -> int:
        return len(self._known)


__all__ = [
    "DECLARATION_ID_SIZE", "Reading", "Declaration", "DeclarationBook", "declaration_id", "encode_declaration",
    "parse_declaration",
]
