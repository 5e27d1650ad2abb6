"""The firmware side of frame format v1 (firmware/lib/fnode), run on the real MicroPython unix port.

Checked against three independent readings of docs/frame-format.md: the test vectors (and their
generator, tests/vectors/make_frame_vectors.py, for random frames), pycose, and cbor2; and against
the host's own builder (fieldnode.wire.frame.build_frame) for the commands a node receives.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import struct

import cbor2
import pytest
from pycose.keys import SymmetricKey
from pycose.messages import CoseMessage

from conftest import MicroPython, micropython_binary
from fieldnode.wire.frame import build_frame
from vectors.make_frame_vectors import bn as base_name
from vectors.make_frame_vectors import frame as independent_frame

# --- MicroPython side -------------------------------------------------------------------------

# Builds frames from JSON cases (the vectors' shape) with the firmware's FrameBuilder.
MP_BUILD = r"""
import json
from binascii import hexlify, unhexlify
from fnode.frame import FrameBuilder, FrameFull

def build(c):
    fb = FrameBuilder(unhexlify(c["key"]), unhexlify(c["kid"]), c["alg"], c.get("bn"),
                      c.get("buffer", 512))
    fb.begin(c["kind"], c["counter"], c["bt"])
    for r in c["records"]:
        u = r.get("u")
        if "v" in r:
            fb.add(r["n"], u, r["v"])
        elif "vs" in r:
            fb.add_str(r["n"], r["vs"], u)
        elif "vb" in r:
            fb.add_bool(r["n"], r["vb"], u)
        else:
            fb.add_error(r["n"], u, r["err"])
    return hexlify(fb.finish()).decode()
"""

# A decoded CBOR value as JSON, exactly: floats as their float64 bits, ints as text.
MP_REP = r"""
import struct
from binascii import hexlify
from fnode.cbordecode import Tag

def rep(v):
    t = type(v)
    if t is bool:
        return ["bool", v]
    if v is None:
        return ["null"]
    if t is int:
        return ["int", str(v)]
    if t is float:
        return ["float", hexlify(struct.pack(">d", v)).decode()]
    if t is bytes:
        return ["bytes", hexlify(v).decode()]
    if t is str:
        return ["str", v]
    if t is list:
        return ["array", [rep(x) for x in v]]
    if t is dict:
        return ["map", sorted([[rep(k), rep(x)] for k, x in v.items()], key=json.dumps)]
    if isinstance(v, Tag):
        return ["tag", v.tag, rep(v.value)]
    raise TypeError(t)
"""


def rep(v):
    """The host twin of MP_REP, for what cbor2 decodes."""
    if isinstance(v, bool):
        return ["bool", v]
    if v is None:
        return ["null"]
    if isinstance(v, int):
        return ["int", str(v)]
    if isinstance(v, float):
        return ["float", struct.pack(">d", v).hex()]
    if isinstance(v, bytes):
        return ["bytes", v.hex()]
    if isinstance(v, str):
        return ["str", v]
    if isinstance(v, list):
        return ["array", [rep(x) for x in v]]
    if isinstance(v, dict):
        return ["map", sorted([[rep(k), rep(x)] for k, x in v.items()], key=json.dumps)]
    if isinstance(v, cbor2.CBORTag):
        return ["tag", v.tag, rep(v.value)]
    raise TypeError(type(v))


def build_in_firmware(mp: MicroPython, cases: list[dict]) -> list[bytes]:
    (mp.tmp / "cases.json").write_text(json.dumps(cases))
    out = mp.eval_json(MP_BUILD + "print(json.dumps([build(c) for c in json.load(open('cases.json'))]))\n")
    return [bytes.fromhex(h) for h in out]


# --- vectors ----------------------------------------------------------------------------------

def test_builder_reproduces_every_vector_byte_exactly(micropython, vectors):
    frames = vectors["frames"]
    built = build_in_firmware(micropython, frames)
    assert len(built) == len(frames) > 0
    for case, got in zip(frames, built, strict=True):
        assert got.hex() == case["frame"], case["name"]
        assert len(got) == case["size"]


# Verifies frames with fnode.command.verify (any kind) or reads them as commands (CommandReader).
MP_RECEIVE = MP_REP + r"""
import json
from binascii import unhexlify
from fnode.cose import Rejected
from fnode.command import CommandReader, verify
from fnode.hmac256 import HMAC256

def receive(c):
    key, kid, frame = unhexlify(c["key"]), unhexlify(c["kid"]), unhexlify(c["frame"])
    try:
        if c.get("command"):
            reader = CommandReader(key, kid, c["alg"], c.get("bn"), c.get("last", 0))
            cmd = reader.read(frame)
            return {"ok": True, "counter": cmd.counter, "bt": cmd.bt, "exp": rep(cmd.exp),
                    "items": [[n, rep(v)] for n, v in cmd.items], "last": reader.last}
        kind, counter, payload = verify(frame, HMAC256(key), kid, c["alg"], c.get("kind", -1),
                                        c.get("last", 0), c.get("max_len", 1024))
        return {"ok": True, "kind": kind, "counter": counter, "payload": hexlify(payload).decode()}
    except Rejected as e:
        return {"ok": False, "reason": e.reason, "message": str(e)}

