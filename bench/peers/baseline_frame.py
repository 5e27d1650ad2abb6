# BASELINE PEER for bench/node_frame.py -- not firmware, never imported by the node.
#
# The straightforward way to make a frame format v1 frame on MicroPython, the way one would with
# micropython-lib's cbor2 and hmac: build the COSE_Mac0 / SenML structure as dicts and lists every
# frame, encode it with a general recursive CBOR encoder into bytes, and MAC it with a fresh HMAC
# object (key padded per frame). Non-integer numbers are float32, as the spec asks, so the frame
# is a valid v1 frame; MicroPython dicts are unordered, so its map key order may differ from the
# node's template (the bytes, not the meaning).
import hashlib
import io
import struct


class Tag:
    def __init__(self, tag, value):
        self.tag = tag
        self.value = value


def _head(out, major, n):
    if n < 24:
        out.write(bytes((major << 5 | n,)))
    elif n < 0x100:
        out.write(bytes((major << 5 | 24, n)))
    elif n < 0x10000:
        out.write(bytes((major << 5 | 25,)) + struct.pack(">H", n))
    elif n < 0x100000000:
        out.write(bytes((major << 5 | 26,)) + struct.pack(">I", n))
    else:
        out.write(bytes((major << 5 | 27,)) + struct.pack(">Q", n))


def _encode(out, obj):
    if obj is False:
        out.write(b"\xf4")
    elif obj is True:
        out.write(b"\xf5")
    elif obj is None:
        out.write(b"\xf6")
    elif isinstance(obj, int):
        if obj >= 0:
            _head(out, 0, obj)
        else:
            _head(out, 1, -1 - obj)
    elif isinstance(obj, float):
        out.write(b"\xfa" + struct.pack(">f", obj))
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        _head(out, 3, len(b))
        out.write(b)
    elif isinstance(obj, (bytes, bytearray)):
        _head(out, 2, len(obj))
        out.write(obj)
    elif isinstance(obj, (list, tuple)):
        _head(out, 4, len(obj))
        for item in obj:
            _encode(out, item)
    elif isinstance(obj, dict):
        _head(out, 5, len(obj))
        for k, v in obj.items():
            _encode(out, k)
            _encode(out, v)
    elif isinstance(obj, Tag):
        _head(out, 6, obj.tag)
        _encode(out, obj.value)
    else:
        raise TypeError("cannot encode %r" % (obj,))


def dumps(obj):
    out = io.BytesIO()
    _encode(out, obj)
    return out.getvalue()


class HMAC:
    """HMAC in the shape of the standard library's (new / update / digest)."""

    blocksize = 64

    def __init__(self, key, msg=None, digestmod=hashlib.sha256):
        if len(key) > self.blocksize:
            key = digestmod(key).digest()
        key = key + bytes(self.blocksize - len(key))
        self._outer = digestmod(bytes(x ^ 0x5C for x in key))
        self._inner = digestmod(bytes(x ^ 0x36 for x in key))
        if msg is not None:
            self.update(msg)

    def update(self, msg):
        self._inner.update(msg)

    def digest(self):
        self._outer.update(self._inner.digest())
        return self._outer.digest()


def build_frame(key, kid, alg, counter, kind, bn, bt, readings):
    """A signed frame; readings: (name, unit or None, number) tuples."""
    protected = dumps({1: alg, 4: kid, 6: counter.to_bytes(4, "big"), -65537: kind})
    records = []
    for i, (name, unit, value) in enumerate(readings):
        rec = {}
        if i == 0:
            rec[-2] = bn
            rec[-3] = bt
        rec[0] = name
        if unit:
            rec[1] = unit
        rec[2] = value
        records.append(rec)
    payload = dumps(records)
    tag = HMAC(key, dumps(["MAC0", protected, b"", payload])).digest()
    tag = tag[:8] if alg == 4 else tag
    return dumps(Tag(17, [protected, {}, payload, tag]))
