# CBOR (RFC 8949) decoder, for the frames the node receives (commands, built by the host); the
# encoder is fnode.cbor. Imported only while a command is read (fnode.app.Node.take_command).
# Definite lengths only; depth and item-count limits; any malformed input (truncated, reserved or
# indefinite heads, bad UTF-8, duplicate map keys, trailing bytes) raises ValueError with a
# "cbor: ..." message.
from micropython import const
from struct import unpack_from

_MAJOR_UINT = const(0x00)
_MAJOR_NINT = const(0x20)
_MAJOR_BSTR = const(0x40)
_MAJOR_TSTR = const(0x60)
_MAJOR_ARRAY = const(0x80)
_MAJOR_MAP = const(0xA0)
_MAJOR_TAG = const(0xC0)

_MAX_DEPTH = const(8)
_MAX_ITEMS = const(64)


class Tag:
    """A decoded tagged item: tag number and content."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value


def read_head(buf, pos):
    """(initial byte, argument, position after the head) of the item at pos."""
    end = len(buf)
    if pos >= end:
        raise ValueError("cbor: truncated")
    ib = buf[pos]
    ai = ib & 0x1F
    pos += 1
    if ai < 24:
        return ib, ai, pos
    if ai == 31:
        if 0x40 <= ib < 0xC0:
            raise ValueError("cbor: indefinite length not supported")
        raise ValueError("cbor: malformed (break or indefinite head)")
    if ai > 27:
        raise ValueError("cbor: malformed (reserved additional info)")
    size = 1 << (ai - 24)
    if pos + size > end:
        raise ValueError("cbor: truncated")
    if size == 1:
        n = buf[pos]
        if ib == 0xF8 and n < 32:
            raise ValueError("cbor: malformed (two-byte simple value < 32)")
    elif size == 2:
        n = unpack_from(">H", buf, pos)[0]
    elif size == 4:
        n = unpack_from(">I", buf, pos)[0]
    else:
        n = unpack_from(">Q", buf, pos)[0]
    return ib, n, pos + size


def _string_end(buf, pos, n):
    if n > len(buf) - pos:
        raise ValueError("cbor: truncated")
    return pos + n


def skip(buf, pos, depth=_MAX_DEPTH, max_items=_MAX_ITEMS):
    """Position after the well-formed item at pos, building nothing (ValueError if malformed)."""
    ib, n, pos = read_head(buf, pos)
    major = ib & 0xE0
    if major == _MAJOR_BSTR or major == _MAJOR_TSTR:
        return _string_end(buf, pos, n)
    if major == _MAJOR_ARRAY or major == _MAJOR_MAP or major == _MAJOR_TAG:
        if depth <= 0:
            raise ValueError("cbor: nested too deep")
        if major == _MAJOR_TAG:
            return skip(buf, pos, depth - 1, max_items)
        if n > max_items:
            raise ValueError("cbor: too many items")
        if major == _MAJOR_MAP:
            n *= 2
        for _ in range(n):
            pos = skip(buf, pos, depth - 1, max_items)
    return pos


def half_to_float(h):
    """IEEE 754 binary16 bits to a float (MicroPython's struct may lack 'e')."""
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = m / 16777216.0  # subnormal: m * 2**-24
    elif e == 31:
        v = float("nan") if m else float("inf")
    else:
        v = (m + 1024) * 2.0 ** (e - 25)
    return -v if h & 0x8000 else v


def decode(buf, pos, depth=_MAX_DEPTH, max_items=_MAX_ITEMS):
    """(value, position after it) for the item at pos: int, bytes, str, list, dict, Tag, float,
    bool or None."""
    ib, n, pos = read_head(buf, pos)
    major = ib & 0xE0
    if major == _MAJOR_UINT:
        return n, pos
    if major == _MAJOR_NINT:
        return -1 - n, pos
    if major == _MAJOR_BSTR:
        end = _string_end(buf, pos, n)
        return bytes(buf[pos:end]), end
    if major == _MAJOR_TSTR:
        end = _string_end(buf, pos, n)
        try:
            return str(buf[pos:end], "utf-8"), end
        except UnicodeError:
            raise ValueError("cbor: invalid UTF-8")
    if major == 0xE0:
        return _simple(buf, ib, n, pos), pos
    if depth <= 0:
        raise ValueError("cbor: nested too deep")
    depth -= 1
    if major == _MAJOR_TAG:
        v, pos = decode(buf, pos, depth, max_items)
        return Tag(n, v), pos
    if n > max_items:
        raise ValueError("cbor: too many items")
    if major == _MAJOR_ARRAY:
        out = [None] * n
        for i in range(n):
            out[i], pos = decode(buf, pos, depth, max_items)
        return out, pos
    return _map(buf, pos, n, depth, max_items)


def _simple(buf, ib, n, pos):
    # Major type 7; pos is after the head, so a float's bytes end there (n holds a half's bits).
    if ib == 0xF4:
        return False
    if ib == 0xF5:
        return True
    if ib == 0xF6:
        return None
    if ib == 0xF9:
        return half_to_float(n)
    if ib == 0xFA:
        return unpack_from(">f", buf, pos - 4)[0]
    if ib == 0xFB:
        return unpack_from(">d", buf, pos - 8)[0]
    raise ValueError("cbor: unsupported simple value")


def _map(buf, pos, n, depth, max_items):
    out = {}
    for _ in range(n):
        k, pos = decode(buf, pos, depth, max_items)
        try:
            hash(k)
        except TypeError:
            raise ValueError("cbor: map key of an unhashable type")
        if k in out:
            raise ValueError("cbor: duplicate map key")
        out[k], pos = decode(buf, pos, depth, max_items)
    return out, pos


def loads(buf, depth=_MAX_DEPTH, max_items=_MAX_ITEMS):
    """The one item buf holds (ValueError for malformed input or trailing bytes)."""
    v, pos = decode(buf, 0, depth, max_items)
    if pos != len(buf):
        raise ValueError("cbor: trailing bytes")
    return v
