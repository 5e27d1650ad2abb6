"""Frame formats v1 and v2 on the host: verify and decode COSE_Mac0 + SenML-CBOR frames, build v1.

docs/frame-format.md is the contract. Verification is the gateway's hot path, so the envelope is
split by hand (the node's layout is fixed) and only the parts that carry meaning are decoded:
the protected header and the payload, each once with cbor2. Frames in another valid encoding
(other COSE libraries) take a slower path through cbor2 for the whole envelope. Frame format v2
(declarations, compact telemetry and its expansion to full SenML) is framev2.py; the Verifier
takes both versions.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

import cbor2

MAX_FRAME = 1024
COSE_MAC0_TAG = 17
ALG_HMAC_256_64 = 4
ALG_HMAC_256_256 = 5
TAG_LENGTH = {ALG_HMAC_256_64: 8, ALG_HMAC_256_256: 32}
LABEL_ALG, LABEL_KID, LABEL_PARTIAL_IV, LABEL_KIND = 1, 4, 6, -65537
LABEL_DECLARATION = -65538  # v2 telemetry: the id of the declaration its short names refer to

KIND_TELEMETRY, KIND_EVENT, KIND_BOOT, KIND_COMMAND, KIND_ACK, KIND_DECLARATION = 0, 1, 2, 3, 4, 5
KIND_NAMES = {0: "telemetry", 1: "event", 2: "boot", 3: "command", 4: "ack", 5: "declaration"}
NODE_KINDS = frozenset((KIND_TELEMETRY, KIND_EVENT, KIND_BOOT, KIND_ACK, KIND_DECLARATION))

# SenML labels (RFC 8428 Table 4) and ours.
SENML_BN, SENML_BT, SENML_N, SENML_U, SENML_V, SENML_VS, SENML_VB, SENML_T = -2, -3, 0, 1, 2, 3, 4, 6
SENML_ERR = "err"
_VALUE_LABELS = (SENML_V, SENML_VS, SENML_VB)

REASONS = (
    "oversized", "bad-cbor", "not-cose-mac0", "bad-header", "unsupported-alg", "unknown-kid",
    "bad-mac", "replay", "bad-senml", "device-mismatch", "wrong-kind", "unstorable", "bad-declaration",
)

# cbor2's C decoder leaks ~800 bytes each time a text string is not valid UTF-8 and it raises
# (agronholm/cbor2#257, open; seen with 5.9.0), and a gateway decodes whatever a datagram holds:
# a flood of such garbage grew its memory without bound. With "replace" that error path is never
# taken: invalid UTF-8 becomes U+FFFD. Nothing the receiver decides on is text before the MAC is
# checked, and after it such a string is only a node's odd name or value, stored as decoded.
STR_ERRORS = "replace"

_MAC0_CONTEXT = b"\x84\x64MAC0"
_compare_digest, _get_ident = hmac.compare_digest, threading.get_ident
_PADS_CACHE_MAX = 65536  # keys whose HMAC pads a Verifier keeps (a gateway's nodes, with rotations)


def _hmac_pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states with HMAC's inner and outer key pads already absorbed (RFC 2104)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key)))
_NODE_ENVELOPE_HEAD = b"\xd1\x84\x58\x19"  # tag 17, array(4), bstr(25)
_EMPTY_AAD = b"\x40"


class FrameRejected(Exception):
    """A frame refused for one of REASONS; detail says more, never anything secret."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def device_base_name(device: bytes) -> str:
    """urn:dev:mac:<EUI-64>: for a 6-byte MAC (EUI-48 widened with fffe)."""
    h = device.hex()
    return f"urn:dev:mac:{h[:6]}fffe{h[6:]}:"


def device_from_base_name(bn: str) -> bytes | None:
    if not (bn.startswith("urn:dev:mac:") and bn.endswith(":") and len(bn) == 29):
        return None
    h = bn[12:28]
    if h[6:10] != "fffe":
        return None
    try:
        return bytes.fromhex(h[:6] + h[10:])
    except ValueError:
        return None


