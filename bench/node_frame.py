"""Node-side frame cost: build + MAC of the reference frame (vector telemetry-6) on the MicroPython
unix port.

Variants:
  ours        firmware/lib/fnode (FrameBuilder) as .py source
  ours-mpy    the same modules compiled with mpy-cross, only the .mpy on the path
  baseline    bench/peers/baseline_frame.py: dicts + a general CBOR encoder + a fresh HMAC object
              per frame (the micropython-lib way)
  ours-v2     the same readings in frame format v2 (vector telemetry-6 of frame-v2.json): the
              builder after declare(), short names, shortest exact values
  ours-caller FrameBuilder called from a function whose call frame MicroPython puts on the heap
              (more than 11 locals + stack slots), as app code easily is: shows what such a caller
              costs on a large heap (see firmware/lib/fnode/frame.py)

Figures: us/frame with the GC running (median of rounds) on a 256 KB heap (an ESP32 without
PSRAM has ~110 KB) and a 4 MB heap (PSRAM boards); heap bytes allocated per frame (gc disabled,
gc.mem_alloc delta over 200 frames); gc.mem_free drift after 10k frames (0 = no heap growth).
Absolute times are the host CPU's, not an ESP32's: compare the rows, not the numbers with a board.

Run: .venv/bin/python bench/node_frame.py   (writes bench/results/node_frame.json)
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LIB = REPO / "firmware" / "lib"
PEERS = REPO / "bench" / "peers"
VECTORS = REPO / "tests" / "vectors" / "frame-v1.json"
VECTORS_V2 = REPO / "tests" / "vectors" / "frame-v2.json"
RESULTS = REPO / "bench" / "results" / "node_frame.json"
# what FrameBuilder imports: compiled for the ours-mpy variant
FNODE_MODULES = ("__init__", "cbor", "cose", "frame", "hmac256", "senml")
HEAPS = ("256K", "4M")

WORKLOAD = r"""
import gc, json, sys, time
from binascii import hexlify, unhexlify

variant = sys.argv[1]
with open(sys.argv[2]) as f:
    ref = json.load(f)
KEY = unhexlify(ref["key"])
KID = unhexlify(ref["kid"])
NAMES = tuple(r["n"] for r in ref["records"])
UNITS = tuple(r.get("u") for r in ref["records"])
VALUES = tuple(r["v"] for r in ref["records"])
READINGS = tuple((r["n"], r.get("u"), r["v"]) for r in ref["records"])
KIND, BT, ALG, BN = ref["kind"], ref["bt"], ref["alg"], ref["bn"]

if variant == "baseline":
    from baseline_frame import build_frame

    def build(counter):
        return build_frame(KEY, KID, ALG, counter, KIND, BN, BT, READINGS)
else:
    from fnode.frame import FrameBuilder
    fb = FrameBuilder(KEY, KID, ALG, BN)
    if variant == "ours-v2":
        fb.declare(unhexlify(ref["v2"]["did"]), dict(zip(NAMES, ref["v2"]["shorts"])))
        ref["counter"] = ref["v2"]["counter"]

    def build(counter):
        fb.begin(KIND, counter, BT)
        for i in range(6):
            fb.add(NAMES[i], UNITS[i], VALUES[i])
        return fb.finish()

    if variant == "ours-caller":
        plain = build

        def build(counter):
            # twelve locals: this call frame goes on the heap, and is live during finish()
            a = b = c = d = e = f = g = h = k = m = 0
            return plain(counter)

first = bytes(build(ref["counter"]))


def timed(n):
    t0 = time.ticks_us()
    for c in range(1, n + 1):
        build(c)
    return time.ticks_diff(time.ticks_us(), t0) / n


def heap_per_frame(n):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for c in range(1, n + 1):
        build(c)
    used = gc.mem_alloc() - before
    gc.enable()
    return used / n


def drift(n):
    gc.collect()
    before = gc.mem_free()
    for c in range(1, n + 1):
        build(c)
    gc.collect()
    return before - gc.mem_free()


