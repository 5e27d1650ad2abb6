# The node's frame builder: signed frame format v1 frames (docs/frame-format.md) filled into one
# preallocated buffer, for the hot path (telemetry every few seconds, for years).
#
#   fb = FrameBuilder(key, kid)                # once per node (per key)
#   fb.begin(KIND_TELEMETRY, counter, bt)
#   fb.add("temp", "Cel", 23.45)
#   fb.add_error("loop1", "A", "broken-loop")
#   frame = fb.finish()                        # memoryview, valid until the next begin()
#
# Per frame it builds no dicts and no strings. The records are written from offset _RECORDS on;
# finish() puts the array and payload heads, then the fixed envelope prefix, right-aligned in front
# of them (their size depends on the count and length), so nothing is moved. The only allocations
# are HMAC's (two sha256 objects and two digests) and the memoryviews of the payload and the frame,
# which are kept and reused while consecutive frames have the same layout.
from micropython import const
from . import cbor
from .cose import protected, set_counter_kind, mac_into, tag_len, MAX_FRAME, KIND_MAX, \
    PROTECTED_SIZE
from .hmac256 import HMAC256
from .senml import base_name

_PREFIX = const(30)  # d1 84 (tag 17, array 4), protected bstr (27), a0 (unprotected {})
_RECORDS = const(36)  # _PREFIX + payload bstr head (<= 3) + array head (<= 3)
_MIN_SIZE = const(96)
_MAX_U32 = const(0xFFFFFFFF)

_TAG17_ARRAY4 = const(0xD184)
_EMPTY_MAP = const(0xA0)
_MAP = const(0xA0)
_L_BN = const(0x21)  # -2
_L_BT = const(0x22)  # -3
_L_N = const(0x00)
_L_U = const(0x01)
_L_V = const(0x02)
_L_VS = const(0x03)
_L_VB = const(0x04)
_L_ERR = b"\x63err"


class FrameFull(ValueError):
    """The record does not fit the frame buffer; the frame so far is intact (finish() it)."""


