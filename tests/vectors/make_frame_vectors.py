"""Writes frame-v1.json: the byte-exact contract between firmware and host.

The expected bytes are laid out here by hand, following docs/frame-format.md step by step, with
no code from firmware/ or host/, so that both implementations are checked against a third reading
of the spec. cbor2 only checks that what is written here is well-formed.

Run: python tests/vectors/make_frame_vectors.py  (rewrites the JSON next to this file)
"""
from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path

import cbor2


def head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + struct.pack(">H", n)
    return bytes([major << 5 | 26]) + struct.pack(">I", n)


def uint(n: int) -> bytes:
    return head(0, n)


def nint(n: int) -> bytes:
    return head(1, -1 - n)


def text(s: str) -> bytes:
    b = s.encode()
    return head(3, len(b)) + b


def bstr(b: bytes) -> bytes:
    return head(2, len(b)) + b


def value(v) -> bytes:
    if isinstance(v, bool):
        return b"\xf5" if v else b"\xf4"
    if isinstance(v, int):
        return uint(v) if v >= 0 else nint(v)
    return b"\xfa" + struct.pack(">f", v)


def record(rec: dict, first: dict | None) -> bytes:
    items: list[bytes] = []
    if first is not None:
        items.append(nint(-2) + text(first["bn"]))
        items.append(nint(-3) + uint(first["bt"]))
    items.append(uint(0) + text(rec["n"]))
    if "u" in rec:
        items.append(uint(1) + text(rec["u"]))
    if "v" in rec:
        items.append(uint(2) + value(rec["v"]))
    if "vs" in rec:
        items.append(uint(3) + text(rec["vs"]))
    if "vb" in rec:
        items.append(uint(4) + value(rec["vb"]))
    if "err" in rec:
        items.append(text("err") + text(rec["err"]))
    return head(5, len(items)) + b"".join(items)


def frame(case: dict) -> tuple[bytes, bytes]:
    kid = bytes.fromhex(case["kid"])
    protected = (
        b"\xa4" + uint(1) + uint(case["alg"]) + uint(4) + bstr(kid)
        + uint(6) + bstr(struct.pack(">I", case["counter"]))
        + nint(-65537) + uint(case["kind"])
    )
    recs = case["records"]
    payload = head(4, len(recs)) + b"".join(
        record(r, case if i == 0 else None) for i, r in enumerate(recs)
    )
    mac_structure = b"\x84" + text("MAC0") + bstr(protected) + bstr(b"") + bstr(payload)
    full = hmac.new(bytes.fromhex(case["key"]), mac_structure, hashlib.sha256).digest()
    tag = full[:8] if case["alg"] == 4 else full
    out = b"\xd1\x84" + bstr(protected) + b"\xa0" + bstr(payload) + bstr(tag)
    assert cbor2.loads(out).tag == 17  # well-formed, one item, no trailing bytes
    return out, mac_structure


KEY_A = bytes(range(1, 33)).hex()
KEY_B = hashlib.sha256(b"fieldnode test key B").hexdigest()
DEV_A = "240ac4123456"
DEV_B = "7cdfa1c0ffee"


def bn(dev: str) -> str:
    return "urn:dev:mac:" + dev[:6] + "fffe" + dev[6:] + ":"


