"""One store interface, two engines: what the gateway and the commands ask of a store, and which
engine --db selects (a path: SQLite; a postgresql:// URI: PostgreSQL, see target.py).

The engine packages are imported only when chosen, so SQLite needs nothing installed and psycopg
is loaded only for a PostgreSQL --db."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from .records import Health, Outcome, OutboxRows, StoreItem
from .target import PgTarget, Target


class Writer(Protocol):
    """The gateway's writer (its commit thread calls every method)."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    def replay_state(self) -> Iterable[tuple[bytes, int, set[int]]]: ...
    def declarations(self) -> list[tuple[bytes, bytes]]: ...
    def commit(self, items: Sequence[StoreItem], counter_deltas: dict[str, int],
               health: Health | None) -> list[Outcome]: ...
    def housekeeping(self, counter_deltas: dict[str, int], health: Health) -> None: ...
    def index_recent(self) -> None: ...


class TagReader(Protocol):
    """The gateway's event loop asks it for a stored frame's tag (2.03 or a replay)."""

    def stored_tag(self, kid: bytes, counter: int) -> bytes | None: ...
    def close(self) -> None: ...


class Lock(Protocol):
    def acquire(self) -> object: ...
    def release(self) -> None: ...


def make_writer(db: Target, *, synchronous: str = "FULL", outbox: OutboxRows | None = None,
                command_resend: float = 30.0, shard: int = 0, backoff: tuple[float, float] = (0.5, 30.0)) -> Writer:
    if isinstance(db, PgTarget):
        from .postgres.writer import Store as PgStore
        return PgStore(db, synchronous=synchronous, outbox=outbox, command_resend=command_resend, shard=shard,
                       backoff_min=backoff[0], backoff_max=backoff[1])
    from .sqlite.writer import Store
    return Store(db, synchronous=synchronous, outbox=outbox, command_resend=command_resend, shard=shard)


def writer_lock(db: Target, shard: int) -> Lock:
    """SQLite: one gateway a file (gateway/writerlock.py). PostgreSQL: none, many gateways share it."""
    if isinstance(db, PgTarget):
        return _NoLock()
    from ..gateway.writerlock import WriterLock
    from .sqlite.shards import shard_path
    return WriterLock(shard_path(db, shard))


def prepare_workers(db: Target, workers: int) -> None:
    """Whatever N workers need before they start: SQLite's shard files; nothing on PostgreSQL."""
    if not isinstance(db, PgTarget) and workers > 1:
        from .sqlite.shards import create_shards
        create_shards(db, workers)


def prepare_store(db: Target) -> None:
    """The store's tables made before any writer opens it, for a reader started beside the
    gateway (its web page) that reads from the first moment."""
    if isinstance(db, PgTarget):
        from .postgres.connection import connect as pg_connect
        pg_connect(db).close()
        return
    from .sqlite.connection import connect
    connect(db).close()


def tag_reader(db: Target, shard: int) -> TagReader:
    if isinstance(db, PgTarget):
        from .postgres.readers import PgTagReader
        return PgTagReader(db)
    return _SqliteTagReader(Path(db), shard)


class _NoLock:
    def acquire(self) -> _NoLock:
        return self

    def release(self) -> None:
        pass


class _SqliteTagReader:
    """A connection to the worker's shard with the other shards attached."""

    def __init__(self, db: Path, shard: int) -> None:
        from .sqlite.connection import connect
        from .sqlite.shards import attach_shards, shard_path
        self._conn = connect(shard_path(db, shard))
        self._schemas = ["main"] + attach_shards(self._conn, db, shard)

    def stored_tag(self, kid: bytes, counter: int) -> bytes | None:
        from .sqlite.replay import stored_tag
        return stored_tag(self._conn, kid, counter, self._schemas)

    def close(self) -> None:
        self._conn.close()
