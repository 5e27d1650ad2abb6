# COSE_Mac0 (RFC 9052) as frame format v1 uses it (docs/frame-format.md): the node's protected
# header template, the MAC over MAC_structure fed piecewise from the frame buffer, and the
# verification of received frames with the doc's rejection reasons.
from micropython import const
from struct import pack_into
from . import cbor

ALG_HMAC_256_64 = const(4)
ALG_HMAC_256_256 = const(5)
MAX_FRAME = const(1024)
COSE_MAC0_TAG = const(17)

KIND_TELEMETRY = const(0)
KIND_EVENT = const(1)
KIND_BOOT = const(2)
KIND_COMMAND = const(3)
KIND_ACK = const(4)
KIND_MAX = const(4)

# The protected header as a bstr with its head: 58 19 a4 01 <alg> 04 48 <kid:8> 06 44
# <counter:4> 3a 00 01 00 00 <kind>
PROTECTED_SIZE = const(27)
_ALG_AT = const(4)
_KID_AT = const(7)
_COUNTER_AT = const(17)
_KIND_AT = const(26)

_LABEL_ALG = const(1)
_LABEL_KID = const(4)
_LABEL_PARTIAL_IV = const(6)
_LABEL_KIND = const(-65537)

_MAC0_CONTEXT = b"\x84\x64MAC0"  # MAC_structure: array(4), "MAC0"
_EMPTY_AAD = b"\x40"


class Rejected(Exception):
    """A received frame refused; .reason is one of the doc's rejection reasons."""

    def __init__(self, reason, detail="", counter=None):
        super().__init__(reason + ": " + detail if detail else reason)
        self.reason = reason
        self.detail = detail
        self.counter = counter  # set once the MAC verified: the sender may be told about it


def tag_len(alg):
    if alg == ALG_HMAC_256_64:
        return 8
    if alg == ALG_HMAC_256_256:
        return 32
    raise ValueError("cose: alg must be 4 or 5")


def protected(alg, kid):
    """The node's protected header bstr (27 bytes, counter 0 and kind 0 until set_counter_kind)."""
    tag_len(alg)
    if len(kid) != 8:
        raise ValueError("cose: kid must be 8 bytes")
    p = bytearray(b"\x58\x19\xa4\x01\x00\x04\x48________\x06\x44\x00\x00\x00\x00\x3a\x00\x01\x00\x00\x00")
    p[_ALG_AT] = alg
    p[_KID_AT:_KID_AT + 8] = kid
    return p


def set_counter_kind(prot, counter, kind):
    pack_into(">I", prot, _COUNTER_AT, counter)
    prot[_KIND_AT] = kind


def mac_structure(mac, prot, payload):
    """Feeds MAC_structure for a frame into a new HMAC inner hash and returns it, for
    mac.finish / mac.digest_into / mac.verify. prot and payload are the protected and payload
    bstrs, each with its CBOR head, as they stand in the frame (buffers, not copies).
    Hot path: keep this function's locals few (see frame.py)."""
    h = mac.start()
    h.update(_MAC0_CONTEXT)
    h.update(prot)
    h.update(_EMPTY_AAD)
    h.update(payload)
    return h


def _update_bstr(h, mv, start, end):
    # MAC_structure re-encodes each bstr with the shortest head, whatever head the frame used.
    hd = bytearray(9)
    h.update(hd[:cbor.head(hd, 0, cbor.MAJOR_BSTR, end - start)])
    h.update(mv[start:end])


def _bstr_at(mv, pos):
    ib, n, start = cbor.read_head(mv, pos)
    if ib & 0xE0 != cbor.MAJOR_BSTR:
        raise Rejected("not-cose-mac0", "tag 17 must hold [bstr, map, bstr, bstr]")
    return start, start + n


def _header(mv, start, end, alg, kid):
    try:
        hdr = cbor.loads(mv[start:end])
    except ValueError as e:
        raise Rejected("bad-header", "protected header is not CBOR (" + str(e) + ")")
    if type(hdr) is not dict:
        raise Rejected("bad-header", "protected header is not a map")
    a = hdr.get(_LABEL_ALG)
    if type(a) is not int:
        raise Rejected("bad-header", "alg missing")
    if a != ALG_HMAC_256_64 and a != ALG_HMAC_256_256:
        raise Rejected("unsupported-alg", "alg " + str(a))
    k = hdr.get(_LABEL_KID)
    if type(k) is not bytes or len(k) != 8:
        raise Rejected("bad-header", "kid must be 8 bytes")
    piv = hdr.get(_LABEL_PARTIAL_IV)
    if type(piv) is not bytes or not 1 <= len(piv) <= 8:
        raise Rejected("bad-header", "counter (Partial IV) must be 1..8 bytes")
    kind = hdr.get(_LABEL_KIND)
    if type(kind) is not int or not 0 <= kind <= KIND_MAX:
        raise Rejected("bad-header", "unknown frame kind")
    counter = int.from_bytes(piv, "big")
    if counter == 0:
        raise Rejected("bad-header", "counter 0 is invalid")
    if k != kid:
        raise Rejected("unknown-kid")
    if a != alg:
        # a node provisioned for the 32-byte tag must not accept an 8-byte one
        raise Rejected("bad-header", "alg is not the one provisioned")
    return kind, counter


def verify(frame, mac, kid, alg, kind=-1, last=0, max_len=MAX_FRAME):
    """(kind, counter, payload) of a frame MACed with mac (an HMAC256) under kid and alg, else
    Rejected. kind >= 0: only that kind is accepted (wrong-kind). last: the counter must be above
    it (replay). payload is a memoryview into frame."""
    n = len(frame)
    if n > max_len:
        raise Rejected("oversized", str(n) + " bytes")
    mv = memoryview(frame)
    try:
        end = cbor.skip(mv, 0)
    except ValueError as e:
        raise Rejected("bad-cbor", str(e))
    if end != n:
        raise Rejected("bad-cbor", "trailing bytes")
    # Well-formed from here on: read_head cannot fail, only the shape can be wrong.
    ib, t, pos = cbor.read_head(mv, 0)
    if ib & 0xE0 != cbor.MAJOR_TAG or t != COSE_MAC0_TAG:
        raise Rejected("not-cose-mac0", "not CBOR tag 17")
    ib, items, pos = cbor.read_head(mv, pos)
    if ib & 0xE0 != cbor.MAJOR_ARRAY or items != 4:
        raise Rejected("not-cose-mac0", "tag 17 must hold a 4-element array")
    p0, p1 = _bstr_at(mv, pos)
    if mv[p1] & 0xE0 != cbor.MAJOR_MAP:
        raise Rejected("not-cose-mac0", "unprotected header is not a map")
    y0, y1 = _bstr_at(mv, cbor.skip(mv, p1))
    t0, t1 = _bstr_at(mv, y1)
    k, counter = _header(mv, p0, p1, alg, kid)
    h = mac.start()
    h.update(_MAC0_CONTEXT)
    _update_bstr(h, mv, p0, p1)
    h.update(_EMPTY_AAD)
    _update_bstr(h, mv, y0, y1)
    need = tag_len(alg)
    if not mac.verify(h, mv, t0, need) or t1 - t0 != need:
        raise Rejected("bad-mac")
    if kind >= 0 and k != kind:
        raise Rejected("wrong-kind", "kind " + str(k))
    if counter <= last:
        raise Rejected("replay", "counter " + str(counter), counter)
    return k, counter, mv[y0:y1]
