"""Frame size: the reference telemetry frame against SenML-JSON of the same readings.

    .venv/bin/python bench/frame_size.py   (writes bench/results/frame_size.json)

The reference frame is vector `telemetry-6` of tests/vectors/frame-v1.json, as the firmware builds
it (six readings with units, HMAC 256/64). Its SenML payload is decoded with cbor2 and written
again as SenML-JSON (RFC 8428 section 5: the same pack, text labels, compact separators), with
each float32 value written as the node knows it (7 significant digits: `23.45`, not the float64
expansion `23.450000762939453`): what a node would send with the usual JSON encoding and no
authentication at all. Targets: the
signed frame <= 40% of the unsigned SenML-JSON, and well under ESP-NOW's 250-byte payload.

Frame format v2 (docs/frame-format.md#frame-format-v2): vector `telemetry-6` of
tests/vectors/frame-v2.json, the same six readings under their declaration, against the same
SenML-JSON, with its breakdown (envelope, names, values and structure) and which links it fits:
LoRaWAN's application payload (EU863-870: 51 B at DR0-2, 115 at DR3, 242 at DR4-7) and ESP-NOW's
250 B. The declaration, sent once per boot, is measured too.

Also measured: the floor for frame format v1. The same pack re-encoded by cbor2's canonical
encoder (shortest integer, length and float forms RFC 8949 allows) is the smallest CBOR that says
the same; that plus our envelope is the smallest v1 frame of these readings, whatever the encoder.
"""
from __future__ import annotations

import json
from pathlib import Path

import cbor2

from fieldnode.wire.frame import present

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "tests" / "vectors" / "frame-v1.json"
VECTORS_V2 = REPO / "tests" / "vectors" / "frame-v2.json"
RESULTS = REPO / "bench" / "results" / "frame_size.json"
ESP_NOW_LIMIT = 250
# LoRaWAN Regional Parameters, EU863-870: the largest FRMPayload (N) by data rate.
LORAWAN_LIMITS = {"DR0-2 (SF12-SF10)": 51, "DR3 (SF9)": 115, "DR4-7 (SF8-SF7, FSK)": 242}
TARGET = 0.40
JSON_LABELS = {-2: "bn", -3: "bt", -4: "bu", -5: "bv", 0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 6: "t"}


def required_text(pack: list[dict]) -> int:
    """UTF-8 bytes of the strings v1 makes every telemetry frame carry: base name, names, units."""
    labels = (-2, 0, 1)  # bn, n, u
    return sum(len(rec[k].encode()) for rec in pack for k in labels if k in rec)


def senml_json(pack: list[dict]) -> bytes:
    """SenML-JSON of a SenML-CBOR pack; labels this table does not know (ours) are kept by name."""
    out = [{JSON_LABELS.get(k, str(k)): present(v) for k, v in rec.items()} for rec in pack]
    return json.dumps(out, separators=(",", ":")).encode()


def _item_size(item: object) -> int:
    return len(cbor2.dumps(item))


def v2_breakdown(frame: bytes) -> dict:
    """Where the bytes of a v2 telemetry frame go: the COSE envelope (tag, protected header with
    alg, kid, counter and declaration id, unprotected map, the payload's bstr head, the MAC), the
    short names (label and text), the values (label and value), and the rest of the SenML
    structure (array and map heads, bt). Each part is measured on the frame's own bytes."""
    protected, _, payload, tag = cbor2.loads(frame).value
    pack = cbor2.loads(payload)
    names = sum(1 + _item_size(rec[0]) for rec in pack)
    # A value as the node sent it: the shortest exact encoding, which is what cbor2's canonical
    # encoder writes for the decoded value; the parts must add up to the payload's length.
    values = sum(_item_size(label) + len(cbor2.dumps(rec[label], canonical=True))
                 for rec in pack for label in (2, 3, 4, "err") if label in rec)
    heads = _item_size(len(pack)) + sum(_item_size(len(rec)) for rec in pack)  # array and map heads
    structure = heads + _item_size(-3) + _item_size(pack[0][-3])  # and bt
    if names + values + structure != len(payload):
        raise AssertionError(f"breakdown {names} + {values} + {structure} != payload {len(payload)}")
    return {
        "envelope_bytes": len(frame) - len(payload),
        "protected_header_bytes": len(protected),
        "mac_bytes": len(tag),
        "names_bytes": names,
        "values_bytes": values,
        "structure_bytes": structure,
    }


