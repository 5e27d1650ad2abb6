"""Is a serial port usable: present, a character device, and not held by another program.

Checked for every port before any is touched, so a typo or a forgotten serial monitor stops the
whole run with nothing written. esptool and mpremote lock the ports they open (flock); a monitor
such as screen or minicom does not, so the holders are also looked up in /proc where there is one.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import serial

from ..infra.errors import FieldnodeError


def processes_holding(port: str) -> list[str]:
    """'pid (name)' of every process with the device open; empty where /proc is not readable."""
    target = os.path.realpath(port)
    holders = []
    proc = Path("/proc")
    if not proc.is_dir():
        return holders
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    name = (pid_dir / "comm").read_text().strip()
                    holders.append(f"pid {pid_dir.name} ({name})")
                    break
            except OSError:
                continue
    return holders


def check_port(port: str) -> None:
    try:
        mode = os.stat(port).st_mode
    except FileNotFoundError:
        raise FieldnodeError(f"port {port} does not exist: check the cable and the name "
                             f"(ls /dev/ttyUSB* /dev/ttyACM*)") from None
    except PermissionError:
        raise FieldnodeError(f"port {port}: permission denied (add your user to the dialout "
                             f"group)") from None
    if not stat.S_ISCHR(mode):
        raise FieldnodeError(f"{port} is not a serial device")
    holders = processes_holding(port)
    if holders:
        raise FieldnodeError(f"port {port} is busy: {', '.join(holders)} has it open; close that "
                             f"program (serial monitor, mpremote, another flash) and try again")
    probe = serial.Serial()
    probe.port = port
    probe.exclusive = True
    # Lines left inactive: toggling DTR/RTS on a dev board's auto-reset circuit resets the chip.
    probe.dtr = False
    probe.rts = False
    try:
        probe.open()
    except serial.SerialException as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise FieldnodeError(f"port {port} is busy: another program holds its lock (esptool, "
                                 f"mpremote or another fieldnode flash); wait for it or close it") from None
        raise FieldnodeError(f"port {port} cannot be opened: {text}") from None
    probe.close()


def check_ports(ports: list[str]) -> None:
    if not ports:
        raise FieldnodeError("no port given: pass --port DEVICE (repeat it to flash several nodes)")
    seen: dict[str, str] = {}
    for port in ports:
        real = os.path.realpath(port)
        if real in seen:
            raise FieldnodeError(f"port {port} is given twice (as {seen[real]} too)")
        seen[real] = port
    for port in ports:
        check_port(port)
