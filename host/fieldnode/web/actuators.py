"""A node's actuator states as the host knows them: the newest of the commands it applied
(from the queue) and the states its interlocks forced (event frames); a failsafe event after
them means the outputs went to their board-defined failsafe states."""
from __future__ import annotations

import time

from ..store.commandqueue import list_commands
from ..store.target import Target
from .commands import _sets
from .reader import Reader
from .series import events

FORCED_SUFFIX = ".forced"


def actuator_states(reader: Reader, db: Target, device: str) -> list[dict]:
    """[{actuator, value, time, by}], by actuator name; `by` says what set it."""
    states: dict[str, dict] = {}
    for info in list_commands(db, bytes.fromhex(device)):
        if info.state != "applied":
            continue
        for s in _sets(info.frame):
            _newer(states, s["actuator"], s["value"], info.result_at or info.created, f"command #{info.id}")
    failsafe_at = None
    for event in events(reader, device, 0.0, time.time() + 86400):
        if event["what"] == "failsafe":
            failsafe_at = max(failsafe_at or 0.0, event["time"])
        for rec in event["records"]:
            if rec["name"].endswith(FORCED_SUFFIX):
                _newer(states, rec["name"][:-len(FORCED_SUFFIX)], rec["value"], event["time"], "interlock")
    if failsafe_at is not None:
        for state in states.values():
            if state["time"] < failsafe_at:
                state.update(value=None, time=failsafe_at, by="failsafe")
    return sorted(states.values(), key=lambda s: s["actuator"])


def _newer(states: dict[str, dict], name: str, value: object, at: float, by: str) -> None:
    known = states.get(name)
    if known is None or at > known["time"]:
        states[name] = {"actuator": name, "value": value, "time": at, "by": by}