def v2_figures(json_bytes: int) -> dict:
    doc = json.loads(VECTORS_V2.read_text())
    case = next(c for c in doc["frames"] if c["name"] == "telemetry-6")
    declaration = next(d for d in doc["declarations"] if d["name"] == case["declaration"])
    frame = bytes.fromhex(case["frame"])
    payload = cbor2.loads(frame).value[2]
    size = len(frame)
    return {
        "frame_bytes": size,
        "senml_cbor_payload_bytes": len(payload),
        "frame_vs_senml_json": round(size / json_bytes, 3),
        "bytes_over_target": max(0, size - int(TARGET * json_bytes)),
        "breakdown": v2_breakdown(frame),
        "declaration_bytes": declaration["size"],
        "declaration_readings": len(declaration["readings"]),
        "fits": {link: {"limit": limit, "v2": size <= limit, "declaration": declaration["size"] <= limit}
                 for link, limit in {**LORAWAN_LIMITS, "ESP-NOW": ESP_NOW_LIMIT}.items()},
    }


def main() -> dict:
    case = next(c for c in json.loads(VECTORS.read_text())["frames"] if c["name"] == "telemetry-6")
    frame = bytes.fromhex(case["frame"])
    envelope = cbor2.loads(frame).value  # [protected, unprotected, payload, tag]
    payload = envelope[2]
    pack = cbor2.loads(payload)
    as_json = senml_json(pack)
    shortest_payload = len(cbor2.dumps(pack, canonical=True))
    v1_floor = len(frame) - len(payload) + shortest_payload
    result = {
        "frame": "telemetry-6 (six readings with units, HMAC 256/64)",
        "frame_bytes": len(frame),
        "senml_cbor_payload_bytes": len(payload),
        "envelope_overhead_bytes": len(frame) - len(payload),
        "senml_json_bytes": len(as_json),
        "frame_vs_senml_json": round(len(frame) / len(as_json), 3),
        "payload_vs_senml_json": round(len(payload) / len(as_json), 3),
        "shortest_cbor_payload_bytes": shortest_payload,
        "required_text_bytes": required_text(pack),
        "v1_floor_bytes": v1_floor,
        "v1_floor_vs_senml_json": round(v1_floor / len(as_json), 3),
        "esp_now_limit": ESP_NOW_LIMIT,
        "esp_now_headroom_bytes": ESP_NOW_LIMIT - len(frame),
        "lorawan_limits": LORAWAN_LIMITS,
        "v1_fits": {link: len(frame) <= limit for link, limit in LORAWAN_LIMITS.items()},
        "v2": v2_figures(len(as_json)),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"reference frame {len(frame)} B (SenML-CBOR payload {len(payload)} B + COSE {len(frame) - len(payload)} B); "
          f"SenML-JSON of the same readings {len(as_json)} B -> {result['frame_vs_senml_json']:.0%} of it; "
          f"ESP-NOW headroom {ESP_NOW_LIMIT - len(frame)} B; "
          f"v1 floor {v1_floor} B ({result['v1_floor_vs_senml_json']:.0%}), of which {result['required_text_bytes']} B "
          "of text v1 requires")
    v2 = result["v2"]
    b = v2["breakdown"]
    print(f"v2: {v2['frame_bytes']} B -> {v2['frame_vs_senml_json']:.1%} of the SenML-JSON "
          f"(envelope {b['envelope_bytes']}, names {b['names_bytes']}, values {b['values_bytes']}, "
          f"structure {b['structure_bytes']}); declaration {v2['declaration_bytes']} B once per boot")
    return result


if __name__ == "__main__":
    import sys
    import time

    started = time.time()
    main()
    sys.path.insert(0, str(REPO / "bench"))
    from runs import machine, new_run_id, stamp

    # Run alone: its own run record (`make bench` stamps it again with the run's).
    stamp(RESULTS.parent, "frame_size", {
        "id": new_run_id(), "command": ".venv/bin/python bench/frame_size.py", "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "seconds": round(time.time() - started, 1), "quick": False})