print(json.dumps([receive(c) for c in json.load(open("cases.json"))]))
"""


def receive_in_firmware(mp: MicroPython, cases: list[dict]) -> list[dict]:
    (mp.tmp / "cases.json").write_text(json.dumps(cases))
    out = mp.eval_json(MP_RECEIVE)
    assert len(out) == len(cases)
    return out


def test_firmware_verifies_every_vector(micropython, vectors):
    frames = vectors["frames"]
    got = receive_in_firmware(micropython, frames)
    for case, res in zip(frames, got, strict=True):
        assert res["ok"], (case["name"], res)
        assert (res["kind"], res["counter"]) == (case["kind"], case["counter"])
        payload = cbor2.loads(bytes.fromhex(case["frame"])).value[2]
        assert res["payload"] == payload.hex(), case["name"]


def test_firmware_rejects_every_rejection_vector(micropython, vectors):
    ref = next(f for f in vectors["frames"] if f["name"] == "telemetry-6")
    cases = [{**ref, "frame": r["frame"], "name": r["name"]} for r in vectors["rejections"]]
    # The node's own receive buffer is smaller than the host's 1024-byte limit.
    oversized = next(r for r in vectors["rejections"] if r["reason"] == "oversized")
    cases.append({**ref, "frame": oversized["frame"], "max_len": 512, "name": "oversized-512"})
    cases.append({**ref, "frame": ref["frame"], "max_len": ref["size"] - 1, "name": "over-node-limit"})
    expected = [r["reason"] for r in vectors["rejections"]] + ["oversized", "oversized"]
    got = receive_in_firmware(micropython, cases)
    assert [g.get("reason") for g in got] == expected
    assert len(vectors["rejections"]) >= 7


# --- commands (host -> node) ------------------------------------------------------------------

KEY = bytes(range(1, 33))
DEVICE = bytes.fromhex("240ac4123456")
KID = DEVICE + b"\x00\x01"
BN = base_name(DEVICE.hex())
OTHER_KEY = hashlib.sha256(b"another node").digest()
OTHER_KID = bytes.fromhex("7cdfa1c0ffee0002")


def node(frame: bytes, **kw) -> dict:
    """A receive case for the node KID/KEY (alg 4) reading commands."""
    return {"key": KEY.hex(), "kid": KID.hex(), "alg": 4, "command": True, "frame": frame.hex(), **kw}


def protected_header(alg=4, kid=KID, counter=7, kind=3) -> bytes:
    return cbor2.dumps({1: alg, 4: kid, 6: counter.to_bytes(4, "big"), -65537: kind})


def sign(protected: bytes, payload: bytes, key=KEY, tag_len=8) -> bytes:
    """A COSE_Mac0 made with cbor2 and the standard library only (independent of fieldnode)."""
    mac_structure = cbor2.dumps(["MAC0", protected, b"", payload])
    tag = hmac.new(key, mac_structure, hashlib.sha256).digest()[:tag_len]
    return cbor2.dumps(cbor2.CBORTag(17, [protected, {}, payload, tag]))


def command_pack(records: list[dict], bn=BN, bt=1764057630, canonical=False) -> bytes:
    pack = [{-2: bn, -3: bt, **records[0]}] + records[1:]
    return cbor2.dumps(pack, canonical=canonical)


def test_commands_built_by_the_host_are_accepted(micropython):
    items = [
        {"n": "relay1", "vb": True},
        {"n": "setpoint", "u": "Cel", "v": 21.5},
        {"n": "valve", "u": "%", "v": 0.1},  # float64 that float32 cannot hold
        {"n": "pulses", "v": -70000},
        {"n": "big", "v": 2**40},
        {"n": "mode", "vs": "éco"},
        {"n": "exp", "v": 1764057660},
    ]
    frames = [
        build_frame(KEY, KID, 4, 5, 3, BN, 1764057630, items),
        build_frame(KEY, KID, 4, 6, 3, BN, 1764057631, [{"n": "relay2", "vb": False}, {"n": "exp", "v": 1764057700.5}]),
        build_frame(OTHER_KEY, OTHER_KID, 5, 2**31 - 1, 3, base_name(OTHER_KID[:6].hex()), 0, items),
    ]
    cases = [node(frames[0]), node(frames[1], last=5),
             {**node(frames[2], last=2**31 - 2), "key": OTHER_KEY.hex(), "kid": OTHER_KID.hex(), "alg": 5}]
    got = receive_in_firmware(micropython, cases)
    assert all(g["ok"] for g in got), got
    expect_items = [[r["n"], rep(r.get("v", r.get("vs", r.get("vb"))))] for r in items[:-1]]
    assert got[0]["items"] == expect_items
    assert (got[0]["counter"], got[0]["bt"], got[0]["exp"], got[0]["last"]) == (5, 1764057630, rep(1764057660), 5)
    assert got[1]["items"] == [["relay2", rep(False)]] and got[1]["exp"] == rep(1764057700.5)
    # The largest counter a node can keep in NVS (set_i32); above it: counter-range (test_node_control)
    assert (got[2]["counter"], got[2]["last"], got[2]["bt"]) == (2**31 - 1, 2**31 - 1, 0)


def test_commands_with_every_float_width_are_accepted(micropython):
    # cbor2's canonical mode writes each float in the shortest width that holds it exactly.
    values = [1.5, -0.0, 65504.0, 5.960464477539063e-08, 6.097555160522461e-05, 3.4028234663852886e38,
              0.1, 1e300, -2.5e-320, 100000.0]
    records = [{0: f"x{i}", 2: v} for i, v in enumerate(values)] + [{0: "exp", 2: 1.0e9}]
    payload = command_pack(records, canonical=True)
    widths = {b for b in payload if b in (0xF9, 0xFA, 0xFB)}
    assert widths == {0xF9, 0xFA, 0xFB}
    res = receive_in_firmware(micropython, [node(sign(protected_header(), payload))])[0]
    assert res["ok"], res
    assert res["items"] == [[f"x{i}", rep(v)] for i, v in enumerate(values)]
    assert res["exp"] == rep(1.0e9)


def test_firmware_rejects_what_a_node_must_not_accept(micropython, vectors):
    cmd = next(f for f in vectors["frames"] if f["name"] == "command")
    frame = bytes.fromhex(cmd["frame"])
    telemetry = bytes.fromhex(next(f for f in vectors["frames"] if f["name"] == "telemetry-6")["frame"])
    good = command_pack([{0: "relay1", 4: True}, {0: "exp", 2: 1764057660}])
    prot = protected_header()
    long_head = b"\xd1\x84\x59\x00" + bytes([len(prot)]) + prot  # valid, not shortest

    def with_payload(records, **kw):
        return sign(prot, command_pack(records, **kw))

    cases = {
        "wrong key": ({**node(frame), "key": OTHER_KEY.hex()}, "bad-mac"),
        "unknown kid": ({**node(frame), "kid": OTHER_KID.hex()}, "unknown-kid"),
        "replayed counter": (node(frame, last=5), "replay"),
        "old counter": (node(frame, last=6), "replay"),
        "wrong kind (telemetry)": (node(telemetry), "wrong-kind"),
        "alg 5 to an alg 4 node": (node(sign(protected_header(alg=5), good, tag_len=32)), "bad-header"),
        "unsupported alg": (node(sign(protected_header(alg=6), good)), "unsupported-alg"),
        "kid of 7 bytes": (node(sign(protected_header(kid=KID[:7]), good)), "bad-header"),
        "counter 0": (node(sign(protected_header(counter=0), good)), "bad-header"),
        "no kind": (node(sign(cbor2.dumps({1: 4, 4: KID, 6: b"\0\0\0\7"}), good)), "bad-header"),
        "kind 9": (node(sign(protected_header(kind=9), good)), "bad-header"),
        "protected not a map": (node(sign(cbor2.dumps([1, 4]), good)), "bad-header"),
        "protected not cbor": (node(sign(b"\xff", good)), "bad-header"),
        "tag of 7 bytes": (node(sign(prot, good, tag_len=7)), "bad-mac"),
        "tag of 32 bytes for alg 4": (node(sign(prot, good, tag_len=32)), "bad-mac"),
        "three elements": (node(cbor2.dumps(cbor2.CBORTag(17, [prot, {}, good]))), "not-cose-mac0"),
        "unprotected not a map": (node(cbor2.dumps(cbor2.CBORTag(17, [prot, [], good, b"x" * 8]))), "not-cose-mac0"),
        "payload not a bstr": (node(cbor2.dumps(cbor2.CBORTag(17, [prot, {}, "x", b"x" * 8]))), "not-cose-mac0"),
        "untagged": (node(cbor2.dumps([prot, {}, good, b"x" * 8])), "not-cose-mac0"),
        "indefinite array": (node(b"\xd1\x9f" + cbor2.dumps(cbor2.CBORTag(17, [prot, {}, good, b"x" * 8]))[2:]
                                  + b"\xff"),
                             "bad-cbor"),
        "empty": (node(b""), "bad-cbor"),
        "payload not cbor": (node(sign(prot, b"\xff")), "bad-senml"),
        "empty pack": (node(sign(prot, cbor2.dumps([]))), "bad-senml"),
        "no exp": (node(with_payload([{0: "relay1", 4: True}])), "bad-senml"),
        "two exp": (node(with_payload([{0: "exp", 2: 1}, {0: "exp", 2: 2}])), "bad-senml"),
        "err in a command": (node(with_payload([{0: "relay1", "err": "crc"}, {0: "exp", 2: 1}])), "bad-senml"),
        "two values": (node(with_payload([{0: "relay1", 4: True, 2: 1}, {0: "exp", 2: 1}])), "bad-senml"),
        "bn twice": (node(with_payload([{0: "relay1", 4: True}, {-2: BN, 0: "exp", 2: 1}])), "bad-senml"),
        "unknown field": (node(with_payload([{0: "relay1", 4: True, 9: 0}, {0: "exp", 2: 1}])), "bad-senml"),
        "vb not a bool": (node(with_payload([{0: "relay1", 4: 1}, {0: "exp", 2: 1}])), "bad-senml"),
        "name not text": (node(with_payload([{0: b"relay1", 4: True}, {0: "exp", 2: 1}])), "bad-senml"),
        "another device": (node(with_payload([{0: "relay1", 4: True}, {0: "exp", 2: 1}],
                                             bn=base_name("7cdfa1c0ffee"))), "device-mismatch"),
        "valid with a long bstr head": (node(long_head + b"\xa0" + cbor2.dumps(good) + _tag_for(prot, good)), "ok"),
        "the vector command": (node(frame, last=4), "ok"),
    }
    got = receive_in_firmware(micropython, [c for c, _ in cases.values()])
    reasons = {name: ("ok" if g["ok"] else g["reason"]) for name, g in zip(cases, got, strict=True)}
    assert reasons == {name: reason for name, (_, reason) in cases.items()}


def _tag_for(protected: bytes, payload: bytes) -> bytes:
    mac_structure = cbor2.dumps(["MAC0", protected, b"", payload])
    return b"\x48" + hmac.new(KEY, mac_structure, hashlib.sha256).digest()[:8]


def test_command_reader_refuses_a_command_twice(micropython, vectors):
    cmd = next(f for f in vectors["frames"] if f["name"] == "command")
    out = micropython.eval_json(MP_REP + f"""
