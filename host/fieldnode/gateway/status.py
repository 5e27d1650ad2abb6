"""The gateway's health as stored in its database, read while it runs (`fieldnode status`)."""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FieldnodeError
from .store import connect

# A worker is "running" if its heartbeat (written every second) is younger than this.
STALE_AFTER = 5.0


@dataclass
class Status:
    now: float
    workers: list[dict] = field(default_factory=list)      # worker, pid, listen, started, heartbeat, state
    counters: dict[str, int] = field(default_factory=dict)  # accepted, duplicate, rejected.<reason>, ...
    devices: list[dict] = field(default_factory=list)      # device, name, frames, highest_counter, last_seen
    outbox: int = 0                                         # readings waiting for the MQTT broker
    outbox_oldest: float | None = None
    commands: dict[str, int] = field(default_factory=dict)  # by state
    mqtt: dict | None = None                                # url, state, detail, published, updated

    @property
    def running(self) -> bool:
        return any(w["state"] == "running" for w in self.workers)

    @property
    def rejected(self) -> dict[str, int]:
        return {k.split(".", 1)[1]: v for k, v in self.counters.items() if k.startswith("rejected.")}

    def to_json(self) -> dict:
        return {
            "now": self.now, "running": self.running, "workers": self.workers, "counters": self.counters,
            "rejected": self.rejected, "devices": self.devices, "outbox": self.outbox,
            "outbox_oldest": self.outbox_oldest, "commands": self.commands, "mqtt": self.mqtt,
        }


def read_status(db_path: Path | str) -> Status:
    conn = connect(db_path, create=False)
    try:
        return _read(conn)
    except sqlite3.DatabaseError as exc:
        raise FieldnodeError(f"{db_path} is not a fieldnode gateway database ({exc}); pass the --db "
                             "the gateway uses") from None
    finally:
        conn.close()


def _read(conn: sqlite3.Connection) -> Status:
    now = time.time()
    st = Status(now)
    conn.execute("BEGIN")  # one snapshot for all the queries
    try:
        for worker, pid, listen, started, heartbeat, stopped, pending, exchanges in conn.execute(
                "SELECT worker, pid, listen, started, heartbeat, stopped, batch_pending, exchanges "
                "FROM gateway ORDER BY worker"):
            state = "stopped" if stopped else ("running" if now - heartbeat < STALE_AFTER else "not responding")
            st.workers.append({"worker": worker, "pid": pid, "listen": listen, "started": started,
                               "heartbeat": heartbeat, "stopped": stopped, "state": state,
                               "batch_pending": pending, "exchanges": exchanges})
        st.counters = dict(conn.execute("SELECT name, value FROM counters ORDER BY name"))
        for device, name, frames, highest, first, last, source, kind in conn.execute(
                "SELECT device, name, frames, highest_counter, first_seen, last_seen, last_source, last_kind "
                "FROM devices ORDER BY coalesce(nullif(name, ''), device)"):
            st.devices.append({"device": device, "name": name or "", "frames": frames,
                               "highest_counter": highest, "first_seen": first, "last_seen": last,
                               "last_source": source, "last_kind": kind})
        st.outbox, st.outbox_oldest = conn.execute("SELECT count(*), min(created) FROM outbox").fetchone()
        st.commands = dict(conn.execute(
            "SELECT CASE WHEN state IN ('pending','sent') AND expires<=? THEN 'expired' ELSE state END AS s, "
            "count(*) FROM commands GROUP BY s", (now,)))
        row = conn.execute("SELECT url, state, detail, published, updated FROM mqtt_state WHERE id=1").fetchone()
        if row:
            st.mqtt = dict(zip(("url", "state", "detail", "published", "updated"), row))
    finally:
        conn.execute("COMMIT")
    return st
