# The node's frame builder: signed frame format v1 and v2 frames (docs/frame-format.md) filled into
# one preallocated buffer, for the hot path (telemetry every few seconds, for years).
#
#   fb = FrameBuilder(key, kid)                # once per node (per key)
#   fb.begin(KIND_TELEMETRY, counter, bt)
#   fb.add("temp", "Cel", 23.45)
#   fb.add_error("loop1", "A", "broken-loop")
#   frame = fb.finish()                        # memoryview, valid until the next begin()
#
# Frame format v2: fb.declare(did, shorts) (fnode.declare makes both) turns telemetry frames into
# v2 (declaration id in the protected header, no bn, short names, no u, values in the shortest
# exact encoding); other kinds stay v1. The declaration frame itself is fnode.declare's.
#
# The MAC is computed over the protected header and payload as they stand in the frame buffer.
# Layout: records are written from offset _RECORDS on (begin() puts bn and bt of the first record
# there at once); finish() writes the array and payload heads and the fixed envelope prefix
# right-aligned in front of them (their size depends on the count and length), so nothing moves.
#
# Allocation per frame: none while building. finish() makes HMAC's two sha256 objects and two
# digests, nothing else: the memoryviews of the protected header, payload and frame are kept and
# reused while consecutive frames have the same layout (three views, 96 bytes on the 64-bit unix
# port, when it changes). The encoded "n"/"u" part of a record is kept per name (up to _NAMES
# names), so a steady set of readings builds no strings (one of over 62 bytes encoded builds its
# struct format each time).
#
# Keep finish(), what it calls, and what calls it, with few locals: MicroPython puts a call frame
# of more than 11 slots (locals + stack) on the heap and frees it on return. A heap frame live
# while the sha256 objects are allocated leaves a hole that pins the allocator's search start, and
# every later multi-block allocation then rescans all garbage since the last collection (3-7x
# slower frames in bench/node_frame.py, worse the larger the heap: PSRAM boards). Callers: add the
# records in one function, return fb.finish() from a small one. tests/test_firmware_frames.py
# checks finish() and what it calls.
from micropython import const
from struct import pack_into
from . import cbor
from .cose import protected, protected_v2, set_counter, set_counter_kind, mac_structure, tag_len, \
    MAX_FRAME, KIND_MAX, KIND_TELEMETRY, PROTECTED_SIZE, PROTECTED_V2_SIZE
from .hmac256 import HMAC256
from binascii import hexlify

# Where records start: room for d1 84 (tag 17, array 4), the protected bstr (27), a0 (unprotected
# {}), the payload bstr head (<= 3) and the array head (<= 3) in front of them; v2 telemetry's
# protected bstr is 4 bytes longer (31).
_RECORDS = const(36)
_RECORDS_V2 = const(40)
_MIN_SIZE = const(96)
_MAX_U32 = const(0xFFFFFFFF)
_NAMES = const(24)

_TAG17 = const(0xD1)
_ARRAY4 = const(0x84)
_EMPTY_MAP = const(0xA0)
_MAP = const(0xA0)
_FLOAT32 = const(0xFA)
_FLOAT16 = const(0xF9)
_BSTR8 = const(0x58)
_UINT32 = const(0x1A)
_L_BN = const(0x21)  # -2
_L_BT = const(0x22)  # -3
_L_N = const(0x00)
_L_U = const(0x01)
_L_V = const(0x02)
_L_VS = const(0x03)
_L_VB = const(0x04)
_L_ERR = b"\x63err"


def base_name(device):
    """urn:dev:mac:<EUI-64>: for a 6-byte MAC (RFC 9039; EUI-48 widened with fffe)."""
    if len(device) != 6:
        raise ValueError("senml: device id must be 6 bytes")
    h = hexlify(device).decode()
    return "urn:dev:mac:" + h[:6] + "fffe" + h[6:] + ":"


class FrameFull(ValueError):
    """The record does not fit the frame buffer; the frame so far is intact (finish() it)."""


