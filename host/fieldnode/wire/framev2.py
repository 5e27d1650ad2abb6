"""Frame format v2 on the host: compact telemetry (values, building, the v2 rules) and its expansion
to full SenML with the node's declaration (declaration.py).

docs/frame-format.md ("Frame format v2") is the contract. A v2 telemetry frame is the v1 COSE_Mac0
with a declaration id in place of the kind in its protected header, around a SenML-CBOR pack
with no base name, short names and no units. The declaration (frame kind 5, signed like every
frame) maps each short name to a full name, a unit and a sensor; a receiver expands a v2 pack
with it into the v1 pack it stands for, so that everything after verification (store, MQTT,
readers) sees full SenML.
"""
from __future__ import annotations

import math
import struct
from typing import Any

import cbor2

from .frame import (
    COSE_MAC0_TAG, KIND_DECLARATION, LABEL_ALG, LABEL_DECLARATION, LABEL_KID, LABEL_KIND, LABEL_PARTIAL_IV,
    SENML_BN, SENML_BT, SENML_ERR, SENML_N, SENML_T, SENML_U, SENML_V, SENML_VB, SENML_VS, TAG_LENGTH, Frame,
    FrameRejected, compute_tag, decode_payload, device_base_name, is_number, validate_pack,
)
from .declaration import (  # noqa: F401  (re-exported: the v2 API in one import)
    DECLARATION_ID_SIZE, Declaration, DeclarationBook, Reading, declaration_id, encode_declaration, parse_declaration,
)

_INT_LIMIT = 1 << 32  # an integral value below this in magnitude goes as a CBOR integer (<= 5 bytes)
_V2_FIELDS = frozenset((SENML_BT, SENML_N, SENML_V, SENML_VS, SENML_VB, SENML_T, SENML_ERR))


# -- values -------------------------------------------------------------------------------------

def node_float(value: float) -> float:
    """The value as the node holds it: ESP32 MicroPython floats are single precision."""
    return struct.unpack(">f", struct.pack(">f", value))[0]


def encode_value(value: int | float) -> bytes:
    """The shortest CBOR encoding that holds the node's value exactly: an integer when integral
    (and within 32 bits: beyond, float32 is shorter), else half precision when it holds the value,
    else single precision. Integers as given go as the shortest CBOR integer."""
    if type(value) is int:
        return cbor2.dumps(value)
    f = node_float(value)
    if math.isfinite(f) and f.is_integer() and abs(f) < _INT_LIMIT:
        return cbor2.dumps(int(f))
    try:
        half = struct.pack(">e", f)
    except OverflowError:
        half = None
    if half is not None and (struct.unpack(">e", half)[0] == f or (math.isnan(f) and half[:2] == b"\x7e\x00")):
        return b"\xf9" + half
    return b"\xfa" + struct.pack(">f", f)


# -- frames -------------------------------------------------------------------------------------

def _envelope(key: bytes, alg: int, protected: bytes, payload: bytes) -> bytes:
    tag = compute_tag(key, alg, protected, payload)
    return cbor2.dumps(cbor2.CBORTag(COSE_MAC0_TAG, [protected, {}, payload, tag]))


def _check(alg: int, kid: bytes, counter: int) -> None:
    if alg not in TAG_LENGTH:
        raise ValueError(f"alg {alg} is not 4 or 5")
    if len(kid) != 8:
        raise ValueError("kid must be 8 bytes")
    if not 0 < counter < 1 << 32:
        raise ValueError("counter must be 1..2**32-1")


def build_declaration(key: bytes, kid: bytes, alg: int, counter: int,
                      readings: list[Reading] | tuple[Reading, ...]) -> tuple[bytes, bytes]:
    """(frame, declaration id) of a signed declaration (kind 5, the v1 protected header)."""
    _check(alg, kid, counter)
    protected = cbor2.dumps({LABEL_ALG: alg, LABEL_KID: kid, LABEL_PARTIAL_IV: counter.to_bytes(4, "big"),
                             LABEL_KIND: KIND_DECLARATION})
    payload = encode_declaration(readings)
    return _envelope(key, alg, protected, payload), declaration_id(payload)


def v2_protected(alg: int, kid: bytes, counter: int, did: bytes) -> bytes:
    """The v2 telemetry protected header: alg, kid, 4-byte Partial IV, declaration id."""
    return cbor2.dumps({LABEL_ALG: alg, LABEL_KID: kid, LABEL_PARTIAL_IV: counter.to_bytes(4, "big"),
                        LABEL_DECLARATION: did})


def encode_pack_v2(bt: int, records: list[dict]) -> bytes:
    """A v2 SenML-CBOR pack: records are dicts with n (the short name) and one of v/vs/vb/err,
    optional t; values in the shortest exact encoding (encode_value). Key order as the node's."""
    out = bytearray(_head(0x80, len(records)))
    for i, rec in enumerate(records):
        items = []
        if i == 0:
            items.append(cbor2.dumps(SENML_BT) + cbor2.dumps(bt))
        items.append(b"\x00" + cbor2.dumps(rec["n"]))
        if "v" in rec:
            items.append(b"\x02" + encode_value(rec["v"]))
        elif "vs" in rec:
            items.append(b"\x03" + cbor2.dumps(rec["vs"]))
        elif "vb" in rec:
            items.append(b"\x04" + cbor2.dumps(rec["vb"]))
        else:
            items.append(cbor2.dumps(SENML_ERR) + cbor2.dumps(rec["err"]))
        if "t" in rec:
            items.append(b"\x06" + encode_value(rec["t"]))
        out += _head(0xA0, len(items)) + b"".join(items)
    return bytes(out)


