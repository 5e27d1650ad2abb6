"""The chips fieldnode supports, one record each: everything that differs between them, as data.

As esptool's targets/ does with a class per chip, a chip's differences are stated once here,
and boards (which pins a board file may use), flashing (where the firmware goes, which esptool
and image names it has) and sim (the pins a virtual node accepts) read them; no code asks
`if chip == ...`.

Pins: which GPIOs exist, which are input-only, which are wired to the SPI flash/PSRAM on the
common modules, and which have an ADC1 channel (ADC2 cannot be read while Wi-Fi is on).

Flash layout: offsets are those of MicroPython's generic firmware for the chip (ESP32_GENERIC,
ESP32_GENERIC_S3, ESP32_GENERIC_C3): the downloadable .bin is bootloader + partition table +
application merged into one image that starts at the chip's bootloader offset. Since
MicroPython 1.26 the generic partition table (partitions-4MiBplus.csv) ends with the factory app
at 0x200000 and has no "vfs" entry: the firmware makes the filesystem from the end of the last
partition to the end of the detected flash. Older firmware lists "vfs" in the table (0x200000,
0x200000 on 4 MiB parts); flashing/partitions.py reads the table from the image when it is
there, and `app_partition_end` is only the fallback for the layout.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..infra.errors import FieldnodeError


@dataclass(frozen=True)
class Chip:
    name: str  # ours, boards/*.json "chip", and esptool's --chip
    # Pins
    gpios: frozenset[int]
    input_only: frozenset[int]
    reserved: frozenset[int]  # wired to the SPI flash/PSRAM on the common modules
    adc: frozenset[int]  # ADC1 only: ADC2 cannot be read while Wi-Fi is on
    # Flashing
    esptool_name: str  # esptool's CHIP_NAME, what its detection reports
    image_chip_id: int  # chip id in an ESP-IDF image's extended header
    firmware_offset: int  # where the merged MicroPython image (its bootloader) goes
    app_partition_end: int  # end of the factory app in MicroPython's generic partition table
    mpy_march: str  # mpy-cross -march, used only by modules with @native/@viper code
    micropython_board: str  # the firmware's name on micropython.org/download/


ESP32 = Chip(
    "esp32",
    gpios=frozenset(list(range(0, 34)) + [34, 35, 36, 39]) - {20, 24, 28, 29, 30, 31},
    input_only=frozenset({34, 35, 36, 39}),
    reserved=frozenset(range(6, 12)),
    adc=frozenset({32, 33, 34, 35, 36, 39}),
    esptool_name="ESP32", image_chip_id=0, firmware_offset=0x1000, app_partition_end=0x200000,
    mpy_march="xtensawin", micropython_board="ESP32_GENERIC",
)

ESP32S3 = Chip(
    "esp32s3",
    gpios=frozenset(list(range(0, 22)) + list(range(26, 49))),
    input_only=frozenset(),
    reserved=frozenset(range(26, 33)),
    adc=frozenset(range(1, 11)),
    esptool_name="ESP32-S3", image_chip_id=9, firmware_offset=0x0, app_partition_end=0x200000,
    mpy_march="xtensawin", micropython_board="ESP32_GENERIC_S3",
)

ESP32C3 = Chip(
    "esp32c3",
    gpios=frozenset(range(0, 22)),
    input_only=frozenset(),
    reserved=frozenset(range(12, 18)),
    adc=frozenset(range(0, 5)),
    esptool_name="ESP32-C3", image_chip_id=5, firmware_offset=0x0, app_partition_end=0x200000,
    mpy_march="rv32imc", micropython_board="ESP32_GENERIC_C3",
)

CHIPS: dict[str, Chip] = {chip.name: chip for chip in (ESP32, ESP32S3, ESP32C3)}
DEFAULT_CHIP = "esp32"


def chip_spec(name: str) -> Chip:
    try:
        return CHIPS[name]
    except KeyError:
        raise FieldnodeError(f"unsupported chip {name!r}: use one of {', '.join(CHIPS)}") from None


def chip_by_esptool_name(esptool_name: str) -> Chip | None:
    return next((c for c in CHIPS.values() if c.esptool_name == esptool_name), None)


def chip_by_image_id(image_chip_id: int) -> Chip | None:
    return next((c for c in CHIPS.values() if c.image_chip_id == image_chip_id), None)
