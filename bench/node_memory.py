"""The application's heap footprint per board, and its budget on an ESP32-WROOM.

    .venv/bin/python bench/node_memory.py   (writes bench/results/node_memory.json)

Each board file in boards/ runs as it ships (the library as .mpy) on the MicroPython unix port with
the simulated HAL, whose share is measured apart (fieldnode.sim.footprint, method in
docs/firmware.md "Memory"). Recorded per board: the application's heap in bytes and 64-bit GC
blocks, code and running state, the ESP32 (32-bit) estimate and the budget against the
ESP32-WROOM's heap (at rest, and during an update, a firmware update and a command, each path
measured while imported); per module for the richest board; the cost of one more sensor and of a task.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fieldnode.sim.footprint import (ESP32_FREE_AT_START, ESP32_HEAP, FW_SECTOR, TARGET_FREE, UPDATE_DATAGRAM, budget,
                                     measure_board)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "node_memory.json"
BOARDS = REPO / "boards"


def one_more_sensor(doc: dict, work: Path) -> dict:
    """The board with a copy of its first analog sensor on another pin: what a sensor costs once
    its driver is loaded (its state, its sampler task, its names)."""
    extra = json.loads(json.dumps(doc))
    source = next(s for s in doc["sensors"] if "pin" in s)
    adc = {"esp32": 32, "esp32s3": 5, "esp32c3": 2}[doc["chip"]]
    extra["sensors"].append(dict(source, name=source["name"] + "b", pin=adc))
    path = work / "plus-one.json"
    path.write_text(json.dumps(extra))
    return measure_board(path, work / "plus-one")


def main() -> dict:
    boards = {}
    with tempfile.TemporaryDirectory(prefix="fieldnode-bench-mem-") as tmp:
        work = Path(tmp)
        for path in sorted(BOARDS.glob("*.json")):
            r = measure_board(path, work / path.stem)
            r["budget"] = budget(r)
            boards[r["board"]] = r
            print(f"{r['board']}: application {r['app']:,} B ({r['app_blocks']:,} blocks of {r['block']} B) on the "
                  f"64-bit port, HAL {r['hal']:,} B apart; ESP32 estimate {r['budget']['app']:,} B, "
                  f"{r['budget']['free_share']:.0%} of the heap left free", flush=True)
        richest = max(boards, key=lambda b: boards[b]["budget"]["app"])
        doc = json.loads((BOARDS / f"{richest}.json").read_text())
        plus = one_more_sensor(doc, work)
    base = boards[richest]
    result = {
        "what": "heap after gc.collect(), the application apart from the simulated HAL, MicroPython unix port "
                "(64-bit, 32-byte GC blocks), the library as .mpy; ESP32 bytes estimated",
        "esp32_heap": ESP32_HEAP, "esp32_free_at_start": ESP32_FREE_AT_START, "target_free": TARGET_FREE,
        "update_buffers": {"datagram": UPDATE_DATAGRAM, "fw_sector": FW_SECTOR}, "richest": richest, "boards": boards,
        "one_more_sensor": {"bytes": plus["app"] - base["app"], "esp32": budget(plus)["app"] - base["budget"]["app"]},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