class FrameBuilder:
    """Builds the node's signed frames in one preallocated buffer.

    key: the node's HMAC key (32 bytes); kid: 8-byte key id (device id + key generation); alg: 4
    (8-byte tag) or 5 (32-byte tag); bn: SenML base name (default: from the device id in kid);
    size: the buffer (frames are at most size - 6 bytes, and never over MAX_FRAME).
    Names, units and string values are str (or UTF-8 bytes); values are int or float.
    """

    def __init__(self, key, kid, alg=4, bn=None, size=512):
        if len(kid) != 8:
            raise ValueError("frame: kid must be 8 bytes")
        self._tlen = tag_len(alg)
        self._alg = alg
        self._kid = bytes(kid)
        self._tagfmt = "%ds" % self._tlen
        tail = cbor.head_size(self._tlen) + self._tlen  # the tag bstr
        self._mac = HMAC256(key)
        self._prot = protected(alg, kid)
        if bn is None:
            bn = base_name(kid[:6])
        n = cbor.utf8_len(bn)
        first = bytearray(2 + cbor.head_size(n) + n)  # 21 <bn text> 22, then bt per frame
        first[0] = _L_BN
        first[cbor.text(first, 1, bn, n)] = _L_BT
        self._first = bytes(first)
        if size < _MIN_SIZE or size < _RECORDS + len(first) + 16 + tail:
            raise ValueError("frame: buffer too small")
        self._buf = bytearray(size)
        self._mv = memoryview(self._buf)
        # Records must end where the tag still fits, and the frame within MAX_FRAME.
        self._limit = (size if size < MAX_FRAME else MAX_FRAME) - tail
        self._names = {}
        self._short = None  # v2: reading name -> encoded "0: short name" (declare())
        self._prot2 = None
        self._v2 = False  # the frame being built is v2 telemetry
        self._pos = _RECORDS
        self._rs = _RECORDS
        self._count = 0
        self._open = False
        self._tagat = 0
        self._at = -1  # (payload start, records end) the two views below were made for
        self._end = -1
        self._atv2 = False
        self._protected = None
        self._payload = None
        self._frame = None

    def declare(self, did, shorts):
        """Frame format v2 for telemetry from now on: did, the declaration id (4 bytes); shorts,
        each declared reading's name -> its short name (fnode.declare). None, None: back to v1."""
        if did is None:
            self._short = self._prot2 = None
            return
        self._prot2 = protected_v2(self._alg, self._kid, did)
        enc = {}
        for name in shorts:
            short = shorts[name]
            b = bytearray(1 + 1 + len(short))
            b[0] = _L_N
            cbor.text(b, 1, short, len(short))
            enc[name] = bytes(b)
        self._short = enc

    def begin(self, kind, counter, bt):
        """Starts a frame: kind (cose.KIND_*), counter (1..2**32-1, never reused), bt (base
        time: whole seconds since 1970, carried by the first record)."""
        if not 0 <= kind <= KIND_MAX:
            raise ValueError("frame: unknown kind")
        if not 0 < counter <= _MAX_U32:
            raise ValueError("frame: counter must be 1..2**32-1")
        if type(bt) is not int or not 0 <= bt <= _MAX_U32:
            raise ValueError("frame: bt must be an int, 0..2**32-1")
        self._v2 = v2 = self._short is not None and kind == KIND_TELEMETRY
        # The first record's map head goes at the records' start once its size is known; bn (not
        # in v2) and bt follow.
        if v2:
            set_counter(self._prot2, counter)
            self._rs = _RECORDS_V2
            o = _RECORDS_V2 + 2
            self._buf[_RECORDS_V2 + 1] = _L_BT
        else:
            set_counter_kind(self._prot, counter, kind)
            self._rs = _RECORDS
            o = _RECORDS + 1 + len(self._first)
            self._buf[_RECORDS + 1:o] = self._first
        if bt > 0xFFFF:  # any time since 1970-01-01T18:12Z
            pack_into(">BI", self._buf, o, _UINT32, bt)
            self._pos = o + 5
        else:
            self._pos = cbor.head(self._buf, o, cbor.MAJOR_UINT, bt)
        self._count = 0
        self._open = True

    def _name(self, name, unit):
        # (unit, encoded "0: n [, 1: u]"), kept per name: two objects a name (the map head and
        # the length follow from them, the struct format is cbor's cache), as the node keeps one
        # for each of its readings for good (docs/firmware.md, "Memory budget").
        nn = cbor.utf8_len(name)
        nu = cbor.utf8_len(unit) if unit else 0
        size = 1 + cbor.head_size(nn) + nn
        if nu:
            size += 1 + cbor.head_size(nu) + nu
        b = bytearray(size)
        b[0] = _L_N
        o = cbor.text(b, 1, name, nn)
        if nu:
            b[o] = _L_U
            cbor.text(b, o + 1, unit, nu)
        c = (unit, bytes(b))
        if len(self._names) < _NAMES or name in self._names:
            self._names[name] = c
        return c

    def _record(self, name, unit, vsize):
        # Writes the map head and n/u of a record that has vsize bytes of value (label included)
        # to follow; returns where the value goes. Checks first that the whole record fits.
        if not self._open:
            raise ValueError("frame: begin() first")
        if self._v2:  # the short name; the unit is the declaration's
            nu = self._short.get(name)
            if nu is None:
                raise ValueError("frame: reading not in the declaration")
            unit = None
        else:
            c = self._names.get(name)
            if c is None or c[0] != unit:
                c = self._name(name, unit)
            nu = c[1]
        o = self._pos
        if o + 1 + len(nu) + vsize > self._limit:
            raise FrameFull("frame: record does not fit the buffer")
        head = (_MAP | 3) if unit else (_MAP | 2)
        if self._count:
            self._buf[o] = head
            o += 1
        else:
            self._buf[self._rs] = head + (1 if self._v2 else 2)  # bt (v2), bn and bt (v1)
        self._count += 1
        return cbor.raw(self._buf, o, nu, len(nu))

    def add(self, name, unit, value):
        """A reading: int (shortest integer) or float (float32); unit None or "" leaves u out."""
        t = type(value)
        if t is float:
            o = self._record(name, unit, 6)
            pack_into(">BBf", self._buf, o, _L_V, _FLOAT32, value)
            self._pos = shortest(self._buf, o + 1) if self._v2 else o + 6
        elif t is int:
            o = self._record(name, unit, 1 + cbor.integer_size(value))
            self._buf[o] = _L_V
            self._pos = cbor.integer(self._buf, o + 1, value)
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
        o = cbor.raw(self._buf, o, _L_ERR, 4)
        self._pos = cbor.text(self._buf, o, err, n)

    def _seal(self):
        # Heads and envelope prefix in front of the records; tag position; views (if moved).
        if not self._open or not self._count:
            raise ValueError("frame: begin() and add() first")
        self._open = False
        buf = self._buf
        end = self._pos
        v2 = self._v2
        a = self._rs - cbor.head_size(self._count)
        cbor.array_head(buf, a, self._count)
        n = end - a
        if 23 < n < 256:  # the usual payload: 24..255 bytes
            p = a - 2
            pack_into(">BB", buf, p, _BSTR8, n)
        else:
            p = a - cbor.head_size(n)
            cbor.head(buf, p, cbor.MAJOR_BSTR, n)
        n = PROTECTED_V2_SIZE if v2 else PROTECTED_SIZE
        s = p - 3 - n
        buf[s] = _TAG17
        buf[s + 1] = _ARRAY4
        buf[s + 2:s + 2 + n] = self._prot2 if v2 else self._prot
        buf[s + 2 + n] = _EMPTY_MAP
        self._tagat = cbor.head(buf, end, cbor.MAJOR_BSTR, self._tlen)
        if p != self._at or end != self._end or v2 != self._atv2:
            self._protected = self._mv[s + 2:s + 2 + n]
            self._payload = self._mv[p:end]
            self._frame = self._mv[s:self._tagat + self._tlen]
            self._at = p
            self._end = end
            self._atv2 = v2

    def finish(self):
        """The signed frame: a memoryview into the builder's buffer, valid until begin()."""
        self._seal()
        h = mac_structure(self._mac, self._protected, self._payload)
        pack_into(self._tagfmt, self._buf, self._tagat, self._mac.finish(h))
        return self._frame


