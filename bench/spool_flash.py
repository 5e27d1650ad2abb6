"""Flash room and wear of the spool, measured in the simulated flash of a virtual esp32-devkitc.

    .venv/bin/python bench/spool_flash.py   (writes bench/results/spool_flash.json)

A virtual node with the esp32-devkitc board (every sensor, its sampling periods divided by
SPEEDUP so the measurement takes minutes, not days) runs the real firmware on a 2 MB littlefs
image, the size of that board's filesystem (0x200000 to the end of the 4 MB flash:
docs/flashing.md), against a real gateway. The image's block device
(host/fieldnode/simhal/simflash.py) counts programs and erases per block. Three phases:

1. link up: frames answered at once; the flash writes and erases per frame;
2. an outage: the link down while the sensors' readings move (a random walk, so the deltas the
   spool stores are not flattered by constant values); writes, erases and spool bytes per frame;
   then a power cut (kill -9) with the spool full of frames;
3. the link back: the node starts again and sends the spool; erases per frame sent.

Figures per frame do not depend on the speed-up; the computation applies them at the board's
real rate (sum of 60 / period_s over its sensors: ~32 frames a minute) in `compute`.
"""
from __future__ import annotations

import json
import os
import random
import re
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from littlefs import LittleFS  # noqa: E402

from fieldnode.node.boards import validate_board  # noqa: E402
from fieldnode.cli.main import main as cli_main  # noqa: E402
from fieldnode.flashing.appimage import BLOCK_SIZE, LOOKAHEAD_SIZE, READ_PROG_SIZE, build_image  # noqa: E402
from fieldnode.infra.paths import BOARDS_DIR, FIRMWARE_DIR  # noqa: E402
from fieldnode.sim.fleet import devices_for_board, sim_unique_id  # noqa: E402
from fieldnode.sim.vnode import VirtualNode  # noqa: E402
from support.nodesite import Site, console_counters, console_since, wait_for  # noqa: E402

RESULTS = REPO / "bench" / "results" / "spool_flash.json"
BOARD = "esp32-devkitc"
FS_BYTES = 0x200000  # the board's filesystem: 0x200000 to the end of its 4 MB flash (docs/flashing.md)
SPEEDUP = 10
ENDURANCE = 100_000  # erase cycles a block of the ESP32 modules' NOR flash is rated for
SEGMENT_BYTES = int(re.search(r"^SEGMENT_BYTES = const\((\d+)\)",
                              (FIRMWARE_DIR / "lib" / "fnode" / "spool.py").read_text(), re.M)[1])
SEGMENT_BLOCKS = 4
DIR_BLOCKS = 4  # littlefs metadata pairs of the spool directory (~100 entries), with room to compact
TARGET_HOURS = 24
TARGET_YEARS = 10


def wear(image: Path) -> dict:
    return json.loads(Path(f"{image}.wear").read_text())


def spool_usage(image: Path) -> tuple[int, int, int]:
    """(bytes in spool segment files, littlefs blocks in use, segment files) on a node that is off."""
    data = image.read_bytes()
    fs = LittleFS(block_size=BLOCK_SIZE, block_count=len(data) // BLOCK_SIZE, read_size=READ_PROG_SIZE,
                  prog_size=READ_PROG_SIZE, lookahead_size=LOOKAHEAD_SIZE, disk_version=0, mount=False)
    fs.context.buffer[:] = data
    fs.mount()
    names = fs.listdir("/spool") if "spool" in fs.listdir("/") else []
    size = sum(fs.stat("/spool/" + n).size for n in names)
    used = fs.used_block_count
    fs.unmount()
    return size, used, len(names)


def frames_per_minute(doc: dict) -> float:
    return sum(60 / s["period_s"] for s in doc["sensors"])


class Wander(threading.Thread):
    """Moves every emulated reading a little, often: values as a live plant gives them."""

    def __init__(self, node: VirtualNode) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.stop = threading.Event()
        self.rng = random.Random(21)
        self.state = {"env": {"temp": 21.0, "hum": 45.0, "press": 101325.0}, "pipe": {"temp": 55.0},
                      "loop1": {"ma": 11.0}}
        self.power_w = 1500.0  # the meter's input register 0, in the board's 0.1 W steps

    def run(self) -> None:
        steps = {"temp": 0.05, "hum": 0.2, "press": 5.0, "ma": 0.02}
        while not self.stop.wait(0.2):
            for dev in self.state.values():
                for k in dev:
                    dev[k] += self.rng.uniform(-steps[k], steps[k])
            self.power_w += self.rng.uniform(-3.0, 3.0)
            # A Modbus slave is set by register (sim_modbus.ModbusSlave.set), not by reading name.
            meter = {"input": {"0": round(self.power_w * 10)}}
            self.node.set_world(devices={**self.state, "meter": meter})


