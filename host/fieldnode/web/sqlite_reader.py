"""The page's reader of a SQLite store: one read-only connection a shard, every question under one
lock (sqlite3 connections are not for concurrent use), each shard in one read transaction a
question. WAL lets it read beside the gateway writing."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..infra.errors import FieldnodeError
from ..store.sqlite.connection import connect
from ..store.sqlite.shards import shard_paths
from .dialect import SQLITE
from .reader import Reader, Shards


class SqliteReader(Reader):
    """Reads the database at `db` and its shards (gateway.shard1.db, ...), found again on every
    question, so a gateway started later with more workers is read whole."""

    dialect = SQLITE

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
    def shards(self) -> Iterator[Shards]:
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

    def newest(self, conn: sqlite3.Connection, series: list[int], trend: int) -> dict[int, list[tuple]]:
        wanted = set(series)
        out: dict[int, list[tuple]] = {}
        # samples_recent holds the last seconds only (moved every second): read whole, after samples.
        recent: dict[int, list[tuple]] = {}
        for row in conn.execute("SELECT series, time, value, string, bool, err FROM samples_recent ORDER BY id"):
            if row[0] in wanted:
                recent.setdefault(row[0], []).append(row[1:])
        for sid in series:
            rows = [*reversed(conn.execute(
                "SELECT time, value, string, bool, err FROM samples WHERE series=? ORDER BY time DESC LIMIT ?",
                (sid, trend)).fetchall()), *recent.get(sid, ())]
            if rows:
                out[sid] = rows
        return out