class FrameBuilder:
    """Builds the node's signed frames in one preallocated buffer.

    key: the node's 32-byte HMAC key; kid: 8-byte key id (device id + key generation); alg: 4
    (8-byte tag) or 5 (32-byte tag); bn: SenML base name (default: from the device id in kid);
    size: the buffer (frames are at most size - 6 bytes, and never over MAX_FRAME).
    Names, units and string values are str (or UTF-8 bytes); values are int or float.
    """

    def __init__(self, key, kid, alg=4, bn=None, size=512):
        if len(kid) != 8:
            raise ValueError("frame: kid must be 8 bytes")
        if size < _MIN_SIZE:
            raise ValueError("frame: buffer must be at least %d bytes" % _MIN_SIZE)
        self._tlen = tag_len(alg)
        self._mac = HMAC256(key)
        self._prot = protected(alg, kid)
        if bn is None:
            bn = base_name(kid[:6])
        n = cbor.utf8_len(bn)
        first = bytearray(2 + cbor.head_size(n) + n)  # 21 <bn text> 22: bt follows per frame
        first[0] = _L_BN
        first[cbor.text(first, 1, bn, n)] = _L_BT
        self._first = bytes(first)
        self._buf = bytearray(size)
        self._mv = memoryview(self._buf)
        # The records must end where the tag still fits, and the frame within MAX_FRAME.
        self._limit = (size if size < MAX_FRAME else MAX_FRAME) - self._tlen
        self._pos = _RECORDS
        self._count = 0
        self._bt = 0
        self._open = False
        self._at = -1  # (payload start, records end) the two views below were made for
        self._end = -1
        self._payload = None
        self._frame = None

    def begin(self, kind, counter, bt):
        """Starts a frame: kind (KIND_*), counter (1..2**32-1, never reused), bt (base time,
        whole seconds since 1970, for the first record)."""
        if not 0 <= kind <= KIND_MAX:
            raise ValueError("frame: unknown kind")
        if not 0 < counter <= _MAX_U32:
            raise ValueError("frame: counter must be 1..2**32-1")
        if type(bt) is not int or bt < 0:
            raise ValueError("frame: bt must be a non-negative int")
        set_counter_kind(self._prot, counter, kind)
        self._bt = bt
        self._pos = _RECORDS
        self._count = 0
        self._open = True

    def _record(self, name, unit, vsize):
        # Writes the map head, bn/bt (first record), n and u; vsize is the size of what the caller
        # writes after (label and value). Checks first that the whole record fits.
        if not self._open:
            raise ValueError("frame: begin() first")
        nn = cbor.utf8_len(name)
        size = 2 + cbor.head_size(nn) + nn + vsize
        items = 2
        if unit:
            nu = cbor.utf8_len(unit)
            size += 1 + cbor.head_size(nu) + nu
            items = 3
        first = self._count == 0
        if first:
            size += len(self._first) + cbor.head_size(self._bt)
            items += 2
        o = self._pos
        if o + size > self._limit:
            raise FrameFull("frame: record %s does not fit (%d of %d bytes used)"
                            % (name, o - _RECORDS, self._limit - _RECORDS))
        buf = self._buf
        buf[o] = _MAP | items
        o += 1
        if first:
            o = cbor.raw(buf, o, self._first)
            o = cbor.head(buf, o, 0, self._bt)
        buf[o] = _L_N
        o = cbor.text(buf, o + 1, name, nn)
        if unit:
            buf[o] = _L_U
            o = cbor.text(buf, o + 1, unit, nu)
        self._count += 1
        return o

    def add(self, name, unit, value):
        """A reading: int (shortest integer) or float (float32); unit None or "" leaves u out."""
        t = type(value)
        if t is int:
            o = self._record(name, unit, 1 + cbor.integer_size(value))
            self._buf[o] = _L_V
            self._pos = cbor.integer(self._buf, o + 1, value)
        elif t is float:
            o = self._record(name, unit, 6)
            self._buf[o] = _L_V
            self._pos = cbor.float32(self._buf, o + 1, value)
        else:
            raise TypeError("frame: add() takes int or float (add_bool, add_str for others)")

    def add_str(self, name, value, unit=None):
        n = cbor.utf8_len(value)
        o = self._record(name, unit, 1 + cbor.head_size(n) + n)
        self._buf[o] = _L_VS
        self._pos = cbor.text(self._buf, o + 1, value, n)

    def add_bool(self, name, value, unit=None):
        if type(value) is not bool:
            raise TypeError("frame: add_bool() takes a bool")
        o = self._record(name, unit, 2)
        self._buf[o] = _L_VB
        self._pos = cbor.boolean(self._buf, o + 1, value)

    def add_error(self, name, unit, err):
        """A failed reading: err (nack, crc, timeout, range, broken-loop, modbus-N) instead of a
        value."""
        n = cbor.utf8_len(err)
        o = self._record(name, unit, 4 + cbor.head_size(n) + n)
        o = cbor.raw(self._buf, o, _L_ERR)
        self._pos = cbor.text(self._buf, o, err, n)

    def finish(self):
        """The signed frame: a memoryview into the builder's buffer, valid until begin()."""
        if not self._open or not self._count:
            raise ValueError("frame: begin() and add() first")
        self._open = False
        buf = self._buf
        end = self._pos
        count = self._count
        a = _RECORDS - cbor.head_size(count)
        cbor.array_head(buf, a, count)
        p = a - cbor.head_size(end - a)
        cbor.head(buf, p, cbor.MAJOR_BSTR, end - a)
        s = p - _PREFIX
        buf[s] = _TAG17_ARRAY4 >> 8
        buf[s + 1] = _TAG17_ARRAY4 & 0xFF
        cbor.raw(buf, s + 2, self._prot, PROTECTED_SIZE)
        buf[s + 2 + PROTECTED_SIZE] = _EMPTY_MAP
        if p != self._at or end != self._end:
            self._payload = self._mv[p:end]
            self._frame = self._mv[s:end + self._tlen]
            self._at = p
            self._end = end
        mac_into(self._mac, self._prot, self._payload, buf, end, self._tlen)
        return self._frame