CASES = [
    {
        "name": "telemetry-6",
        "note": "the reference frame: six readings with units, HMAC 256/64",
        "key": KEY_A, "kid": DEV_A + "0001", "alg": 4, "counter": 42, "kind": 0,
        "bn": bn(DEV_A), "bt": 1764057600,
        "records": [
            {"n": "temp", "u": "Cel", "v": 23.45},
            {"n": "hum", "u": "%RH", "v": 41.2},
            {"n": "press", "u": "Pa", "v": 101325.0},
            {"n": "loop1", "u": "A", "v": 0.01234},
            {"n": "vib_rms", "u": "m/s2", "v": 0.734},
            {"n": "pulses", "u": "count", "v": 1234},
        ],
    },
    {
        "name": "telemetry-alg5",
        "note": "HMAC 256/256, a negative integer, a boolean and a string reading",
        "key": KEY_B, "kid": DEV_B + "0002", "alg": 5, "counter": 70000, "kind": 0,
        "bn": bn(DEV_B), "bt": 1764057660,
        "records": [
            {"n": "temp", "u": "Cel", "v": -12.5},
            {"n": "offset", "v": -3},
            {"n": "door", "vb": True},
            {"n": "mode", "vs": "auto"},
        ],
    },
    {
        "name": "telemetry-error",
        "note": "a failed reading travels as a record with err and no value",
        "key": KEY_A, "kid": DEV_A + "0001", "alg": 4, "counter": 43, "kind": 0,
        "bn": bn(DEV_A), "bt": 1764057610,
        "records": [
            {"n": "temp", "u": "Cel", "v": 23.5},
            {"n": "loop1", "u": "A", "err": "broken-loop"},
        ],
    },
    {
        "name": "boot",
        "key": KEY_A, "kid": DEV_A + "0001", "alg": 4, "counter": 1, "kind": 2,
        "bn": bn(DEV_A), "bt": 1764057000,
        "records": [
            {"n": "fw", "vs": "0.1.0"},
            {"n": "board", "vs": "esp32-devkitc"},
            {"n": "reset", "vs": "power_on"},
            {"n": "schema", "v": 1},
        ],
    },
    {
        "name": "event",
        "key": KEY_A, "kid": DEV_A + "0001", "alg": 4, "counter": 44, "kind": 1,
        "bn": bn(DEV_A), "bt": 1764057620,
        "records": [
            {"n": "event", "vs": "temp.high"},
            {"n": "temp", "u": "Cel", "v": 85.25},
        ],
    },
    {
        "name": "command",
        "note": "host to node: set relay1 on, expire 30 s after issue",
        "key": KEY_A, "kid": DEV_A + "0001", "alg": 4, "counter": 5, "kind": 3,
        "bn": bn(DEV_A), "bt": 1764057630,
        "records": [
            {"n": "relay1", "vb": True},
            {"n": "exp", "v": 1764057660},
        ],
    },
    {
        "name": "ack",
        "key": KEY_A, "kid": DEV_A + "0001", "alg": 4, "counter": 45, "kind": 4,
        "bn": bn(DEV_A), "bt": 1764057631,
        "records": [
            {"n": "ack", "v": 5},
            {"n": "result", "vs": "refused"},
            {"n": "reason", "vs": "interlock"},
        ],
    },
]


def bad_cases(good: dict[str, bytes]) -> list[dict]:
    ref = good["telemetry-6"]
    flipped = bytearray(ref)
    flipped[60] ^= 0x01  # inside the payload: a reading changed in transit
    wrong_tag = bytearray(ref)
    wrong_tag[-1] ^= 0x80
    return [
        {"name": "tampered-payload", "frame": flipped.hex(), "reason": "bad-mac"},
        {"name": "tampered-tag", "frame": wrong_tag.hex(), "reason": "bad-mac"},
        {"name": "truncated", "frame": ref[:-5].hex(), "reason": "bad-cbor"},
        {"name": "trailing-bytes", "frame": (ref + b"\x00").hex(), "reason": "bad-cbor"},
        {"name": "wrong-tag", "frame": (b"\xd2" + ref[1:]).hex(), "reason": "not-cose-mac0"},
        {"name": "not-an-array", "frame": "d111", "reason": "not-cose-mac0"},
        {"name": "oversized", "frame": "d184" + "5a00000401" + "00" * 1025, "reason": "oversized"},
    ]


def main() -> None:
    good: dict[str, bytes] = {}
    cases = []
    for case in CASES:
        out, mac_structure = frame(case)
        good[case["name"]] = out
        cases.append({**case, "mac_structure": mac_structure.hex(), "frame": out.hex(), "size": len(out)})
    doc = {
        "format": "fieldnode frame v1",
        "spec": "docs/frame-format.md",
        "keys_note": "test keys only; never provisioned to a node",
        "frames": cases,
        "rejections": bad_cases(good),
    }
    path = Path(__file__).with_name("frame-v1.json")
    path.write_text(json.dumps(doc, indent=1) + "\n")
    size = good["telemetry-6"] and len(good["telemetry-6"])
    print(f"wrote {path} ({len(cases)} frames; telemetry-6 is {size} bytes)")


if __name__ == "__main__":
    main()