def _head(major: int, n: int) -> bytes:
    """The shortest head of an array (0x80) or map (0xa0) of n items."""
    if n < 24:
        return bytes((major | n,))
    return bytes((major | 24, n)) if n < 0x100 else bytes((major | 25,)) + struct.pack(">H", n)


def build_telemetry_v2(key: bytes, kid: bytes, alg: int, counter: int, did: bytes, bt: int,
                       records: list[dict]) -> bytes:
    """A signed v2 telemetry frame (see encode_pack_v2 for records)."""
    _check(alg, kid, counter)
    if len(did) != DECLARATION_ID_SIZE:
        raise ValueError(f"declaration id must be {DECLARATION_ID_SIZE} bytes")
    return _envelope(key, alg, v2_protected(alg, kid, counter, did), encode_pack_v2(bt, records))


# -- receiving ----------------------------------------------------------------------------------

def validate_pack_v2(pack: Any) -> None:
    """FrameRejected('bad-senml') unless pack is a v2 telemetry pack: a non-empty array of maps,
    bt (a number) in the first record only, no bn, no u, every record a text n and exactly one of
    v/vs/vb or an err. The expanded pack is checked again by v1's rules (frame.validate_pack)."""
    if type(pack) is not list or not pack:
        raise FrameRejected("bad-senml", "payload is not a non-empty array")
    for i, rec in enumerate(pack):
        if type(rec) is not dict:
            raise FrameRejected("bad-senml", "record is not a map")
        name = rec.get(SENML_N)
        if type(name) is not str:
            raise FrameRejected("bad-senml", "record without a text name")
        if SENML_BN in rec:
            raise FrameRejected("bad-senml", f"{name}: v2 has no bn (the key id names the device)")
        if SENML_U in rec:
            raise FrameRejected("bad-senml", f"{name}: v2 has no u (units come from the declaration)")
        if (SENML_BT in rec) != (i == 0):
            raise FrameRejected("bad-senml", "bt in the first record, and only there")
        unknown = [k for k in rec if k not in _V2_FIELDS]
        if unknown:
            raise FrameRejected("bad-senml", f"{name}: unknown fields")
    if not is_number(pack[0][SENML_BT]):
        raise FrameRejected("bad-senml", "bt must be a 64-bit integer or a finite float")


def expand(pack: Any, declaration: Declaration, base_name: str) -> list[dict]:
    """The full SenML pack a v2 pack stands for: bn restored, short names replaced by the declared
    names, units added; then checked by v1's rules (frame.validate_pack: value types, fields,
    times). FrameRejected('bad-senml') for a pack that breaks the v2 rules (validate_pack_v2 names
    the problem) or that names a reading the declaration lacks (naming it)."""
    if type(pack) is not list or not pack:
        validate_pack_v2(pack)
    names = declaration.names
    out: list[dict] = []
    first = True
    for rec in pack:
        # What v1's check cannot see once expanded: a bn or u of the node's own, bt out of place.
        if type(rec) is not dict or SENML_BN in rec or SENML_U in rec or (SENML_BT in rec) is not first:
            validate_pack_v2(pack)
        short = rec.get(SENML_N)
        declared = names.get(short) if type(short) is str else None
        if declared is None:
            validate_pack_v2(pack)
            raise FrameRejected("bad-senml", f"{short}: not in declaration {declaration.did.hex()}")
        # The record's own fields as they are (a copy: C speed), its name replaced, its unit added.
        full: dict[Any, Any] = {SENML_BN: base_name, **rec} if first else rec.copy()
        full[SENML_N] = declared[0]
        if declared[1]:
            full[SENML_U] = declared[1]
        out.append(full)
        first = False
    if not is_number(pack[0][SENML_BT]):
        validate_pack_v2(pack)  # says so in v2's terms (v1's would ask for a bn too)
    validate_pack(out)
    return out


def verified_v2(frame: Frame, book: DeclarationBook | None) -> Frame:
    """Completes a v2 frame whose envelope and MAC are checked (frame.pack empty): a declaration is
    parsed into frame.declared; a telemetry pack is checked and expanded with its declaration from
    book, or kept with short names and marked undeclared when the book lacks it."""
    if frame.declaration is None:  # kind 5: a declaration
        frame.declared = parse_declaration(frame.payload)
        frame.declaration = frame.declared.did
        return frame
    pack = decode_payload(frame.payload)
    declaration = book.get(frame.device, frame.declaration) if book is not None else None
    if declaration is None:
        validate_pack_v2(pack)
        frame.pack = pack
        frame.undeclared = True
        return frame
    device = frame.device
    bn = _base_names.get(device)
    if bn is None:
        if len(_base_names) >= 65536:
            _base_names.clear()
        bn = _base_names[device] = device_base_name(device)
    frame.pack = expand(pack, declaration, bn)
    return frame


_base_names: dict[bytes, str] = {}  # device -> its base name: a string built once, not per frame


__all__ = [
    "LABEL_DECLARATION", "DECLARATION_ID_SIZE", "KIND_DECLARATION", "Reading", "Declaration", "declaration_id",
    "encode_declaration", "parse_declaration", "encode_value", "node_float", "build_declaration",
    "build_telemetry_v2", "encode_pack_v2", "v2_protected", "validate_pack_v2", "expand", "DeclarationBook",
    "verified_v2",
]
