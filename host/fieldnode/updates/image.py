"""The application image an update carries: the compiled fnode package, as the node unpacks it
into a slot (fnode.ota.unpack). Entries of [path length u8][path][size u32 big-endian][bytes],
paths relative to the slot (fnode/app.mpy). The boot code (fnboot), boot.py, main.py and the
board file are not in it: an update never replaces them."""
from __future__ import annotations

import struct
from pathlib import Path

from ..flashing.compile import build_app_files, declared_version
from ..infra.errors import FieldnodeError

SLOT_PACKAGE = "/lib/fnode/"  # what goes into a slot, from the application's files
BOOT_MODULE = "/lib/fnboot.mpy"  # outside the slots, never sent over the air


def slot_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """The application's files that live in a slot, by path relative to the slot."""
    return {path[len("/lib/"):]: data for path, data in files.items() if path.startswith(SLOT_PACKAGE)}


def pack(files: dict[str, bytes]) -> bytes:
    out = bytearray()
    for path, data in sorted(files.items()):
        name = path.encode()
        if not 0 < len(name) < 256 or ".." in path or path.startswith("/"):
            raise FieldnodeError(f"{path!r} cannot go into an update image")
        out += bytes((len(name),)) + name + struct.pack(">I", len(data)) + data
    return bytes(out)


def unpack(image: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    pos = 0
    while pos < len(image):
        n = image[pos]
        name = image[pos + 1:pos + 1 + n].decode()
        (size,) = struct.unpack_from(">I", image, pos + 1 + n)
        start = pos + 5 + n
        files[name] = image[start:start + size]
        pos = start + size
    return files


def app_image(firmware_dir: Path, march: str) -> bytes:
    """The image of the application in firmware_dir (compiled as `fieldnode flash` compiles it)."""
    files = slot_files(build_app_files(firmware_dir, None, march).files)
    if not files:
        raise FieldnodeError(f"{firmware_dir} has no lib/fnode package to release")
    return pack(files)


def tree_version(firmware_dir: Path) -> str:
    """The VERSION the application in firmware_dir declares (fnode/app.py)."""
    version = declared_version(Path(firmware_dir))
    if version is None:
        raise FieldnodeError(f"{firmware_dir}/lib/fnode/app.py declares no VERSION = \"x.y.z\"")
    return version
