"""Everything decided before a port is touched: the chip, the board, the firmware, the app image.

The target chip comes from --chip, else the board file, else the firmware image's header, else
ESP32; when two of them disagree the run stops. The firmware must end before the filesystem
starts, and the application must fit the filesystem of a node with the board's flash size (4 MiB
without a board): these fail here, offline, with nothing written anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..node.boards import load_board
from ..infra.errors import FieldnodeError
from .appimage import ImageCache
from ..node.chips import CHIPS, DEFAULT_CHIP, Chip, chip_by_image_id, chip_spec
from .compile import AppFiles, build_app_files
from .firmware import image_chip_id, load_firmware, locate_firmware
from .partitions import filesystem_region
from .serial_flash import FlashJob

MIB = 1024 * 1024
DEFAULT_FLASH_SIZE = 4 * MIB


@dataclass(frozen=True)
class Target:
    chip: Chip
    chip_source: str  # where the chip came from, for messages
    board: dict[str, Any] | None


def resolve_target(chip: str | None, board: str | None, firmware: str | None) -> Target:
    doc = load_board(board) if board else None
    chosen: Chip | None = None
    source = ""
    if chip:
        chosen, source = chip_spec(chip), "--chip"
    if doc is not None:
        board_chip = chip_spec(doc["chip"])
        if chosen is not None and board_chip is not chosen:
            raise FieldnodeError(f"--chip {chosen.name} does not match board {doc['name']!r}, which "
                                 f"is an {board_chip.name}; drop --chip or pick another board")
        chosen, source = board_chip, f"board {doc['name']!r}"
    if chosen is None and firmware and Path(firmware).is_file():
        with open(firmware, "rb") as f:
            chip_id = image_chip_id(f.read(16))
        found = chip_by_image_id(chip_id) if chip_id is not None else None
        if found is not None:
            chosen, source = found, f"the header of {firmware}"
    if chosen is None:
        chosen, source = CHIPS[DEFAULT_CHIP], "the default"
    return Target(chosen, source, doc)


def load_app(app_dir: Path, target: Target, source_lines: bool = False) -> AppFiles:
    return build_app_files(app_dir, target.board, target.chip.mpy_march, source_lines)


def prepare_flash_job(target: Target, firmware_arg: str | None, app: AppFiles, **options: Any) -> FlashJob:
    firmware = load_firmware(locate_firmware(firmware_arg, target.chip), target.chip)
    board_flash = (target.board or {}).get("flash_size_mb")
    expected_flash = int(board_flash * MIB) if board_flash else DEFAULT_FLASH_SIZE
    region = filesystem_region(firmware.table, expected_flash)
    if firmware.end > region.offset:
        room = region.offset - target.chip.firmware_offset
        raise FieldnodeError(
            f"{firmware.path} is {len(firmware.data)} bytes: written at "
            f"0x{target.chip.firmware_offset:x} it would end at 0x{firmware.end:x}, past the start "
            f"of the filesystem at 0x{region.offset:x} (room for {room} bytes); it is not a "
            f"firmware for this partition table")
    images = ImageCache(app.files)
    images.image(region.size)  # an application that does not fit stops the run here
    return FlashJob(chip=target.chip, firmware=firmware, images=images, **options)
