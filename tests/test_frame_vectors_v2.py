"""tests/vectors/frame-v2.json checked by readers that share no code with ours (pycose for the COSE
envelope and MAC, cbor2 for the payloads), then by the host's own v2 codec: it must accept every
vector, expand it to the SenML the vector states, refuse every rejection vector with its reason,
and build the same bytes."""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import cbor2
import pytest
from pycose.keys import SymmetricKey
from pycose.messages import CoseMessage

from fieldnode.wire.frame import KIND_NAMES, FrameRejected, ReplayWindow, Verifier
from fieldnode.wire.framev2 import Reading, build_declaration, build_telemetry_v2

V2 = json.loads((Path(__file__).parent / "vectors" / "frame-v2.json").read_text())
ALL = V2["declarations"] + V2["frames"]


def f32(v: float) -> float:
    return struct.unpack(">f", struct.pack(">f", v))[0]


def keys() -> dict:
    return {bytes.fromhex(c["kid"]): (bytes.fromhex(c["key"]), c["alg"]) for c in ALL}


def decl(name: str) -> dict:
    return next(d for d in V2["declarations"] if d["name"] == name)


@pytest.mark.parametrize("case", ALL, ids=[c["name"] for c in ALL])
def test_pycose_verifies_every_v2_vector(case):
    msg = CoseMessage.decode(bytes.fromhex(case["frame"]))
    msg.key = SymmetricKey(k=bytes.fromhex(case["key"]))
    assert msg.verify_tag()
    assert len(bytes.fromhex(case["frame"])) == case["size"]


def test_pycose_refuses_a_tampered_v2_frame():
    case = V2["frames"][0]
    frame = bytearray(bytes.fromhex(case["frame"]))
    frame[60] ^= 1  # a value in the payload
    msg = CoseMessage.decode(bytes(frame))
    msg.key = SymmetricKey(k=bytes.fromhex(case["key"]))
    assert not msg.verify_tag()


@pytest.mark.parametrize("case", V2["declarations"], ids=[c["name"] for c in V2["declarations"]])
def test_cbor2_reads_each_declaration_and_its_id(case):
    protected, unprotected, payload, _ = cbor2.loads(bytes.fromhex(case["frame"])).value
    assert cbor2.loads(protected) == {1: case["alg"], 4: bytes.fromhex(case["kid"]),
                                      6: case["counter"].to_bytes(4, "big"), -65537: 5}
    assert unprotected == {} and cbor2.loads(payload) == case["readings"]
    assert hashlib.sha256(payload).digest()[:4].hex() == case["id"]


@pytest.mark.parametrize("case", V2["frames"], ids=[c["name"] for c in V2["frames"]])
def test_cbor2_reads_each_v2_telemetry_frame(case):
    protected, _, payload, _ = cbor2.loads(bytes.fromhex(case["frame"])).value
    did = bytes.fromhex(case["declaration_id"])
    assert cbor2.loads(protected) == {1: case["alg"], 4: bytes.fromhex(case["kid"]),
                                      6: case["counter"].to_bytes(4, "big"), -65538: did}
    pack = cbor2.loads(payload)
    assert pack[0][-3] == case["bt"] and all(-2 not in r and 1 not in r for r in pack)
    for rec, want in zip(pack, case["records"], strict=True):
        assert rec[0] == want["n"]
        if "v" in want:
            assert rec[2] == (want["v"] if type(want["v"]) is int else f32(want["v"]))
        else:
            assert {3: "vs", 4: "vb", "err": "err"}.keys() & rec.keys()


def test_the_reference_frame_uses_each_value_encoding_as_specified():
    pack = cbor2.loads(cbor2.loads(bytes.fromhex(V2["frames"][1]["frame"])).value[2])
    raw = bytes.fromhex(V2["frames"][1]["frame"])
    assert b"\x02\xf9\xca\x40" in raw  # -12.5: half precision
    assert b"\x02\xfa\x4f\x80\x00\x00" in raw  # 2**32: float32, not a 9-byte integer
    assert b"\x02\x3a\x00\x01\x11\x6f" in raw  # -70000.0: integral, an integer
    assert pack[6][2] == 2.0 ** -24  # a half-precision subnormal


def test_the_host_accepts_and_expands_every_v2_vector():
    v = Verifier(keys().get, ReplayWindow(), accept_kinds=KIND_NAMES)
    for d in V2["declarations"]:
        frame = v.verify(bytes.fromhex(d["frame"]))
        assert frame.declaration.hex() == d["id"]
        assert [[r.short, r.name, r.unit, r.sensor] for r in frame.declared.readings] == d["readings"]
    for case in V2["frames"]:
        frame = v.verify(bytes.fromhex(case["frame"]))
        assert not frame.undeclared and frame.base_name == case["bn"] and frame.base_time == case["bt"]
        labels = {"n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4, "err": "err"}
        want = [{labels[k]: (f32(x) if type(x) is float else x) for k, x in r.items()} for r in case["expanded"]]
        want[0] = {-2: case["bn"], -3: case["bt"], **want[0]}
        assert frame.pack == want


@pytest.mark.parametrize("case", V2["rejections"], ids=[c["name"] for c in V2["rejections"]])
def test_the_host_refuses_every_v2_rejection_vector(case):
    v = Verifier(keys().get, ReplayWindow(), accept_kinds=KIND_NAMES)
    for name in case.get("known", []):
        v.verify(bytes.fromhex(decl(name)["frame"]))
    known = len(v.declarations)
    with pytest.raises(FrameRejected) as exc:
        v.verify(bytes.fromhex(case["frame"]))
    assert exc.value.reason == case["reason"]
    assert case.get("detail", "") in exc.value.detail
    assert len(v.declarations) == known


def test_the_host_builder_makes_the_vector_bytes():
    for d in V2["declarations"]:
        frame, did = build_declaration(bytes.fromhex(d["key"]), bytes.fromhex(d["kid"]), d["alg"], d["counter"],
                                       [Reading(*r) for r in d["readings"]])
        assert (frame.hex(), did.hex()) == (d["frame"], d["id"])
    for c in V2["frames"]:
        frame = build_telemetry_v2(bytes.fromhex(c["key"]), bytes.fromhex(c["kid"]), c["alg"], c["counter"],
                                   bytes.fromhex(c["declaration_id"]), c["bt"], c["records"])
        assert frame.hex() == c["frame"], c["name"]
