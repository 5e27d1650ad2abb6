"""The USB serial console framing: one frame per line, `FN1 ` + base64, among ordinary log lines."""
from __future__ import annotations

import base64
import binascii

FRAME_PREFIX = b"FN1 "


def encode_console_line(frame: bytes) -> bytes:
    return FRAME_PREFIX + base64.b64encode(frame) + b"\r\n"


class BadFrameLine(ValueError):
    """A line that carries the frame prefix but no decodable frame (counted as rejected)."""


def frame_from_line(line: bytes) -> bytes | None:
    """The frame a console line carries, None for a log line, BadFrameLine for a damaged one."""
    line = line.strip(b"\r\n")
    if not line.startswith(FRAME_PREFIX):
        return None
    try:
        return base64.b64decode(line[len(FRAME_PREFIX):].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadFrameLine("frame line is not valid base64") from None
