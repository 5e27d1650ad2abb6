# COSE_Mac0 (RFC 9052) as frame formats v1 and v2 use it (docs/frame-format.md): the node's protected
# header template, the MAC over MAC_structure fed piecewise from the frame buffer, and the
# rejection reasons. The verification of received frames is fnode.command.verify, loaded only
# while a command is read (docs/firmware.md, "Memory budget").
from micropython import const
from struct import pack_into

ALG_HMAC_256_64 = const(4)
ALG_HMAC_256_256 = const(5)
MAX_FRAME = const(1024)
COSE_MAC0_TAG = const(17)

KIND_TELEMETRY = const(0)
KIND_EVENT = const(1)
KIND_BOOT = const(2)
KIND_COMMAND = const(3)
KIND_ACK = const(4)
KIND_MAX = const(4)  # the last kind with a SenML payload (what FrameBuilder builds)
KIND_DECLARATION = const(5)  # v2: the readings' short names, names, units and sensors (fnode.declare)

# The protected header as a bstr with its head: 58 19 a4 01 <alg> 04 48 <kid:8> 06 44
# <counter:4> 3a 00 01 00 00 <kind>
PROTECTED_SIZE = const(27)
_ALG_AT = const(4)
_KID_AT = const(7)
_COUNTER_AT = const(17)
_KIND_AT = const(26)
# v2 telemetry: the kind's label and value give way to the declaration id (label -65538, 4 bytes):
# 58 1d a4 01 <alg> 04 48 <kid:8> 06 44 <counter:4> 3a 00 01 00 01 44 <declaration id:4>
PROTECTED_V2_SIZE = const(31)
DECLARATION_ID_SIZE = const(4)
# The counter's offset in a frame (the same in v1 and v2): d1 84 (tag 17, array of 4), then the protected header above.
# The one definition on the node: the uplink and the spool read a frame's counter with counter_of.
_FRAME_COUNTER_AT = const(2 + _COUNTER_AT)


MAC0_CONTEXT = b"\x84\x64MAC0"  # MAC_structure: array(4), "MAC0"
EMPTY_AAD = b"\x40"


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


def protected_v2(alg, kid, did):
    """The protected header bstr of the node's v2 telemetry (31 bytes, counter 0 until set_counter)."""
    if len(did) != DECLARATION_ID_SIZE:
        raise ValueError("cose: declaration id must be 4 bytes")
    p = protected(alg, kid)
    p[1] = PROTECTED_V2_SIZE - 2
    p[_KIND_AT - 1] = 0x01  # label -65538 (3a 00 01 00 01) where v1 has -65537
    p[_KIND_AT] = 0x44  # bstr(4)
    return p + did


def set_counter(prot, counter):
    pack_into(">I", prot, _COUNTER_AT, counter)


def counter_of(frame):
    """The counter of one of the node's frames (bytes-like), read without allocating (unpack_from
    would build a tuple a frame)."""
    return (frame[_FRAME_COUNTER_AT] << 24) | (frame[_FRAME_COUNTER_AT + 1] << 16) \
        | (frame[_FRAME_COUNTER_AT + 2] << 8) | frame[_FRAME_COUNTER_AT + 3]


def set_counter_kind(prot, counter, kind):
    pack_into(">I", prot, _COUNTER_AT, counter)
    prot[_KIND_AT] = kind


def mac_structure(mac, prot, payload):
    """Feeds MAC_structure for a frame into a new HMAC inner hash and returns it, for
    mac.finish / mac.verify. prot and payload are the protected and payload
    bstrs, each with its CBOR head, as they stand in the frame (buffers, not copies).
    Hot path: keep this function's locals few (see frame.py)."""
    h = mac.start()
    h.update(MAC0_CONTEXT)
    h.update(prot)
    h.update(EMPTY_AAD)
    h.update(payload)
    return h
