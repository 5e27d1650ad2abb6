"""The gateway's verify path (fieldnode.wire.frame.Verifier, validate_pack) against a reference written
from the spec alone (tests/support/frame_reference.py: docs/frame-format.md, RFC 9052, RFC 8428;
cbor2 and hmac, nothing from fieldnode.wire.frame), so that a bug in the gateway cannot also sit in
the reference.

Verifier.verify takes shortcuts for speed: the node's envelope layout is split by position and its
MAC structure joined from the frame's own bytes, the SenML check has a one-pass fast path, and
one CBOR decoder is reused for every payload. The reference must reach the same verdict on
mutated frames, on signed frames around arbitrary packs, and on packs alone.
"""
from __future__ import annotations

import struct

import cbor2
from hypothesis import given, settings, strategies as st

from fieldnode.wire.frame import KIND_DECLARATION, KIND_NAMES, FrameRejected, Verifier, compute_tag, validate_pack
from support.frame_reference import base_name, senml_verdict, verdict as reference


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


def test_the_vectors_are_accepted_by_both(vectors):
    table = {bytes.fromhex(c["kid"]): (bytes.fromhex(c["key"]), c["alg"]) for c in vectors["frames"]}
    verifier = Verifier(table.get, None, accept_kinds=KIND_NAMES)
    verdicts = [reference(table, bytes.fromhex(c["frame"])) for c in vectors["frames"]]
    assert len(verdicts) == len(vectors["frames"]) > 0
    assert [v[0] for v in verdicts] == ["ok"] * len(verdicts)
    assert verdicts == [ours(verifier, bytes.fromhex(c["frame"])) for c in vectors["frames"]]


# Integers around the 64-bit bounds and non-finite floats: what a store cannot keep must be refused
# by both checks alike.
senml_values = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(),
                         st.integers(2**63 - 2, 2**63 + 1), st.integers(-2**63 - 1, -2**63 + 1), st.just(2**1100),
                         st.text(max_size=4), st.binary(max_size=2), st.lists(st.integers(), max_size=1))
# every RFC 8428 label (-1..-6, 0..8), our "err", and labels nobody defined
senml_keys = st.sampled_from([-6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, "err", 9, "n", "v"])
records = st.dictionaries(senml_keys, senml_values, max_size=6)
# Records shaped as a node sends them (a name, an optional unit, time or err, one value field), so
# that the gateway's one-pass check is reached often; each value of the right type or of any.
bounds = st.sampled_from([2**63 - 1, 2**63, -2**63, -2**63 - 1, float("inf"), float("-inf"), float("nan"), 1e308])
plain_values = {2: st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(), bounds, senml_values),
                3: st.one_of(st.text(max_size=4), senml_values), 4: st.one_of(st.booleans(), senml_values)}
plain_records = st.fixed_dictionaries(
    {0: st.one_of(st.text(min_size=1, max_size=6), senml_values)},
    optional={1: st.one_of(st.sampled_from(["Cel", "%RH", "B"]), senml_values),
              6: st.one_of(st.integers(-5, 5), st.floats(-1e3, 1e3), bounds, senml_values),
              "err": st.one_of(st.sampled_from(["nack", "crc"]), senml_values)}).flatmap(
    lambda rec: st.sampled_from(sorted(plain_values)).flatmap(
        lambda label: st.builds(lambda value: {**rec, label: value}, plain_values[label])))
any_records = st.one_of(records, plain_records, plain_records)
# The smallest records: a name, one value field, sometimes a time; the values at the edges often.
minimal_records = st.tuples(st.sampled_from(sorted(plain_values)), st.one_of(st.none(), st.integers(-5, 5), bounds)
                            ).flatmap(lambda lt: st.builds(
                                lambda value: {0: "r", lt[0]: value, **({} if lt[1] is None else {6: lt[1]})},
                                st.one_of(bounds, plain_values[lt[0]])))


@given(st.lists(any_records, max_size=5), st.booleans())
@settings(max_examples=700, deadline=None)
def test_validate_pack_agrees_with_the_spec(pack, fix_first):
    if fix_first and pack:
        pack[0][-2], pack[0][-3] = "urn:dev:mac:x:", 1
        pack[0][0] = "temp"
    try:
        validate_pack(pack)
        fast = "ok"
    except FrameRejected as exc:
        fast = exc.reason
    assert fast == senml_verdict(pack)


@given(st.one_of(any_records, minimal_records),
       st.sampled_from(["first", "second", "second with bn", "second with bt"]),
       st.one_of(st.integers(0, 2**32), bounds, senml_values))
