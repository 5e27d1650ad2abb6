"""Lines from a USB serial console that survive the board being unplugged and plugged back in."""
from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator

import serial

from ..infra.errors import FieldnodeError


def open_port(port: str, baud: int = 115200, timeout: float = 0.2) -> serial.Serial:
    """Opens a serial port exclusively, with errors that say what to do."""
    if not os.path.exists(port):
        raise FieldnodeError(f"{port}: no such serial port. Is the board plugged in? Boards appear as "
                             "/dev/ttyUSB* or /dev/ttyACM* (see `ls /dev/tty{USB,ACM}*`)")
    try:
        return serial.Serial(port, baud, timeout=timeout, exclusive=True)
    except serial.SerialException as exc:
        err = getattr(exc, "errno", None)
        text = str(exc)
        if err == errno.EBUSY or "busy" in text.lower() or "lock" in text.lower():
            raise FieldnodeError(f"{port} is in use by another program (a monitor, screen, minicom or "
                                 "mpremote): close it and try again") from None
        if err == errno.EACCES or "Permission denied" in text:
            raise FieldnodeError(f"{port}: permission denied. Add yourself to the dialout group "
                                 "(sudo usermod -aG dialout $USER, then log in again)") from None
        raise FieldnodeError(f"{port}: cannot open ({text})") from None


def console_lines(port: str, baud: int = 115200, on_status: Callable[[str], None] = lambda s: None,
                  should_stop: Callable[[], bool] = lambda: False,
                  retry_interval: float = 0.5) -> Iterator[bytes]:
    """Yields raw lines. If the port goes away mid-stream it reports that through on_status and
    waits for the port to return, then goes on. The first open's errors are raised."""
    link = open_port(port, baud)
    on_status(f"reading {port}")
    pending = b""
    while not should_stop():
        try:
            chunk = link.read(4096)
        except (serial.SerialException, OSError):
            link.close()
            on_status(f"{port} disconnected (unplugged?); waiting for it to come back. Ctrl-C to stop")
            link = _reopen(port, baud, should_stop, retry_interval)
            if link is None:
                return
            on_status(f"{port} is back; reading")
            pending = b""
            continue
        if not chunk:
            continue
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
        if len(pending) > 65536:  # a device printing without newlines must not grow this forever
            yield pending
            pending = b""
    link.close()


def _reopen(port: str, baud: int, should_stop: Callable[[], bool], interval: float) -> serial.Serial | None:
    while not should_stop():
        time.sleep(interval)
        try:
            return open_port(port, baud)
        except FieldnodeError:
            continue
    return None
