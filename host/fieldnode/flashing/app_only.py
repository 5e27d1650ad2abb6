"""One port through mpremote: update the application on a node that already runs MicroPython.

Connects like `mpremote connect PORT resume` (raw REPL, no soft reset first), writes the
application's package into the slot that is not running (flashing/slots.py, docs/updates.md) and
the boot code beside it, checks each written file's SHA-256 on the node, then points /app.json at
the new slot (one rename) and soft resets so the new code runs. Stopped before the rename, the
node still runs what it ran. Files it would leave stale are removed (a .py that would shadow the
new .mpy, files gone from our own packages under /lib, the package's copy in /lib from before
slots). Files outside the application (keys, logs, packages installed with mip into other /lib
directories) are left alone.
"""
from __future__ import annotations

import ast
import hashlib
import posixpath
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import serial
from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport

from .compile import AppFiles
from .report import PortLine, PortResult, Stopped
from .slots import POINTER, SLOT_PACKAGE, other_slot, parse_pointer, slot_dir, slot_layout, usb_pointer

# Ctrl-C stops the application, not its watchdog: on the ESP32 port machine.WDT cannot be stopped
# and survives a soft reset (ports/esp32/machine_wdt.c), so a provisioned node resets 30 s
# (fnode.app.WDT_TIMEOUT_MS) after the application's last feed, however far the update has got.
# The application (~45 KB) takes ~11 s at 115200 baud (measured on a paced virtual node), more as
# it grows, so the update feeds the application's own watchdog (fnode.app.watchdog) from the raw
# REPL, at most once every FEED_EVERY_S. The names carry a prefix: mpremote's fs_writefile keeps
# `f` and `w` in the same globals between its chunks. A node whose application started no
# watchdog has nothing to feed.
FEED_WATCHDOG = ("import sys\n"
                 "_fn_wdt=getattr(sys.modules.get('fnode.app'),'watchdog',None)\n"
                 "if _fn_wdt:\n _fn_wdt.feed()")
FEED_EVERY_S = 1.0
RAW_REPL_TIMEOUT = 5.0  # a node answers Ctrl-C/Ctrl-A in milliseconds; longer means no REPL there
# mpremote waits for the raw REPL's answer for as long as bytes keep coming: a node that resets
# in the middle (its watchdog, a brownout, a bumped cable) boots its application, which prints
# frames, and the wait never ends. One step (a 1 KB chunk, a file's hash) takes well under a
# second on a board, so no answer within STEP_TIMEOUT_S means the node is not in the raw REPL.
STEP_TIMEOUT_S = 20.0
CHUNK = 1024  # bytes per raw-REPL write; mpremote's default 256 needs four times the round trips
NODE_INFO = (
    "import sys\n"
    "try:\n"
    " import network,binascii\n"
    " m=binascii.hexlify(network.WLAN(network.STA_IF).config('mac'),':').decode()\n"
    "except Exception:\n"
    " m='-'\n"
    "print(repr((sys.implementation._machine,m)))"
)


class _Differs(Exception):
    """A written file's SHA-256 on the node is not the file's."""


class _BoundedTransport(SerialTransport):
    """mpremote's serial transport, each wait for the node's answer bounded by step_timeout."""

    def __init__(self, port: str, step_timeout: float) -> None:
        # A read timeout: on a pty mpremote otherwise blocks forever on a silent port.
        super().__init__(port, baudrate=115200, timeout=1)
        self.step_timeout = step_timeout

    def read_until(self, min_num_bytes, ending, timeout=10, data_consumer=None, timeout_overall=None):
        # mpremote's own checks its overall limit only in a pause of the output, which a node
        # printing frames never makes. Every caller raises when the ending does not come; raising
        # here says why, and skips mpremote's print of the bytes it got to the user's terminal.
        limit = self.step_timeout if timeout_overall is None else min(timeout_overall, self.step_timeout)
        deadline = time.monotonic() + limit
        data = b""
        heard = time.monotonic()
        while not data.endswith(ending):
            now = time.monotonic()
            if now >= deadline or (timeout is not None and now - heard >= timeout):
                raise TransportError(f"no answer from the node's raw REPL within {min(limit, timeout or limit):g} s")
            byte = self.serial.read(1)  # waits up to the port's read timeout
            if byte:
                heard = time.monotonic()
                if data_consumer:
                    data_consumer(byte)
                    data = byte
                else:
                    data += byte
        return data


