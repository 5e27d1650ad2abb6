"""Frame format v2 on the host (fieldnode.wire.framev2 and the Verifier): declarations, compact
telemetry, expansion to full SenML, and what is refused (docs/frame-format.md, "Frame format v2")."""
from __future__ import annotations

import struct

import cbor2
import pytest

from fieldnode.wire.frame import (
    KIND_NAMES, FrameRejected, ReplayWindow, Verifier, build_frame, compute_tag, device_base_name, parse_unverified,
)
from fieldnode.wire.framev2 import (
    DeclarationBook, Reading, build_declaration, build_telemetry_v2, declaration_id, encode_value, parse_declaration,
)

KEY = bytes(range(1, 33))
KID = bytes.fromhex("240ac41234560001")
OTHER_KID = bytes.fromhex("7cdfa1c0ffee0002")
READINGS = (
    Reading("a", "temp", "Cel", "bme280"), Reading("b", "hum", "%RH", "bme280"),
    Reading("c", "press", "Pa", "bme280"), Reading("d", "door", "", "door"),
)
BT = 1764057600


def verifier(replay: bool = True) -> Verifier:
    keys = {KID: (KEY, 4), OTHER_KID: (KEY, 4)}
    return Verifier(keys.get, ReplayWindow() if replay else None, accept_kinds=KIND_NAMES)


def signed(protected: dict, payload: bytes, key: bytes = KEY) -> bytes:
    prot = cbor2.dumps(protected)
    return cbor2.dumps(cbor2.CBORTag(17, [prot, {}, payload, compute_tag(key, 4, prot, payload)]))


def declaration_frame(payload: bytes, counter: int = 1, key: bytes = KEY) -> bytes:
    return signed({1: 4, 4: KID, 6: counter.to_bytes(4, "big"), -65537: 5}, payload, key)


def test_declared_telemetry_is_expanded_to_the_full_senml_a_v1_frame_carries():
    v = verifier()
    decl, did = build_declaration(KEY, KID, 4, 1, READINGS)
    declared = v.verify(decl)
    assert declared.kind_name == "declaration" and declared.declaration == did
    assert [r["n"] for r in declared.records()] == ["temp", "hum", "press", "door"]
    frame = v.verify(build_telemetry_v2(KEY, KID, 4, 2, did, BT, [
        {"n": "a", "v": 23.45}, {"n": "c", "v": 101325.0}, {"n": "d", "vb": True}, {"n": "b", "err": "crc"}]))
    assert not frame.undeclared and frame.declaration == did
    v1 = v.verify(build_frame(KEY, KID, 4, 3, 0, device_base_name(KID[:6]), BT, [
        {"n": "temp", "u": "Cel", "v": 23.45}, {"n": "press", "u": "Pa", "v": 101325},
        {"n": "door", "vb": True}, {"n": "hum", "u": "%RH", "err": "crc"}]))
    assert frame.records() == v1.records()
    assert frame.pack[0][-2] == "urn:dev:mac:240ac4fffe123456:"


def test_telemetry_under_an_unknown_declaration_is_verified_and_shown_with_short_names():
    v = verifier()
    _, did = build_declaration(KEY, KID, 4, 1, READINGS)
    frame = v.verify(build_telemetry_v2(KEY, KID, 4, 2, did, BT, [{"n": "a", "v": 1.5}]))
    assert frame.verified and frame.undeclared
    assert frame.records() == [{"n": "a", "t": BT, "v": 1.5}]
    assert frame.to_json()["undeclared"] is True and frame.base_name == "urn:dev:mac:240ac4fffe123456:"


def test_a_declaration_belongs_to_its_device():
    v = verifier()
    _, did = build_declaration(KEY, KID, 4, 1, READINGS)
    v.verify(build_declaration(KEY, KID, 4, 1, READINGS)[0])
    other = v.verify(build_telemetry_v2(KEY, OTHER_KID, 4, 1, did, BT, [{"n": "a", "v": 2}]))
    assert other.undeclared


@pytest.mark.parametrize(("payload", "why"), [
    (b"\x1c", "not CBOR"),
    (cbor2.dumps([["a", "temp", "Cel", "s"]]) + b"\x00", "not CBOR"),
    (cbor2.dumps({"a": 1}), "not an array"),
    (cbor2.dumps([]), "not an array"),
    (cbor2.dumps([["a", "temp", "Cel"]]), "is not [short name"),
    (cbor2.dumps([["a", "temp", "Cel", 7]]), "is not [short name"),
    (cbor2.dumps([["abc", "temp", "Cel", "s"]]), "not 1 or 2 characters"),
    (cbor2.dumps([["", "temp", "Cel", "s"]]), "not 1 or 2 characters"),
    (cbor2.dumps([["a", "", "Cel", "s"]]), "empty full name"),
    (cbor2.dumps([["a", "temp", "Cel", "s"], ["a", "hum", "%RH", "s"]]), "'a' is declared twice"),
    (cbor2.dumps([["a", "temp", "Cel", "s"], ["b", "temp", "%RH", "s"]]), "'temp' is declared twice"),
])
def test_a_bad_declaration_is_refused_with_its_reason_and_not_kept(payload, why):
    v = verifier()
    with pytest.raises(FrameRejected) as exc:
        v.verify(declaration_frame(payload))
    assert exc.value.reason == "bad-declaration" and why in exc.value.detail
    assert len(v.declarations) == 0
    assert v.replay.highest(KID) == 0  # nothing of it kept, not even its counter