# --- v2 values: the shortest CBOR that holds the node's float exactly ----------------------------
# Decided from the float32 bits already written (fa b0 b1 b2 b3), with small ints only: float
# arithmetic would box a float per step on the heap. Each function keeps few locals (see above).

def shortest(buf, o):
    """buf[o:o + 5] is a float32 (fa ...): rewrites it as an integer when integral (|v| < 2**32)
    or as float16 when that is exact; -> the offset after the value."""
    e = ((buf[o + 1] & 0x7F) << 1) | (buf[o + 2] >> 7)
    m = ((buf[o + 2] & 0x7F) << 16) | (buf[o + 3] << 8) | buf[o + 4]
    if e == 0 and m == 0:  # +-0.0: the integer 0
        buf[o] = 0
        return o + 1
    if 127 <= e < 159:
        n = _integral(e, m)
        if n >= 0:
            return cbor.integer(buf, o, -n if buf[o + 1] & 0x80 else n)
    return _half(buf, o, e, m)


def _integral(e, m):
    # The magnitude of 1.m * 2**(e-127) if it is a whole number, else -1.
    shift = 150 - e
    m |= 0x800000
    if shift <= 0:
        return m << -shift
    if m & ((1 << shift) - 1):
        return -1
    return m >> shift


def _half(buf, o, e, m):
    if 113 <= e <= 142 and not m & 0x1FFF:  # a normal float16
        h = ((e - 112) << 10) | (m >> 13)
    elif 103 <= e <= 112 and not (m | 0x800000) & ((1 << (126 - e)) - 1):  # a float16 subnormal
        h = (m | 0x800000) >> (126 - e)
    elif e == 255 and not m & 0x1FFF:  # infinity, or a NaN float16 holds
        h = 0x7C00 | (m >> 13)
    else:
        return o + 5
    pack_into(">BH", buf, o, _FLOAT16, h | ((buf[o + 1] & 0x80) << 8))
    return o + 3
