"""A node's raw REPL over USB, through mpremote's serial transport (the same path for a board and
for a virtual node's pty). Code goes in, printed text comes out; failures become FieldnodeError."""
from __future__ import annotations

import os

from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from .errors import FieldnodeError


class DeviceLink:
    def __init__(self, port: str, timeout: float = 10.0) -> None:
        self.port = port
        if not os.path.exists(port):
            raise FieldnodeError(f"{port}: no such serial port. Is the board plugged in? "
                                 "Boards appear as /dev/ttyUSB* or /dev/ttyACM*")
        try:
            self.transport = SerialTransport(port, baudrate=115200, exclusive=True)
        except TransportError as exc:
            text = str(exc)
            if "busy" in text.lower() or "lock" in text.lower():
                raise FieldnodeError(f"{port} is in use by another program (monitor, screen, mpremote): "
                                     "close it and try again") from None
            raise FieldnodeError(f"{port}: cannot open ({text})") from None
        try:
            # No soft reset: interrupt what runs (Ctrl-C) and take the raw REPL as it is, like
            # `mpremote resume`; a reset would restart the firmware and lose the session.
            self.transport.enter_raw_repl(soft_reset=False, timeout_overall=timeout)
        except TransportError as exc:
            self.transport.close()
            raise FieldnodeError(f"{port}: no MicroPython REPL answered ({exc}). Is MicroPython "
                                 "flashed (fieldnode flash) and nothing else using the port?") from None

    def exec(self, code: str) -> str:
        try:
            return self.transport.exec(code).decode("utf-8", "replace").strip()
        except TransportExecError as exc:
            last = exc.error_output.strip().splitlines()[-1:] or ["?"]
            raise FieldnodeError(f"{self.port}: the node raised {last[0]}") from None
        except TransportError as exc:
            raise FieldnodeError(f"{self.port}: lost the connection ({exc}); was the board unplugged?") from None

    def close(self) -> None:
        try:
            self.transport.exit_raw_repl()
        except Exception:
            pass  # the port may be gone already; closing must not raise over the real error
        self.transport.close()

    def __enter__(self) -> "DeviceLink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
