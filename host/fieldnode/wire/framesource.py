"""Frames out of a file or stream: a CBOR sequence, hex lines, or a serial console capture."""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import cbor2

from .console import BadFrameLine, frame_from_line


@dataclass
class Item:
    """One thing found in the input: a frame (bytes), a log line, or an undecodable chunk."""

    where: str
    frame: bytes | None = None
    log: str | None = None
    error: str | None = None


def read_items(data: bytes, hex_lines: bool = False) -> Iterator[Item]:
    if hex_lines:
        yield from _hex_lines(data)
    elif data[:1] == b"\xd1":
        yield from _cbor_sequence(data)
    else:
        yield from _console_lines(data)


def _hex_lines(data: bytes) -> Iterator[Item]:
    for number, raw in enumerate(data.splitlines(), 1):
        text = raw.strip()
        if not text or text.startswith(b"#"):
            continue
        try:
            yield Item(f"line {number}", frame=bytes.fromhex(text.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            yield Item(f"line {number}", error="not hex (with --hex every line is one frame in hex)")


def _cbor_sequence(data: bytes) -> Iterator[Item]:
    """RFC 8742 CBOR sequence: frames back to back. A damaged item ends the sequence: CBOR has no
    resynchronisation point, so the rest is reported rather than guessed at."""
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        start = stream.tell()
        try:
            cbor2.CBORDecoder(stream).decode()
        except Exception as exc:
            yield Item(f"byte {start}", error=f"bad-cbor: {type(exc).__name__}; "
                       f"{len(data) - start} bytes from here not read")
            return
        yield Item(f"byte {start}", frame=data[start:stream.tell()])


def _console_lines(data: bytes) -> Iterator[Item]:
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            frame = frame_from_line(raw)
        except BadFrameLine as exc:
            yield Item(f"line {number}", error=f"bad-cbor: {exc}")
            continue
        if frame is None:
            yield Item(f"line {number}", log=raw.decode("utf-8", "replace").rstrip())
        else:
            yield Item(f"line {number}", frame=frame)
