"""The application slots on a node's filesystem, as the boot code (firmware/lib/fnboot.py) reads
them and as updates over the air write them (docs/updates.md): the fnode package lives in /app_a
or /app_b, /app.json names the slot that boots. `flash --app-only` writes the slot that is not
running and then the pointer, so USB and over-the-air updates never disagree about what runs."""
from __future__ import annotations

import json
from typing import Any

POINTER = "/app.json"
SLOT_PACKAGE = "/lib/fnode/"  # the part of the application that goes into a slot


def slot_dir(slot: str) -> str:
    return f"/app_{slot}"


def other_slot(pointer: dict[str, Any] | None) -> str:
    """The slot that is not running (slot a on a node without slots)."""
    return "b" if (pointer or {}).get("slot") == "a" else "a"


def slot_layout(files: dict[str, bytes], slot: str) -> dict[str, bytes]:
    """The application's files with its package moved into the slot; the boot code (boot.py,
    main.py, /lib/fnboot.mpy) and the board file stay where they are."""
    return {(slot_dir(slot) + path[len("/lib"):] if path.startswith(SLOT_PACKAGE) else path): data
            for path, data in files.items()}


def usb_pointer(old: dict[str, Any] | None, slot: str, version: str) -> bytes:
    """The pointer after a USB install into slot: kept at once (a person installed it), with the
    slot that ran before as the way back when it is a slot."""
    new: dict[str, Any] = {"slot": slot, "ver": version, "last": {"out": "usb", "ver": version}}
    if old and old.get("slot"):
        new.update(prev=old["slot"], pver=old.get("ver", "?"))
    return json.dumps(new).encode()


def parse_pointer(data: bytes | None) -> dict[str, Any] | None:
    try:
        value = json.loads(data) if data else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
