"""The ESP-IDF partition table inside a MicroPython image, and where the filesystem goes.

The binary table (ESP-IDF's gen_esp32part format) is a list of 32-byte entries at flash 0x8000:
magic AA 50, type, subtype, offset, size, 16-byte label, flags; an EB EB entry carries the MD5 of
the entries before it; 0xFF ends the table.

MicroPython mounts its filesystem from the "vfs" (or "ffat") data partition. Since 1.26 the
generic tables have none, and the firmware registers "vfs" from the end of the last partition to
the end of the flash chip it detects at boot. `filesystem_region` follows the same rule, so the
littlefs image written there has exactly the block count the node will mount it with (littlefs
refuses a superblock whose block count differs, and MicroPython then formats the partition).
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ..infra.errors import FieldnodeError
from ..node.chips import Chip

PARTITION_TABLE_OFFSET = 0x8000  # ESP-IDF's default, used by every MicroPython esp32 build
ENTRY = struct.Struct("<2sBBII16sI")
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
TABLE_MAX = 0xC00
TYPE_APP = 0x00
TYPE_DATA = 0x01
FILESYSTEM_LABELS = ("vfs", "ffat")


@dataclass(frozen=True)
class Partition:
    label: str
    type: int
    subtype: int
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class FilesystemRegion:
    offset: int
    size: int
    source: str  # how it was found, for messages


def parse_table(blob: bytes) -> list[Partition] | None:
    """The partitions in a binary table, or None when blob does not start with one."""
    parts: list[Partition] = []
    for pos in range(0, min(len(blob), TABLE_MAX) - ENTRY.size + 1, ENTRY.size):
        magic, ptype, subtype, offset, size, label, _flags = ENTRY.unpack_from(blob, pos)
        if magic == ENTRY_MAGIC:
            parts.append(Partition(label.rstrip(b"\0").decode("ascii", "replace"), ptype, subtype, offset, size))
        elif magic == MD5_MAGIC:
            if blob[pos + 16:pos + 32] != hashlib.md5(blob[:pos]).digest():
                return None  # not a table, or a damaged one
            break
        else:
            break
    return parts or None


def encode_table(parts: list[Partition]) -> bytes:
    body = b"".join(ENTRY.pack(ENTRY_MAGIC, p.type, p.subtype, p.offset, p.size,
                               p.label.encode("ascii"), 0) for p in parts)
    body += MD5_MAGIC + b"\xff" * 14 + hashlib.md5(body).digest()
    return body.ljust(TABLE_MAX, b"\xff")


def generic_table(chip: Chip) -> list[Partition]:
    """MicroPython's generic table for the chip (partitions-4MiBplus.csv since 1.26)."""
    return [
        Partition("nvs", TYPE_DATA, 0x02, 0x9000, 0x6000),
        Partition("phy_init", TYPE_DATA, 0x01, 0xF000, 0x1000),
        Partition("factory", TYPE_APP, 0x00, 0x10000, chip.app_partition_end - 0x10000),
    ]


def table_in_firmware(firmware: bytes, chip: Chip) -> list[Partition] | None:
    start = PARTITION_TABLE_OFFSET - chip.firmware_offset
    return parse_table(firmware[start:start + TABLE_MAX])


def filesystem_region(table: list[Partition], flash_size: int) -> FilesystemRegion:
    """Where MicroPython will mount its filesystem on a chip with flash_size bytes of flash."""
    named = next((p for p in table if p.type == TYPE_DATA and p.label in FILESYSTEM_LABELS), None)
    if named is not None:
        region = FilesystemRegion(named.offset, named.size, f"the firmware's {named.label!r} partition")
    else:
        start = max(p.end for p in table)
        region = FilesystemRegion(start, flash_size - start,
                                  "the end of the firmware's last partition to the end of flash")
    if region.size <= 0 or region.offset + region.size > flash_size:
        raise FieldnodeError(
            f"no room for the filesystem: it goes from 0x{region.offset:x} ({region.source}) but this "
            f"node has {flash_size // 1024} KiB of flash; use a firmware build for this flash size")
    return region
