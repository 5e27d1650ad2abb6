"""A reference verdict on a frame, written from docs/frame-format.md, RFC 9052 (COSE_Mac0) and
RFC 8428 (SenML) alone: cbor2 decodes, hmac computes; nothing comes from fieldnode, so a bug in
the gateway's verify path cannot also sit here. Slow and plain on purpose.

    verdict(table, data) -> ("ok", pack) or ("rejected", reason)
    senml_verdict(pack)  -> "ok" or "bad-senml"

Where a frame has several faults, the reason is that of the first check in the order of the
spec's rejection table (oversized, bad-cbor, not-cose-mac0, bad-header, unsupported-alg,
unknown-kid, bad-mac, bad-senml, device-mismatch), the header read label by label (alg first:
an integer alg other than 4 or 5 is unsupported-alg before kid, counter and kind are looked at).
Replay and wrong-kind are the receiver's state and policy, not the frame's: left out here (the
tests give the gateway's Verifier no replay window and every kind).
"""
from __future__ import annotations

import hashlib
import hmac
import io
import math
from typing import Any

import cbor2

MAX_FRAME = 1024  # frame-format.md, "oversized"
COSE_MAC0 = 17  # RFC 9052 §4.2: the CBOR tag of COSE_Mac0
# RFC 9052 §3.1 common header labels; -65537 is ours (frame-format.md, a private-use label)
ALG, KID, PARTIAL_IV, KIND = 1, 4, 6, -65537
TAG_BYTES = {4: 8, 5: 32}  # RFC 9053 §3.1: HMAC 256/64 and HMAC 256/256
KINDS = range(6)  # telemetry, event, boot, command, ack, declaration (v2; its payload is not
# SenML: tests/test_frame_v2.py checks it)

# RFC 8428 §6, Table 4: the SenML CBOR labels.
BVER, BN, BT, BU, BV, BS = -1, -2, -3, -4, -5, -6
N, U, V, VS, VB, S, T, UT, VD = 0, 1, 2, 3, 4, 5, 6, 7, 8
ERR = "err"  # our extension field (frame-format.md), a text label as RFC 8428 §12.2 allows
# What a v1 record may hold: bn and bt (first record only), n, u, one value or err, t. RFC 8428's
# other fields (bver, bu, bv, bs, s, ut, vd) are not part of v1: "no other fields".
ALLOWED_FIRST = {BN, BT, N, U, V, VS, VB, T, ERR}
ALLOWED = {N, U, V, VS, VB, T, ERR}

INT64 = (-2 ** 63, 2 ** 63 - 1)


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def number(x: Any) -> bool:
    """A number as the spec takes one: an integer within 64 bits signed, or a finite float.
    (A CBOR boolean is not a number: RFC 8949 major type 7, not 0/1.)"""
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return INT64[0] <= x <= INT64[1]
    return isinstance(x, float) and math.isfinite(x)


def senml_verdict(pack: Any) -> str:
    """The spec's rules for a pack ("Rules a receiver enforces")."""
    try:
        check_pack(pack)
        return "ok"
    except Rejected as exc:
        return exc.reason


def check_pack(pack: Any) -> None:
    if not isinstance(pack, list) or len(pack) == 0:
        raise Rejected("bad-senml")
    if not all(isinstance(rec, dict) for rec in pack):
        raise Rejected("bad-senml")
    first = pack[0]
    # the first record has bn (text) and bt (number); RFC 8428 §4.5: base values apply onward
    if not (isinstance(first.get(BN), str) and number(first.get(BT))):
        raise Rejected("bad-senml")
    for i, rec in enumerate(pack):
        check_record(rec, i == 0, first[BT])


def text(x: Any) -> bool:
    return isinstance(x, str)


def boolean(x: Any) -> bool:
    return isinstance(x, bool)


# The type of each field (frame-format.md's SenML table; RFC 8428 §6: n, u, vs text, v and t
# numbers, vb boolean; err is our text extension).
FIELD_TYPES = {BN: text, BT: number, N: text, U: text, V: number, VS: text, VB: boolean, T: number, ERR: text}


