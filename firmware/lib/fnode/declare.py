# Frame format v2's declaration (docs/frame-format.md, "Declaration"): every reading the node can
# send, with the short name its v2 telemetry uses, its full name, unit and sensor; signed as a
# frame of kind 5. Built at boot (and again when the gateway asks for it), so not in the hot path.
#
#   readings = declare.readings(sensors, declare.HEALTH)   # [(short, name, unit, sensor)]
#   payload = declare.payload(readings); did = declare.declaration_id(payload)
#   fb.declare(did, declare.shorts(readings))              # v2 telemetry from now on
#   frame = declare.frame(key, kid, alg, counter, payload)
# A node calls of_node() (fnode.app.Node.declaration_frame), with this module imported for it
# and forgotten after it.
from hashlib import sha256
from . import cbor
from .cose import protected, set_counter_kind, mac_structure, tag_len, KIND_DECLARATION, DECLARATION_ID_SIZE
from .hmac256 import HMAC256

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# The node's own readings (fnode.health), declared after the sensors'.
HEALTH = (("heap.free", "B", "node"), ("heap.low", "B", "node"), ("heap.block", "B", "node"))


def short_name(i):
    """The i-th short name: a..z, A..Z, then two characters (aa, ab, ...)."""
    n = len(_ALPHABET)
    if i < n:
        return _ALPHABET[i]
    i -= n
    if i < n * n:
        return _ALPHABET[i // n] + _ALPHABET[i % n]
    raise ValueError("declare: more readings than short names")


def readings(sensors, extra=()):
    """[(short, name, unit, sensor)] in board order: each sensor's readings, then extra
    ((name, unit, sensor) tuples). A reading with no unit declares ""."""
    out = []
    for s in sensors:
        for i in range(len(s.names)):
            out.append((short_name(len(out)), s.names[i], s.units[i] or "", s.name))
    for name, unit, sensor in extra:
        out.append((short_name(len(out)), name, unit or "", sensor))
    return out


def shorts(readings):
    """name -> short name, for FrameBuilder.declare."""
    return {r[1]: r[0] for r in readings}


def payload(readings):
    """The declaration payload: an array of [short, name, unit, sensor] arrays (shortest heads)."""
    size = cbor.head_size(len(readings))
    for r in readings:
        size += 1
        for x in r:
            n = cbor.utf8_len(x)
            size += cbor.head_size(n) + n
    buf = bytearray(size)
    o = cbor.array_head(buf, 0, len(readings))
    for r in readings:
        o = cbor.array_head(buf, o, 4)
        for x in r:
            o = cbor.text(buf, o, x)
    return bytes(buf)


def declaration_id(payload):
    return sha256(payload).digest()[:DECLARATION_ID_SIZE]


def frame(key, kid, alg, counter, payload):
    """The signed declaration frame (kind 5, the v1 protected header)."""
    tlen = tag_len(alg)
    prot = protected(alg, kid)
    set_counter_kind(prot, counter, KIND_DECLARATION)
    body = bytearray(cbor.head_size(len(payload)) + len(payload))
    cbor.raw(body, cbor.head(body, 0, cbor.MAJOR_BSTR, len(payload)), payload)
    mac = HMAC256(key)
    tag = mac.finish(mac_structure(mac, prot, body))
    tail = bytearray(cbor.head_size(tlen) + tlen)
    cbor.raw(tail, cbor.head(tail, 0, cbor.MAJOR_BSTR, tlen), tag[:tlen], tlen)
    return b"\xd1\x84" + prot + b"\xa0" + body + tail


def of_node(node, declare_only=False):
    """The node's declaration frame, made from its sensors (the same bytes each time); with
    declare_only, its frame builder set to v2 telemetry instead (at boot)."""
    rs = readings(node.sensors, HEALTH)
    body = payload(rs)
    if declare_only:
        node.builder.declare(declaration_id(body), shorts(rs))
        return None
    cfg = node.cfg
    return frame(cfg.key(), cfg.kid(), cfg.alg(), node.counter.take(), body)
