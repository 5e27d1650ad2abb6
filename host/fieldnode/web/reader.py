"""The gateway's database as the page reads it: one read-only connection a shard, every query
under one lock (sqlite3 connections are not for concurrent use), one snapshot a question."""
from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..infra.errors import FieldnodeError
from ..store.sqlite.connection import connect
from ..store.sqlite.shards import shard_paths

# Records of boot, ack and event frames: shown on the node page, not as the fleet's readings.
NOT_READINGS = frozenset(("fw", "board", "reset", "schema", "ack", "result", "reason", "event", "lost",
                          "duration", "heap.free", "heap.low", "heap.block"))
TREND_POINTS = 20
_KID = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{4}\b")


@dataclass
class Sample:
    time: float
    value: float | None
    string: str | None
    boolean: int | None
    err: str | None
    unit: str

    def to_json(self) -> dict:
        out: dict = {"t": self.time, "u": self.unit}
        if self.value is not None:
            out["v"] = self.value
        elif self.string is not None:
            out["s"] = self.string
        elif self.boolean is not None:
            out["b"] = bool(self.boolean)
        else:
            out["err"] = self.err
        return out


class Reader:
    """Reads the database at `db` and its shards (gateway.shard1.db, ...), found again on every
    question, so a gateway started later with more workers is read whole."""

    def __init__(self, db: Path | str) -> None:
        self.db = Path(db)
        self._conns: dict[Path, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        connect(self.db, create=False).close()  # a wrong --db is one clear line at start

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()

    @contextmanager
    def shards(self) -> Iterator[list[tuple[int, sqlite3.Connection]]]:
        """(index, connection) of every shard, each in a read transaction, under the lock."""
        with self._lock:
            out = []
            for index, path in shard_paths(self.db).items():
                conn = self._conns.get(path)
                if conn is None:
                    try:
                        conn = connect(path, create=False)
                    except FieldnodeError:
                        continue  # removed meanwhile
                    conn.execute("PRAGMA query_only=1")
                    self._conns[path] = conn
                out.append((index, conn))
            for _, conn in out:
                conn.execute("BEGIN")
            try:
                yield out
            finally:
                for _, conn in out:
                    conn.execute("COMMIT")

    # -- the fleet -------------------------------------------------------------------------------

    def devices(self, only: set[str] | None = None) -> dict[str, dict]:
        """device hex -> its row (name, frames, counter, first/last seen, source), merged over shards."""
        out: dict[str, dict] = {}
        with self.shards() as shards:
            for _, conn in shards:
                for dev, name, frames, counter, first, last, source in conn.execute(
                        "SELECT device, name, frames, highest_counter, first_seen, last_seen, last_source "
                        "FROM devices"):
                    if only is not None and dev not in only:
                        continue
                    row = {"device": dev, "name": name or "", "frames": frames, "counter": counter,
                           "first_seen": first, "last_seen": last, "source": source or ""}
                    seen = out.get(dev)
                    if seen is None:
                        out[dev] = row
                    else:
                        frames_total = seen["frames"] + frames
                        if last > seen["last_seen"]:
                            seen.update(row)
                        seen["frames"] = frames_total
        return out

    def latest(self, devices: set[str], trend: int = TREND_POINTS) -> dict[str, dict[str, list[Sample]]]:
        """device -> series name -> its newest samples (up to `trend`, oldest first)."""
        out: dict[str, dict[str, list[Sample]]] = {d: {} for d in devices}
        with self.shards() as shards:
            for _, conn in shards:
                series = [(sid, dev, name, unit) for sid, dev, name, unit in
                          conn.execute("SELECT id, device, name, unit FROM series") if dev in devices]
                recent: dict[int, list[tuple]] = {}
                # samples_recent holds the last seconds only (moved every second): read whole.
                for row in conn.execute(
                        "SELECT series, time, value, string, bool, err FROM samples_recent ORDER BY id"):
                    recent.setdefault(row[0], []).append(row[1:])
                for sid, dev, name, unit in series:
                    rows = [*reversed(conn.execute(
                        "SELECT time, value, string, bool, err FROM samples WHERE series=? ORDER BY time DESC LIMIT ?",
                        (sid, trend)).fetchall()), *recent.get(sid, ())]
                    if rows:
                        merged = out[dev].setdefault(name, [])
                        merged.extend(Sample(*r, unit) for r in rows)
        for by_name in out.values():
            for name, samples in by_name.items():
                samples.sort(key=lambda s: s.time)
                by_name[name] = samples[-trend:]
        return out

    def rejections(self, limit: int = 1000) -> list[dict]:
        """The newest refused datagrams over every shard, newest first; the device is the one the
        frame's key id names when the reason's detail carries it (bad-mac, unknown-kid, replay)."""
        rows: list[dict] = []
        with self.shards() as shards:
            for _, conn in shards:
                if not _has_table(conn, "rejections"):
                    continue  # a database no gateway of this release has written yet
                for t, source, reason, detail, device in conn.execute(
                        "SELECT time, source, reason, detail, device FROM rejections ORDER BY id DESC LIMIT ?",
                        (limit,)):
                    if not device:
                        found = _KID.search(detail)
                        device = found.group(1) if found else ""
                    rows.append({"time": t, "source": source, "reason": reason, "detail": detail, "device": device})
        rows.sort(key=lambda r: r["time"], reverse=True)
        return rows[:limit]

    def counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.shards() as shards:
            for _, conn in shards:
                for name, value in conn.execute("SELECT name, value FROM counters"):
                    out[name] = out.get(name, 0) + value
        return out

    def arrivals(self, since: float, cap: int = 200_000) -> list[tuple[str, float]]:
        """(device, received) of the frames stored after `since`, newest first: frames rows are in
        commit order, so the scan stops at the first older one (or after `cap` rows)."""
        out = []
        with self.shards() as shards:
            for _, conn in shards:
                rows = conn.execute("SELECT device, received FROM frames ORDER BY id DESC")
                for n, (dev, received) in enumerate(rows):
                    if received < since or n >= cap:
                        break
                    out.append((dev, received))
        return out

    def heads(self) -> dict[int, tuple]:
        """What changes when the gateway writes: per shard, its highest frame, rejection and command ids."""
        out = {}
        with self.shards() as shards:
            for index, conn in shards:
                frames = conn.execute("SELECT max(id) FROM frames").fetchone()[0] or 0
                rejected = (conn.execute("SELECT max(id) FROM rejections").fetchone()[0] or 0
                            if _has_table(conn, "rejections") else 0)
                commands = conn.execute("SELECT max(id), max(coalesce(result_at, sent_at, created)) FROM commands"
                                        ).fetchone() if index == 0 else (0, 0)
                out[index] = (frames, rejected, tuple(commands))
        return out

    def frames_after(self, marks: dict[int, int]) -> tuple[list[tuple[str, float]], dict[int, int]]:
        """(device, received) of the frames stored after the marks (shard -> frame id); the new marks."""
        found: list[tuple[str, float]] = []
        new = dict(marks)
        with self.shards() as shards:
            for index, conn in shards:
                for fid, dev, received in conn.execute(
                        "SELECT id, device, received FROM frames WHERE id > ? ORDER BY id", (marks.get(index, 0),)):
                    found.append((dev, received))
                    new[index] = fid
        return found, new


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None
