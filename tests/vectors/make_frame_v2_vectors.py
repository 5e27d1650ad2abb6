"""Writes frame-v2.json: the byte-exact contract of frame format v2 between firmware and host.

As make_frame_vectors.py does for v1, the expected bytes are laid out here by hand from
docs/frame-format.md ("Frame format v2"), with no code from firmware/ or host/. The half-precision
test is a third way of deciding it (math.frexp here; bit operations in the firmware; struct's
"e" format in the host), so that no two implementations share it. cbor2 checks well-formedness,
and tests/test_frame_vectors_v2.py checks every frame with pycose.

Run: python tests/vectors/make_frame_v2_vectors.py  (rewrites the JSON next to this file)
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import struct
from pathlib import Path

import cbor2

try:  # imported by the tests (tests/ on the path) or run as a script from this directory
    from vectors.make_frame_vectors import DEV_A, DEV_B, KEY_A, KEY_B, bstr, head, nint, text, uint
except ImportError:
    from make_frame_vectors import DEV_A, DEV_B, KEY_A, KEY_B, bstr, head, nint, text, uint

KIND_DECLARATION = 5
LABEL_DECLARATION = -65538


def f32(v: float) -> float:
    return struct.unpack(">f", struct.pack(">f", v))[0]


def half_bits(f: float) -> int | None:
    """The IEEE 754 binary16 bits of f if binary16 holds f exactly, else None (via frexp)."""
    if f == 0.0:
        return 0x8000 if math.copysign(1.0, f) < 0 else 0
    sign = 0x8000 if f < 0 else 0
    m, e = math.frexp(abs(f))  # abs(f) = m * 2**e, 0.5 <= m < 1
    if e - 1 >= -14:  # normal: 1.xxxxxxxxxx * 2**(e-1), exponent -14..15
        if e - 1 > 15:
            return None
        mant = m * 2 ** 11  # 11 significant bits
        if mant != int(mant):
            return None
        return sign | (e - 1 + 15) << 10 | (int(mant) - 1024)
    sub = abs(f) * 2 ** 24  # subnormal: n * 2**-24, n < 1024
    if sub != int(sub) or sub >= 1024:
        return None
    return sign | int(sub)


def value(v) -> bytes:
    """docs/frame-format.md, v2 values: integer when integral (|v| < 2**32), else float16 when exact,
    else float32. bools and ints as given."""
    if isinstance(v, bool):
        return b"\xf5" if v else b"\xf4"
    if isinstance(v, int):
        return uint(v) if v >= 0 else nint(v)
    f = f32(v)
    if f == int(f) and abs(f) < 2 ** 32:
        n = int(f)
        return uint(n) if n >= 0 else nint(n)
    h = half_bits(f)
    if h is not None:
        return b"\xf9" + struct.pack(">H", h)
    return b"\xfa" + struct.pack(">f", f)


def declaration_payload(readings: list[list[str]]) -> bytes:
    return head(4, len(readings)) + b"".join(head(4, 4) + b"".join(text(x) for x in r) for r in readings)


def record(rec: dict, bt: int | None) -> bytes:
    items: list[bytes] = []
    if bt is not None:
        items.append(nint(-3) + uint(bt))
    items.append(uint(0) + text(rec["n"]))
    if "v" in rec:
        items.append(uint(2) + value(rec["v"]))
    if "vs" in rec:
        items.append(uint(3) + text(rec["vs"]))
    if "vb" in rec:
        items.append(uint(4) + value(rec["vb"]))
    if "err" in rec:
        items.append(text("err") + text(rec["err"]))
    return head(5, len(items)) + b"".join(items)


def sign(case: dict, protected: bytes, payload: bytes) -> tuple[bytes, bytes]:
    mac_structure = b"\x84" + text("MAC0") + bstr(protected) + bstr(b"") + bstr(payload)
    full = hmac.new(bytes.fromhex(case["key"]), mac_structure, hashlib.sha256).digest()
    tag = full[:8] if case["alg"] == 4 else full
    out = b"\xd1\x84" + bstr(protected) + b"\xa0" + bstr(payload) + bstr(tag)
    assert cbor2.loads(out).tag == 17  # well-formed, one item, no trailing bytes
    return out, mac_structure


def header(case: dict) -> bytes:
    return b"\xa4" + uint(1) + uint(case["alg"]) + uint(4) + bstr(bytes.fromhex(case["kid"])) \
        + uint(6) + bstr(struct.pack(">I", case["counter"]))


def declaration_frame(case: dict) -> tuple[bytes, bytes, bytes]:
    payload = declaration_payload(case["readings"])
    out, mac_structure = sign(case, header(case) + nint(-65537) + uint(KIND_DECLARATION), payload)
    return out, mac_structure, hashlib.sha256(payload).digest()[:4]


def telemetry_frame(case: dict, did: bytes) -> tuple[bytes, bytes]:
    recs = case["records"]
    payload = head(4, len(recs)) + b"".join(record(r, case["bt"] if i == 0 else None) for i, r in enumerate(recs))
    return sign(case, header(case) + nint(LABEL_DECLARATION) + bstr(did), payload)


REFERENCE_READINGS = [
    ["a", "temp", "Cel", "bme280"], ["b", "hum", "%RH", "bme280"], ["c", "press", "Pa", "bme280"],
    ["d", "loop1", "A", "loop1"], ["e", "vib_rms", "m/s2", "adxl345"], ["f", "pulses", "count", "pulses"],
]
MIXED_READINGS = [
    ["a", "temp", "Cel", "probe"], ["b", "offset", "", "probe"], ["c", "door", "", "door"],
    ["d", "mode", "", "door"], ["e", "flow", "1/s", "flow"], ["f", "big", "", "flow"], ["g", "tiny", "", "flow"],
    ["h", "neg", "", "flow"], ["i", "half", "", "flow"], ["j", "level", "m", "flow"],
]

DECLARATIONS = [
    {
        "name": "declaration-6",
        "note": "the reference node's six readings (those of v1's telemetry-6)",
        "key": KEY_A, "kid": DEV_A + "0001", "alg": 4, "counter": 41, "readings": REFERENCE_READINGS,
    },
    {
        "name": "declaration-alg5",
        "note": "HMAC 256/256; readings with and without units",
        "key": KEY_B, "kid": DEV_B + "0002", "alg": 5, "counter": 69999, "readings": MIXED_READINGS,
    },
]

TELEMETRY = [
    {
        "name": "telemetry-6",
        "note": "the reference frame: v1's telemetry-6 readings under declaration-6, HMAC 256/64",
        "declaration": "declaration-6",
        "key": KEY_A, "kid": DEV_A + "0001", "alg": 4, "counter": 42, "bt": 1764057600,
        "records": [
            {"n": "a", "v": 23.45}, {"n": "b", "v": 41.2}, {"n": "c", "v": 101325.0},
            {"n": "d", "v": 0.01234}, {"n": "e", "v": 0.734}, {"n": "f", "v": 1234},
        ],
    },
    {
        "name": "telemetry-values",
        "note": "every value encoding: float16, integral floats, 2**32 as float32, a half subnormal, "
                "a negative integer, a boolean, a string; HMAC 256/256",
        "declaration": "declaration-alg5",
        "key": KEY_B, "kid": DEV_B + "0002", "alg": 5, "counter": 70000, "bt": 1764057660,
        "records": [
            {"n": "a", "v": -12.5}, {"n": "b", "v": -3}, {"n": "c", "vb": True}, {"n": "d", "vs": "auto"},
            {"n": "e", "v": 0.5}, {"n": "f", "v": 4294967296.0}, {"n": "g", "v": 5.960464477539063e-08},
            {"n": "h", "v": -70000.0}, {"n": "i", "v": 65504.0}, {"n": "j", "v": 1.1},
        ],
    },
    {
        "name": "telemetry-error",
        "note": "a failed reading: err and no value",
        "declaration": "declaration-6",
        "key": KEY_A, "kid": DEV_A + "0001", "alg": 4, "counter": 43, "bt": 1764057610,
        "records": [{"n": "a", "v": 23.5}, {"n": "d", "err": "broken-loop"}],
    },
]


def expanded(case: dict, decl: dict) -> list[dict]:
    """The full SenML the receiver restores (docs: Expansion), as v1 vector records."""
    by_short = {r[0]: r for r in decl["readings"]}
    out = []
    for rec in case["records"]:
        _, name, unit, _ = by_short[rec["n"]]
        full = {"n": name}
        if unit:
            full["u"] = unit
        full.update({k: v for k, v in rec.items() if k != "n"})
        out.append(full)
    return out


def rejections(decls: dict[str, dict], frames: dict[str, bytes]) -> list[dict]:
    a = decls["declaration-6"]
    dup = {**a, "counter": 50, "readings": REFERENCE_READINGS + [["a", "again", "", "x"]]}
    dup_name = {**a, "counter": 51, "readings": [["a", "temp", "", "x"], ["b", "temp", "", "y"]]}
    junk = {**a, "counter": 52}
    junk_frame, _ = sign(junk, header(junk) + nint(-65537) + uint(KIND_DECLARATION), b"\x1c")
    long_short = {**a, "counter": 53, "readings": [["abc", "temp", "Cel", "x"]]}
    undeclared = {**TELEMETRY[0], "counter": 54, "records": [{"n": "a", "v": 1}, {"n": "zz", "v": 2}]}
    forged = bytearray(frames["declaration-6"])
    forged[-1] ^= 0x01
    both = {**TELEMETRY[0], "counter": 55}
    did = bytes.fromhex(decls["declaration-6"]["id"])
    payload = head(4, 1) + record({"n": "a", "v": 1}, 1764057600)
    five = b"\xa5" + header(both)[1:] + nint(-65537) + uint(0) + nint(LABEL_DECLARATION) + bstr(did)
    with_kind, _ = sign(both, five, payload)
    return [
        {"name": "declaration-short-name-twice", "frame": declaration_frame(dup)[0].hex(), "reason": "bad-declaration",
         "detail": "short name 'a' is declared twice"},
        {"name": "declaration-name-twice", "frame": declaration_frame(dup_name)[0].hex(),
         "reason": "bad-declaration", "detail": "reading 'temp' is declared twice"},
        {"name": "declaration-not-cbor", "frame": junk_frame.hex(), "reason": "bad-declaration"},
        {"name": "declaration-short-name-too-long", "frame": declaration_frame(long_short)[0].hex(),
         "reason": "bad-declaration"},
        {"name": "declaration-bad-mac", "frame": bytes(forged).hex(), "reason": "bad-mac"},
        {"name": "telemetry-undeclared-reading", "known": ["declaration-6"],
         "frame": telemetry_frame(undeclared, did)[0].hex(), "reason": "bad-senml", "detail": "zz"},
        {"name": "telemetry-kind-and-declaration", "frame": with_kind.hex(), "reason": "bad-header"},
    ]


def main() -> None:
    decls: dict[str, dict] = {}
    frames: dict[str, bytes] = {}
    out_decls = []
    for case in DECLARATIONS:
        frame, mac_structure, did = declaration_frame(case)
        frames[case["name"]] = frame
        decls[case["name"]] = {**case, "id": did.hex()}
        out_decls.append({**case, "id": did.hex(), "payload": declaration_payload(case["readings"]).hex(),
                          "mac_structure": mac_structure.hex(), "frame": frame.hex(), "size": len(frame)})
    out_tel = []
    for case in TELEMETRY:
        decl = decls[case["declaration"]]
        frame, mac_structure = telemetry_frame(case, bytes.fromhex(decl["id"]))
        frames[case["name"]] = frame
        out_tel.append({**case, "declaration_id": decl["id"], "expanded": expanded(case, decl),
                        "bn": "urn:dev:mac:" + case["kid"][:6] + "fffe" + case["kid"][6:12] + ":",
                        "mac_structure": mac_structure.hex(), "frame": frame.hex(), "size": len(frame)})
    doc = {
        "format": "fieldnode frame v2",
        "spec": "docs/frame-format.md#frame-format-v2",
        "keys_note": "test keys only; never provisioned to a node",
        "declarations": out_decls,
        "frames": out_tel,
        "rejections": rejections(decls, frames),
    }
    path = Path(__file__).with_name("frame-v2.json")
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path} ({len(out_decls)} declarations, {len(out_tel)} telemetry frames; "
          f"telemetry-6 is {len(frames['telemetry-6'])} bytes)")


if __name__ == "__main__":
    main()