import json
from binascii import unhexlify
from fnode.command import CommandReader
from fnode.cose import Rejected
r = CommandReader(unhexlify("{cmd['key']}"), unhexlify("{cmd['kid']}"), 4)
first = r.read(unhexlify("{cmd['frame']}"))
try:
    r.read(unhexlify("{cmd['frame']}"))
    second = "accepted"
except Rejected as e:
    second = e.reason
print(json.dumps([first.counter, first.exp, [[n, rep(v)] for n, v in first.items], second, r.last]))
""")
    assert out == [5, 1764057660, [["relay1", rep(True)]], "replay", 5]


def test_a_verified_but_malformed_command_names_and_spends_its_counter(micropython):
    # Once the MAC verifies, the node may answer (the refusal names the counter) and the counter is
    # spent; a forged frame names nothing and spends nothing.
    no_exp = sign(protected_header(counter=7), command_pack([{0: "relay1", 4: True}]))
    elsewhere = sign(protected_header(counter=8), command_pack([{0: "relay1", 4: True}, {0: "exp", 2: 1}],
                                                               bn=base_name("7cdfa1c0ffee")))
    forged = sign(protected_header(counter=9), command_pack([{0: "relay1", 4: True}, {0: "exp", 2: 1}]),
                  key=OTHER_KEY)
    out = micropython.eval_json(f"""
