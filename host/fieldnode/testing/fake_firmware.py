"""A MicroPython-shaped firmware file for tests and benchmarks; nothing in it runs.

Laid out like the merged .bin from micropython.org: a bootloader image at the chip's bootloader
offset, the partition table at 0x8000, an application image at 0x10000. The two images are made
with esptool's own image classes, so esptool's checks (image header, chip id, checksum, SHA-256)
see real images for the chip.
"""
from __future__ import annotations

import random

from esptool.bin_image import ELFSection
from esptool.targets import CHIP_DEFS

from ..flashing.partitions import PARTITION_TABLE_OFFSET
from ..node.chips import chip_spec
from ..flashing.partitions import Partition, encode_table, generic_table

APP_OFFSET = 0x10000
DRAM_LOAD_ADDR = 0x3FFB0000  # not flash-mapped: esptool stores the segment as it is


def _image(chip: str, payload: bytes) -> bytes:
    image = CHIP_DEFS[chip].BOOTLOADER_IMAGE()
    image.entrypoint = 0x40080000
    image.flash_mode = 2  # DIO
    image.flash_size_freq = 0x20  # 4 MB, 40 MHz
    image.segments = [ELFSection(b".dram0.data", DRAM_LOAD_ADDR, payload, flags=0)]
    return image.save(None)


def filler(size: int, seed: int = 1) -> bytes:
    """Bytes that compress about as well as firmware does: random runs between repeated ones."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        run = rng.randbytes(rng.randrange(64, 512))
        out += run if rng.random() < 0.5 else run[:16] * (len(run) // 16)
    return bytes(out[:size])


def fake_firmware(chip: str = "esp32", app_size: int = 256 * 1024, *, payload: bytes | None = None,
                  table: list[Partition] | None = None, seed: int = 1) -> bytes:
    spec = chip_spec(chip)
    base = spec.firmware_offset
    app = _image(chip, payload if payload is not None else filler(app_size, seed))
    out = bytearray(b"\xff" * (APP_OFFSET - base))
    bootloader = _image(chip, filler(16 * 1024, seed + 1))
    out[0:len(bootloader)] = bootloader
    table_at = PARTITION_TABLE_OFFSET - base
    blob = encode_table(table if table is not None else generic_table(spec))
    out[table_at:table_at + len(blob)] = blob
    return bytes(out) + app