timed(500)
out = {"frame": hexlify(first).decode(), "us_per_frame_rounds": [timed(2000) for _ in range(7)]}
if sys.argv[3] == "all":  # on a heap that holds 200 frames of the baseline's garbage (~2.8 MB)
    out["heap_bytes_per_frame"] = heap_per_frame(200)
    out["mem_free_drift_10k"] = drift(10000)
print(json.dumps(out))
"""

VERIFY = r"""
import json, sys
from binascii import unhexlify
from fnode.command import verify
from fnode.hmac256 import HMAC256
from fnode import senml
with open(sys.argv[1]) as f:
    ref = json.load(f)
with open(sys.argv[2]) as f:
    frame = unhexlify(f.read())
kind, counter, payload = verify(frame, HMAC256(unhexlify(ref["key"])),
                                unhexlify(ref["kid"]), ref["alg"])
bn, bt, records = senml.parse(payload)
print(json.dumps([kind, counter, bn, bt, [[n, u, v] for n, u, v, e in records]]))
"""


def micropython() -> str:
    found = BIN / "micropython"
    return str(found) if found.exists() else shutil.which("micropython") or "micropython"


def run_mp(script: Path, args: list[str], path: list[Path], heap: str) -> dict | list:
    env = {**os.environ, "MICROPYPATH": ":".join(str(p) for p in path)}
    proc = subprocess.run([micropython(), "-X", f"heapsize={heap}", str(script), *args],
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"micropython failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compile_mpy(dest: Path) -> None:
    mpy_cross = BIN / "mpy-cross"
    (dest / "fnode").mkdir(parents=True)
    for name in FNODE_MODULES:
        subprocess.run([str(mpy_cross if mpy_cross.exists() else "mpy-cross"),
                        "-o", str(dest / "fnode" / f"{name}.mpy"), "-s", f"fnode/{name}.py",
                        str(LIB / "fnode" / f"{name}.py")], check=True)


def v2_reference() -> dict:
    """What the v2 variant needs of frame-v2.json: declaration id, short names, counter, frame."""
    doc = json.loads(VECTORS_V2.read_text())
    case = next(c for c in doc["frames"] if c["name"] == "telemetry-6")
    return {"did": case["declaration_id"], "shorts": [r["n"] for r in case["records"]],
            "counter": case["counter"], "frame": case["frame"]}


def v2_verifies(frame: bytes) -> bool:
    """The host's verifier takes the v2 frame and expands it to the reference readings."""
    sys.path.insert(0, str(REPO / "host"))
    from fieldnode.wire.frame import KIND_NAMES, Verifier

    doc = json.loads(VECTORS_V2.read_text())
    decl = next(d for d in doc["declarations"] if d["name"] == "declaration-6")
    verifier = Verifier({bytes.fromhex(decl["kid"]): (bytes.fromhex(decl["key"]), decl["alg"])}.get,
                        accept_kinds=KIND_NAMES)
    verifier.verify(bytes.fromhex(decl["frame"]))
    out = verifier.verify(frame)
    return not out.undeclared and [r["n"] for r in out.records()] == [r[1] for r in decl["readings"]]