import json
from binascii import unhexlify
from fnode.command import CommandReader
from fnode.cose import Rejected
r = CommandReader(unhexlify("{KEY.hex()}"), unhexlify("{KID.hex()}"), 4, last=5)
out = []
for frame in ("{no_exp.hex()}", "{no_exp.hex()}", "{forged.hex()}", "{elsewhere.hex()}"):
    try:
        r.read(unhexlify(frame))
        out.append("accepted")
    except Rejected as e:
        out.append([e.reason, e.counter, r.last])
print(json.dumps(out))
""")
    assert out == [["bad-senml", 7, 7], ["replay", 7, 7], ["bad-mac", None, 7], ["device-mismatch", 8, 8]]


# --- random frames: the firmware against the vector generator, pycose and cbor2 ---------------

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:./"
TEXT_CHARS = "abcxyz ABC019-_.:/%°µé€漢"
ERRORS = ("nack", "crc", "timeout", "range", "broken-loop", "modbus-2")
INT_EDGES = (0, 1, 23, 24, -1, -24, -25, 255, 256, -256, -257, 65535, 65536, -65536, -65537,
             2**32 - 1, -(2**32))


def f32(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


def random_case(rng: random.Random, i: int) -> dict:
    alg = (4, 5)[i % 2]
    device = rng.randbytes(6)
    kid = device + rng.randint(1, 0xFFFF).to_bytes(2, "big")
    records = []
    for _ in range(rng.randint(1, 8)):
        name = rng.choice(NAME_CHARS[:62]) + "".join(rng.choices(NAME_CHARS, k=rng.randint(0, 23)))
        rec: dict = {"n": name}
        if rng.random() < 0.6:
            rec["u"] = "".join(rng.choices(TEXT_CHARS, k=rng.randint(1, 10)))
        what = rng.choice(("float", "float", "int", "vs", "vb", "err"))
        if what == "float":
            rec["v"] = f32(rng.choice((rng.uniform(-1e6, 1e6), rng.uniform(-1, 1), 0.0, -0.0, 1e-40, 3.4e38)))
        elif what == "int":
            rec["v"] = rng.choice(INT_EDGES + (rng.randint(-(2**31), 2**31),))
        elif what == "vs":
            rec["vs"] = "".join(rng.choices(TEXT_CHARS, k=rng.randint(0, 40)))
        elif what == "vb":
            rec["vb"] = rng.random() < 0.5
        else:
            rec["err"] = rng.choice(ERRORS)
        records.append(rec)
    return {
        "name": f"random-{i}", "key": rng.randbytes(rng.choice((16, 24, 32))).hex(),  # pycose's sizes
        "kid": kid.hex(), "alg": alg, "kind": rng.choice((0, 1, 2, 4)),
        "counter": rng.choice((1, 23, 24, 255, 256, 65536, 2**32 - 1, rng.randint(1, 2**32 - 1))),
        "bn": base_name(device.hex()),
        "bt": rng.choice((0, 23, 24, 65535, 65536, 1764057600, 2**32 - 1)),
        "records": records, "buffer": 1024,
    }


@pytest.fixture(scope="module")
def random_frames(tmp_path_factory) -> list[tuple[dict, bytes]]:
    rng = random.Random(20251125)
    cases = [random_case(rng, i) for i in range(50)]
    mp = MicroPython(micropython_binary(), tmp_path_factory.mktemp("random_frames"))
    return list(zip(cases, build_in_firmware(mp, cases), strict=True))


def test_random_frames_match_the_independent_encoder(random_frames):
    assert len(random_frames) == 50
    for case, got in random_frames:
        assert got == independent_frame(case)[0], case["name"]


def test_pycose_verifies_random_firmware_frames(random_frames):
    for case, got in random_frames:
        msg = CoseMessage.decode(got)
        msg.key = SymmetricKey(k=bytes.fromhex(case["key"]))
        assert msg.verify_tag(), case["name"]
        # and a wrong key does not verify
        msg.key = SymmetricKey(k=hashlib.sha256(bytes.fromhex(case["key"])).digest())
        assert not msg.verify_tag(), case["name"]


def test_cbor2_decodes_random_firmware_frames_to_the_inputs(random_frames):
    labels = {"n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4, "err": "err"}
    for case, got in random_frames:
        obj = cbor2.loads(got)
        assert obj.tag == 17
        protected, unprotected, payload, tag = obj.value
        assert cbor2.loads(protected) == {1: case["alg"], 4: bytes.fromhex(case["kid"]),
                                          6: case["counter"].to_bytes(4, "big"), -65537: case["kind"]}
        assert unprotected == {} and len(tag) == (8 if case["alg"] == 4 else 32)
        pack = cbor2.loads(payload)
        expected = [{labels[k]: v for k, v in r.items()} for r in case["records"]]
        expected[0] = {-2: case["bn"], -3: case["bt"], **expected[0]}
        assert pack == expected, case["name"]
        for rec, want in zip(pack, expected, strict=True):  # same types too (== says 1 == 1.0 == True)
            assert [type(v) for v in rec.values()] == [type(v) for v in want.values()]
            assert [math.copysign(1, v) for v in rec.values() if type(v) is float] == \
                   [math.copysign(1, v) for v in want.values() if type(v) is float]


# --- the builder's limits and API -------------------------------------------------------------

def test_a_record_that_does_not_fit_raises_frame_full_and_keeps_the_frame(micropython):
    out = micropython.eval_json(f"""
