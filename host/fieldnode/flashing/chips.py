"""What `fieldnode flash` needs to know about each supported chip: data, one entry per chip.

Offsets are those of MicroPython's generic firmware for the chip (ESP32_GENERIC, ESP32_GENERIC_S3,
ESP32_GENERIC_C3): the downloadable .bin is bootloader + partition table + application merged
into one image that starts at the chip's bootloader offset. Since MicroPython 1.26 the generic
partition table (partitions-4MiBplus.csv) ends with the factory app at 0x200000 and has no "vfs"
entry: the firmware makes the filesystem from the end of the last partition to the end of the
detected flash. Older firmware lists "vfs" in the table (0x200000, 0x200000 on 4 MiB parts);
partitions.py reads the table from the image when it is there, and `app_partition_end` is only
the fallback for the layout.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..infra.errors import FieldnodeError

PARTITION_TABLE_OFFSET = 0x8000  # ESP-IDF's default, used by every MicroPython esp32 build


@dataclass(frozen=True)
class ChipSpec:
    name: str  # ours, boards/*.json "chip", and esptool's --chip
    esptool_name: str  # esptool's CHIP_NAME, what its detection reports
    image_chip_id: int  # chip id in an ESP-IDF image's extended header
    firmware_offset: int  # where the merged MicroPython image (its bootloader) goes
    app_partition_end: int  # end of the factory app in MicroPython's generic partition table
    mpy_march: str  # mpy-cross -march, used only by modules with @native/@viper code
    micropython_board: str  # the firmware's name on micropython.org/download/


CHIPS: dict[str, ChipSpec] = {
    "esp32": ChipSpec("esp32", "ESP32", 0, 0x1000, 0x200000, "xtensawin", "ESP32_GENERIC"),
    "esp32s3": ChipSpec("esp32s3", "ESP32-S3", 9, 0x0, 0x200000, "xtensawin", "ESP32_GENERIC_S3"),
    "esp32c3": ChipSpec("esp32c3", "ESP32-C3", 5, 0x0, 0x200000, "rv32imc", "ESP32_GENERIC_C3"),
}
DEFAULT_CHIP = "esp32"


def chip_spec(name: str) -> ChipSpec:
    try:
        return CHIPS[name]
    except KeyError:
        raise FieldnodeError(f"unsupported chip {name!r}: use one of {', '.join(CHIPS)}") from None


def chip_by_esptool_name(esptool_name: str) -> ChipSpec | None:
    return next((c for c in CHIPS.values() if c.esptool_name == esptool_name), None)


def chip_by_image_id(image_chip_id: int) -> ChipSpec | None:
    return next((c for c in CHIPS.values() if c.image_chip_id == image_chip_id), None)
