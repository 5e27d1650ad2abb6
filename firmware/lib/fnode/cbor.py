# CBOR (RFC 8949): the subset frame format v1 needs (docs/frame-format.md).
#
# Encoder: functions that write one item (or one item head) into a caller's preallocated buffer at
# an offset and return the offset after it; only those the frame builder uses, as each one takes
# heap on a node. They allocate nothing for ints, bools and text/byte strings (text of up to 64
# bytes; longer ones allocate their struct format once per call).
#
# The decoder, for the commands the node receives, is fnode.cbordecode: loaded only while a
# command is read (docs/firmware.md, "Memory budget").
from micropython import const
from struct import pack_into
from io import BytesIO

MAJOR_UINT = const(0x00)
_MAJOR_NINT = const(0x20)
MAJOR_BSTR = const(0x40)
_MAJOR_TSTR = const(0x60)
_MAJOR_ARRAY = const(0x80)

_FALSE = const(0xF4)
_TRUE = const(0xF5)
_FMT_CACHED = const(65)

# struct formats "0s".."64s", made on first use: copying a str or bytes into the buffer with
# pack_into allocates nothing (bytearray slice assignment refuses str).
_sfmt = [None] * _FMT_CACHED
# Byte length of a str without encoding it: BytesIO.write returns the UTF-8 byte count.
_sink = BytesIO(64)


# --- encoder --------------------------------------------------------------------------------

def head_size(n):
    """Bytes taken by the shortest head for argument n."""
    if n < 24:
        return 1
    if n < 0x100:
        return 2
    if n < 0x10000:
        return 3
    if n < 0x100000000:
        return 5
    return 9


def head(buf, off, major, n):
    """Writes the shortest head of major type `major` (MAJOR_*) with argument n >= 0."""
    if n < 24:
        buf[off] = major | n
        return off + 1
    if n < 0x100:
        pack_into(">BB", buf, off, major | 24, n)
        return off + 2
    if n < 0x10000:
        pack_into(">BH", buf, off, major | 25, n)
        return off + 3
    if n < 0x100000000:
        pack_into(">BI", buf, off, major | 26, n)
        return off + 5
    if n <= 0xFFFFFFFFFFFFFFFF:
        pack_into(">BQ", buf, off, major | 27, n)
        return off + 9
    raise ValueError("cbor: integer out of range")


def integer(buf, off, v):
    if v < 0:
        return head(buf, off, _MAJOR_NINT, -1 - v)
    return head(buf, off, MAJOR_UINT, v)


def integer_size(v):
    return head_size(-1 - v if v < 0 else v)



def boolean(buf, off, b):
    buf[off] = _TRUE if b else _FALSE
    return off + 1




def utf8_len(s):
    """Encoded length of a str (UTF-8 bytes), or len() of a bytes-like object."""
    if type(s) is str:
        _sink.seek(0)
        return _sink.write(s)
    return len(s)


def raw(buf, off, s, n=-1):
    """Copies the bytes of s (bytes-like, or a str as UTF-8; n of them) into buf at off."""
    if n < 0:
        n = utf8_len(s)
    if n < _FMT_CACHED:
        f = _sfmt[n]
        if f is None:
            f = _sfmt[n] = "%ds" % n
    else:
        f = "%ds" % n
    pack_into(f, buf, off, s)
    return off + n


def text(buf, off, s, n=-1):
    """A text string from a str (or UTF-8 bytes); n, when known, is its byte length."""
    if n < 0:
        n = utf8_len(s)
    return raw(buf, head(buf, off, _MAJOR_TSTR, n), s, n)



def array_head(buf, off, n):
    return head(buf, off, _MAJOR_ARRAY, n)
