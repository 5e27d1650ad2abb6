"""Finding the MicroPython image to flash, and checking it before any port is touched.

The image is the merged .bin from micropython.org (bootloader, partition table and application in
one file, written at the chip's bootloader offset). fieldnode never downloads it: it is passed
with --firmware or placed in the cache, cache_dir()/firmware/<chip>/.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..infra.errors import FieldnodeError
from ..infra.paths import cache_dir
from ..node.chips import Chip, chip_by_image_id
from .partitions import PARTITION_TABLE_OFFSET
from .partitions import Partition, table_in_firmware

IMAGE_MAGIC = 0xE9
# Common header (8 bytes), then the extended header: WP pin (1), SPI drive (3), chip id (2, LE).
CHIP_ID_AT = 12
DOWNLOAD_URL = "https://micropython.org/download/{board}/"


@dataclass(frozen=True)
class Firmware:
    path: Path
    data: bytes
    chip: Chip
    table: list[Partition]

    @property
    def end(self) -> int:
        """First flash address after the image."""
        return self.chip.firmware_offset + len(self.data)


def cache_location(chip: Chip) -> Path:
    return cache_dir() / "firmware" / chip.name


def image_chip_id(data: bytes) -> int | None:
    """The chip id an ESP-IDF image says it was built for; None if data is no such image."""
    if len(data) < CHIP_ID_AT + 2 or data[0] != IMAGE_MAGIC:
        return None
    return struct.unpack_from("<H", data, CHIP_ID_AT)[0]


def _missing_message(chip: Chip, where: Path) -> str:
    return (f"no MicroPython firmware for {chip.name}: put the .bin in {where}/ or pass "
            f"--firmware FILE. Download it from {DOWNLOAD_URL.format(board=chip.micropython_board)} "
            f"(the .bin image, which is written at 0x{chip.firmware_offset:x}); fieldnode never "
            f"downloads firmware itself")


def locate_firmware(path: str | Path | None, chip: Chip) -> Path:
    """The file given, or the newest .bin in the cache for the chip."""
    if path is not None:
        given = Path(path).expanduser()
        if not given.is_file():
            raise FieldnodeError(f"--firmware {path}: no such file")
        return given
    where = cache_location(chip)
    candidates = sorted(where.glob("*.bin"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not candidates:
        raise FieldnodeError(_missing_message(chip, where))
    return candidates[0]


def load_firmware(path: Path, chip: Chip) -> Firmware:
    """Reads and checks the image: an ESP-IDF image for this chip, with a partition table."""
    data = path.read_bytes()
    chip_id = image_chip_id(data)
    if chip_id is None:
        raise FieldnodeError(f"{path} is not an ESP firmware image (it does not start with the "
                             f"0x{IMAGE_MAGIC:02X} image header); use the .bin from "
                             f"{DOWNLOAD_URL.format(board=chip.micropython_board)}")
    built_for = chip_by_image_id(chip_id)
    if built_for is not chip:
        name = built_for.name if built_for else f"chip id {chip_id}"
        raise FieldnodeError(f"{path} is built for {name}, not {chip.name}: use the "
                             f"{chip.micropython_board} firmware, or pass --chip/--board for the "
                             f"nodes you are flashing")
    table = table_in_firmware(data, chip)
    if table is None:
        raise FieldnodeError(
            f"{path} has no partition table at 0x{PARTITION_TABLE_OFFSET:x}: it looks like an "
            f"application-only image; use the full firmware .bin from "
            f"{DOWNLOAD_URL.format(board=chip.micropython_board)} (written at "
            f"0x{chip.firmware_offset:x})")
    return Firmware(path, data, chip, table)
