"""The store as the page reads it: one interface, an implementation a engine.

    Reader          the questions the page asks (the fleet, the latest samples, rejections, the
                    feed's marks), each written once over `shards()` and the engine's Dialect
    SqliteReader    sqlite_reader.py: the gateway's file and its shards, read-only, WAL
    PgReader        pg_reader.py: one connection to the PostgreSQL store, autocommit, one
                    snapshot a question
    open_reader     the one --db names (engines imported only when chosen)

series.py and buckets.py ask their questions over the same `shards()` and `dialect`."""
from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store.target import PgTarget, Target
from .dialect import Dialect

# Records of boot, ack and event frames: shown on the node page, not as the fleet's readings.
NOT_READINGS = frozenset(("fw", "board", "reset", "schema", "ack", "result", "reason", "event", "lost",
                          "duration", "heap.free", "heap.low", "heap.block"))
TREND_POINTS = 20
ARRIVALS_CHUNK = 5000
_KID = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{4}\b")

Shards = list[tuple[int, Any]]  # (shard index, a connection whose execute() takes the dialect's SQL)


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


def open_reader(db: Target) -> Reader:
    """The reader of --db: a SQLite file (and its shards) or a PostgreSQL store. FieldnodeError in
    one line when it is missing or unreachable."""
    if isinstance(db, PgTarget):
        from .pg_reader import PgReader
        return PgReader(db)
    from .sqlite_reader import SqliteReader
    return SqliteReader(Path(db))


class Reader:
    """What an engine provides: `dialect`, `shards()` (every shard's connection, each in one read
    snapshot, for the length of a question), `close()`, and the newest samples of some series."""

    dialect: Dialect

    def shards(self) -> AbstractContextManager[Shards]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def newest(self, conn: Any, series: list[int], trend: int) -> dict[int, list[tuple]]:
        """series id -> its newest (time, value, string, bool, err) rows, up to `trend` of each."""
        raise NotImplementedError

    def _rows(self, conn: Any, sql: str, params: dict | None = None) -> Any:
        """The cursor of a query written with :name placeholders (iterable, fetchone, fetchall)."""
        return self.dialect.run(conn, sql, params)

    # -- the fleet -------------------------------------------------------------------------------

    def devices(self, only: set[str] | None = None) -> dict[str, dict]:
        """device hex -> its row (name, frames, counter, first/last seen, source), merged over shards."""
        out: dict[str, dict] = {}
        with self.shards() as shards:
            for _, conn in shards:
                for dev, name, frames, counter, first, last, source in self._rows(
                        conn, "SELECT device, name, frames, highest_counter, first_seen, last_seen, last_source "
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
                series = {sid: (dev, name, unit) for sid, dev, name, unit in
                          self._rows(conn, "SELECT id, device, name, unit FROM series") if dev in devices}
                for sid, rows in self.newest(conn, sorted(series), trend).items():
                    dev, name, unit = series[sid]
                    out[dev].setdefault(name, []).extend(Sample(*r, unit) for r in rows)
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
                if not self.dialect.has_table(conn, "rejections"):
                    continue  # a database no gateway of this release has written yet
                for t, source, reason, detail, device in self._rows(
                        conn, "SELECT time, source, reason, detail, device FROM rejections ORDER BY id DESC "
                        "LIMIT :limit", {"limit": limit}):
                    if not device:
                        found = _KID.search(detail)
                        device = found.group(1) if found else ""
                    rows.append({"time": t, "source": source, "reason": reason, "detail": detail, "device": device})
        rows.sort(key=lambda r: r["time"], reverse=True)
        return rows[:limit]

    def counters(self) -> dict[str, int]:
        """The gateway's counters, summed over shards (and, on PostgreSQL, over gateways)."""
        out: dict[str, int] = {}
        with self.shards() as shards:
            for _, conn in shards:
                for name, value in self._rows(conn, "SELECT name, sum(value) FROM counters GROUP BY name"):
                    out[name] = out.get(name, 0) + int(value)
        return out

    def arrivals(self, since: float, cap: int = 200_000) -> list[tuple[str, float]]:
        """(device, received) of the frames stored after `since`, newest first: frames are read
        newest id first, a chunk at a time, until one is older (or after `cap` of a shard)."""
        out = []
        with self.shards() as shards:
            for _, conn in shards:
                out.extend(self._arrivals_in(conn, since, cap))
        return out

    def _arrivals_in(self, conn: Any, since: float, cap: int) -> list[tuple[str, float]]:
        found: list[tuple[str, float]] = []
        params: dict = {"chunk": ARRIVALS_CHUNK}
        while True:
            older = "WHERE id < :before " if "before" in params else ""
            chunk = self._rows(conn, f"SELECT id, device, received FROM frames {older}ORDER BY id DESC LIMIT :chunk",
                               params).fetchall()
            for fid, dev, received in chunk:
                if received < since or len(found) >= cap:
                    return found
                found.append((dev, received))
                params["before"] = fid
            if len(chunk) < ARRIVALS_CHUNK:
                return found

    def heads(self) -> dict[int, tuple]:
        """What changes when a gateway writes: per shard, its highest frame id, its rejections
        (the highest id and how many), and the command queue (in shard 0: highest id, last change)."""
        out = {}
        with self.shards() as shards:
            for index, conn in shards:
                frames = self._rows(conn, "SELECT max(id) FROM frames").fetchone()[0] or 0
                rejected = (tuple(self._rows(conn, "SELECT max(id), count(*) FROM rejections").fetchone())
                            if self.dialect.has_table(conn, "rejections") else (0, 0))
                commands = (tuple(self._rows(
                    conn, "SELECT max(id), max(coalesce(result_at, sent_at, created)) FROM commands").fetchone())
                            if index == 0 else (0, 0))
                out[index] = (frames, rejected, commands)
        return out

    def frames_after(self, marks: dict[int, int]) -> tuple[list[tuple[str, float]], dict[int, int]]:
        """(device, received) of the frames stored after the marks (shard -> frame id); the new marks."""
        found: list[tuple[str, float]] = []
        new = dict(marks)
        with self.shards() as shards:
            for index, conn in shards:
                for fid, dev, received in self._rows(
                        conn, "SELECT id, device, received FROM frames WHERE id > :mark ORDER BY id",
                        {"mark": marks.get(index, 0)}):
                    found.append((dev, received))
                    new[index] = fid
        return found, new
