"""The command queue: the contract between `fieldnode command` (and the MQTT command topic),
which queue signed command frames, and the gateway, which delivers them.

A command's life: 'pending' when queued; 'sent' when the gateway hands it to the node as the
payload of its answer to the node's next frame (sent again, same bytes, on a later frame if the
node has not answered within the gateway's command_resend, 30 s by default: a node applies a
command counter only once); 'applied' or 'refused' when the node's ack frame arrives; 'expired'
when its time passes undelivered or unanswered. See docs/gateway.md, "Downlink".

The rows are the back end's (store/sqlite/commands.py, store/postgres/commands.py); what a
command is, and the checks a frame passes before it is queued, are here, for every back end.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..infra.errors import FieldnodeError
from ..wire.frame import KIND_COMMAND, FrameRejected, parse_protected, split_envelope
from .target import PgTarget, Target, parse_db

COMMAND_STATES = ("pending", "sent", "applied", "refused", "expired")


@dataclass
class CommandInfo:
    id: int
    device: str
    counter: int
    state: str
    created: float
    expires: float
    attempts: int
    sent_at: float | None
    result_at: float | None
    reason: str | None
    frame: bytes = field(repr=False)


def command_counter(device: bytes, frame: bytes) -> int:
    """The counter of a signed command frame (kind 3) for device; FieldnodeError naming what is
    wrong when it is not one."""
    if len(device) != 6:
        raise FieldnodeError(f"device id must be 6 bytes, got {len(device)}")
    try:
        _, kid, counter, kind = parse_protected(split_envelope(frame)[0])
    except FrameRejected as exc:
        raise FieldnodeError(f"command frame is not a valid frame ({exc}); build it with the "
                             "device's current key") from None
    if kind != KIND_COMMAND:
        raise FieldnodeError(f"frame kind {kind} is not a command (3)")
    if kid[:6] != device:
        raise FieldnodeError(f"command frame's key id {kid.hex()} belongs to device {kid[:6].hex()}, "
                             f"not {device.hex()}")
    return counter


def _rows(db: Target | str):
    """(the engine's command rows module, the database) for --db (a str as --db takes it)."""
    target = parse_db(db) if isinstance(db, str) else db
    if isinstance(target, PgTarget):
        from .postgres import commands
    else:
        from .sqlite import commands
    return commands, target


def enqueue_command(db_path: Target | str, device: bytes, frame: bytes, expires: float) -> int:
    """Queues a signed command frame (kind 3) for device; returns the command's id. `expires` is
    Unix time: the command becomes 'expired' then if it is undelivered or unanswered."""
    counter = command_counter(device, frame)
    now = time.time()
    if expires <= now:
        raise FieldnodeError(f"expiry {expires:.0f} is in the past; give a time after now ({now:.0f})")
    rows, target = _rows(db_path)
    return rows.insert_command(target, device.hex(), counter, frame, now, expires)


def list_commands(db_path: Target | str, device: bytes | None = None, ids: Iterable[int] | None = None
                  ) -> list[CommandInfo]:
    """Commands, newest first, optionally for one device or some ids (for `fieldnode command`)."""
    engine, target = _rows(db_path)
    rows = engine.select_commands(target, time.time(), None if device is None else device.hex(), ids)
    return [CommandInfo(*row) for row in rows]