def start_node(site: Site, tmp: Path, spool_kb: int | None) -> tuple[VirtualNode, dict]:
    doc = json.loads((BOARDS_DIR / f"{BOARD}.json").read_text())
    real = frames_per_minute(doc)
    for sensor in doc["sensors"]:
        sensor["period_s"] = sensor["period_s"] / SPEEDUP
    if spool_kb:
        doc["spool_kb"] = spool_kb
    assert validate_board(doc) == [], validate_board(doc)
    board_file = tmp / "board.json"
    board_file.write_text(json.dumps(doc))
    node_dir = tmp / "node"
    node_dir.mkdir()
    flash = node_dir / "flash.img"
    files = {"/" + n: (FIRMWARE_DIR / n).read_bytes() for n in ("boot.py", "main.py")}
    files["/board.json"] = board_file.read_bytes()
    flash.write_bytes(build_image(files, FS_BYTES))
    node = VirtualNode(node_dir, sim_unique_id(21, 0x7E), board=board_file, devices=devices_for_board(doc),
                       nvs="commit", flash=flash)
    site.nodes.append(node)
    node.start()
    node.wait_output(b"not sending", timeout=60)
    mark = node.output_mark()
    host, port = site.gateway.address
    assert cli_main(["provision", "--port", node.port, "--keys", str(site.keys), "--name", "flash-1",
                     "--gateway", f"{host}:{port}", "--wifi", "plant-floor"]) == 0
    node.wait_output(b"FN1 ", timeout=60, since=mark)
    return node, {"real_frames_per_min": real, "doc": doc}


def measure(tmp: Path, frames_up: int = 300, frames_down: int = 600, spool_kb: int | None = None,
            patience_s: float = 900) -> dict:
    """The counts of the three phases. `fieldnode provision --wifi` reads the Wi-Fi password from
    $FIELDNODE_WIFI_PASSWORD: the caller sets it. patience_s bounds each long phase (a test sets
    it below its own timeout, so a stuck phase fails by name rather than by the timeout)."""
    site = Site(tmp)
    try:
        node, info = start_node(site, tmp, spool_kb)
        image = node.flash_image
        wait_for(lambda: len(site.frames(node)) >= 5, 60, "frames")
        # 1. link up
        w0, n0 = wear(image), len(site.frames(node))
        wait_for(lambda: len(site.frames(node)) >= n0 + frames_up, patience_s, f"{frames_up} frames with the link up")
        w1, n1 = wear(image), len(site.frames(node))
        blocks_before = wait_for(lambda: (lambda u: u and u[1])(usage_or_none(image)), 30, "the image read")
        up = {"frames": n1 - n0, "progs": w1["progs"] - w0["progs"], "prog_bytes": w1["prog_bytes"] - w0["prog_bytes"],
              "erases": w1["erases"] - w0["erases"]}
        # 2. an outage, readings moving; then a power cut
        wander = Wander(node)
        wander.start()
        mark = node.output_mark()
        node.set_world(wifi="down")
        at_cut = set(c for c, _, _ in site.frames(node))

        def made_in_outage() -> list[int]:
            # What the node printed since the mark, less what reached the gateway before the link
            # went down: the frames the spool holds. Waited for as counted, so a busy machine that
            # lets more frames through before the cut still measures frames_down of them.
            return [c for c in console_counters(node, mark) if c not in at_cut]

        wait_for(lambda: len(made_in_outage()) >= frames_down, patience_s, f"{frames_down} frames in the outage")
        wander.stop.set()
        wander.join()
        node.kill()
        w2 = wear(image)
        made = made_in_outage()
        size, blocks, segments = spool_usage(image)
        down = {"frames": len(made), "progs": w2["progs"] - w1["progs"],
                "prog_bytes": w2["prog_bytes"] - w1["prog_bytes"], "erases": w2["erases"] - w1["erases"],
                "spool_bytes": size, "spool_segments": segments,
                "fs_blocks_used": blocks, "fs_blocks_before": blocks_before}
        # 3. the link back: the spool drains
        node.set_world(wifi="up")
        node.power_on()
        try:
            site.wait_stored(node, made, patience_s)  # names the frames that never arrive
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {_health(node)}") from None
        wait_for(lambda: spool_usage_live(image) == 0, 60, "an empty spool")
        node.kill()
        w3 = wear(image)
        drain = {"frames": len(made), "progs": w3["progs"] - w2["progs"], "erases": w3["erases"] - w2["erases"]}
        stored = [c for c, _, _ in site.frames(node)]
        lost = [c for c in made if c not in stored]
        erased = w3["erased"]
        failures = [ln for ln in _console_lines(node) if "driver failed" in ln or ln.startswith("sim: world.json")]
        return {"board": BOARD, "speedup": SPEEDUP, "fs_bytes": FS_BYTES, "block_size": BLOCK_SIZE,
                "real_frames_per_min": info["real_frames_per_min"], "up": up, "down": down, "drain": drain,
                "lost_in_outage": len(lost), "in_order": stored == sorted(stored),
                "max_block_erases": max(erased), "blocks_erased": sum(1 for e in erased if e),
                "process_deaths": node.process_deaths, "sensor_failures": len(failures),
                "first_failure": failures[0] if failures else None}
    finally:
        site.close()


