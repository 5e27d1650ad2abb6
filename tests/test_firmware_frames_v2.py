"""The firmware side of frame format v2 (fnode.frame's v2 mode, fnode.declare), on the real
MicroPython unix port: the node's declarations and v2 telemetry are the bytes of
tests/vectors/frame-v2.json, and random values take the shortest exact encoding that cbor2 reads back
as the node's float32."""
from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import cbor2

from fieldnode.wire.frame import KIND_NAMES, ReplayWindow, Verifier

V2 = json.loads((Path(__file__).parent / "vectors" / "frame-v2.json").read_text())

# Builds each vector declaration with fnode.declare, then each telemetry vector with the
# FrameBuilder in v2 mode, adding the readings by their full names as the node does.
MP_BUILD_V2 = r"""
import json
from binascii import hexlify, unhexlify
from fnode import declare
from fnode.frame import FrameBuilder

doc = json.load(open("v2.json"))
decls = {}
out = {"declarations": [], "frames": []}
for d in doc["declarations"]:
    readings = [tuple(r) for r in d["readings"]]
    payload = declare.payload(readings)
    did = declare.declaration_id(payload)
    decls[d["name"]] = (did, declare.shorts(readings))
    frame = declare.frame(unhexlify(d["key"]), unhexlify(d["kid"]), d["alg"], d["counter"], payload)
    out["declarations"].append([hexlify(did).decode(), hexlify(frame).decode()])
for c in doc["frames"]:
    fb = FrameBuilder(unhexlify(c["key"]), unhexlify(c["kid"]), c["alg"])
    did, shorts = decls[c["declaration"]]
    fb.declare(did, shorts)
    fb.begin(0, c["counter"], c["bt"])
    for r in c["expanded"]:
        u = r.get("u")
        if "v" in r:
            fb.add(r["n"], u, r["v"])
        elif "vs" in r:
            fb.add_str(r["n"], r["vs"], u)
        elif "vb" in r:
            fb.add_bool(r["n"], r["vb"], u)
        else:
            fb.add_error(r["n"], u, r["err"])
    out["frames"].append(hexlify(fb.finish()).decode())
print(json.dumps(out))
"""


def test_the_node_builds_every_v2_vector_byte_exactly(micropython):
    (micropython.tmp / "v2.json").write_text(json.dumps(V2))
    out = micropython.eval_json(MP_BUILD_V2)
    assert len(out["declarations"]) == len(V2["declarations"]) > 0
    for case, (did, frame) in zip(V2["declarations"], out["declarations"], strict=True):
        assert (did, frame) == (case["id"], case["frame"]), case["name"]
    assert len(out["frames"]) == len(V2["frames"]) > 0
    for case, frame in zip(V2["frames"], out["frames"], strict=True):
        assert frame == case["frame"], case["name"]


def test_other_kinds_stay_v1_on_a_v2_builder(micropython, vectors):
    # A v2 node's boot, event and ack frames are v1's, byte for byte.
    cases = [c for c in vectors["frames"] if c["kind"] != 0 and c["kind"] != 3]
    (micropython.tmp / "cases.json").write_text(json.dumps(cases))
    out = micropython.eval_json(r"""
import json
from binascii import hexlify, unhexlify
from fnode.frame import FrameBuilder
res = []
for c in json.load(open("cases.json")):
    fb = FrameBuilder(unhexlify(c["key"]), unhexlify(c["kid"]), c["alg"])
    fb.declare(b"\1\2\3\4", {"temp": "a"})
    fb.begin(c["kind"], c["counter"], c["bt"])
    for r in c["records"]:
        if "v" in r:
            fb.add(r["n"], r.get("u"), r["v"])
        else:
            fb.add_str(r["n"], r["vs"])
    res.append(hexlify(fb.finish()).decode())
print(json.dumps(res))
""")
    assert out == [c["frame"] for c in cases] and len(out) >= 3