def _bstr_head(n: int) -> bytes:
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return b"\x59" + struct.pack(">H", n)
    return b"\x5a" + struct.pack(">I", n)


def mac_structure(protected: bytes, payload: bytes) -> bytes:
    return b"".join((_MAC0_CONTEXT, _bstr_head(len(protected)), protected, _EMPTY_AAD,
                     _bstr_head(len(payload)), payload))


def compute_tag(key: bytes, alg: int, protected: bytes, payload: bytes) -> bytes:
    return hmac.digest(key, mac_structure(protected, payload), "sha256")[: TAG_LENGTH[alg]]


def _read_bstr(buf: bytes, pos: int) -> tuple[int, int] | None:
    """(start, end) of a definite, shortest-form bstr at pos, or None for anything else."""
    ib = buf[pos]
    if 0x40 <= ib < 0x58:
        start, n = pos + 1, ib - 0x40
    elif ib == 0x58:
        if pos + 2 > len(buf):  # a frame truncated inside the length
            return None
        start, n = pos + 2, buf[pos + 1]
        if n < 24:
            return None
    elif ib == 0x59:
        if pos + 3 > len(buf):
            return None
        start, n = pos + 3, (buf[pos + 1] << 8) | buf[pos + 2]
        if n < 0x100:
            return None
    else:
        return None
    end = start + n
    return (start, end) if end <= len(buf) else None


def _node_spans(data: bytes) -> tuple[int, int] | None:
    """(payload start, payload end) if data has exactly the node's envelope layout (25-byte
    protected header, empty map, shortest-form payload bstr, 8/32-byte tag), else None."""
    n = len(data)
    if n > 40 and data[:4] == _NODE_ENVELOPE_HEAD and data[29] == 0xA0:
        ib = data[30]
        if 0x40 <= ib < 0x58:
            start, end = 31, 31 + ib - 0x40
        elif ib == 0x58:
            start, end = 32, 32 + data[31]
            if end - start < 24:
                return None
        elif ib == 0x59:
            start, end = 33, 33 + (data[31] << 8 | data[32])
            if end - start < 0x100:
                return None
        else:
            return None
        if end < n and ((data[end] == 0x48 and end + 9 == n)
                        or (data[end] == 0x58 and end + 34 == n and data[end + 1] == 0x20)):
            return start, end
    return None


