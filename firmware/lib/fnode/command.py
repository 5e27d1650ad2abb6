# Commands the node receives (kind 3, host -> node): verify, check the counter, parse the SenML.
# Imported with fnode.cbordecode and fnode.senml only while a command is read, and dropped after it
# (fnode.app.Node.take_command): the receiving side is ~8 KB of an ESP32's heap, commands are rare.
#
#   reader = CommandReader(key, kid, alg, last=counter_saved_in_nvs)
#   try:
#       cmd = reader.read(frame)        # Command, or cose.Rejected with .reason
#   except Rejected as e: ...           # answer with an ack "refused" / log e.reason
#   save reader.last                    # the counter of the last command applied
from micropython import const
from .cose import Rejected, KIND_COMMAND, KIND_MAX, MAX_FRAME, COSE_MAC0_TAG, ALG_HMAC_256_64, \
    ALG_HMAC_256_256, MAC0_CONTEXT, EMPTY_AAD, tag_len
from .frame import base_name
from .hmac256 import HMAC256
from . import cbor, cbordecode, senml

_MAJOR_BSTR = const(0x40)
_MAJOR_ARRAY = const(0x80)
_MAJOR_MAP = const(0xA0)
_MAJOR_TAG = const(0xC0)
_LABEL_ALG = const(1)
_LABEL_KID = const(4)
_LABEL_PARTIAL_IV = const(6)
_LABEL_KIND = const(-65537)


def _update_bstr(h, mv, start, end):
    # MAC_structure re-encodes each bstr with the shortest head, whatever head the frame used.
    hd = bytearray(9)
    h.update(hd[:cbor.head(hd, 0, _MAJOR_BSTR, end - start)])
    h.update(mv[start:end])


def _bstr_at(mv, pos):
    ib, n, start = cbordecode.read_head(mv, pos)
    if ib & 0xE0 != _MAJOR_BSTR:
        raise Rejected("not-cose-mac0", "tag 17 must hold [bstr, map, bstr, bstr]")
    return start, start + n


def _header(mv, start, end, alg, kid):
    try:
        hdr = cbordecode.loads(mv[start:end])
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
        end = cbordecode.skip(mv, 0)
    except ValueError as e:
        raise Rejected("bad-cbor", str(e))
    if end != n:
        raise Rejected("bad-cbor", "trailing bytes")
    # Well-formed from here on: read_head cannot fail, only the shape can be wrong.
    ib, t, pos = cbordecode.read_head(mv, 0)
    if ib & 0xE0 != _MAJOR_TAG or t != COSE_MAC0_TAG:
        raise Rejected("not-cose-mac0", "not CBOR tag 17")
    ib, items, pos = cbordecode.read_head(mv, pos)
    if ib & 0xE0 != _MAJOR_ARRAY or items != 4:
        raise Rejected("not-cose-mac0", "tag 17 must hold a 4-element array")
    p0, p1 = _bstr_at(mv, pos)
    if mv[p1] & 0xE0 != _MAJOR_MAP:
        raise Rejected("not-cose-mac0", "unprotected header is not a map")
    y0, y1 = _bstr_at(mv, cbordecode.skip(mv, p1))
    t0, t1 = _bstr_at(mv, y1)
    k, counter = _header(mv, p0, p1, alg, kid)
    h = mac.start()
    h.update(MAC0_CONTEXT)
    _update_bstr(h, mv, p0, p1)
    h.update(EMPTY_AAD)
    _update_bstr(h, mv, y0, y1)
    need = tag_len(alg)
    if not mac.verify(h, mv, t0, need) or t1 - t0 != need:
        raise Rejected("bad-mac")
    if kind >= 0 and k != kind:
        raise Rejected("wrong-kind", "kind " + str(k))
    if counter <= last:
        raise Rejected("replay", "counter " + str(counter), counter)
    return k, counter, mv[y0:y1]

# The last counter applied is kept in NVS as an i32 (esp32.NVS.set_i32 raises OverflowError beyond
# it): a command counter above this is refused unspent, as it could never be kept.
_MAX_COUNTER = const(0x7FFFFFFF)
# Refusals that leave the last counter as it was.
UNSPENT = ("replay", "counter-range")


class Command:
    """A verified command: counter, bt, exp (absolute expiry, seconds since 1970) and items, a list
    of (name, value) for the actuators to set (value: number, str or bool)."""

    def __init__(self, counter, bt, exp, items):
        self.counter = counter
        self.bt = bt
        self.exp = exp
        self.items = items


class CommandReader:
    """Accepts command frames for one node: its key, kid and alg, its base name (default: from the
    device id in kid), and the counter of the last command applied (replay check)."""

    def __init__(self, key, kid, alg=4, bn=None, last=0, max_len=MAX_FRAME):
        self._mac = HMAC256(key)
        self._kid = bytes(kid)
        self._alg = alg
        self._bn = bn if bn is not None else base_name(self._kid[:6])
        self._max_len = max_len
        self.last = last

    def read(self, frame):
        """The Command in frame, or Rejected (every reason of docs/frame-format.md that applies to
        a node: oversized ... wrong-kind, bad-senml, device-mismatch, replay, counter-range)."""
        kind, counter, payload = verify(frame, self._mac, self._kid, self._alg, KIND_COMMAND,
                                        self.last, self._max_len)
        if counter > _MAX_COUNTER:
            raise Rejected("counter-range", "above 2^31-1", counter)
        # From here on the MAC has verified: a refusal names the counter, so the node can answer
        # it, and the counter is spent (the same frame again is a replay, not a second refusal).
        self.last = counter
        try:
            bn, bt, records = senml.parse(payload)
        except ValueError as e:
            raise Rejected("bad-senml", str(e), counter)
        if bn != self._bn:
            raise Rejected("device-mismatch", bn, counter)
        exp = None
        items = []
        for name, _unit, value, err in records:
            if err is not None:
                raise Rejected("bad-senml", "a command record carries err", counter)
            if name == "exp":
                if exp is not None or type(value) not in (int, float):
                    raise Rejected("bad-senml", "exp must be one number", counter)
                exp = value
            else:
                items.append((name, value))
        if exp is None:
            raise Rejected("bad-senml", "command without exp", counter)
        return Command(counter, bt, exp, items)