def main() -> None:
    vectors = json.loads(VECTORS.read_text())
    ref = next(f for f in vectors["frames"] if f["name"] == "telemetry-6")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        # (a long argv crashes the unix port: the inputs go in a file)
        ref_json = str(tmp / "reference.json")
        v2 = v2_reference()
        Path(ref_json).write_text(json.dumps({**{k: ref[k] for k in ("key", "kid", "alg", "kind", "counter", "bn", "bt",
                                                                       "records")}, "v2": v2}))
        workload = tmp / "node_frame_workload.py"
        workload.write_text(WORKLOAD)
        verify_script = tmp / "node_frame_verify.py"
        verify_script.write_text(VERIFY)
        compile_mpy(tmp / "mpy")
        paths = {
            "ours": [LIB],
            "ours-mpy": [tmp / "mpy"],
            "baseline": [PEERS],
            "ours-caller": [LIB],
            "ours-v2": [LIB],
        }
        results: dict[str, dict] = {}
        for variant, path in paths.items():
            row: dict = {}
            for heap in HEAPS:
                out = run_mp(workload, [variant, ref_json, "all" if heap == "4M" else "time"], path, heap)
                row[f"us_per_frame_rounds_heap_{heap}"] = [round(us, 2) for us in out["us_per_frame_rounds"]]
                if "heap_bytes_per_frame" in out:
                    row["heap_bytes_per_frame"] = out["heap_bytes_per_frame"]
                    row["mem_free_drift_10k"] = out["mem_free_drift_10k"]
                frame = out["frame"]
            row["frame_bytes"] = len(frame) // 2
            if variant == "ours-v2":  # the host verifies v2 (the node never receives one)
                row["frame_equals_vector"] = frame == v2["frame"]
                row["verifies"] = v2_verifies(bytes.fromhex(frame))
                results[variant] = row
                continue
            row["frame_equals_vector"] = frame == ref["frame"]
            # every variant's frame must be a valid v1 frame with the reference readings
            frame_file = tmp / f"{variant}.hex"
            frame_file.write_text(frame)
            kind, counter, bn, bt, records = run_mp(verify_script, [ref_json, str(frame_file)], [LIB], "256K")
            row["verifies"] = (kind, counter, bn, bt) == (ref["kind"], ref["counter"], ref["bn"], ref["bt"]) \
                and [r[0] for r in records] == [r["n"] for r in ref["records"]]
            results[variant] = row
        for variant in ("ours", "ours-mpy", "ours-v2"):
            if not results[variant]["frame_equals_vector"]:
                raise SystemExit(f"{variant}: the frame differs from vector telemetry-6")
        if not all(r["verifies"] for r in results.values()):
            raise SystemExit(f"a variant's frame does not verify: {results}")
        version = subprocess.run([micropython(), "-c", "import sys; print(sys.version)"],
                                 capture_output=True, text=True).stdout.strip()

    print(f"build + MAC of the reference frame ({results['ours']['frame_bytes']} bytes, telemetry-6), "
          f"MicroPython {version} unix port")
    print("us/frame: median of 7 rounds (a shared host is noisy: compare rows, not runs)")
    print(f"{'variant':<12} {'us/frame 256K heap':>19} {'us/frame 4M heap':>17} {'heap B/frame':>13} "
          f"{'drift 10k':>10} {'frame B':>8}")
    for variant, r in results.items():
        t256 = f"{statistics.median(r['us_per_frame_rounds_heap_256K']):.1f}"
        t4m = f"{statistics.median(r['us_per_frame_rounds_heap_4M']):.1f}"
        print(f"{variant:<12} {t256:>19} {t4m:>17} {r['heap_bytes_per_frame']:>13.0f} "
              f"{r['mem_free_drift_10k']:>10} {r['frame_bytes']:>8}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "node_frame",
        "what": "build + HMAC of the reference frame (vector telemetry-6) per frame, MicroPython unix port",
        "micropython": version,
        "heaps": list(HEAPS),
        "notes": {
            "us_per_frame": "7 rounds of 2000 frames, GC running, the median shown; host CPU, not an ESP32",
            "heap_bytes_per_frame": "gc.mem_alloc delta over 200 frames with gc disabled (64-bit port: "
                                    "32-byte GC blocks)",
            "mem_free_drift_10k": "gc.mem_free after collect, before minus after 10k frames",
            "ours-caller": "FrameBuilder called from a function with a heap-allocated call frame",
        },
        "results": results,
    }, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    import time

    started = time.time()
    main()
    sys.path.insert(0, str(REPO / "bench"))
    from runs import machine, new_run_id, stamp

    # Run alone: its own run record (`make bench` stamps it again with the run's).
    stamp(RESULTS.parent, "node_frame", {
        "id": new_run_id(), "command": ".venv/bin/python bench/node_frame.py", "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "seconds": round(time.time() - started, 1), "quick": False})
