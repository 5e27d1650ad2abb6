"""A node's raw REPL over USB, through mpremote's serial transport (the same path for a board and
for a virtual node's pty). Code goes in, printed text comes out; failures become FieldnodeError."""
from __future__ import annotations

import contextlib
import io
import os
import time

import serial

from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from ..infra.errors import FieldnodeError

RESET_WAIT_S = 3.0  # an ESP32 prints its ROM banner within ~100 ms of a reset
ATTEMPT_S = 2.0  # one Ctrl-C/Ctrl-A round; a running node answers in milliseconds


def _refuse_if_busy(port: str) -> None:
    """mpremote retries a locked port and then reports only "failed to access": probe the lock
    with pyserial first so the user learns the port is taken, not that it is broken."""
    probe = serial.Serial()
    probe.port, probe.exclusive = port, True
    probe.dtr = probe.rts = False  # toggling them on a dev board's auto-reset circuit resets the chip
    try:
        probe.open()
        probe.close()
    except serial.SerialException as exc:
        text = str(exc).lower()
        if "lock" in text or "busy" in text or "temporarily unavailable" in text:
            raise FieldnodeError(f"{port} is in use by another program (monitor, screen, mpremote): "
                                 "close it and try again") from None


def check_port(port: str) -> None:
    """The port exists and no other program holds it; checked without resetting the board, so a
    command can check every port before it asks for anything (a password) or touches one."""
    if not os.path.exists(port):
        raise FieldnodeError(f"{port}: no such serial port. Is the board plugged in? "
                             "Boards appear as /dev/ttyUSB* or /dev/ttyACM*")
    _refuse_if_busy(port)


class DeviceLink:
    def __init__(self, port: str, timeout: float = 10.0) -> None:
        self.port = port
        self._reset_sent = False
        check_port(port)
        try:
            # A read timeout: without one a silent port blocks mpremote's reads for ever.
            self.transport = SerialTransport(port, baudrate=115200, exclusive=True, timeout=0.5)
        except TransportError as exc:
            raise FieldnodeError(f"{port}: cannot open ({exc})") from None
        try:
            self._enter_raw_repl(timeout)
        except FieldnodeError:
            self.transport.close()
            raise

    def _enter_raw_repl(self, timeout: float) -> None:
        """No soft reset: interrupt what runs (Ctrl-C) and take the raw REPL as it is, like
        `mpremote resume`; a reset would restart the firmware and lose the session. A node that is
        still booting (just reset, just plugged in) can swallow the Ctrl-C, so it is sent again
        until the overall timeout."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it got instead
                    self.transport.enter_raw_repl(soft_reset=False,
                                                  timeout_overall=min(ATTEMPT_S, max(deadline - time.monotonic(), 0.1)))
                return
            except TransportError as exc:
                last = str(exc)
            except OSError as exc:
                raise FieldnodeError(f"{self.port}: lost the connection ({exc}); was the board unplugged?") from None
        raise FieldnodeError(f"{self.port}: no MicroPython REPL answered within {timeout:.0f} s ({last}). "
                             "Is MicroPython flashed (fieldnode flash) and nothing else using the port?")

    def exec(self, code: str) -> str:
        try:
            return self.transport.exec(code).decode("utf-8", "replace").strip()
        except TransportExecError as exc:
            last = exc.error_output.strip().splitlines()[-1:] or ["?"]
            raise FieldnodeError(f"{self.port}: the node raised {last[0]}") from None
        except TransportError as exc:
            raise FieldnodeError(f"{self.port}: lost the connection ({exc}); was the board unplugged?") from None

    def reset(self) -> None:
        """Hard-resets the node (machine.reset()) so the application starts again. There is no
        answer to wait for (the REPL that would give it is gone with the reset), so this waits for
        the first bytes of the next boot instead: a tool that opens the port right after must
        meet the new boot, not interrupt the old one half-way through its reset."""
        try:
            self.transport.exec_raw_no_follow("import machine; machine.reset()")
        except TransportError as exc:
            raise FieldnodeError(f"{self.port}: could not reset the node ({exc})") from None
        self._reset_sent = True
        deadline = time.monotonic() + RESET_WAIT_S
        try:
            while time.monotonic() < deadline and not self.transport.serial.read(1):
                pass
        except (OSError, serial.SerialException):
            pass  # a USB-serial bridge that re-enumerates on reset: the port is gone, as expected

    def close(self) -> None:
        if not self._reset_sent:  # after a reset there is no raw REPL left to leave
            try:
                self.transport.exit_raw_repl()
            except Exception:
                pass  # the port may be gone already; closing must not raise over the real error
        self.transport.close()

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