@settings(max_examples=1500, deadline=None)
def test_each_record_gets_the_spec_verdict(record, where, bt):
    """One drawn record, as the first of a pack (bn and bt added) or behind a valid first record (with
    a base field it must not carry, sometimes): one record decides the verdict, so the rules at
    their edges (64-bit bounds, bt + t, types, field counts) are reached often."""
    head = {-2: "urn:dev:mac:x:", -3: bt}
    if where == "first":
        pack = [{**record, **head}]
    else:
        extra = {"second": {}, "second with bn": {-2: "urn:dev:mac:x:"}, "second with bt": {-3: 1}}[where]
        pack = [{**head, 0: "a", 2: 1}, {**record, **extra}]
    try:
        validate_pack(pack)
        fast = "ok"
    except FrameRejected as exc:
        fast = exc.reason
    assert fast == senml_verdict(pack)


EDGES = [0, 1, -1, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**1100, 0.5, 1e308, float("inf"), float("-inf"),
         float("nan"), True, False, None, "", "s", b"b", [1], {}]


def test_every_field_at_its_edges_gets_the_spec_verdict():
    """Each field of a plain record (n, u, v, vs, vb, t, err) set to each edge value, in the first
    record (with bn and bt, bt at its edges too) and in a later one: every combination, not a
    sample, so the bounds themselves are always tried."""
    fields = {0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 6: "t", "err": "err"}
    checked, wrong = 0, []
    for label in fields:
        for value in EDGES:
            for base in ({0: "a", 2: 1}, {0: "a", 3: "x"}, {0: "a", 4: True}, {0: "a", 1: "Cel", 6: 1}, {0: "a"}):
                record = {**base, label: value}
                for bt in (1, 2**63 - 1, -2**63, 1.5):
                    for pack in ([{-2: "urn:dev:mac:x:", -3: bt, **record}],
                                 [{-2: "urn:dev:mac:x:", -3: bt, 0: "first", 2: 0}, record]):
                        try:
                            validate_pack(pack)
                            fast = "ok"
                        except FrameRejected as exc:
                            fast = exc.reason
                        checked += 1
                        if fast != senml_verdict(pack):
                            wrong.append((pack, fast))
    assert checked == len(fields) * len(EDGES) * 5 * 4 * 2
    assert wrong == []


DEVICE = bytes.fromhex("240ac4000001")
KID = DEVICE + b"\x00\x01"
KEY = bytes(range(32))


@given(st.lists(any_records, min_size=1, max_size=5), st.sampled_from(["own", "other", "keep"]),
       st.integers(0, 2**32 - 1), st.sampled_from(sorted(set(KIND_NAMES) - {KIND_DECLARATION})),
       st.one_of(st.just(b""), st.binary(min_size=1, max_size=4)))
@settings(max_examples=500, deadline=None)
def test_signed_frames_around_any_pack_get_the_reference_verdict(pack, bn, bt, kind, trailing):
    """Frames a key holder could send (valid MAC), whatever the pack, with or without bytes after
    it: the verdict is the SenML one. (A declaration's payload is not SenML: tests/test_frame_v2.py.)"""
    if bn != "keep":
        pack[0][-2] = base_name(DEVICE if bn == "own" else bytes.fromhex("240ac4000002"))
        pack[0][-3] = bt
    protected = cbor2.dumps({1: 4, 4: KID, 6: (7).to_bytes(4, "big"), -65537: kind})
    frame = node_envelope(protected, cbor2.dumps(pack) + trailing, KEY)
    table = {KID: (KEY, 4)}
    assert ours(Verifier(table.get, None, accept_kinds=KIND_NAMES), frame) == reference(table, frame)


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


@given(st.binary(min_size=1, max_size=8))
@settings(max_examples=200, deadline=None)
def test_bytes_after_a_valid_pack_are_refused_as_the_spec_says(vectors, trailing):
    """A key holder's frame whose payload is a valid pack followed by anything: one item is the
    payload (frame-format.md), so the whole frame is refused, by us and by the reference."""
    case = vectors["frames"][0]
    key, kid = bytes.fromhex(case["key"]), bytes.fromhex(case["kid"])
    good = bytes.fromhex(case["frame"])
    payload = Verifier({kid: (key, 4)}.get, None).verify(good).payload
    frame = node_envelope(good[4:29], payload + trailing, key)
    table = {kid: (key, 4)}
    assert ours(Verifier(table.get, None), frame) == reference(table, frame) == ("rejected", "bad-senml")
