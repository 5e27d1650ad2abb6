"""Gateway verify + decode of frame format v2 against v1, and against pycose, in one run.

    .venv/bin/python bench/verify_v2.py   (writes bench/results/verify_v2.json)

The reference frame of each version (vector telemetry-6 of tests/vectors/frame-v1.json and of
frame-v2.json: the same six readings), 200 copies a round, in interleaved rounds so that every
contender sees the same machine load:

  ours v1      fieldnode.wire.frame.Verifier.verify (MAC, header, SenML shape, device)
  ours v2      the same Verifier on the v2 frame, its declaration known: MAC, header, the v2 rules,
               and the expansion to the full SenML pack a v1 frame carries (base name, names, units)
  pycose v1/v2 CoseMessage.decode + verify_tag + cbor2.loads of the payload (pycose knows nothing
               of declarations: it does no expansion, which flatters it in the v2 comparison)

Figures: frames/s of each, median of the rounds; ours v2 ÷ ours v1 and ours v2 ÷ pycose v2 taken
round by round, the median shown.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import cbor2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "host"))
sys.path.insert(0, str(REPO / "bench"))

from fieldnode.wire.frame import KIND_NAMES, Verifier  # noqa: E402
from gateway_throughput import interleaved_rounds  # noqa: E402

RESULTS = REPO / "bench" / "results" / "verify_v2.json"
ROUNDS = 7
SECONDS = 14.0
COPIES = 200


def reference(version: int) -> dict:
    doc = json.loads((REPO / "tests" / "vectors" / f"frame-v{version}.json").read_text())
    return next(c for c in doc["frames"] if c["name"] == "telemetry-6"), doc


def contenders() -> dict:
    from pycose.keys import SymmetricKey
    from pycose.messages import CoseMessage

    v1, _ = reference(1)
    v2, doc2 = reference(2)
    decl = next(d for d in doc2["declarations"] if d["name"] == v2["declaration"])
    table = {bytes.fromhex(c["kid"]): (bytes.fromhex(c["key"]), c["alg"]) for c in (v1, v2)}
    verifier = Verifier(table.get, None, accept_kinds=KIND_NAMES)
    verifier.verify(bytes.fromhex(decl["frame"]))  # the gateway holds the declaration
    frames = {1: [bytes.fromhex(v1["frame"])] * COPIES, 2: [bytes.fromhex(v2["frame"])] * COPIES}
    expanded = verifier.verify(frames[2][0])
    if expanded.undeclared or [r["n"] for r in expanded.records()] != [r["n"] for r in v1["records"]]:
        raise SystemExit("the v2 reference frame does not expand to v1's readings")
    key = SymmetricKey(k=bytes.fromhex(v1["key"]))

    def ours(version: int):
        def run() -> None:
            for f in frames[version]:
                verifier.verify(f)
        return run

    def pycose(version: int):
        def run() -> None:
            for f in frames[version]:
                msg = CoseMessage.decode(f)
                msg.key = key
                if not msg.verify_tag():
                    raise AssertionError("pycose rejected a vector")
                cbor2.loads(msg.payload)
        return run

    return {"ours v1": ours(1), "ours v2": ours(2), "pycose v1": pycose(1), "pycose v2": pycose(2)}


def main() -> dict:
    rates = interleaved_rounds(contenders(), COPIES, ROUNDS, SECONDS)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratios = {
        "ours_v2_vs_ours_v1": statistics.median(a / b for a, b in zip(rates["ours v2"], rates["ours v1"], strict=True)),
        "ours_v2_vs_pycose_v2": statistics.median(
            a / b for a, b in zip(rates["ours v2"], rates["pycose v2"], strict=True)),
        "ours_v1_vs_pycose_v1": statistics.median(
            a / b for a, b in zip(rates["ours v1"], rates["pycose v1"], strict=True)),
    }
    result = {
        "benchmark": "verify_v2",
        "what": "verify + decode (+ expand, for ours v2) of the reference frame, v1 and v2, one core",
        "frames_per_round": COPIES,
        "rounds_per_s": {k: [round(r) for r in v] for k, v in rates.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(", ".join(f"{k} {v:,.0f}/s" for k, v in med.items()) + " (medians); "
          + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    return result


if __name__ == "__main__":
    started = time.time()
    main()
    from runs import machine, new_run_id, stamp

    # Run alone: its own run record (`make bench` stamps it again with the run's).
    stamp(RESULTS.parent, "verify_v2", {
        "id": new_run_id(), "command": ".venv/bin/python bench/verify_v2.py", "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "seconds": round(time.time() - started, 1), "quick": False})
