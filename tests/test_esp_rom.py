"""The emulated ROM loader against the real esptool (its Python entry point, on the pty)."""
from __future__ import annotations

import os
from pathlib import Path

import esptool
import pytest
from esptool.util import FatalError

from fieldnode.sim.esp_rom import MIB

NO_RESET = ["--before", "no-reset", "--after", "no-reset"]


def run_esptool(port: str, *args: str) -> str:
    """esptool's CLI in-process; returns what it printed."""
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        esptool.main(["--port", port, *NO_RESET, *args])
    return out.getvalue()


@pytest.mark.parametrize("chip, name", [("esp32", "ESP32"), ("esp32s3", "ESP32-S3"), ("esp32c3", "ESP32-C3")])
def test_chip_detection_and_mac(roms, chip, name):
    rom = roms(chip, mac=bytes.fromhex("a4cf12345678"))
    out = run_esptool(rom.port, "read-mac")
    assert f"Detecting chip type... {name}" in out
    assert "a4:cf:12:34:56:78" in out
    assert rom.stats.stub_starts == 1  # esptool uploaded its stub and the emulator switched to it


def test_flash_id_reports_configured_size(roms):
    rom = roms("esp32", flash_size=8 * MIB)
    out = run_esptool(rom.port, "flash-id")
    assert "Detected flash size: 8MB" in out


@pytest.mark.parametrize("extra", [["--no-stub"], ["--no-stub", "-z"], []],
                         ids=["rom-plain", "rom-deflate", "stub-deflate"])
def test_write_then_read_back(roms, tmp_path: Path, extra):
    rom = roms("esp32")
    data = (os.urandom(512) * 40)[:20000] + os.urandom(3000)
    src = tmp_path / "data.bin"
    src.write_bytes(data)
    run_esptool(rom.port, *extra[:1], "write-flash", *extra[1:], "0x20000", str(src))
    assert rom.flash_bytes(0x20000, len(data)) == data
    assert rom.flash_bytes(0x20000 + len(data), 16) == b"\xff" * 16
    back = tmp_path / "back.bin"
    run_esptool(rom.port, *extra[:1], "read-flash", "0x20000", "4096", str(back))
    assert back.read_bytes() == data[:4096]


def test_erase_region_through_the_stub(roms):
    rom = roms("esp32")
    rom.flash[0x30000:0x32000] = b"\0" * 0x2000
    run_esptool(rom.port, "erase-region", "0x30000", "0x1000")
    assert rom.flash_bytes(0x30000, 0x1000) == b"\xff" * 0x1000
    assert rom.flash_bytes(0x31000, 0x1000) == b"\0" * 0x1000


def test_unknown_chip_magic_fails_detection(roms):
    rom = roms("esp32", magic=0x12345678)
    with pytest.raises(FatalError, match="Unexpected chip magic value 0x12345678"):
        run_esptool(rom.port, "chip-id")


def test_unplug_closes_the_port(roms):
    import serial

    rom = roms("esp32")
    port = serial.Serial(rom.port, timeout=1)
    rom.unplug()
    assert not rom.plugged
    with pytest.raises(serial.SerialException):
        port.write(b"\xc0\x00\x08\x24\x00\x00\x00\x00\x00\xc0")
        port.read(10)
    port.close()
