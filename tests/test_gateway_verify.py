"""The gateway's verify path (fieldnode.wire.frame.Verifier) against a plain reading of the spec.

Verifier.verify takes shortcuts for speed: the node's envelope layout is split by position and its
MAC structure joined from the frame's own bytes, the SenML check has a one-pass fast path, and
one CBOR decoder is reused for every payload. Here a slow reference (cbor2 for the whole
envelope, the MAC structure encoded afresh, cbor2.loads, the thorough record check for every
record) must reach the same verdict on mutated and re-signed frames.
"""
from __future__ import annotations

import hmac
import io
import struct

import cbor2
from hypothesis import given, settings, strategies as st

from fieldnode.wire.frame import (KIND_NAMES, SENML_BN, TAG_LENGTH, FrameRejected, Verifier, _validate_record,
                             compute_tag, device_base_name, is_number, parse_protected, validate_pack)


def envelope(data: bytes) -> list:
    """[protected, unprotected, payload, tag] of a COSE_Mac0 frame, or FrameRejected."""
    if len(data) > 1024:
        raise FrameRejected("oversized")
    stream = io.BytesIO(data)
    try:
        obj = cbor2.load(stream, str_errors="replace")  # invalid UTF-8 -> U+FFFD (frame-format.md)
    except Exception:
        raise FrameRejected("bad-cbor") from None
    if stream.tell() != len(data):
        raise FrameRejected("bad-cbor")  # trailing bytes
    if not (isinstance(obj, cbor2.CBORTag) and obj.tag == 17 and isinstance(obj.value, list)
            and len(obj.value) == 4 and isinstance(obj.value[0], bytes) and isinstance(obj.value[1], dict)
            and isinstance(obj.value[2], bytes) and isinstance(obj.value[3], bytes)):
        raise FrameRejected("not-cose-mac0")
    return obj.value


def reference(table: dict, data: bytes) -> tuple:
    """('ok', records) or ('rejected', reason), the slow way."""
    try:
        protected, _, payload, tag = envelope(data)
        alg, kid, counter, kind = parse_protected(protected)
        if kid not in table:
            raise FrameRejected("unknown-kid")
        key, key_alg = table[kid]
        if alg != key_alg:
            raise FrameRejected("bad-header")
        mac = cbor2.dumps(["MAC0", protected, b"", payload])
        if not hmac.compare_digest(hmac.digest(key, mac, "sha256")[:TAG_LENGTH[alg]], tag):
            raise FrameRejected("bad-mac")
        try:
            pack = cbor2.loads(payload, str_errors="replace")
        except Exception:
            raise FrameRejected("bad-senml") from None
        if type(pack) is not list or not pack or type(pack[0]) is not dict \
                or type(pack[0].get(-2)) is not str or not is_number(pack[0].get(-3)):
            raise FrameRejected("bad-senml")
        for rec in pack:
            _validate_record(rec, rec is pack[0], pack[0][-3])
        if pack[0][SENML_BN] != device_base_name(kid[:6]):
            raise FrameRejected("device-mismatch")
        return ("ok", pack)
    except FrameRejected as exc:
        return ("rejected", exc.reason)


def ours(verifier: Verifier, data: bytes) -> tuple:
    try:
        return ("ok", verifier.verify(data).pack)
    except FrameRejected as exc:
        return ("rejected", exc.reason)


def node_envelope(protected: bytes, payload: bytes, key: bytes) -> bytes:
    """The node's layout around any payload, signed (so the payload reaches the decoder)."""
    n = len(payload)
    head = bytes((0x40 | n,)) if n < 24 else (bytes((0x58, n)) if n < 256 else b"\x59" + struct.pack(">H", n))
    return b"\xd1\x84\x58\x19" + protected + b"\xa0" + head + payload + b"\x48" + compute_tag(key, 4, protected,
                                                                                               payload)


@given(st.data())
@settings(max_examples=800, deadline=None)
def test_mutated_frames_get_the_reference_verdict(vectors, data):
    table = {bytes.fromhex(c["kid"]): (bytes.fromhex(c["key"]), c["alg"]) for c in vectors["frames"]}
    verifier = Verifier(table.get, None, accept_kinds=KIND_NAMES)
    case = data.draw(st.sampled_from(vectors["frames"]))
    frame = bytearray(bytes.fromhex(case["frame"]))
    for _ in range(data.draw(st.integers(0, 3))):
        op = data.draw(st.integers(0, 2))
        pos = data.draw(st.integers(0, max(0, len(frame) - 1)))
        if op == 0 and frame:
            frame[pos] = data.draw(st.integers(0, 255))
        elif op == 1:
            del frame[pos:pos + data.draw(st.integers(1, 8))]
        else:
            frame[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    assert ours(verifier, bytes(frame)) == reference(table, bytes(frame))


# Integers around the 64-bit bounds and non-finite floats: what a store cannot keep must be refused
# by both checks alike.
senml_values = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(),
                         st.integers(2**63 - 2, 2**63 + 1), st.integers(-2**63 - 1, -2**63 + 1), st.just(2**1100),
                         st.text(max_size=4), st.binary(max_size=2), st.lists(st.integers(), max_size=1))
senml_keys = st.sampled_from([-2, -3, 0, 1, 2, 3, 4, 6, "err", 5, "n"])
records = st.dictionaries(senml_keys, senml_values, max_size=6)


@given(st.lists(records, max_size=5), st.booleans())
@settings(max_examples=700, deadline=None)
def test_senml_fast_check_agrees_with_the_thorough_one(pack, fix_first):
    if fix_first and pack:
        pack[0][-2], pack[0][-3] = "urn:dev:mac:x:", 1
        pack[0][0] = "temp"
    try:
        validate_pack(pack)
        fast = "ok"
    except FrameRejected as exc:
        fast = exc.reason
    try:
        if type(pack) is not list or not pack or type(pack[0]) is not dict \
                or type(pack[0].get(-2)) is not str or not is_number(pack[0].get(-3)):
            raise FrameRejected("bad-senml")
        for rec in pack:
            _validate_record(rec, rec is pack[0], pack[0][-3])
        slow = "ok"
    except FrameRejected as exc:
        slow = exc.reason
    assert fast == slow


@given(st.binary(max_size=40), st.sampled_from(["shareable", "stringref", "plain"]))
@settings(max_examples=500, deadline=None)
def test_reused_decoder_forgets_each_payload(vectors, junk, prefix):
    """Signed garbage (a broken shared value, a string reference) must not change how the next,
    valid frame of the same verifier decodes."""
    case = vectors["frames"][0]
    key = bytes.fromhex(case["key"])
    kid = bytes.fromhex(case["kid"])
    verifier = Verifier({kid: (key, 4)}.get, None)
    good = bytes.fromhex(case["frame"])
    protected = good[4:29]
    lead = {"shareable": b"\xd8\x1c\x82", "stringref": b"\xd9\x01\x00\x82", "plain": b""}[prefix]
    ours(verifier, node_envelope(protected, lead + junk, key))
    assert verifier.verify(good).records() == Verifier({kid: (key, 4)}.get, None).verify(good).records()