import json
from binascii import hexlify
from fnode.frame import FrameBuilder, FrameFull
fb = FrameBuilder({KEY!r}, {KID!r}, 4, None, 128)
fb.begin(0, 9, 1764057600)
added = 0
error = None
try:
    for i in range(100):
        fb.add("reading%d" % i, "Cel", 20.5 + i)
        added += 1
except FrameFull as e:
    error = str(e)
print(json.dumps([added, error, isinstance(FrameFull("x"), ValueError), hexlify(fb.finish()).decode()]))
""")
    added, error, is_value_error, frame_hex = out
    frame = bytes.fromhex(frame_hex)
    assert error and "does not fit" in error and is_value_error
    assert 0 < added < 100 and len(frame) <= 128
    # one more record would not have fitted: the builder uses its buffer, not a rough guess
    assert len(frame) + len(cbor2.dumps({0: f"reading{added}", 1: "Cel", 2: 0.0})) - 4 > 128 - 2
    case = {"key": KEY.hex(), "kid": KID.hex(), "alg": 4, "kind": 0, "counter": 9, "bn": BN,
            "bt": 1764057600, "records": [{"n": f"reading{i}", "u": "Cel", "v": 20.5 + i} for i in range(added)]}
    assert frame == independent_frame(case)[0]


def test_builder_refuses_misuse(micropython):
    out = micropython.eval_json(f"""
import json
from fnode.frame import FrameBuilder
fb = FrameBuilder({KEY!r}, {KID!r})
def err(f):
    try:
        f()
    except Exception as e:
        return type(e).__name__
    return "accepted"
fb2 = FrameBuilder({KEY!r}, {KID!r})
fb2.begin(0, 1, 1)
fb2.add("a", None, 1)
fb2.finish()
print(json.dumps([
    err(lambda: FrameBuilder({KEY!r}, b"short")),
    err(lambda: FrameBuilder({KEY!r}, {KID!r}, 6)),
    err(lambda: FrameBuilder({KEY!r}, {KID!r}, 4, None, 40)),
    err(lambda: fb.add("a", None, 1)),
    err(lambda: fb.begin(0, 0, 1)),
    err(lambda: fb.begin(0, 2**32, 1)),
    err(lambda: fb.begin(5, 1, 1)),
    err(lambda: fb.begin(0, 1, -1)),
    err(lambda: fb.begin(0, 1, 1.5)),
    err(fb.finish),
    err(lambda: fb.begin(0, 1, 1) or fb.finish()),
    err(lambda: fb.add("a", None, True)),
    err(lambda: fb.add("a", None, "1")),
    err(lambda: fb.add_bool("a", 1)),
    err(lambda: fb2.add("b", None, 2)),
    err(fb2.finish),
]))
""")
    assert out == ["ValueError", "ValueError", "ValueError", "ValueError", "ValueError", "ValueError",
                   "ValueError", "ValueError", "ValueError", "ValueError", "ValueError", "TypeError",
                   "TypeError", "TypeError", "ValueError", "ValueError"]


# --- heap -------------------------------------------------------------------------------------

MP_REFERENCE = r"""
import gc
from fnode.frame import FrameBuilder
KEY = bytes(range(1, 33))
KID = b"\x24\x0a\xc4\x12\x34\x56\x00\x01"
NAMES = ("temp", "hum", "press", "loop1", "vib_rms", "pulses")
UNITS = ("Cel", "%RH", "Pa", "A", "m/s2", "count")
# ten value sets of the reference shape (built before measuring: the caller's floats are its own)
VALUES = [(23.45 + i, 41.2 - i, 101325.0 + 10 * i, 0.01234 * i, 0.734 + i / 8, 1234 + i) for i in range(10)]
fb = FrameBuilder(KEY, KID, 4)
if VERSION == 2:  # frame format v2: the same readings under a declaration
    fb.declare(b"\xf2\xe6\x75\x38", {NAMES[i]: "abcdef"[i] for i in range(6)})

def build(counter):
    fb.begin(0, counter, 1764057600 + counter)
    v = VALUES[counter % 10]
    for i in range(6):
        fb.add(NAMES[i], UNITS[i], v[i])
    return fb.finish()