def _walk(transport: SerialTransport, top: str, feed: Callable[[], None]) -> list[str]:
    """Every file below top on the node (absolute paths); empty if top does not exist. One exec a
    directory: a deep tree on a slow line outlasts a short watchdog, so each is fed."""
    found: list[str] = []
    feed()
    try:
        entries = transport.fs_listdir(top)
    except OSError:
        return found
    for entry in entries:
        path = posixpath.join(top, entry.name)
        if entry.st_mode & 0x4000:
            found += _walk(transport, path, feed)
        else:
            found.append(path)
    return found


def _stale_files(transport: SerialTransport, files: dict[str, bytes], feed: Callable[[], None]) -> list[str]:
    # One exec a probe: dozens of them outlast a short watchdog on a slow line, so each is fed.
    ours = {path.split("/")[2] for path in files if path.startswith("/lib/") and path.count("/") > 2}
    ours.add(SLOT_PACKAGE.split("/")[2])  # its copy from before slots: the slot has it now
    stale = []
    for path in files:
        if path.endswith(".mpy"):
            feed()
            if transport.fs_exists(path[:-4] + ".py"):
                stale.append(path[:-4] + ".py")
    for package in sorted(ours):
        stale += [p for p in _walk(transport, f"/lib/{package}", feed) if p not in files and p not in stale]
    return stale


def _read_pointer(transport: SerialTransport) -> dict | None:
    try:
        return parse_pointer(transport.fs_readfile(POINTER))
    except (OSError, TransportError):
        return None


def _write_order(path: str) -> tuple[bool, str]:
    # The slot first (it is not running: a stop there changes nothing), then the boot code.
    return (not path.startswith("/app_"), path)


def _clear_slot(transport: SerialTransport, slot: str, feed: Callable[[], None]) -> None:
    for path in _walk(transport, slot_dir(slot), feed):
        feed()
        transport.fs_rmfile(path)


def _switch(transport: SerialTransport, pointer: dict | None, slot: str, version: str) -> None:
    # Written whole beside the pointer, then renamed over it: the node boots the old slot or the new.
    transport.fs_writefile(POINTER + ".new", usb_pointer(pointer, slot, version))
    transport.exec(f"import os\nos.rename({POINTER + '.new'!r},{POINTER!r})")


def _makedirs(transport: SerialTransport, path: str, made: set[str]) -> None:
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        d = "/" + "/".join(parts[:i])
        if d not in made:
            if not transport.fs_isdir(d):
                transport.fs_mkdir(d)
            made.add(d)


class _WatchdogFeeder:
    """Feeds the node's watchdog when FEED_EVERY_S has passed since the last feed."""

    def __init__(self, transport: SerialTransport) -> None:
        self.transport = transport
        self.fed_at: float | None = None

    def __call__(self, *, now_anyway: bool = False) -> None:
        now = time.monotonic()
        if now_anyway or self.fed_at is None or now - self.fed_at >= FEED_EVERY_S:
            self.transport.exec(FEED_WATCHDOG)
            self.fed_at = now


@dataclass
class _Progress:
    wrote: bool = False  # something reached the slot that does not run
    switched: bool = False  # /app.json points at the new slot


