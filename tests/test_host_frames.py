"""Host side of frame format v1: the vectors, every rejection reason, replay, pycose cross-check."""
from __future__ import annotations

import hmac
import struct

import cbor2
import pytest
from hypothesis import given, settings, strategies as st
from pycose.keys import SymmetricKey
from pycose.messages import CoseMessage

from fieldnode.wire.frame import (KIND_DECLARATION, KIND_NAMES, NODE_KINDS, FrameRejected, ReplayWindow, Verifier,
                             build_frame, compute_tag, device_base_name, device_from_base_name, mac_structure)


def f32(x: float) -> float:
    return float(f"{struct.unpack('>f', struct.pack('>f', x))[0]:.7g}")


def key_lookup(vectors: dict):
    table = {bytes.fromhex(c["kid"]): (bytes.fromhex(c["key"]), c["alg"]) for c in vectors["frames"]}
    return table.get


def expected_records(case: dict) -> list[dict]:
    out = []
    for rec in case["records"]:
        r = {"n": rec["n"], "t": case["bt"]}
        if "u" in rec:
            r["u"] = rec["u"]
        for k in ("v", "vs", "vb", "err"):
            if k in rec:
                r[k] = f32(rec[k]) if k == "v" and isinstance(rec[k], float) else rec[k]
        out.append(r)
    return out


def resign(protected: bytes, payload: bytes, key: bytes, alg: int = 4) -> bytes:
    tag = compute_tag(key, alg, protected, payload)
    return cbor2.dumps(cbor2.CBORTag(17, [protected, {}, payload, tag]))


def test_every_vector_verifies_with_its_contents(vectors):
    verifier = Verifier(key_lookup(vectors), ReplayWindow(), accept_kinds=KIND_NAMES)
    for case in vectors["frames"]:
        frame = verifier.verify(bytes.fromhex(case["frame"]))
        assert (frame.kind, frame.counter, frame.alg) == (case["kind"], case["counter"], case["alg"])
        assert frame.kid.hex() == case["kid"] and frame.base_name == case["bn"]
        assert frame.records() == expected_records(case), case["name"]
        assert mac_structure(frame.protected, frame.payload).hex() == case["mac_structure"]


def test_every_rejection_vector_has_its_reason(vectors):
    verifier = Verifier(key_lookup(vectors), ReplayWindow())
    for case in vectors["rejections"]:
        with pytest.raises(FrameRejected) as info:
            verifier.verify(bytes.fromhex(case["frame"]))
        assert info.value.reason == case["reason"], case["name"]


def test_reference_frame_fits_espnow_with_room(vectors):
    ref = next(c for c in vectors["frames"] if c["name"] == "telemetry-6")
    assert len(bytes.fromhex(ref["frame"])) == ref["size"] <= 200  # ESP-NOW carries 250


@pytest.fixture
def ref(vectors):
    case = next(c for c in vectors["frames"] if c["name"] == "telemetry-6")
    return case, bytes.fromhex(case["key"]), bytes.fromhex(case["kid"])


def test_wrong_key_is_bad_mac(ref):
    case, key, kid = ref
    verifier = Verifier({kid: (bytes(32), 4)}.get, ReplayWindow())
    with pytest.raises(FrameRejected, match="bad-mac"):
        verifier.verify(bytes.fromhex(case["frame"]))


def test_unknown_kid(ref):
    case, key, kid = ref
    verifier = Verifier({}.get, ReplayWindow())
    with pytest.raises(FrameRejected) as info:
        verifier.verify(bytes.fromhex(case["frame"]))
    assert info.value.reason == "unknown-kid" and kid.hex() in info.value.detail


def test_alg_downgrade_refused(ref):
    case, key, kid = ref
    verifier = Verifier({kid: (key, 5)}.get, ReplayWindow())  # provisioned for the 32-byte tag
    with pytest.raises(FrameRejected) as info:
        verifier.verify(bytes.fromhex(case["frame"]))  # a valid alg-4 frame under the same key
    assert info.value.reason == "bad-header"


def test_replay_window_semantics(ref):
    case, key, kid = ref
    verifier = Verifier({kid: (key, 4)}.get, ReplayWindow())

    def frame(counter: int) -> bytes:
        return build_frame(key, kid, 4, counter, 0, case["bn"], case["bt"], case["records"])

    verifier.verify(frame(100))
    for reason_counter in (100, 36, 1):  # same counter; older than the 64-frame window
        with pytest.raises(FrameRejected, match="replay"):
            verifier.verify(frame(reason_counter))
    verifier.verify(frame(90))  # reordered but inside the window: taken once
    with pytest.raises(FrameRejected, match="replay"):
        verifier.verify(frame(90))
    verifier.verify(frame(101))


def test_forget_lets_a_retransmission_in():
    window = ReplayWindow()
    dev = b"\x01" * 6
    assert window.accept(dev, 5) and not window.accept(dev, 5)
    window.forget(dev, 5)
    assert window.accept(dev, 5)
    window.restore(dev, 1000)
    assert not window.accept(dev, 1000) and not window.accept(dev, 999) and window.accept(dev, 1001)


def test_device_mismatch(ref):
    case, key, kid = ref
    other_bn = device_base_name(bytes.fromhex("aabbccddeeff"))
    data = build_frame(key, kid, 4, 7, 0, other_bn, case["bt"], case["records"])
    with pytest.raises(FrameRejected, match="device-mismatch"):
        Verifier({kid: (key, 4)}.get, ReplayWindow()).verify(data)


def test_gateway_refuses_a_command_frame(vectors):
    command = next(c for c in vectors["frames"] if c["name"] == "command")
    verifier = Verifier(key_lookup(vectors), ReplayWindow(), accept_kinds=NODE_KINDS)
    with pytest.raises(FrameRejected, match="wrong-kind"):
        verifier.verify(bytes.fromhex(command["frame"]))


