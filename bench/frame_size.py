"""Frame size: the reference telemetry frame against SenML-JSON of the same readings.

    .venv/bin/python bench/frame_size.py   (writes bench/results/frame_size.json)

The reference frame is vector `telemetry-6` of tests/vectors/frame-v1.json, as the firmware builds
it (six readings with units, HMAC 256/64). Its SenML payload is decoded with cbor2 and written
again as SenML-JSON (RFC 8428 section 5: the same pack, text labels, compact separators), with
each float32 value written as the node knows it (7 significant digits: `23.45`, not the float64
expansion `23.450000762939453`): what a node would send with the usual JSON encoding and no
authentication at all. Targets: the
signed frame <= 40% of the unsigned SenML-JSON, and well under ESP-NOW's 250-byte payload.

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
RESULTS = REPO / "bench" / "results" / "frame_size.json"
ESP_NOW_LIMIT = 250
JSON_LABELS = {-2: "bn", -3: "bt", -4: "bu", -5: "bv", 0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 6: "t"}


def required_text(pack: list[dict]) -> int:
    """UTF-8 bytes of the strings v1 makes every telemetry frame carry: base name, names, units."""
    labels = (-2, 0, 1)  # bn, n, u
    return sum(len(rec[k].encode()) for rec in pack for k in labels if k in rec)


def senml_json(pack: list[dict]) -> bytes:
    """SenML-JSON of a SenML-CBOR pack; labels this table does not know (ours) are kept by name."""
    out = [{JSON_LABELS.get(k, str(k)): present(v) for k, v in rec.items()} for rec in pack]
    return json.dumps(out, separators=(",", ":")).encode()


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
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"reference frame {len(frame)} B (SenML-CBOR payload {len(payload)} B + COSE {len(frame) - len(payload)} B); "
          f"SenML-JSON of the same readings {len(as_json)} B -> {result['frame_vs_senml_json']:.0%} of it; "
          f"ESP-NOW headroom {ESP_NOW_LIMIT - len(frame)} B; "
          f"v1 floor {v1_floor} B ({result['v1_floor_vs_senml_json']:.0%}), of which {result['required_text_bytes']} B "
          "of text v1 requires")
    return result


if __name__ == "__main__":
    main()