"""


# v2: the last frame measured has loop1 = 0.0, an integer (1 byte) in v2: 4 bytes under the 110 of
# the reference frame (tests/vectors/frame-v2.json)
@pytest.mark.parametrize(("version", "last_size"), [(1, 192), (2, 106)])
def test_builder_allocates_at_most_512_bytes_per_frame(micropython, version, last_size):
    out = micropython.eval_json(f"VERSION = {version}\n" + MP_REFERENCE + r"""
import json, hashlib

def measure():
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    last = 0
    resized = 0  # frames whose size differs from the one before: the builder's views are remade
    for c in range(1, 1001):
        frame = build(c)
        if len(frame) != last:
            resized += 1
            last = len(frame)
    per_frame = (gc.mem_alloc() - before) / 1000
    before = gc.mem_alloc()
    hashlib.sha256(b"").digest()
    one_sha_and_digest = gc.mem_alloc() - before
    before = gc.mem_alloc()
    frame[1:2]
    view = gc.mem_alloc() - before
    gc.enable()
    return [per_frame, one_sha_and_digest, len(frame), resized, view]

print(json.dumps(measure()))
""")
    per_frame, sha_and_digest, size, resized, view = out
    assert size == last_size  # the reference frame's shape
    assert per_frame <= 512, f"{per_frame} bytes per frame"
    # what HMAC itself must allocate (two sha256 objects, two digests) is nearly all of it; the
    # rest is the builder's three views into its buffer, made again when a frame's size changes
    # (v1's float32 values keep one size; v2's shortest values change it with the values)
    assert (version == 1) == (resized == 1)
    assert per_frame <= 2 * sha_and_digest + 8 + resized * 3 * view / 1000, (per_frame, sha_and_digest, resized)


@pytest.mark.parametrize("version", [1, 2])
def test_finish_keeps_call_frames_off_the_heap(micropython, version):
    # MicroPython puts a call frame of more than 11 slots on the heap; one that is live while HMAC
    # allocates its sha256 objects pins the allocator's search start and slows every later
    # allocation (frame.py). A probe in place of sha256 reads the heap when HMAC allocates.
    out = micropython.eval_json(f"VERSION = {version}\n" + MP_REFERENCE + r"""
import json, hashlib
from fnode import hmac256
readings = [0, 0, 0]
count = 0

def probe(data):
    global count
    readings[count] = gc.mem_alloc()
    count += 1
    return hashlib.sha256(data)

def measure():
    for c in range(1, 4):
        build(c)
    gc.collect()
    gc.disable()
    x = gc.mem_alloc()
    hashlib.sha256(b"")
    sha = gc.mem_alloc() - x
    fb.begin(0, 9, 1764057609)
    for i in range(6):
        fb.add(NAMES[i], UNITS[i], VALUES[9][i])
    hmac256.sha256 = probe
    base = gc.mem_alloc()
    fb.finish()
    hmac256.sha256 = hashlib.sha256
    gc.enable()
    return [sha, [r - base for r in readings[:count]]]

print(json.dumps(measure()))
""")
    sha, readings = out
    # inner sha256: nothing allocated before it; outer: only the inner sha256 before it
    assert readings == [0, sha], readings


# The whole telemetry path of a running node, sample to queued frame (fnode.app.Node.sample with
# the virtual board: two sensors, alerts, a local rule, an interlock; the uplink with its spool),
# on the simulated HAL. The simulated bus and clock are Python on the unix port (C on the ESP32):
# what a driver's read and time.time() allocate there is measured beside each frame and taken off,
# and so is the copy of the frame that the queue keeps (the builder's buffer is reused).
MP_TELEMETRY_PATH = r"""
import esp32, gc, hashlib, json, time
from fnode.config import NAMESPACE, Config
from fnode.provision import pack_settings
nvs = esp32.NVS(NAMESPACE)
nvs.set_blob("id", bytes([4]) + bytes.fromhex("02f1e1ee00010001") + bytes(range(32)))
nvs.set_blob("cfg", pack_settings({"name": "alloc", "gw": "127.0.0.1:9", "ssid": "s", "wpass": "p"}))
nvs.commit()
from fnode.app import Node
from fnode.spool import Spool
from fnode.uplink import Uplink
from fnode.wifi import Link

class Sink:
    def write(self, b):
        pass

cfg = Config()
spool = Spool(nvs=cfg.nvs, after_ms=3600000)  # nothing goes to flash meanwhile
uplink = Uplink(("127.0.0.1", 9), Link("s", "p"), spool, console=Sink())
node = Node(json.load(open("board.json")), cfg, uplink)
sensors = node.sensors

def answered():
    # the gateway took the frame: the queue is empty again (outside the measured window)
    head = spool.peek()
    spool.drop(head[0])
    return head

def measure(frames):
    own = []
    first = node.counter.next
    gc.collect()
    gc.disable()
    for i in range(frames):
        s = sensors[i % len(sensors)]
        a = gc.mem_alloc()
        node.sample(s)
        path = gc.mem_alloc() - a
        head = answered()
        a = gc.mem_alloc()
        s.sample()
        read = gc.mem_alloc() - a
        a = gc.mem_alloc()
        time.time()
        clock = gc.mem_alloc() - a
        frame = memoryview(head[1])  # as the builder hands it over
        a = gc.mem_alloc()
        entry = (head[0], bytes(frame), time.ticks_ms())  # what the queue keeps of a frame
        queued = gc.mem_alloc() - a
        own.append(path - read - clock - queued)
        gc.collect()
    a = gc.mem_alloc()
    hashlib.sha256(b"").digest()
    sha_and_digest = gc.mem_alloc() - a
    a = gc.mem_alloc()
    frame[1:2]
    view = gc.mem_alloc() - a
    gc.enable()
    return [own, sha_and_digest, view, node.counter.next - first, frame[3]]