def _write_slot(transport: SerialTransport, files: dict[str, bytes], total: int, line: PortLine,
                feed: _WatchdogFeeder, progress: _Progress) -> None:
    """Writes the slot's files (the slot first, then the boot code) and checks each one's hash."""
    done = 0
    made: set[str] = set()

    def written(n: int, base: int) -> None:
        line.bytes_done(base + n, total)
        feed()

    for path, data in sorted(files.items(), key=lambda item: _write_order(item[0])):
        line.check_stop()
        line.phase(f"writing {path}")
        feed()
        progress.wrote = True
        _makedirs(transport, posixpath.dirname(path), made)
        transport.fs_writefile(path, data, chunk_size=CHUNK,
                               progress_callback=lambda n, _t, base=done: written(n, base))
        done += len(data)
        line.text(f"wrote {path} ({len(data)} bytes)")
    line.check_stop()
    line.phase("verifying")
    for path, data in sorted(files.items()):
        feed()
        if transport.fs_hashfile(path, "sha256") != hashlib.sha256(data).digest():
            raise _Differs(f"{path} differs on the node after writing")


def _failure(exc: Exception, port: str, version: str, answered: bool, progress: _Progress) -> str:
    runs = (f"it boots the new application ({version})" if progress.switched
            else "it runs what it ran" if progress.wrote else "nothing was written")
    if isinstance(exc, _Differs):
        return f"{exc} (the node's flash?); {runs}: run flash --app-only on {port} again"
    text = str(exc).strip().splitlines()
    said = text[-1] if text else type(exc).__name__
    if answered and isinstance(exc, (TransportError, struct.error)):
        return (f"{said}: the node left the raw REPL partway (did it reset? its watchdog, power or cable); "
                f"{runs}: run flash --app-only on {port} again")
    return f"{said}; is MicroPython running on {port} with nothing else using the port?"


def update_port(port: str, app: AppFiles, line: PortLine, *, reset: bool = True,
                step_timeout: float = STEP_TIMEOUT_S) -> PortResult:
    result = PortResult(port, transcript=line.transcript)
    started = time.monotonic()
    transport = None
    progress = _Progress()
    try:
        line.phase("connecting")
        transport = _BoundedTransport(port, step_timeout)
        transport.enter_raw_repl(soft_reset=False, timeout_overall=RAW_REPL_TIMEOUT)
        feed = _WatchdogFeeder(transport)
        feed()
        out = transport.exec(NODE_INFO).decode().strip()
        result.chip, result.mac = ast.literal_eval(out)
        feed()
        pointer = _read_pointer(transport)
        slot = other_slot(pointer)
        files = slot_layout(app.files, slot)
        _clear_slot(transport, slot, feed)
        _write_slot(transport, files, app.total_bytes, line, feed, progress)
        line.check_stop()
        feed()
        _switch(transport, pointer, slot, app.version)
        progress.switched = True
        line.text(f"slot {slot} now boots ({app.version})")
        for path in _stale_files(transport, files, feed):
            feed()
            transport.fs_rmfile(path)
            line.text(f"removed stale {path}")
        # The last feed: the new application's boot, until it feeds the watchdog itself, has all of it.
        feed(now_anyway=True)
        transport.exit_raw_repl()
        if reset:
            transport.serial.write(b"\x04")  # soft reset in the friendly REPL: boot.py, main.py run
        result.ok = True
        result.message = f"{len(app.files)} files, {app.total_bytes} bytes written and verified"
        line.phase("done")
    except Stopped:
        result.stopped = True
        result.message = ("stopped by Ctrl-C: the new application is partly written to the slot that does "
                          "not run (the node runs what it ran); run flash --app-only on this port again"
                          if progress.wrote else "stopped by Ctrl-C (nothing written)")
        line.phase("stopped")
    except (_Differs, TransportError, serial.SerialException, OSError, ValueError, SyntaxError,
            struct.error) as exc:
        result.message = _failure(exc, port, app.version, result.chip != "-", progress)
        line.phase("failed")
    finally:
        if transport is not None:
            try:
                transport.close()
            except (OSError, serial.SerialException):
                pass
    result.seconds = time.monotonic() - started
    return result
