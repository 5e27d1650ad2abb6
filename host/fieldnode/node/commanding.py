"""Authenticated commands to a node's actuators: counters, building, delivery over USB.

Each device has its own command counter on this host, kept beside the keystore and advanced
before a command is sent (a command that is lost spends its counter; one that is replayed is
refused by the node, which keeps the last counter it applied in NVS).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import serial

from ..wire.console import encode_console_line, frame_from_line, BadFrameLine
from ..infra.errors import FieldnodeError
from ..wire.frame import (KIND_ACK, KIND_COMMAND, Frame, FrameRejected, ReplayWindow, Verifier, build_frame,
                    device_base_name, parse_protected, split_envelope)
from .keystore import KeyEntry, Keystore
from .serialsource import open_port

if TYPE_CHECKING:
    from ..store.commandqueue import CommandInfo

# The node keeps the last counter it applied as an NVS i32 (firmware/lib/fnode/command.py
# _MAX_COUNTER): it refuses a larger one, so none is ever issued.
MAX_COMMAND_COUNTER = 2**31 - 1

def counters_path(keystore_path: Path) -> Path:
    return keystore_path.with_name(keystore_path.stem + ".command-counters.json")


def next_counter(path: Path, device: bytes, at_least: int = 1) -> int:
    """The device's next command counter from the file at path, and saved there; at_least: a
    counter known to be free (above every counter queued elsewhere for the device)."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        state = {}
    except ValueError:
        raise FieldnodeError(f"{path} is damaged: remove it only if you also re-provision the nodes "
                             "(their command counters would restart)") from None
    counter = max(int(state.get(device.hex(), 0)) + 1, at_least)
    if counter > MAX_COMMAND_COUNTER:
        raise FieldnodeError(f"the command counter for {device.hex()} in {path} is at {counter - 1}, the "
                             f"largest a node can keep ({MAX_COMMAND_COUNTER}): no command sent")
    state[device.hex()] = counter
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".counters-")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return counter


def parse_value(text: str) -> bool | float:
    lowered = text.lower()
    if lowered in ("on", "true"):
        return True
    if lowered in ("off", "false"):
        return False
    try:
        return float(text)
    except ValueError:
        raise FieldnodeError(f"value {text!r}: use on/off for a relay or a number 0..1 for a PWM output") from None


def find_node(store: Keystore, node: str) -> KeyEntry:
    devices = {e.device for e in store if e.name == node or e.device.hex() == node.lower()}
    if not devices:
        raise FieldnodeError(f"node {node!r} is not in {store.path} (see `fieldnode keys list`)")
    if len(devices) > 1:
        raise FieldnodeError(f"node name {node!r} matches several devices; use the device id")
    entry = store.current(devices.pop())
    if entry is None:
        raise FieldnodeError(f"node {node!r} has no valid key any more: provision it again")
    return entry


def build_command(entry: KeyEntry, counter: int, items: list[tuple[str, bool | float]],
                  ttl_s: float, now: float | None = None) -> tuple[bytes, float]:
    now = time.time() if now is None else now
    expires = now + ttl_s
    records: list[dict] = [{"n": name, "vb": value} if isinstance(value, bool) else {"n": name, "v": value}
                           for name, value in items]
    records.append({"n": "exp", "v": int(expires)})
    frame = build_frame(entry.key, entry.kid, entry.alg, counter, KIND_COMMAND,
                        device_base_name(entry.device), int(now), records)
    return frame, expires


def send_over_usb(port: str, entry: KeyEntry, frame: bytes, counter: int, timeout_s: float = 10.0,
                  names: dict[bytes, str] | None = None) -> Frame:
    """Writes the command as a console line and waits for the node's signed ack of it. The node
    on the port says who it is in every frame it prints (the key id starts with its device id)
    and refuses a command under another node's key id at once: either ends the wait with a
    message naming the node that is there, instead of a timeout."""
    verifier = Verifier(lambda kid: (entry.key, entry.alg) if kid[:6] == entry.device else None,
                        ReplayWindow(), accept_kinds=(KIND_ACK,))
    target = entry.name or entry.device.hex()
    refused = False
    link = open_port(port, timeout=0.2)
    try:
        link.reset_input_buffer()
        link.write(encode_console_line(frame))
        link.flush()
        deadline = time.monotonic() + timeout_s
        pending = b""
        while time.monotonic() < deadline:
            try:
                pending += link.read(1024)
            except serial.SerialException:
                raise FieldnodeError(f"{port} disconnected while waiting for the node's answer") from None
            *lines, pending = pending.split(b"\n")
            for line in lines:
                refused = refused or _REFUSED_KID in line
                try:
                    data = frame_from_line(line)
                except BadFrameLine:
                    continue
                if data is None:
                    continue
                device = _device_of(data)
                if device is not None and device != entry.device:
                    other = (names or {}).get(device) or "not in this keystore"
                    raise FieldnodeError(f"{port} is node {device.hex()} ({other}), not {target}: the command "
                                         f"was not applied; give the port of {target} (or use --db)")
                try:
                    ack = verifier.verify(data)
                except FrameRejected:
                    continue  # telemetry and other frames on the same console
                if ack.pack[0].get(2) == counter:
                    return ack
    finally:
        link.close()
    if refused:
        raise FieldnodeError(f"the node on {port} refused the command as unknown-kid: it is not {target}, or it "
                             "holds a key from another keystore; nothing was applied")
    raise FieldnodeError(f"no answer from the node on {port} within {timeout_s:.0f} s: is the fieldnode "
                         "application running (not stopped in the REPL) and is the node provisioned?")


# What the node logs for a command under a key id it does not hold (fnode.app handle_command).
_REFUSED_KID = b"command refused: unknown-kid"


def _device_of(data: bytes) -> bytes | None:
    try:
        return parse_protected(split_envelope(data)[0])[1][:6]
    except FrameRejected:
        return None


def ack_result(ack: Frame) -> tuple[str, str | None]:
    values = {r["n"]: r.get("vs", r.get("v")) for r in ack.records()}
    return str(values.get("result")), values.get("reason")


def wait_for_outcome(db_path: Path, command_id: int, poll_s: float = 0.25) -> CommandInfo:
    """The queued command once the node's ack has been stored (applied/refused) or it expired
    (list_commands reports a command past its expiry as expired, even before the gateway marks it)."""
    from ..store.commandqueue import list_commands

    while True:
        (info,) = list_commands(db_path, ids=[command_id])
        if info.state in ("applied", "refused", "expired"):
            return info
        time.sleep(poll_s)