def test_a_declaration_without_a_valid_mac_is_refused_and_not_kept():
    v = verifier()
    good = bytearray(build_declaration(KEY, KID, 4, 1, READINGS)[0])
    good[-1] ^= 1
    with pytest.raises(FrameRejected) as exc:
        v.verify(bytes(good))
    assert exc.value.reason == "bad-mac" and len(v.declarations) == 0
    forged = declaration_frame(cbor2.dumps([["a", "temp", "Cel", "s"]]), key=bytes(32))
    with pytest.raises(FrameRejected) as exc:
        v.verify(forged)
    assert exc.value.reason == "bad-mac" and len(v.declarations) == 0


def test_telemetry_naming_a_reading_its_declaration_lacks_is_bad_senml_naming_it():
    v = verifier()
    decl, did = build_declaration(KEY, KID, 4, 1, READINGS)
    v.verify(decl)
    with pytest.raises(FrameRejected) as exc:
        v.verify(build_telemetry_v2(KEY, KID, 4, 2, did, BT, [{"n": "a", "v": 1}, {"n": "zz", "v": 2}]))
    assert exc.value.reason == "bad-senml" and exc.value.detail.startswith("zz: not in declaration")
    assert v.replay.highest(KID) == 0  # the refused frame's counter is not taken (the declaration is outside)


@pytest.mark.parametrize(("pack", "why"), [
    ([{-3: BT, -2: "urn:dev:mac:240ac4fffe123456:", 0: "a", 2: 1}], "no bn"),
    ([{-3: BT, 0: "a", 1: "Cel", 2: 1}], "no u"),
    ([{0: "a", 2: 1}], "bt in the first record"),
    ([{-3: BT, 0: "a", 2: 1}, {-3: BT, 0: "b", 2: 1}], "bt in the first record"),
    ([{-3: BT, 0: "a", 2: 1, 9: 1}], "unknown fields"),
    ([{-3: BT, 2: 1}], "text name"),
    ([], "non-empty array"),
    ([{-3: "x", 0: "a", 2: 1}], "bt must be"),
])
def test_a_malformed_v2_pack_is_bad_senml(pack, why):
    v = verifier()
    decl, did = build_declaration(KEY, KID, 4, 1, READINGS)
    v.verify(decl)
    frame = signed({1: 4, 4: KID, 6: (5).to_bytes(4, "big"), -65538: did}, cbor2.dumps(pack))
    with pytest.raises(FrameRejected) as exc:
        v.verify(frame)
    assert exc.value.reason == "bad-senml" and why in exc.value.detail


@pytest.mark.parametrize(("header", "why"), [
    ({1: 4, 4: KID, 6: b"\0\0\0\5", -65538: b"\1\2\3", }, "declaration id must be 4 bytes"),
    ({1: 4, 4: KID, 6: b"\0\0\0\5", -65538: "abcd"}, "declaration id must be 4 bytes"),
    ({1: 4, 4: KID, 6: b"\0\0\0\5", -65538: b"\1\2\3\4", -65537: 0}, "excludes a kind"),
])
def test_a_bad_v2_header_is_refused(header, why):
    with pytest.raises(FrameRejected) as exc:
        verifier().verify(signed(header, cbor2.dumps([{-3: BT, 0: "a", 2: 1}])))
    assert exc.value.reason == "bad-header" and why in exc.value.detail


def test_the_declaration_id_is_the_sha256_of_the_payload_as_sent():
    decl, did = build_declaration(KEY, KID, 4, 1, READINGS)
    payload = cbor2.loads(decl).value[2]
    assert did == declaration_id(payload) and len(did) == 4
    assert parse_declaration(payload).did == did


@pytest.mark.parametrize(("value", "encoded"), [
    (0, "00"), (23, "17"), (-1, "20"), (1234, "1904d2"), (1234.0, "1904d2"), (-3.0, "22"),
    (101325.0, "1a00018bcd"), (0.5, "f93800"), (-12.5, "f9ca40"), (65504.5, "fa477fe080"),
    (23.45, "fa41bb999a"), (2.0 ** 32, "fa4f800000"), (-(2.0 ** 32) + 256, "3afffffeff"),
    (5.960464477539063e-08, "f90001"), (1e-10, "fa2edbe6ff"), (1e30, "fa7149f2ca"),
])
def test_values_take_the_shortest_exact_encoding(value, encoded):
    assert encode_value(value).hex() == encoded
    decoded = cbor2.loads(encode_value(value))
    assert decoded == struct.unpack(">f", struct.pack(">f", value))[0]


def test_a_book_knows_declarations_by_device_and_id():
    book = DeclarationBook()
    decl = parse_declaration(cbor2.dumps([["a", "temp", "Cel", "s"]]))
    book.add(KID[:6], decl)
    assert book.get(KID[:6], decl.did) is decl
    assert book.get(OTHER_KID[:6], decl.did) is None and len(book) == 1


def test_parse_unverified_shows_v2_frames_undeclared():
    decl, did = build_declaration(KEY, KID, 4, 1, READINGS)
    assert parse_unverified(decl).declared.readings == READINGS
    frame = parse_unverified(build_telemetry_v2(KEY, KID, 4, 2, did, BT, [{"n": "b", "v": 41.2}]))
    assert frame.undeclared and not frame.verified and frame.records()[0]["n"] == "b"