def f32(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


def half_exact(x: float) -> bool:
    return abs(x) <= 65504 and struct.unpack(">e", struct.pack(">e", x))[0] == x


def random_value(rng: random.Random) -> float:
    pick = rng.randrange(6)
    if pick == 0:
        return float(rng.randint(-(2**33), 2**33))  # integral, some beyond 32 bits
    if pick == 1:
        return rng.randint(-2048, 2048) / rng.choice([1, 2, 4, 8, 1024])  # often float16-exact
    if pick == 2:
        return rng.choice([2.0**-24, -(2.0**-20), 65504.0, -65504.0, 2.0**-14, 3 * 2.0**-24, 0.0, -0.0])
    if pick == 3:
        return rng.uniform(-1e6, 1e6)
    if pick == 4:
        return f32(rng.uniform(-1, 1)) * 2.0 ** rng.randint(-40, 40)
    return rng.choice([2.0**32, -(2.0**32), 2.0**32 - 256, 1e30, -1e-30, 16777217.0])


def test_random_v2_values_are_the_shortest_exact_encoding(micropython):
    rng = random.Random(17)
    values = [random_value(rng) for _ in range(600)]
    (micropython.tmp / "values.json").write_text(json.dumps(values))
    key, kid = bytes(range(1, 33)), bytes.fromhex("240ac41234560001")
    out = micropython.eval_json(r"""
import json
from binascii import hexlify
from fnode.frame import FrameBuilder
values = json.load(open("values.json"))
fb = FrameBuilder(bytes(range(1, 33)), b"\x24\x0a\xc4\x12\x34\x56\x00\x01", 4)
fb.declare(b"\1\2\3\4", {"x": "a"})
res = []
for i, v in enumerate(values):
    fb.begin(0, i + 1, 1764057600)
    fb.add("x", None, v)
    res.append(hexlify(fb.finish()).decode())
print(json.dumps(res))
""")
    verifier = Verifier({kid: (key, 4)}.get, ReplayWindow(), accept_kinds=KIND_NAMES)
    seen = set()
    for value, frame_hex in zip(values, out, strict=True):
        frame = bytes.fromhex(frame_hex)
        verified = verifier.verify(frame)  # MAC, header, the v2 pack rules
        assert verified.undeclared
        payload = cbor2.loads(frame).value[2]
        got = cbor2.loads(payload)[0][2]
        want = f32(value)
        assert got == want, (value, payload.hex())
        encoded = payload[payload.index(b"\x02", 9) + 1:]  # after bt and the name: the value
        if want == int(want) and abs(want) < 2**32:
            assert type(got) is int and encoded == cbor2.dumps(int(want))
            seen.add("int")
        elif half_exact(want):
            assert encoded[0] == 0xF9 and len(encoded) == 3, (value, encoded.hex())
            seen.add("half")
        else:
            assert encoded[0] == 0xFA and len(encoded) == 5, (value, encoded.hex())
            seen.add("single")
    assert seen == {"int", "half", "single"}


def test_a_reading_missing_from_the_declaration_is_refused_by_the_builder(micropython):
    out = micropython.eval_json(r"""
import json
from fnode.frame import FrameBuilder
fb = FrameBuilder(bytes(range(1, 33)), b"\x24\x0a\xc4\x12\x34\x56\x00\x01", 4)
fb.declare(b"\1\2\3\4", {"temp": "a"})
fb.begin(0, 1, 1764057600)
try:
    fb.add("hum", "%RH", 41.2)
    r = "added"
except ValueError as e:
    r = str(e)
fb.add("temp", "Cel", 20.0)
print(json.dumps([r, len(fb.finish())]))
""")
    assert out[0] == "frame: reading not in the declaration" and out[1] > 40


def test_the_node_assigns_short_names_in_board_order(micropython):
    out = micropython.eval_json(r"""
import json
from fnode import declare
class S:
    def __init__(self, name, names, units):
        self.name, self.names, self.units = name, names, units
sensors = [S("env", ("temp", "hum"), ("Cel", "%RH")), S("door", ("door",), (None,))]
r = declare.readings(sensors, declare.HEALTH)
print(json.dumps([r, [declare.short_name(i) for i in (0, 25, 26, 51, 52, 53, 104)]]))
""")
    readings, names = out
    assert readings == [["a", "temp", "Cel", "env"], ["b", "hum", "%RH", "env"], ["c", "door", "", "door"],
                        ["d", "heap.free", "B", "node"], ["e", "heap.low", "B", "node"],
                        ["f", "heap.block", "B", "node"]]
    assert names == ["a", "z", "A", "Z", "aa", "ab", "ba"]
