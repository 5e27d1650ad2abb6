"""The Commands view: the queue with each command's state and the node's answer, and queuing a
command from the page, through the same signing and checks as `fieldnode command --db`."""
from __future__ import annotations

import math
from pathlib import Path

import cbor2

from ..infra.errors import FieldnodeError
from ..node.commanding import build_command, counters_path, find_node, next_counter, parse_value
from ..node.keystore import Keystore
from ..store.commandqueue import CommandInfo, enqueue_command, list_commands
from ..store.target import Target
from ..wire.frame import SENML_N, SENML_V, SENML_VB, split_envelope

MAX_TTL_S = 24 * 3600.0


def command_rows(db: Target, limit: int = 200) -> list[dict]:
    """The newest commands, newest first, with what each one sets."""
    return [_row(info) for info in list_commands(db)[:limit]]


def _row(info: CommandInfo) -> dict:
    return {"id": info.id, "device": info.device, "counter": info.counter, "state": info.state,
            "created": info.created, "expires": info.expires, "attempts": info.attempts,
            "sent_at": info.sent_at, "result_at": info.result_at, "reason": info.reason,
            "sets": _sets(info.frame)}


def _sets(frame: bytes) -> list[dict]:
    """The actuator settings a command frame carries (its records but the expiry)."""
    try:
        records = cbor2.loads(split_envelope(frame)[1])
    except Exception:  # a row the page cannot read still lists, without its settings
        return []
    out = []
    for rec in records if isinstance(records, list) else []:
        name = rec.get(SENML_N) if isinstance(rec, dict) else None
        if name is None or name == "exp":
            continue
        out.append({"actuator": str(name), "value": rec.get(SENML_VB, rec.get(SENML_V))})
    return out


def queue_from_page(db: Target, keys_path: Path, node: str, actuator: str, value: str, ttl: float) -> dict:
    """Signs and queues a command as `fieldnode command NODE ACTUATOR VALUE --db DB --ttl TTL`
    does: the node's current key, this host's next command counter for it, an expiry. Returns
    {"id", "device"}; FieldnodeError naming what is wrong otherwise."""
    if not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or not 0 < ttl <= MAX_TTL_S:
        raise FieldnodeError(f"ttl {ttl!r}: a number of seconds, above 0 and at most {MAX_TTL_S:.0f}")
    if not actuator or not isinstance(actuator, str) or len(actuator) > 64:
        raise FieldnodeError("actuator: the name of one of the node's actuators")
    store = Keystore.load(keys_path, must_exist=True)
    entry = find_node(store, str(node))
    parsed = parse_value(str(value))
    counter = next_counter(counters_path(store.path), entry.device)
    frame, expires = build_command(entry, counter, [(actuator, parsed)], ttl)
    command_id = enqueue_command(db, entry.device, frame, expires)
    return {"id": command_id, "device": entry.device.hex()}