for s in sensors:  # names encoded, lists and dicts at their size
    node.sample(s)
    answered()
print(json.dumps(measure(40)))
"""


@pytest.mark.parametrize("version", [1, 2])
def test_the_telemetry_path_allocates_only_hmac_and_the_queued_copy(micropython, version):
    # Before: a bound method per sample (rules' emit), a list per sample (enforce_interlocks), a
    # tuple per frame (the counter read back with struct.unpack_from).
    from fieldnode.node.boards import load_board
    from fieldnode.infra.paths import SIMHAL_DIR
    from fieldnode.sim.fleet import devices_for_board
    from fieldnode.sim.vnode import VirtualNode

    doc = load_board("virtual")
    (micropython.tmp / "board.json").write_text(json.dumps({**doc, "frame_version": version}))
    VirtualNode(micropython.tmp / "node", "02f1e1ee0001", board="virtual", devices=devices_for_board(doc),
                firmware_lib=None)  # its sim.json: the emulated chips behind the board's sensors
    own, sha_and_digest, view, frames, header_size = micropython.eval_json(
        MP_TELEMETRY_PATH, path=[SIMHAL_DIR], env={"FIELDNODE_SIM_NODE": str(micropython.tmp / "node")})
    assert frames == 40  # one telemetry frame a sample: no event frame in the measurement
    assert header_size == {1: 0x19, 2: 0x1D}[version]  # the protected header of a v1 or v2 frame
    own.sort()
    median = own[len(own) // 2]  # the simulated world is re-read now and then, in either window
    # Beyond the queue's copy of the frame, only the frame builder's own: what HMAC must allocate
    # (two sha256, two digests) and, as the two sensors' frames alternate in layout, its three
    # views into the buffer (fnode/frame.py).
    assert median <= 2 * sha_and_digest + 3 * view, (median, sha_and_digest, view, own)


# --- the CBOR module --------------------------------------------------------------------------

def test_cbor_decoder_agrees_with_cbor2(micropython):
    values = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -24, -25, -256,
              -257, -(2**32), -(2**32) - 1, -(2**64), b"", b"\x00" * 24, b"x" * 300, "", "é漢", "x" * 24,
              [], [1, [2, [3, [4]]]], {1: "a", "k": b"v", -65537: [True, False, None]},
              cbor2.CBORTag(17, [b"", {}, b"p", b"t"]), cbor2.CBORTag(1000, [1]), 1.5, 0.1,
              -2.5, 1e300, float("inf"), float("-inf"), 5e-324]
    items = [cbor2.dumps(v) for v in values] + [cbor2.dumps(v, canonical=True) for v in values]
    items += [bytes.fromhex(h) for h in (
        "f90001", "f903ff", "f90400", "f97bff", "f9c000", "f98000", "f97c00", "f9fc00", "f93555",
        "fa00000001", "fa7f7fffff", "fa80000000", "fb3ff0000000000001",
        "1b0000000000000000", "3bffffffffffffffff", "5900024142", "7900026869", "9900020102",
        "b9000101f5", "d8ff01", "da0001000180")]
    cases = [i.hex() for i in items]
    (micropython.tmp / "cases.json").write_text(json.dumps(cases))
    got = micropython.eval_json(MP_REP + r"""
import json
from binascii import unhexlify
from fnode import cbordecode as cbor
out = []
for h in json.load(open("cases.json")):
    b = unhexlify(h)
    out.append([rep(cbor.loads(b)), cbor.skip(b, 0) == len(b), rep(cbor.loads(memoryview(b)))])
print(json.dumps(out))
""")
    for item, (decoded, skipped, from_view) in zip(items, got, strict=True):
        assert decoded == rep(cbor2.loads(item)), item.hex()
        assert skipped and from_view == decoded, item.hex()
    nan = micropython.eval_json("""
import json
from fnode import cbordecode as cbor
print(json.dumps([str(cbor.loads(bytes.fromhex(h))) for h in ("f97e00", "fa7fc00000", "fb7ff8000000000000")]))
""")
    assert nan == ["nan"] * 3


def test_cbor_decoder_rejects_malformed_input(micropython):
    malformed = {
        "": "truncated", "18": "truncated", "1900": "truncated", "1b00000000": "truncated",
        "5a0000000541": "truncated", "6261": "truncated", "8201": "truncated", "a101": "truncated",
        "d1": "truncated", "f9": "truncated", "fb000000": "truncated",
        "0102": "trailing", "80ff": "trailing",
        "5f4161ff": "indefinite", "7f6161ff": "indefinite", "9fff": "indefinite", "bfff": "indefinite",
        "ff": "malformed", "1f": "malformed", "1c": "reserved", "3d": "reserved", "5e": "reserved",
        "fc": "reserved", "f810": "simple value", "f7": "unsupported", "f0": "unsupported",
        "81" * 9 + "00": "deep", "c1" * 9 + "00": "deep", "9841" + "00" * 65: "too many",
        "b841" + "0000" * 65: "too many", "62fffe": "UTF-8", "a201010102": "duplicate",
        "a1810000": "unhashable",
    }
    (micropython.tmp / "cases.json").write_text(json.dumps(list(malformed)))
    got = micropython.eval_json(r"""