def _health(node: VirtualNode) -> str:
    """What a failed phase needs said: the node's boots, unexpected deaths, and what its console
    said about the spool, sensors and the simulation."""
    said = [ln for ln in _console_lines(node) if "spool" in ln or ln.startswith(("sim:", "E ", "Traceback", "OSError"))]
    return f"boots {node.boots}, process deaths {node.process_deaths}; console: {said[-12:]}"


def _console_lines(node: VirtualNode) -> list[str]:
    return console_since(node).decode(errors="replace").splitlines()


def usage_or_none(image: Path) -> tuple[int, int, int] | None:
    """spool_usage of a running node's image; None while it is mid-commit and does not mount."""
    try:
        return spool_usage(image)
    except Exception:  # littlefs-python on an image another process is writing
        return None


def spool_usage_live(image: Path) -> int:
    """Bytes in spool segment files; -1 while the image does not mount."""
    usage = usage_or_none(image)
    return -1 if usage is None else usage[0]


def compute(m: dict, budget_kb: int) -> dict:
    """The figures docs/firmware.md gives, from the measured counts."""
    rate_day = m["real_frames_per_min"] * 1440
    down, up, drain = m["down"], m["up"], m["drain"]
    # A full segment (SEGMENT_BYTES of records) takes exactly SEGMENT_BLOCKS blocks; the budget
    # holds whole segments, less the directory's metadata blocks and the segment being written.
    bytes_per_frame = down["spool_bytes"] / down["frames"]
    segments = (budget_kb * 1024 // m["block_size"] - DIR_BLOCKS) // SEGMENT_BLOCKS - 1
    frames_in_budget = segments * (SEGMENT_BYTES // bytes_per_frame)
    hours = frames_in_budget / m["real_frames_per_min"] / 60
    free_blocks = m["fs_bytes"] // m["block_size"] - 40  # the application and littlefs's own blocks
    erases_up = up["erases"] / up["frames"]
    erases_outage = (down["erases"] + drain["erases"]) / down["frames"]
    # Normal operation with the link up: what was measured, and a harsher case: 5% of frames
    # answered late (spooled and sent from flash) and a whole day's outage every month.
    def years(erases_per_day: float) -> float | None:
        per_block = erases_per_day / free_blocks
        return None if per_block == 0 else round(ENDURANCE / per_block / 365, 1)  # None: no erase at all
    harsh = rate_day * (erases_up + 0.05 * erases_outage) + rate_day * erases_outage / 30
    return {"frames_per_day": rate_day, "spool_bytes_per_frame": round(bytes_per_frame, 1),
            "budget_kb": budget_kb, "frames_in_budget": int(frames_in_budget), "outage_hours": round(hours, 1),
            "erases_per_frame_link_up": round(erases_up, 4), "erases_per_frame_outage": round(erases_outage, 3),
            "free_blocks": free_blocks, "years_link_up": years(rate_day * erases_up),
            "years_harsh": years(harsh), "harsh_erases_per_day": round(harsh)}


def main() -> dict:
    os.environ.setdefault("FIELDNODE_WIFI_PASSWORD", "sim")
    with tempfile.TemporaryDirectory() as tmp:
        m = measure(Path(tmp))
    budget = json.loads((BOARDS_DIR / f"{BOARD}.json").read_text()).get("spool_kb", 1792)
    result = {"measured": m, "figures": compute(m, budget)}
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
