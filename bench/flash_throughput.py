"""Flash throughput: `fieldnode flash` at 921600 baud into the emulated ESP32 ROM loader, paced
like a real UART (10 bits a byte), compressed (esptool's default with the stub) and uncompressed.

Figures per mode:
  flash_bytes_per_s    bytes programmed into flash per second of the write phase (first flash
                       write command to the last byte programmed, both images)
  line_fraction        flash_bytes_per_s / (921600 / 10): above 1 means compression beat the line
  wire_bytes_per_s     bytes that crossed the line during the write phase, per second
  wire_fraction        wire_bytes_per_s / line rate: the protocol's use of the line (SLIP
                       framing, headers, waiting for each block's reply)
  run_seconds          the whole `fieldnode flash` run (connect, stub, baud change, write, verify)
An unpaced compressed run shows the CPU ceiling (esptool + emulator on this host, no line limit).

The firmware stands in for MicroPython: the real layout (bootloader, partition table, app at
0x10000) around 1.5 MiB of machine code taken from the MicroPython unix port's binary (x86: it
compresses better than Xtensa code, so the compressed row is on the optimistic side; the
uncompressed row does not depend on it). The application is the repo's firmware/ with the
esp32-devkitc board, as `fieldnode flash` builds it.

Run: .venv/bin/python bench/flash_throughput.py   (writes bench/results/flash.json)
"""
from __future__ import annotations

import contextlib
import io
import json
import time
import zlib
from pathlib import Path
import tempfile

import micropython_run

from fieldnode.cli.main import main
from fieldnode.node.chips import CHIPS
from fieldnode.flashing.compile import build_app_files
from fieldnode.flashing.partitions import filesystem_region, generic_table
from fieldnode.flashing.appimage import build_image
from fieldnode.node.boards import load_board
from fieldnode.infra.paths import FIRMWARE_DIR
from fieldnode.sim.esp_rom import MIB, EspRomEmulator
from fieldnode.testing.fake_firmware import fake_firmware

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "flash.json"
BAUD = 921600
LINE_RATE = BAUD / 10  # bytes/s on an 8N1 UART
BOARD = "esp32-devkitc"
CODE_WINDOW = (0x100000, 1536 * 1024)  # where in the unix port's binary the stand-in code comes from


def app_figures() -> dict:
    chip = CHIPS["esp32"]
    board = load_board(BOARD)
    app = build_app_files(FIRMWARE_DIR, board, chip.mpy_march)
    sources = [p for p in [FIRMWARE_DIR / "boot.py", FIRMWARE_DIR / "main.py",
                           *sorted((FIRMWARE_DIR / "lib").rglob("*.py"))]
               if p.is_file() and "__pycache__" not in p.parts]
    region = filesystem_region(generic_table(chip), 4 * MIB)
    image = build_image(app.files, region.size)
    return {
        "files": len(app.files),
        "source_py_bytes": sum(p.stat().st_size for p in sources),
        "shipped_bytes": app.total_bytes,
        "mpy_bytes": sum(len(d) for p, d in app.files.items() if p.endswith(".mpy")),
        "image_bytes": len(image),
        "image_offset": hex(region.offset),
        "image_compressed_bytes": len(zlib.compress(image, 9)),
    }


def one_run(firmware: Path, *, compress: bool, paced: bool) -> dict:
    with EspRomEmulator("esp32", line_rate=paced) as rom:
        args = ["flash", "--port", rom.port, "--firmware", str(firmware), "--board", BOARD,
                "--baud", str(BAUD), "--before", "no-reset", "--after", "no-reset"]
        if not compress:
            args.append("--no-compress")
        started = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()) as out:
            status = main(args)
        run_seconds = time.monotonic() - started
        if status != 0:
            raise SystemExit(f"flash failed:\n{out.getvalue()}")
        s = rom.stats
        seconds = s.write_ended - s.write_started
        wire = s.bytes_in_at_write_end - s.bytes_in_at_write_start
        return {
            "flash_bytes": s.flash_programmed,
            "wire_bytes": wire,
            "write_seconds": round(seconds, 3),
            "flash_bytes_per_s": round(s.flash_programmed / seconds),
            "line_fraction": round(s.flash_programmed / seconds / LINE_RATE, 3),
            "wire_bytes_per_s": round(wire / seconds),
            "wire_fraction": round(wire / seconds / LINE_RATE, 3),
            "run_seconds": round(run_seconds, 2),
        }


def main_bench() -> dict:
    start, size = CODE_WINDOW
    with open(micropython_run.__file__, "rb") as f:
        f.seek(start)
        code = f.read(size)
    with tempfile.TemporaryDirectory() as tmp:
        firmware = Path(tmp) / "ESP32_GENERIC-standin.bin"
        firmware.write_bytes(fake_firmware("esp32", payload=code))
        runs = {
            "compressed": one_run(firmware, compress=True, paced=True),
            "uncompressed": one_run(firmware, compress=False, paced=True),
            "compressed_unpaced": one_run(firmware, compress=True, paced=False),
        }
        fw_bytes = firmware.stat().st_size
        fw_ratio = len(zlib.compress(firmware.read_bytes(), 9)) / fw_bytes
    return {
        "benchmark": "flash_throughput",
        "what": "fieldnode flash (MicroPython + app littlefs in one esptool write) into the "
                "emulated ESP32 ROM loader over a pty",
        "baud": BAUD,
        "line_rate_bytes_per_s": LINE_RATE,
        "firmware": {"bytes": fw_bytes, "zlib9_ratio": round(fw_ratio, 3),
                     "content": "MicroPython image layout around x86 code from the unix port"},
        "app": app_figures(),
        "runs": runs,
        "notes": {
            "paced": "the emulator delivers and sends bytes at 10 bits/byte at the baud esptool "
                     "set (115200 for the handshake and stub upload, then 921600)",
            "compressed_unpaced": "no line limit: what esptool and the emulator manage on this "
                                  "host's CPU (shared 2 cores)",
        },
    }


if __name__ == "__main__":
    results = main_bench()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    app = results["app"]
    print(f"app: {app['files']} files, {app['source_py_bytes']} bytes of .py -> {app['shipped_bytes']} "
          f"bytes shipped ({app['mpy_bytes']} .mpy); littlefs image {app['image_bytes']} bytes at "
          f"{app['image_offset']}, {app['image_compressed_bytes']} bytes compressed")
    print(f"firmware: {results['firmware']['bytes']} bytes (zlib ratio {results['firmware']['zlib9_ratio']})")
    print(f"line rate at {BAUD} baud: {LINE_RATE:.0f} bytes/s")
    for name, r in results["runs"].items():
        print(f"{name:20} {r['flash_bytes_per_s']:>9} flash B/s ({r['line_fraction']:.2f} of line)  "
              f"{r['wire_bytes_per_s']:>9} wire B/s ({r['wire_fraction']:.2f} of line)  "
              f"write {r['write_seconds']:.1f} s, run {r['run_seconds']:.1f} s")
    print(f"wrote {RESULTS.relative_to(REPO)}")