import json
from binascii import unhexlify
from fnode import cbordecode as cbor
out = []
for h in json.load(open("cases.json")):
    b = unhexlify(h)
    try:
        cbor.loads(b)
        out.append("accepted")
    except ValueError as e:
        out.append(str(e))
print(json.dumps(out))
""")
    for (h, why), message in zip(malformed.items(), got, strict=True):
        assert message.startswith("cbor: ") and why in message, (h, message)


def test_cbor_skip_rejects_what_loads_rejects_for_well_formedness(micropython):
    # skip() is the envelope's well-formedness check: same limits, no objects built
    got = micropython.eval_json(r"""
import json
from binascii import unhexlify
from fnode import cbordecode as cbor
out = []
for h in ("", "18", "5a0000000541", "9fff", "1c", "f810", "8201", "81818181818181818100", "9841" + "00" * 65):
    try:
        cbor.skip(unhexlify(h), 0)
        out.append("accepted")
    except ValueError as e:
        out.append(str(e)[:6])
print(json.dumps(out))
""")
    assert got == ["cbor: "] * 9


def test_cbor_encoder_writes_shortest_forms(micropython):
    ints = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
            -1, -24, -25, -256, -257, -65536, -65537, -(2**32), -(2**32) - 1, -(2**64)]
    texts = ["", "a" * 23, "a" * 24, "é" * 12, "漢" * 100, "b" * 64, "b" * 65, "c" * 300]
    out = micropython.eval_json(f"""
import json
from binascii import hexlify
from fnode import cbor
buf = bytearray(1024)
def enc(f, *a):
    n = f(buf, 7, *a) - 7
    return hexlify(buf[7:7 + n]).decode()
def bstr(b, o, s):
    return cbor.raw(b, cbor.head(b, o, cbor.MAJOR_BSTR, len(s)), s)
print(json.dumps([
    [enc(cbor.integer, v) for v in {ints!r}],
    [cbor.integer_size(v) for v in {ints!r}],
    [enc(cbor.text, s) for s in {texts!r}],
    [enc(cbor.text, s.encode()) for s in {texts!r}],
    [enc(bstr, s.encode()) for s in {texts!r}],
    [enc(cbor.boolean, True), enc(cbor.boolean, False)],
    [enc(cbor.array_head, n) for n in (0, 23, 24, 256)],
    [enc(cbor.head, 0xA0, n) for n in (0, 23, 24, 256)],
    [enc(cbor.head, 0xC0, n) for n in (17, 24, 65537)],
]))
""")
    ints_hex, int_sizes, texts_hex, texts_b_hex, bstr_hex, bools, arrays, maps, tags = out
    assert ints_hex == [cbor2.dumps(v).hex() for v in ints]
    assert int_sizes == [len(cbor2.dumps(v)) for v in ints]
    assert texts_hex == texts_b_hex == [cbor2.dumps(s).hex() for s in texts]
    assert bstr_hex == [cbor2.dumps(s.encode()).hex() for s in texts]
    assert bools == ["f5", "f4"]
    assert arrays == [head(0x80, n) for n in (0, 23, 24, 256)]
    assert maps == [head(0xA0, n) for n in (0, 23, 24, 256)]
    assert tags == [head(0xC0, n) for n in (17, 24, 65537)]


def head(major: int, n: int) -> str:
    """The shortest head of a major type: cbor2's for the unsigned int n, retyped."""
    b = cbor2.dumps(n)
    return (bytes([b[0] | major]) + b[1:]).hex()


# --- HMAC -------------------------------------------------------------------------------------

def test_hmac256_matches_the_standard_library(micropython):
    rng = random.Random(7)
    cases = [(rng.randbytes(k), rng.randbytes(m)) for k in (0, 1, 31, 32, 63, 64, 65, 100, 200)
             for m in (0, 1, 55, 56, 64, 200)]
    (micropython.tmp / "cases.json").write_text(json.dumps([[k.hex(), m.hex()] for k, m in cases]))
    got = micropython.eval_json(r"""
import json
from binascii import hexlify, unhexlify
from fnode.hmac256 import HMAC256
out = []
for k, m in json.load(open("cases.json")):
    mac = HMAC256(unhexlify(k))
    msg = unhexlify(m)
    h = mac.start()
    h.update(msg[:10])
    h.update(msg[10:])
    whole = mac.finish(h)  # fed in pieces, as the frame builder feeds MAC_structure
    buf = bytearray(40)
    buf[3:11] = whole[:8]  # an 8-byte tag (COSE alg 4) inside a frame
    h = mac.start()
    h.update(msg)
    ok = mac.verify(h, buf, 3, 8)
    h = mac.start()
    h.update(msg)
    ok32 = mac.verify(h, whole, 0, 32)  # the whole MAC (alg 5)
    buf[5] ^= 1
    h = mac.start()
    h.update(msg)
    bad = mac.verify(h, buf, 3, 8)
    h = mac.start()
    h.update(msg)
    short = mac.verify(h, buf, 3, 7)  # fewer than 8 bytes never verify
    out.append([hexlify(mac.digest(msg)).decode(), hexlify(whole).decode(), ok, ok32, bad, short])
print(json.dumps(out))
""")
    assert len(got) == len(cases)
    for (key, msg), (digest, whole, ok, ok32, bad, short) in zip(cases, got, strict=True):
        expected = hmac.new(key, msg, hashlib.sha256).hexdigest()
        assert digest == whole == expected
        assert (ok, ok32, bad, short) == (True, True, False, False)
