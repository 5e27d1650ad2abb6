"""The gateway's health as stored in its database, read while it runs (`fieldnode status`)."""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..infra.errors import FieldnodeError
from ..store.sqlite.connection import connect
from ..store.sqlite.shards import shard_paths
from ..store.target import PgTarget, Target, parse_db

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


def read_status(db_path: Target | str) -> Status:
    """The gateway's state across its shards (one database file per worker, see store/sqlite/shards.py),
    or every gateway's that writes a PostgreSQL database."""
    st = Status(time.time())
    if isinstance(db_path, str):
        db_path = parse_db(db_path)
    if isinstance(db_path, PgTarget):
        from ..store.postgres.status import read_into
        read_into(db_path, st, STALE_AFTER)
        return st
    # Shard 0 named even when missing, so that connect() gives the clear error for it.
    for index, path in {0: Path(db_path), **shard_paths(db_path)}.items():
        conn = connect(path, create=False)
        try:
            _read(conn, st, commands=index == 0)
        except sqlite3.DatabaseError as exc:
            raise FieldnodeError(f"{path} is not a fieldnode gateway database ({exc}); pass the --db "
                                 "the gateway uses") from None
        finally:
            conn.close()
    st.workers.sort(key=lambda w: w["worker"])
    st.counters = dict(sorted(st.counters.items()))
    st.devices.sort(key=lambda d: d["name"] or d["device"])
    return st


def _read(conn: sqlite3.Connection, st: Status, *, commands: bool) -> None:
    """Adds one shard's state to st. A device stored by several shards (runs with different
    numbers of workers) is merged: its frames added up, the rest from its latest frame."""
    now = st.now
    conn.execute("BEGIN")  # one snapshot for all the queries
    try:
        # dedup_bytes came within schema 3: a database no gateway of this release has opened yet lacks it.
        dedup = "dedup_bytes" if "dedup_bytes" in {r[1] for r in conn.execute("PRAGMA table_info(gateway)")} else "0"
        for worker, pid, listen, started, heartbeat, stopped, pending, exchanges, dedup_bytes in conn.execute(
                "SELECT worker, pid, listen, started, heartbeat, stopped, batch_pending, exchanges, "
                f"{dedup} FROM gateway ORDER BY worker"):
            state = "stopped" if stopped else ("running" if now - heartbeat < STALE_AFTER else "not responding")
            row = {"worker": worker, "pid": pid, "listen": listen, "started": started,
                   "heartbeat": heartbeat, "stopped": stopped, "state": state,
                   "batch_pending": pending, "exchanges": exchanges, "dedup_bytes": dedup_bytes}
            # A row for the same worker in another shard is from an older run: the newer one counts.
            same = next((w for w in st.workers if w["worker"] == worker), None)
            if same is None:
                st.workers.append(row)
            elif heartbeat > same["heartbeat"]:
                same.update(row)
        for name, value in conn.execute("SELECT name, value FROM counters"):
            st.counters[name] = st.counters.get(name, 0) + value
        by_device = {d["device"]: d for d in st.devices}
        for device, name, frames, highest, first, last, source, kind in conn.execute(
                "SELECT device, name, frames, highest_counter, first_seen, last_seen, last_source, last_kind "
                "FROM devices"):
            row = {"device": device, "name": name or "", "frames": frames, "highest_counter": highest,
                   "first_seen": first, "last_seen": last, "last_source": source, "last_kind": kind}
            seen = by_device.get(device)
            if seen is None:
                st.devices.append(row)
                by_device[device] = row
                continue
            row["frames"] += seen["frames"]
            row["first_seen"] = min(first, seen["first_seen"])
            if last < seen["last_seen"]:
                row.update({k: seen[k] for k in ("name", "highest_counter", "last_seen", "last_source", "last_kind")})
            seen.update(row)
        _read_heap(conn, by_device)
        count, oldest = conn.execute("SELECT count(*), min(created) FROM outbox").fetchone()
        st.outbox += count
        if oldest is not None:
            st.outbox_oldest = oldest if st.outbox_oldest is None else min(oldest, st.outbox_oldest)
        if commands:
            st.commands = dict(conn.execute(
                "SELECT CASE WHEN state IN ('pending','sent') AND expires<=? THEN 'expired' ELSE state END AS s, "
                "count(*) FROM commands GROUP BY s", (now,)))
        row = conn.execute("SELECT url, state, detail, published, updated FROM mqtt_state WHERE id=1").fetchone()
        if row:
            _merge_mqtt(st, dict(zip(("url", "state", "detail", "published", "updated"), row, strict=True)))
    finally:
        conn.execute("COMMIT")


HEAP_READINGS = ("heap.free", "heap.low", "heap.block")  # the node's boot and health frames (docs/firmware.md)


def _read_heap(conn: sqlite3.Connection, by_device: dict[str, dict]) -> None:
    """Each device's latest heap readings into its row: "heap": {"free", "low", "block": bytes,
    "time": of the newest}. Per series the newest sample, from the unindexed recent table first,
    else through the (series, time) index; across shards the newer one wins."""
    marks = ",".join("?" * len(HEAP_READINGS))
    for sid, device, name in conn.execute(f"SELECT id, device, name FROM series WHERE name IN ({marks})",
                                          HEAP_READINGS).fetchall():
        row = (conn.execute("SELECT value, time FROM samples_recent WHERE series=? ORDER BY id DESC LIMIT 1",
                            (sid,)).fetchone()
               or conn.execute("SELECT value, time FROM samples WHERE series=? ORDER BY time DESC LIMIT 1",
                               (sid,)).fetchone())
        target = by_device.get(device)
        if row is None or row[0] is None or target is None:
            continue
        heap = target.setdefault("heap", {"time": row[1]})
        key = name.split(".", 1)[1]
        if key not in heap or row[1] >= heap["time"]:
            heap[key] = int(row[0])
            heap["time"] = max(heap["time"], row[1])


def _merge_mqtt(st: Status, shard: dict) -> None:
    """One publisher per worker: the messages they published add up, and a publisher that is not
    connected is the state shown (the others' readings flow, its own wait)."""
    if st.mqtt is None:
        st.mqtt = shard
        return
    published = st.mqtt["published"] + shard["published"]
    updated = max(st.mqtt["updated"], shard["updated"])
    if st.mqtt["state"] == "connected" and shard["state"] != "connected":
        st.mqtt = shard
    st.mqtt["published"], st.mqtt["updated"] = published, updated