BAD_PACKS = {
    "not an array": {"a": 1},
    "empty": [],
    "no bn": [{-3: 1, 0: "x", 2: 1}],
    "no name": [{-2: "urn:dev:mac:240ac4fffe123456:", -3: 1, 2: 1}],
    "two values": [{-2: "urn:dev:mac:240ac4fffe123456:", -3: 1, 0: "x", 2: 1, 3: "a"}],
    "no value": [{-2: "urn:dev:mac:240ac4fffe123456:", -3: 1, 0: "x"}],
    "bn twice": [{-2: "urn:dev:mac:240ac4fffe123456:", -3: 1, 0: "x", 2: 1},
                 {-2: "urn:dev:mac:240ac4fffe123456:", 0: "y", 2: 1}],
    "text v": [{-2: "urn:dev:mac:240ac4fffe123456:", -3: 1, 0: "x", 2: "1"}],
    "err with value": [{-2: "urn:dev:mac:240ac4fffe123456:", -3: 1, 0: "x", 2: 1, "err": "nack"}],
    "unknown field": [{-2: "urn:dev:mac:240ac4fffe123456:", -3: 1, 0: "x", 2: 1, 99: 0}],
}


@pytest.mark.parametrize("name", sorted(BAD_PACKS))
def test_malformed_senml_is_rejected_after_the_mac(ref, name):
    case, key, kid = ref
    protected = cbor2.dumps({1: 4, 4: kid, 6: b"\x00\x00\x00\x09", -65537: 0})
    data = resign(protected, cbor2.dumps(BAD_PACKS[name]), key)
    with pytest.raises(FrameRejected) as info:
        Verifier({kid: (key, 4)}.get, ReplayWindow()).verify(data)
    assert info.value.reason == "bad-senml", name


@pytest.mark.parametrize("header,reason", [
    ({1: 4, 4: b"short", 6: b"\x01", -65537: 0}, "bad-header"),
    ({1: 4, 4: b"\x24\x0a\xc4\x12\x34\x56\x00\x01", -65537: 0}, "bad-header"),
    ({1: 4, 4: b"\x24\x0a\xc4\x12\x34\x56\x00\x01", 6: b"\x00", -65537: 0}, "bad-header"),
    ({1: 4, 4: b"\x24\x0a\xc4\x12\x34\x56\x00\x01", 6: b"\x01", -65537: 9}, "bad-header"),
    ({1: 6, 4: b"\x24\x0a\xc4\x12\x34\x56\x00\x01", 6: b"\x01", -65537: 0}, "unsupported-alg"),
    ([1, 2], "bad-header"),
])
def test_bad_protected_headers(ref, header, reason):
    case, key, kid = ref
    data = resign(cbor2.dumps(header), cbor2.dumps([{-2: case["bn"], -3: 1, 0: "x", 2: 1}]), key)
    with pytest.raises(FrameRejected) as info:
        Verifier({kid: (key, 4)}.get, ReplayWindow()).verify(data)
    assert info.value.reason == reason


def test_pycose_verifies_every_vector(vectors):
    for case in vectors["frames"]:
        msg = CoseMessage.decode(bytes.fromhex(case["frame"]))
        msg.key = SymmetricKey(k=bytes.fromhex(case["key"]))
        assert msg.verify_tag(), case["name"]
        msg.key = SymmetricKey(k=bytes(32))
        assert not msg.verify_tag()


names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=12)
readings = st.lists(st.one_of(
    st.fixed_dictionaries({"n": names, "v": st.floats(allow_nan=False, allow_infinity=False)}),
    st.fixed_dictionaries({"n": names, "u": names, "v": st.integers(-2**31, 2**31)}),
    st.fixed_dictionaries({"n": names, "vs": st.text(max_size=20)}),
    st.fixed_dictionaries({"n": names, "vb": st.booleans()}),
    st.fixed_dictionaries({"n": names, "u": names, "err": st.sampled_from(["nack", "crc", "timeout"])}),
), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(records=readings, counter=st.integers(1, 2**32 - 1), alg=st.sampled_from([4, 5]),
       kind=st.sampled_from(sorted(NODE_KINDS - {KIND_DECLARATION})), device=st.binary(min_size=6, max_size=6),
       key=st.binary(min_size=32, max_size=32), bt=st.integers(0, 2**32 - 1))
def test_host_built_frames_roundtrip_and_pycose_agrees(records, counter, alg, kind, device, key, bt):
    kid = device + b"\x00\x01"
    data = build_frame(key, kid, alg, counter, kind, device_base_name(device), bt, records)
    frame = Verifier({kid: (key, alg)}.get, ReplayWindow()).verify(data)
    assert frame.counter == counter and frame.kind == kind and frame.device == device
    assert [r["n"] for r in frame.records()] == [r["n"] for r in records]
    msg = CoseMessage.decode(data)
    msg.key = SymmetricKey(k=key)
    assert msg.verify_tag()


def test_base_name_roundtrip():
    dev = bytes.fromhex("240ac4123456")
    assert device_base_name(dev) == "urn:dev:mac:240ac4fffe123456:"
    assert device_from_base_name(device_base_name(dev)) == dev
    assert device_from_base_name("urn:dev:mac:240ac4ffff123456:") is None


@given(key=st.binary(min_size=1, max_size=200), message=st.binary(max_size=600))
def test_hmac_with_precomputed_pads_is_rfc_2104_hmac(key, message):
    from fieldnode.wire.frame import _hmac_pads
    inner, outer = (h.copy() for h in _hmac_pads(key))
    inner.update(message)
    outer.update(inner.digest())
    assert outer.digest() == hmac.new(key, message, "sha256").digest()
