"""The application as a littlefs2 image, laid out the way MicroPython's VfsLfs2 mounts it.

Block size 4096 (the flash sector), read/prog size 32 and lookahead 32 (VfsLfs2's defaults), and
on-disk version 2.0, which every MicroPython with littlefs2 mounts (newer ones upgrade it on the
first write). The image spans the whole filesystem region: its superblock must carry the block
count the node will see, or the node reformats.
"""
from __future__ import annotations

import posixpath
import threading

from littlefs import LittleFS, LittleFSError

from ..infra.errors import FieldnodeError

BLOCK_SIZE = 4096
READ_PROG_SIZE = 32
LOOKAHEAD_SIZE = 32
DISK_VERSION = 0x00020000


def _littlefs(block_count: int) -> LittleFS:
    return LittleFS(block_size=BLOCK_SIZE, block_count=block_count, read_size=READ_PROG_SIZE,
                    prog_size=READ_PROG_SIZE, lookahead_size=LOOKAHEAD_SIZE,
                    disk_version=DISK_VERSION, mount=False)


def build_image(files: dict[str, bytes], size: int) -> bytes:
    """A formatted littlefs of size bytes holding files (absolute paths)."""
    if size % BLOCK_SIZE or size < 2 * BLOCK_SIZE:
        raise FieldnodeError(f"filesystem size {size:#x} is not a whole number of 4 KiB blocks")
    fs = _littlefs(size // BLOCK_SIZE)
    fs.format()
    fs.mount()
    try:
        for path, data in sorted(files.items()):
            parent = posixpath.dirname(path)
            if parent not in ("", "/"):
                fs.makedirs(parent, exist_ok=True)
            with fs.open(path, "wb") as f:
                f.write(data)
        fs.unmount()
    except LittleFSError as exc:
        if exc.code == LittleFSError.Error.LFS_ERR_NOSPC:
            total = sum(len(d) for d in files.values())
            raise FieldnodeError(
                f"the application ({len(files)} files, {total} bytes) does not fit in the "
                f"{size // 1024} KiB filesystem; remove files from the application directory "
                f"or use a node with more flash") from None
        raise
    return bytes(fs.context.buffer)


def read_image(image: bytes) -> dict[str, bytes]:
    """Every file in a littlefs image, by absolute path (for checks and tests)."""
    fs = _littlefs(len(image) // BLOCK_SIZE)
    fs.context.buffer[:] = image
    fs.mount()
    found: dict[str, bytes] = {}
    for top, _dirs, names in fs.walk("/"):
        for name in names:
            path = posixpath.join(top, name)
            with fs.open(path, "rb") as f:
                found[path if path.startswith("/") else "/" + path] = f.read()
    fs.unmount()
    return found


class ImageCache:
    """Builds the image once per filesystem size: parallel ports with the same flash share it."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self._images: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def image(self, size: int) -> bytes:
        with self._lock:
            if size not in self._images:
                self._images[size] = build_image(self.files, size)
            return self._images[size]
