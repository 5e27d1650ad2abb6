"""The store's tests on either engine: a store made on SQLite (a file) or PostgreSQL (a database
of the test's own), and plain SQL to look at what it wrote (written with ? placeholders)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from fieldnode.store.backend import make_writer
from fieldnode.store.target import PgTarget, Target

ENGINES = ("sqlite", "postgresql")


class StoreDb:
    def __init__(self, engine: str, target: Target) -> None:
        self.engine = engine
        self.target = target

    @property
    def arg(self) -> str:
        """What --db takes for it."""
        return self.target.dsn if isinstance(self.target, PgTarget) else str(self.target)

    def writer(self, **kwargs):
        store = make_writer(self.target, **kwargs)
        store.open()
        return store

    def rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        if isinstance(self.target, PgTarget):
            import psycopg
            with psycopg.connect(self.target.dsn, autocommit=True) as conn:
                found = conn.execute(sql.replace("?", "%s"), args).fetchall()
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in found]
        with sqlite3.connect(self.target) as conn:
            return conn.execute(sql, args).fetchall()

    def value(self, sql: str, args: tuple = ()):
        ((value,),) = self.rows(sql, args)
        return value


def make_store_db(engine: str, tmp_path: Path, request) -> StoreDb:
    if engine == "sqlite":
        return StoreDb(engine, tmp_path / "gw.db")
    return StoreDb(engine, request.getfixturevalue("pg_db"))
