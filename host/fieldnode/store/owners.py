"""Which worker writes a device's frames when N gateway workers share a port."""
from __future__ import annotations

import zlib


def owner_of(device: bytes, workers: int) -> int:
    """The worker (and so the shard) that stores this device's frames when N workers run.
    CRC-32, not hash(): every process must get the same answer."""
    return zlib.crc32(device) % workers if workers > 1 else 0
