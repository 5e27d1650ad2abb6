"""How many frames the store-and-forward spool holds, frame format v2 against v1.

    .venv/bin/python bench/spool_v2.py   (writes bench/results/spool_v2.json)

The firmware's own code on the MicroPython unix port: FrameBuilder makes a stream of frames of the
reference readings (vector telemetry-6: six readings, HMAC 256/64) whose values take a random walk
(the same walk for both versions, so the spool's deltas are not flattered by constant values), in
v1 and in v2; fnode.spool.encode stores each as the spool does, a delta against the last frame of
the same length in its segment (raw when there is none, or when the delta is not smaller), plus
the record head. Figures: flash bytes per frame, frames per 16 KB segment, and frames in the
spool budget of esp32-devkitc (bench/results/spool_flash.json: its measured budget).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "spool_v2.json"
FRAMES = 2000

WORKLOAD = r"""
import json, random
from fnode.frame import FrameBuilder
from fnode.spool import encode, SEGMENT_BYTES

KEY = bytes(range(1, 33))
KID = b"\x24\x0a\xc4\x12\x34\x56\x00\x01"
NAMES = ("temp", "hum", "press", "loop1", "vib_rms", "pulses")
UNITS = ("Cel", "%RH", "Pa", "A", "m/s2", "count")
RECORD_HEAD = 4  # u16 length, u16 CRC (fnode/spool.py)

def walk(n):
    random.seed(17)
    v = [23.45, 41.2, 101325.0, 0.01234, 0.734, 1234]
    steps = (0.05, 0.2, 3.0, 0.0002, 0.01)
    out = []
    for i in range(n):
        for k in range(5):
            v[k] += (random.random() - 0.5) * 2 * steps[k]
        v[5] += random.getrandbits(3)
        out.append(tuple(v))
    return out

def spool_bytes(version, values):
    fb = FrameBuilder(KEY, KID, 4)
    if version == 2:
        fb.declare(b"\xf2\xe6\x75\x38", {NAMES[i]: "abcdef"[i] for i in range(6)})
    last = {}  # length -> the last frame of that length in the segment
    out = bytearray(600)
    used = 0  # bytes in the current segment
    total = 0
    sizes = 0
    segments = 1
    for c in range(len(values)):
        fb.begin(0, c + 1, 1764057600 + 5 * c)
        for i in range(6):
            fb.add(NAMES[i], UNITS[i], values[c][i])
        frame = bytes(fb.finish())
        sizes += len(frame)
        n = encode(last.get(len(frame)), frame, out) & 0x7FFF
        if used + RECORD_HEAD + n > SEGMENT_BYTES:  # a new segment: no reference frames in it yet
            segments += 1
            used = 0
            last = {}
            n = encode(None, frame, out) & 0x7FFF
        last[len(frame)] = frame
        used += RECORD_HEAD + n
        total += RECORD_HEAD + n
    return {"frames": len(values), "frame_bytes_mean": sizes / len(values),
            "flash_bytes_per_frame": total / len(values), "segments": segments, "segment_bytes": SEGMENT_BYTES}

values = walk(N)
print(json.dumps({"v1": spool_bytes(1, values), "v2": spool_bytes(2, values)}))
"""


def micropython() -> str:
    found = Path(sys.executable).parent / "micropython"
    return str(found) if found.exists() else shutil.which("micropython") or "micropython"


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "spool_v2_workload.py"
        script.write_text(f"N = {FRAMES}\n" + WORKLOAD)
        env = {**os.environ, "MICROPYPATH": str(REPO / "firmware" / "lib")}
        proc = subprocess.run([micropython(), "-X", "heapsize=4M", str(script)], capture_output=True, text=True,
                              env=env, timeout=600, cwd=tmp)
        if proc.returncode != 0:
            raise SystemExit(f"micropython failed:\n{proc.stdout}\n{proc.stderr}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    budget_kb = json.loads((REPO / "bench" / "results" / "spool_flash.json").read_text())["figures"]["budget_kb"]
    for row in out.values():
        row["frames_per_segment"] = int(row["segment_bytes"] // row["flash_bytes_per_frame"])
        row["frames_in_budget"] = int(budget_kb * 1024 // row["segment_bytes"]) * row["frames_per_segment"]
    result = {"benchmark": "spool_v2", "budget_kb": budget_kb, "board": "esp32-devkitc", **out,
              "v2_vs_v1_frames": round(out["v2"]["frames_in_budget"] / out["v1"]["frames_in_budget"], 2)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    for v in ("v1", "v2"):
        r = out[v]
        print(f"{v}: frames {r['frame_bytes_mean']:.1f} B, in flash {r['flash_bytes_per_frame']:.1f} B a frame, "
              f"{r['frames_per_segment']} a segment, {r['frames_in_budget']:,} in {budget_kb} KB")
    print(f"v2 holds {result['v2_vs_v1_frames']}x the frames of v1")
    return result


if __name__ == "__main__":
    started = time.time()
    main()
    sys.path.insert(0, str(REPO / "bench"))
    from runs import machine, new_run_id, stamp

    # Run alone: its own run record (`make bench` stamps it again with the run's).
    stamp(RESULTS.parent, "spool_v2", {
        "id": new_run_id(), "command": ".venv/bin/python bench/spool_v2.py", "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "seconds": round(time.time() - started, 1), "quick": False})
