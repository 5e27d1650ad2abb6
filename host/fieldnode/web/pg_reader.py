"""The page's reader of a PostgreSQL store: one autocommit connection under a lock (the page asks
a handful of questions a second; the live feed one poll for every open page), each question a
read-only REPEATABLE READ transaction, so it sees one snapshot as SQLite's readers do. A lost
connection is one error a question (503 on the page) and is opened again by the next one.

Several gateways draw frame ids from one sequence and commit in any order, so a frame id below
the highest one seen may still appear: the feed's marks keep such gaps for a while and look at
them again (`frames_after`)."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from ..infra.errors import FieldnodeError
from ..store.postgres.connection import connect, first_line
from ..store.target import PgTarget
from .dialect import POSTGRES
from .reader import Reader, Shards

# How long a frame id skipped by a commit may still arrive from another gateway's transaction
# (a batch commits in milliseconds; a rolled-back batch leaves its ids unused for good).
GAP_WAIT_S = 30.0
MAX_GAPS = 10_000

_NEWEST = ("SELECT r.id, s.time, s.value, s.string, s.bool, s.err FROM unnest(%s::bigint[]) AS r (id) "
           "CROSS JOIN LATERAL (SELECT time, value, string, bool, err FROM samples WHERE series = r.id "
           "ORDER BY time DESC LIMIT %s) AS s")


class PgReader(Reader):
    dialect = POSTGRES

    def __init__(self, target: PgTarget) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = self._connect()  # a wrong --db is one clear line at start
        self._gaps: dict[int, float] = {}  # frame id -> time.monotonic() it was found missing

    def _connect(self) -> psycopg.Connection:
        return connect(self.target, create=False, application="fieldnode-web")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None

    @contextmanager
    def shards(self) -> Iterator[Shards]:
        """The one "shard" (index 0) in a read-only snapshot, under the lock."""
        with self._lock:
            if self._conn is None or self._conn.broken or self._conn.closed:
                self._conn = None
                self._conn = self._connect()
            conn = self._conn
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    yield [(0, conn)]
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    conn.close()
                    self._conn = None
                raise FieldnodeError(f"PostgreSQL {self.target}: {first_line(exc)}") from None

    def newest(self, conn: psycopg.Connection, series: list[int], trend: int) -> dict[int, list[tuple]]:
        out: dict[int, list[tuple]] = {}
        if not series:
            return out
        for sid, *row in conn.execute(_NEWEST, (series, trend)):
            out.setdefault(sid, []).append(tuple(row))
        for rows in out.values():
            rows.reverse()  # oldest first
        return out

    def frames_after(self, marks: dict[int, int]) -> tuple[list[tuple[str, float]], dict[int, int]]:
        """The frames after the mark, and those of ids skipped earlier that have committed since."""
        mark = marks.get(0, 0)
        now = time.monotonic()
        self._gaps = {fid: at for fid, at in self._gaps.items() if now - at < GAP_WAIT_S}
        with self.shards() as ((_, conn),):
            late = (conn.execute("SELECT id, device, received FROM frames WHERE id = ANY(%s)",
                                 (sorted(self._gaps),)).fetchall() if self._gaps else [])
            rows = conn.execute("SELECT id, device, received FROM frames WHERE id > %s ORDER BY id",
                                (mark,)).fetchall()
        for fid, _, _ in late:
            self._gaps.pop(fid, None)
        highest = mark
        for fid, _, _ in rows:
            if len(self._gaps) + fid - highest - 1 <= MAX_GAPS:
                self._gaps.update(dict.fromkeys(range(highest + 1, fid), now))
            highest = fid
        return [(dev, received) for _, dev, received in late + rows], {**marks, 0: highest}