def split_envelope(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(protected, payload, tag) of a COSE_Mac0, or FrameRejected."""
    if len(data) > MAX_FRAME:
        raise FrameRejected("oversized", f"{len(data)} bytes > {MAX_FRAME}")
    n = len(data)
    # Fastest path: exactly the node's layout.
    spans = _node_spans(data)
    if spans is not None:
        start, end = spans
        return data[4:29], data[start:end], data[n - (8 if data[end] == 0x48 else 32):]
    # Fast path: any shortest-form layout of tag 17, array(4), bstr, empty map, bstr, bstr.
    if n > 5 and data[0] == 0xD1 and data[1] == 0x84:
        p = _read_bstr(data, 2)
        if p and p[1] < len(data) and data[p[1]] == 0xA0:
            q = _read_bstr(data, p[1] + 1) if p[1] + 1 < len(data) else None
            if q and q[1] < len(data):
                t = _read_bstr(data, q[1])
                if t and t[1] == len(data):
                    return data[p[0]:p[1]], data[q[0]:q[1]], data[t[0]:t[1]]
    return _split_envelope_general(data)


def _split_envelope_general(data: bytes) -> tuple[bytes, bytes, bytes]:
    stream = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(stream, str_errors=STR_ERRORS).decode()
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise FrameRejected("bad-cbor", type(exc).__name__) from None
    if stream.tell() != len(data):
        raise FrameRejected("bad-cbor", f"{len(data) - stream.tell()} bytes after the frame")
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_MAC0_TAG:
        raise FrameRejected("not-cose-mac0", "not CBOR tag 17")
    v = obj.value
    if not (isinstance(v, list) and len(v) == 4 and isinstance(v[0], bytes) and isinstance(v[1], dict)
            and isinstance(v[2], bytes) and isinstance(v[3], bytes)):
        raise FrameRejected("not-cose-mac0", "tag 17 must hold [bstr, map, bstr, bstr]")
    return v[0], v[2], v[3]


# The node's protected header: a4 01 <alg> 04 48 <kid:8> 06 44 <counter:4> 3a 00 01 00 00 <kind>
_NODE_PROTECTED = struct.Struct(">3s2s8s2sI5sB")
_NODE_ALG_PREFIXES = {b"\xa4\x01\x04": ALG_HMAC_256_64, b"\xa4\x01\x05": ALG_HMAC_256_256}
_KIND_LABEL = b"\x3a\x00\x01\x00\x00"


def _parse_node_protected(buf: bytes, offset: int) -> tuple[int, bytes, int, int] | None:
    """(alg, kid, counter, kind) if buf[offset:offset + 25] is the node's protected header."""
    head, kid_head, kid, ctr_head, counter, kind_label, kind = _NODE_PROTECTED.unpack_from(buf, offset)
    alg = _NODE_ALG_PREFIXES.get(head)
    if (alg and kid_head == b"\x04\x48" and ctr_head == b"\x06\x44" and kind_label == _KIND_LABEL
            and kind in KIND_NAMES and counter):
        return alg, kid, counter, kind
    return None


def parse_protected(protected: bytes) -> tuple[int, bytes, int, int]:
    """(alg, kid, counter, kind) from the protected header bytes."""
    return parse_header(protected)[:4]


def parse_header(protected: bytes) -> tuple[int, bytes, int, int, bytes | None]:
    """(alg, kid, counter, kind, declaration id or None) from the protected header bytes. A v2
    telemetry header carries a declaration id and no kind (docs/frame-format.md)."""
    if len(protected) == 25:
        parsed = _parse_node_protected(protected, 0)
        if parsed is not None:
            return parsed + (None,)
    elif len(protected) == 29:
        parsed_v2 = _parse_node_protected_v2(protected)
        if parsed_v2 is not None:
            return parsed_v2
    return _parse_protected_general(protected)


# The node's v2 telemetry header: a4 01 <alg> 04 48 <kid:8> 06 44 <counter:4> 3a 00 01 00 01 44 <did:4>
_NODE_PROTECTED_V2 = struct.Struct(">3s2s8s2sI6s4s")
_DECLARATION_LABEL = b"\x3a\x00\x01\x00\x01\x44"


def _parse_node_protected_v2(buf: bytes) -> tuple[int, bytes, int, int, bytes] | None:
    head, kid_head, kid, ctr_head, counter, did_label, did = _NODE_PROTECTED_V2.unpack(buf)
    alg = _NODE_ALG_PREFIXES.get(head)
    if alg and kid_head == b"\x04\x48" and ctr_head == b"\x06\x44" and did_label == _DECLARATION_LABEL and counter:
        return alg, kid, counter, KIND_TELEMETRY, did
    return None


def _header_kind(hdr: dict) -> tuple[int, bytes | None]:
    """(kind, declaration id): a declaration id (v2) stands for telemetry and excludes a kind."""
    kind, did = hdr.get(LABEL_KIND), hdr.get(LABEL_DECLARATION)
    if did is not None or LABEL_DECLARATION in hdr:
        if LABEL_KIND in hdr:
            raise FrameRejected("bad-header", "a declaration id (v2 telemetry) excludes a kind")
        if type(did) is not bytes or len(did) != 4:
            raise FrameRejected("bad-header", "declaration id must be 4 bytes")
        return KIND_TELEMETRY, did
    if type(kind) is not int or kind not in KIND_NAMES:
        raise FrameRejected("bad-header", f"unknown frame kind {kind!r}")
    return kind, None


def _parse_protected_general(protected: bytes) -> tuple[int, bytes, int, int, bytes | None]:
    try:
        hdr = cbor2.loads(protected, str_errors=STR_ERRORS)
    except Exception as exc:
        raise FrameRejected("bad-header", f"protected header is not CBOR ({type(exc).__name__})") from None
    if not isinstance(hdr, dict):
        raise FrameRejected("bad-header", "protected header is not a map")
    alg, kid, piv = hdr.get(LABEL_ALG), hdr.get(LABEL_KID), hdr.get(LABEL_PARTIAL_IV)
    if type(alg) is not int:
        raise FrameRejected("bad-header", "alg missing")
    if alg not in TAG_LENGTH:
        raise FrameRejected("unsupported-alg", f"alg {alg}")
    if type(kid) is not bytes or len(kid) != 8:
        raise FrameRejected("bad-header", "kid must be 8 bytes")
    if type(piv) is not bytes or not 1 <= len(piv) <= 8:
        raise FrameRejected("bad-header", "counter (Partial IV) must be 1..8 bytes")
    kind, did = _header_kind(hdr)
    counter = int.from_bytes(piv, "big")
    if counter == 0:
        raise FrameRejected("bad-header", "counter 0 is invalid")
    return alg, kid, counter, kind, did


_NUMBER = (int, float)
# The integers a store keeps: SQLite's INTEGER is 64-bit signed, and Python's sqlite3 refuses to
# bind anything wider, so a wider one would fail the whole batch's commit after it verified.
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1


def is_number(x: Any) -> bool:
    """A SenML number as receivers take it: an integer within 64 bits signed, or a finite float
    (NaN and infinity have no JSON form, and a time made of them means nothing)."""
    if type(x) is int:
        return INT_MIN <= x <= INT_MAX
    return type(x) is float and x - x == 0.0  # False for NaN and +-inf


def validate_pack(pack: Any) -> None:
    """Raises FrameRejected('bad-senml') unless pack has the shape docs/frame-format.md gives."""
    if type(pack) is not list or not pack:
        raise FrameRejected("bad-senml", "payload is not a non-empty array")
    first = pack[0]
    if type(first) is not dict or type(first.get(SENML_BN)) is not str:
        raise FrameRejected("bad-senml", "first record needs bn (text) and bt (number)")
    bt = first.get(SENML_BT)
    if not is_number(bt):
        raise FrameRejected("bad-senml", "first record needs bn (text) and bt (number)" if type(bt) not in _NUMBER
                            else "bt out of range (64-bit integer or finite float)")
    for rec in pack:
        # The records a node sends — a name, an optional unit, and one v/vs/vb or an err — are
        # checked in one pass: the right type for the one value found, and a key count that
        # leaves room for nothing else. Anything else gets the thorough check, which also names
        # what is wrong. (None is never a valid value, so get()'s None means "absent".)
        if type(rec) is dict and type(rec.get(SENML_N)) is str and type(rec.get(SENML_U, "")) is str:
            value = rec.get(SENML_V)
            if value is not None:
                # is_number, inlined: this is the gateway's hot path.
                ok = (INT_MIN <= value <= INT_MAX if type(value) is int
                      else type(value) is float and value - value == 0.0)
            else:
                value = rec.get(SENML_VS)
                if value is not None:
                    ok = type(value) is str
                else:
                    value = rec.get(SENML_VB)
                    ok = type(value) is bool if value is not None else type(rec.get(SENML_ERR)) is str
            if ok and len(rec) == (3 if SENML_U in rec else 2) + (2 if rec is first else 0):
                continue
        _validate_record(rec, rec is first, bt)


def _validate_record(rec: Any, first: bool, bt: int | float) -> None:
    if type(rec) is not dict:
        raise FrameRejected("bad-senml", "record is not a map")
    if not first and (SENML_BN in rec or SENML_BT in rec):
        raise FrameRejected("bad-senml", "bn/bt only in the first record")
    name = rec.get(SENML_N)
    if type(name) is not str:
        raise FrameRejected("bad-senml", "record without a text name")
    values = _count_values(rec, name)
    has_err = SENML_ERR in rec  # a null err is a wrong type, not an absent field
    if has_err and (type(rec[SENML_ERR]) is not str or values):
        raise FrameRejected("bad-senml", f"{name}: err is text and excludes a value")
    if values != 1 and not has_err:
        raise FrameRejected("bad-senml", f"{name}: needs exactly one of v, vs, vb or err")
    if type(rec.get(SENML_U, "")) is not str:
        raise FrameRejected("bad-senml", f"{name}: u must be text")
    _validate_time(rec.get(SENML_T, 0), name, bt)
    known = 2 if first else 0
    known += sum(1 for label in (SENML_N, SENML_U, SENML_T, SENML_ERR) + _VALUE_LABELS if label in rec)
    if len(rec) != known:
        raise FrameRejected("bad-senml", f"{name}: unknown fields")


def _count_values(rec: dict, name: str) -> int:
    """How many of v, vs, vb the record has, each checked for its type."""
    values = 0
    for label, types, what in ((SENML_V, _NUMBER, "a number"), (SENML_VS, (str,), "text"),
                               (SENML_VB, (bool,), "a boolean")):
        if label in rec:
            if type(rec[label]) not in types:
                raise FrameRejected("bad-senml", f"{name}: value must be {what}")
            if label == SENML_V and not is_number(rec[label]):
                raise FrameRejected("bad-senml", f"{name}: v out of range (64-bit integer or finite float)")
            values += 1
    return values


def _validate_time(t: Any, name: str, bt: int | float) -> None:
    if type(t) not in _NUMBER:
        raise FrameRejected("bad-senml", f"{name}: t must be a number")
    if not (is_number(t) and is_number(bt + t)):  # the record's time, bt + t, is stored too
        raise FrameRejected("bad-senml", f"{name}: t out of range (bt + t must be a 64-bit integer or finite float)")


def present(value: Any) -> Any:
    """Floats as the node meant them: float32 carries ~7 significant digits."""
    if type(value) is float:
        # %-formatting: 110 ns against an f-string's 157 (CPython 3.11 timeit) on the hot path.
        return float("%.7g" % value)  # noqa: UP031
    return value


class Frame:
    """A verified (or, with verified=False, merely parsed) frame.

    v2: declaration is the declaration id a telemetry frame names (its pack is expanded to full
    SenML when the declaration is known, else kept with short names and undeclared set); a
    declaration frame (kind 5) has an empty pack and its Declaration in declared.
    """

    __slots__ = ("alg", "kid", "counter", "kind", "protected", "payload", "tag", "pack", "verified",
                 "declaration", "undeclared", "declared")

    def __init__(self, alg: int, kid: bytes, counter: int, kind: int, protected: bytes,
                 payload: bytes, tag: bytes, pack: list, verified: bool, declaration: bytes | None = None,
                 undeclared: bool = False, declared: Any = None) -> None:
        # One assignment a line: tuple packing costs ~15% of building a Frame (the hot path).
        self.alg = alg
        self.kid = kid
        self.counter = counter
        self.kind = kind
        self.protected = protected
        self.payload = payload
        self.tag = tag
        self.pack = pack
        self.verified = verified
        self.declaration = declaration
        self.undeclared = undeclared
        self.declared = declared

    @property
    def device(self) -> bytes:
        return self.kid[:6]

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def base_name(self) -> str:
        """bn; for a v2 frame (no bn on the wire) the one the key id's device stands for."""
        first = self.pack[0] if self.pack else {}
        return first.get(SENML_BN) or device_base_name(self.device)

    @property
    def base_time(self) -> float | None:
        return self.pack[0][SENML_BT] if self.pack else None

    def records(self) -> list[dict]:
        """Resolved records: name (without bn), time, and one of value/string/bool/error, unit.
        A declaration's records: each reading's name, short name, unit and sensor."""
        if self.declared is not None:
            return [{"n": r.name, "short": r.short, "u": r.unit, "sensor": r.sensor} for r in self.declared.readings]
        bt = self.base_time
        out = []
        for rec in self.pack:
            r: dict[str, Any] = {"n": rec[SENML_N], "t": bt + rec.get(SENML_T, 0)}
            if SENML_U in rec:
                r["u"] = rec[SENML_U]
            if SENML_V in rec:
                r["v"] = present(rec[SENML_V])
            elif SENML_VS in rec:
                r["vs"] = rec[SENML_VS]
            elif SENML_VB in rec:
                r["vb"] = rec[SENML_VB]
            else:
                r["err"] = rec[SENML_ERR]
            out.append(r)
        return out

    def to_json(self) -> dict:
        out = {
            "device": self.device.hex(), "kid": self.kid.hex(), "counter": self.counter,
            "kind": self.kind_name, "alg": self.alg, "bn": self.base_name, "bt": self.base_time,
            "verified": self.verified, "records": self.records(),
        }
        if self.declaration is not None:
            out["declaration"] = self.declaration.hex()
            if self.undeclared:
                out["undeclared"] = True
        return out


KeyLookup = Callable[[bytes], "tuple[bytes, int] | None"]


class Verifier:
    """Verifies frames against keys and a replay window.

    key_lookup(kid) gives (key, alg) or None. accept_kinds limits the kinds taken (a gateway takes
    what nodes send). replay may be None to skip replay checks (offline inspection of one frame).
    """

    def __init__(self, key_lookup: KeyLookup, replay: ReplayWindow | None = None,
                 accept_kinds: Iterable[int] = NODE_KINDS, declarations: Any = None) -> None:
        from .declaration import DeclarationBook
        self.key_lookup = key_lookup
        # v2: the declarations known (framev2.DeclarationBook); every one this Verifier accepts
        # joins it, so telemetry after its declaration is expanded.
        self.declarations = declarations if declarations is not None else DeclarationBook()
        self.replay = replay
        self.accept_kinds = frozenset(accept_kinds)
        self._bn_cache: dict[bytes, str] = {}
        # HMAC-SHA256 with each key's pads absorbed once: hmac.digest() derives them again for
        # every frame, and through OpenSSL 3 that set-up costs more than hashing the frame.
        self._pads: dict[bytes, tuple[Any, Any]] = {}
        # One decoder reused for every payload: cbor2.loads builds a decoder per call, which is
        # ~15% of decoding a telemetry payload. Each top-level decode starts afresh (shared
        # values and string references do not carry over). A decoder must not be used by two
        # threads at once, so only the thread that made the Verifier reuses it.
        self._decoder = cbor2.CBORDecoder(io.BytesIO(b""), str_errors=STR_ERRORS)
        self._owner = threading.get_ident()

    def verify(self, data: bytes) -> Frame:
        spans = _node_spans(data) if len(data) <= MAX_FRAME else None
        if spans is not None:
            # The node's layout: the MAC structure is the frame's own bytes rearranged, so it is
            # joined from slices instead of re-encoded ("MAC0", the protected bstr with its
            # head, the empty AAD, the payload bstr with its head).
            start, end = spans
            protected, payload = data[4:29], data[start:end]
            tag = data[len(data) - (8 if data[end] == 0x48 else 32):]
            mac_input = b"".join((_MAC0_CONTEXT, data[2:29], _EMPTY_AAD, data[30:end]))
            parsed = _parse_node_protected(data, 4)
            alg, kid, counter, kind = parsed if parsed is not None else parse_protected(protected)
            did = None
        else:
            protected, payload, tag = split_envelope(data)
            mac_input = mac_structure(protected, payload)
            alg, kid, counter, kind, did = parse_header(protected)
        found = self.key_lookup(kid)
        if found is None:
            raise FrameRejected("unknown-kid", kid.hex())
        key, key_alg = found
        if alg != key_alg:
            # A node provisioned for the 32-byte tag must not be accepted with an 8-byte one.
            raise FrameRejected("bad-header", f"alg {alg} but the key is provisioned for alg {key_alg}")
        pads = self._pads.get(key) or self._new_pads(key)
        inner = pads[0].copy()
        inner.update(mac_input)
        outer = pads[1].copy()
        outer.update(inner.digest())
        expected = outer.digest()[: TAG_LENGTH[alg]]
        if not _compare_digest(expected, tag):
            raise FrameRejected("bad-mac", f"kid {kid.hex()} counter {counter}")
        if kind not in self.accept_kinds:
            raise FrameRejected("wrong-kind", KIND_NAMES[kind])
        if did is not None or kind == KIND_DECLARATION:
            return self._verified_v2(Frame(alg, kid, counter, kind, protected, payload, tag, [], True, did))
        pack = decode_payload(payload, self._decoder if _get_ident() == self._owner else None)
        validate_pack(pack)
        device = kid[:6]
        bn = self._bn_cache.get(device)
        if bn is None:
            bn = self._bn_cache[device] = device_base_name(device)
        if pack[0][SENML_BN] != bn:
            raise FrameRejected("device-mismatch", f"bn {pack[0][SENML_BN]!r} but kid {kid.hex()}")
        if self.replay is not None and not self.replay.accept(kid, counter):
            raise FrameRejected("replay", f"kid {kid.hex()} counter {counter}")
        return Frame(alg, kid, counter, kind, protected, payload, tag, pack, True)


    def _new_pads(self, key: bytes) -> tuple[Any, Any]:
        if len(self._pads) >= _PADS_CACHE_MAX:
            self._pads.clear()
        pads = self._pads[key] = _hmac_pads(key)
        return pads

    def _verified_v2(self, frame: Frame) -> Frame:
        """A v2 frame (declaration, or telemetry under a declaration id) whose MAC verified."""
        from .framev2 import verified_v2
        verified_v2(frame, self.declarations)
        if frame.declared is not None:
            # Outside the replay window (docs/frame-format.md, "Declaration"): content-addressed
            # and idempotent, and a node resends it ahead of frames older than the window.
            self.declarations.add(frame.device, frame.declared)
        elif self.replay is not None and not self.replay.accept(frame.kid, frame.counter):
            raise FrameRejected("replay", f"kid {frame.kid.hex()} counter {frame.counter}")
        return frame


def parse_unverified(data: bytes) -> Frame:
    """The contents of a frame without checking its tag (for showing a rejected frame)."""
    protected, payload, tag = split_envelope(data)
    alg, kid, counter, kind, did = parse_header(protected)
    if did is not None or kind == KIND_DECLARATION:
        from .framev2 import verified_v2
        return verified_v2(Frame(alg, kid, counter, kind, protected, payload, tag, [], False, did), None)
    pack = decode_payload(payload)
    validate_pack(pack)
    return Frame(alg, kid, counter, kind, protected, payload, tag, pack, False)


def decode_payload(payload: bytes, decoder: cbor2.CBORDecoder | None = None) -> Any:
    """The one CBOR item a payload holds; bad-senml when it is not CBOR or bytes follow the item
    (cbor2 stops after the first item and would let them pass unseen)."""
    fp = io.BytesIO(payload)
    try:
        if decoder is None:
            decoder = cbor2.CBORDecoder(fp, str_errors=STR_ERRORS)
        else:
            decoder.fp = fp
        item = decoder.decode()
    except Exception as exc:
        raise FrameRejected("bad-senml", f"payload is not CBOR ({type(exc).__name__})") from None
    if fp.tell() != len(payload):
        raise FrameRejected("bad-senml", f"{len(payload) - fp.tell()} bytes after the payload's pack")
    return item


class ReplayWindow:
    """Per-key-id highest counter plus a 64-bit bitmap of the counters below it (RFC 4303 style).

    Keyed by key id, not device, as OSCORE keeps its window per security context: a frame's MAC
    binds its kid, so frames made under one key can never pass under another, and a node whose
    flash was erased (counter back at 1) starts afresh once provisioned with a new key generation.
    """

    SIZE = 64

    def __init__(self) -> None:
        self._state: dict[bytes, tuple[int, int]] = {}

    def seen(self, kid: bytes, counter: int) -> bool:
        top, bits = self._state.get(kid, (0, 0))
        if counter > top:
            return False
        offset = top - counter
        return offset >= self.SIZE or bool(bits >> offset & 1)

    def accept(self, kid: bytes, counter: int) -> bool:
        """True (and remembered) if counter is new for kid; False for a replay."""
        top, bits = self._state.get(kid, (0, 0))
        if counter > top:
            shift = counter - top
            bits = ((bits << shift) | 1) & ((1 << self.SIZE) - 1) if shift < self.SIZE else 1
            self._state[kid] = (counter, bits)
            return True
        offset = top - counter
        if offset >= self.SIZE or bits >> offset & 1:
            return False
        self._state[kid] = (top, bits | 1 << offset)
        return True

    def forget(self, kid: bytes, counter: int) -> None:
        """Undo accept() for a frame that could not be stored, so its retransmission is taken."""
        top, bits = self._state.get(kid, (0, 0))
        offset = top - counter
        if 0 <= offset < self.SIZE:
            self._state[kid] = (top, bits & ~(1 << offset))

    def highest(self, kid: bytes) -> int:
        return self._state.get(kid, (0, 0))[0]

    def restore(self, kid: bytes, highest: int) -> None:
        """Start from a stored high-water mark (gateway restart): everything at or below is old."""
        self._state[kid] = (highest, (1 << self.SIZE) - 1)


def build_frame(key: bytes, kid: bytes, alg: int, counter: int, kind: int, bn: str, bt: int,
                records: list[dict]) -> bytes:
    """A signed frame built with cbor2 (values as cbor2 encodes them: floats as float64).

    records: dicts with n and one of v/vs/vb/err, optional u and t.
    """
    if alg not in TAG_LENGTH:
        raise ValueError(f"alg {alg} is not 4 or 5")
    if not 0 < counter < 1 << 32:
        raise ValueError("counter must be 1..2**32-1")
    protected = cbor2.dumps({LABEL_ALG: alg, LABEL_KID: kid,
                             LABEL_PARTIAL_IV: counter.to_bytes(4, "big"), LABEL_KIND: kind})
    pack = []
    for i, rec in enumerate(records):
        out: dict[Any, Any] = {SENML_BN: bn, SENML_BT: bt} if i == 0 else {}
        out[SENML_N] = rec["n"]
        for name, label in (("u", SENML_U), ("v", SENML_V), ("vs", SENML_VS), ("vb", SENML_VB),
                            ("t", SENML_T), ("err", SENML_ERR)):
            if name in rec:
                out[label] = rec[name]
        pack.append(out)
    payload = cbor2.dumps(pack)
    tag = compute_tag(key, alg, protected, payload)
    return cbor2.dumps(cbor2.CBORTag(COSE_MAC0_TAG, [protected, {}, payload, tag]))


__all__ = [
    "Frame", "FrameRejected", "Verifier", "ReplayWindow", "build_frame", "parse_unverified",
    "split_envelope", "parse_protected", "parse_header", "validate_pack", "mac_structure", "compute_tag",
    "device_base_name", "device_from_base_name", "present", "is_number", "REASONS", "KIND_NAMES", "MAX_FRAME",
]