def check_record(rec: dict, first: bool, bt: int | float) -> None:
    if set(rec) - (ALLOWED_FIRST if first else ALLOWED):
        raise Rejected("bad-senml")  # bn/bt past the first record, or any other field
    if N not in rec:
        raise Rejected("bad-senml")  # every record has a name (RFC 8428 §4.5.1: the full name is bn + n)
    if not all(FIELD_TYPES[label](value) for label, value in rec.items()):
        raise Rejected("bad-senml")
    values = [label for label in (V, VS, VB) if label in rec]
    if len(values) + (ERR in rec) != 1:
        raise Rejected("bad-senml")  # exactly one of v, vs, vb, or an err instead of a value
    # RFC 8428 §4.5.3: the record's time is bt + t; it must be a number the store keeps too
    if not number(bt + rec.get(T, 0)):
        raise Rejected("bad-senml")


def base_name(device: bytes) -> str:
    """frame-format.md: urn:dev:mac:<EUI-64>: — the 6-byte MAC with fffe inserted in the middle
    (RFC 9039 §3.1), lowercase hex, then ':'."""
    eui64 = device[:3] + b"\xff\xfe" + device[3:]
    return "urn:dev:mac:" + eui64.hex() + ":"


def check_header(protected: bytes) -> tuple[int, bytes, int]:
    try:
        header = cbor2.loads(protected, str_errors="replace")
    except Exception:
        raise Rejected("bad-header") from None
    if not isinstance(header, dict):
        raise Rejected("bad-header")
    alg = header.get(ALG)
    if not isinstance(alg, int) or isinstance(alg, bool):
        raise Rejected("bad-header")
    if alg not in TAG_BYTES:
        raise Rejected("unsupported-alg")
    kid, piv, kind = header.get(KID), header.get(PARTIAL_IV), header.get(KIND)
    if not (isinstance(kid, bytes) and len(kid) == 8):
        raise Rejected("bad-header")
    if not (isinstance(piv, bytes) and 1 <= len(piv) <= 8) or int.from_bytes(piv, "big") == 0:
        raise Rejected("bad-header")  # the counter: 1..8 bytes big-endian, never 0
    if not isinstance(kind, int) or isinstance(kind, bool) or kind not in KINDS:
        raise Rejected("bad-header")
    return alg, kid, int.from_bytes(piv, "big")


def check_envelope(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(protected, payload, tag) of a COSE_Mac0 (RFC 9052 §6.2)."""
    if len(data) > MAX_FRAME:
        raise Rejected("oversized")
    stream = io.BytesIO(data)
    try:
        obj = cbor2.load(stream, str_errors="replace")  # invalid UTF-8 -> U+FFFD (frame-format.md)
    except Exception:
        raise Rejected("bad-cbor") from None
    if stream.read(1):
        raise Rejected("bad-cbor")  # trailing bytes
    if not (isinstance(obj, cbor2.CBORTag) and obj.tag == COSE_MAC0):
        raise Rejected("not-cose-mac0")
    body = obj.value
    if not (isinstance(body, list) and len(body) == 4 and isinstance(body[0], bytes)
            and isinstance(body[1], dict) and isinstance(body[2], bytes) and isinstance(body[3], bytes)):
        raise Rejected("not-cose-mac0")
    return body[0], body[2], body[3]


def check_frame(table: dict[bytes, tuple[bytes, int]], data: bytes) -> list:
    protected, payload, tag = check_envelope(data)
    alg, kid, _counter = check_header(protected)
    if kid not in table:
        raise Rejected("unknown-kid")
    key, provisioned_alg = table[kid]
    if alg != provisioned_alg:
        raise Rejected("bad-header")  # frame-format.md, "Strictness"
    # RFC 9052 §6.3: MAC_structure = ["MAC0", protected, external_aad (empty), payload]
    mac_structure = cbor2.dumps(["MAC0", protected, b"", payload])
    expected = hmac.new(key, mac_structure, hashlib.sha256).digest()[:TAG_BYTES[alg]]
    if not hmac.compare_digest(expected, tag):
        raise Rejected("bad-mac")
    stream = io.BytesIO(payload)
    try:
        pack = cbor2.load(stream, str_errors="replace")
    except Exception:
        raise Rejected("bad-senml") from None
    if stream.read(1):
        raise Rejected("bad-senml")  # the payload is one item, the pack (frame-format.md)
    check_pack(pack)
    if pack[0][BN] != base_name(kid[:6]):
        raise Rejected("device-mismatch")
    return pack


def verdict(table: dict[bytes, tuple[bytes, int]], data: bytes) -> tuple:
    """('ok', pack) or ('rejected', reason) for a frame, with keys table {kid: (key, alg)}."""
    try:
        return ("ok", check_frame(table, data))
    except Rejected as exc:
        return ("rejected", exc.reason)
