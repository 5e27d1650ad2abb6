"""Store: the writer a gateway worker runs over its SQLite shard, on the gateway's commit thread."""
from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ...wire.frame import KIND_ACK
from ..records import REJECTIONS_KEPT, Health, Outcome, OutboxRows, StoreItem
from .batch import FrameBatch
from .commands import WriterCommands
from .connection import connect
from .declarations import stored_declarations
from .replay import replay_state
from .rollups import fold_recent, mark_folded
from .samples import SAMPLE_NAMES, SampleRows
from .shards import attach_shards, shard_path
from .transaction import write_transaction

log = logging.getLogger(__name__)

WRITER_CACHE_KIB = 32 * 1024
# samples_recent is moved into samples at the latest when it has this many rows, and on every
# housekeeping round (each second): a few seconds' worth at full rate.
INDEX_RECENT_ROWS = 50_000

# Errors that come from one frame's values, not from the database file: binding a value SQLite
# cannot hold, a constraint. A batch that fails with one of these is stored again frame by frame.
ITEM_ERRORS = (OverflowError, ValueError, TypeError, sqlite3.IntegrityError, sqlite3.InterfaceError,
               sqlite3.ProgrammingError, sqlite3.DataError)

class Store:
    """The writer side. Every method runs on the gateway's commit thread.

    `path` is the database given with --db; `shard` the worker's index: the store writes
    shard_path(path, shard) and reads the other shards (see the package's docstring)."""

    def __init__(self, path: Path | str, *, synchronous: str = "FULL", outbox: OutboxRows | None = None,
                 command_resend: float = 30.0, shard: int = 0) -> None:
        self.path = Path(path)
        self.shard = shard
        self.own_path = shard_path(path, shard)
        self.synchronous = synchronous
        self.outbox = outbox
        self._conn: sqlite3.Connection | None = None
        self._samples = SampleRows()
        self._recent_rows = 0  # rows this writer added to samples_recent since it last moved them
        self._recent_added = 0  # ... of which in the transaction under way
        self.schemas: list[str] = ["main"]  # this shard, then the others attached read-only
        self._commands = WriterCommands(command_resend)

    def open(self) -> None:
        self._conn = connect(self.own_path, synchronous=self.synchronous)
        try:
            # The writer's page cache holds the hot ends of the indexes (default: 2 MB).
            self._conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            self.schemas = ["main"] + attach_shards(self._conn, self.path, self.shard)
            self._commands.open(self.path, self.shard, self.synchronous)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._commands.close()
        self._samples.clear()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    def declarations(self) -> list[tuple[bytes, bytes]]:
        """(device id, payload) of every frame format v2 declaration stored, over every shard."""
        return list(stored_declarations(self.conn, self.schemas))

    def replay_state(self) -> Iterable[tuple[bytes, int, set[int]]]:
        """(key id, highest counter, counters stored within the replay window below it), over
        every shard."""
        return replay_state(self.conn, self.schemas)

    def commit(self, items: Sequence[StoreItem], counter_deltas: dict[str, int],
               health: Health | None) -> list[Outcome]:
        """Stores a batch in one transaction; raises (after rolling back) if it cannot.

        A frame the database refuses to hold (ITEM_ERRORS: a value it cannot bind, a constraint)
        must not take the other nodes' frames with it: the batch is then stored again one frame
        at a time, and that frame alone gets the outcome 'unstorable'. Anything else (disk full,
        I/O error, a locked file) is every frame's problem and raises."""
        conn = self.conn
        now = time.time()
        try:
            outcomes = self._commit_batch(conn, items, counter_deltas, health, now, each=False)
        except ITEM_ERRORS as exc:
            if not items:
                raise
            log.warning("a batch of %d frames held one the database refuses (%s: %s); storing them one "
                        "at a time", len(items), type(exc).__name__, exc)
            outcomes = self._commit_batch(conn, items, counter_deltas, health, now, each=True)
        self._commands.write_elsewhere(self.path)
        self._recent_rows += self._recent_added
        if self._recent_rows >= INDEX_RECENT_ROWS:
            self.index_recent()
        return outcomes

    def _commit_batch(self, conn: sqlite3.Connection, items: Sequence[StoreItem], counter_deltas: dict[str, int],
                      health: Health | None, now: float, each: bool) -> list[Outcome]:
        self._samples.begin()
        self._recent_added = 0
        self._commands.begin()
        try:
            with write_transaction(conn):
                if each:
                    outcomes = [self._store_alone(conn, item, now) for item in items]
                else:
                    outcomes = self._store_frames(conn, items, now) if items else []
                self._write_counters(conn, counter_deltas)
                if health is not None:
                    self._write_health(conn, health, now)
        except BaseException:
            self._samples.forget(0)
            raise
        return outcomes

    def _store_alone(self, conn: sqlite3.Connection, item: StoreItem, now: float) -> Outcome:
        """One frame in a savepoint: rolled back alone, and 'unstorable', if the database refuses it."""
        marks = (self._samples.mark(), self._commands.mark(), self._recent_added)
        conn.execute("SAVEPOINT frame")
        try:
            (outcome,) = self._store_frames(conn, [item], now)
        except ITEM_ERRORS as exc:
            conn.execute("ROLLBACK TO frame")
            conn.execute("RELEASE frame")
            self._samples.forget(marks[0])
            self._commands.restore(marks[1])
            self._recent_added = marks[2]
            f = item.frame
            log.warning("frame kid %s counter %d from %s cannot be stored (%s: %s); refused as unstorable",
                        f.kid.hex(), f.counter, item.source, type(exc).__name__, exc)
            return Outcome("unstorable")
        conn.execute("RELEASE frame")
        return outcome

    def index_recent(self) -> None:
        """Moves samples_recent into samples (and so into its index and the minute rollups), in
        one transaction."""
        with write_transaction(self.conn):
            self._move_recent(self.conn)

    def _move_recent(self, conn: sqlite3.Connection) -> None:
        # Every writer's rows go, not only this one's: with several workers, whoever moves takes all.
        # The rollups cover exactly what samples holds: the rows are folded in as they move.
        fold_recent(conn)
        conn.execute(f"INSERT INTO samples ({SAMPLE_NAMES}) SELECT {SAMPLE_NAMES} FROM samples_recent ORDER BY id")
        conn.execute("DELETE FROM samples_recent")
        mark_folded(conn)
        self._recent_rows = 0

    def _store_frames(self, conn: sqlite3.Connection, items: Sequence[StoreItem], now: float) -> list[Outcome]:
        batch = FrameBatch(conn, items, self.schemas, self._samples, self.outbox, now)
        open_commands = self._commands.open_devices(conn, now)
        outcomes: list[Outcome] = []
        for item in items:
            refused = batch.refused(item)
            if refused is not None:
                outcomes.append(Outcome(refused))
                continue
            records = batch.add(item)
            dev = item.frame.device.hex()
            if item.frame.kind == KIND_ACK:
                self._commands.answered(conn, dev, records, now)
            outcomes.append(self._stored(conn, dev, open_commands, now))
        self._recent_added += batch.write()
        return outcomes

    def _stored(self, conn: sqlite3.Connection, dev: str, open_commands: set[str], now: float) -> Outcome:
        """A stored frame's outcome, with the command to hand its device if one is waiting."""
        outcome = Outcome("stored")
        if dev in open_commands:
            found = self._commands.next_for(conn, dev, now)
            if found is None:
                open_commands.discard(dev)
            else:
                outcome.command_id, outcome.command = found
        return outcome

    @staticmethod
    def _write_counters(conn: sqlite3.Connection, deltas: dict[str, int]) -> None:
        if deltas:
            conn.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value=value+excluded.value",
                [(k, v) for k, v in deltas.items() if v])

    @staticmethod
    def _write_health(conn: sqlite3.Connection, h: Health, now: float) -> None:
        conn.execute(
            "INSERT INTO gateway (worker, pid, listen, started, heartbeat, stopped, batch_pending, exchanges, "
            "dedup_bytes) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (worker) DO UPDATE SET pid=excluded.pid, "
            "listen=excluded.listen, started=excluded.started, heartbeat=excluded.heartbeat, "
            "stopped=excluded.stopped, batch_pending=excluded.batch_pending, exchanges=excluded.exchanges, "
            "dedup_bytes=excluded.dedup_bytes",
            (h.worker, h.pid, h.listen, h.started, now, h.stopped, h.batch_pending, h.exchanges, h.dedup_bytes))

    @staticmethod
    def _write_rejections(conn: sqlite3.Connection, rejections: list[tuple]) -> None:
        if rejections:
            conn.executemany("INSERT INTO rejections (time, source, reason, detail, device) VALUES (?,?,?,?,?)",
                             rejections)
            conn.execute("DELETE FROM rejections WHERE id <= (SELECT max(id) FROM rejections) - ?",
                         (REJECTIONS_KEPT,))

    def housekeeping(self, counter_deltas: dict[str, int], health: Health) -> None:
        """Periodic: counters, heartbeat, commands whose time has passed marked expired, and the
        new samples moved into the index."""
        conn = self.conn
        now = time.time()
        with write_transaction(conn):
            self._write_counters(conn, counter_deltas)
            self._write_health(conn, health, now)
            self._commands.expire(conn, now)
            self._write_rejections(conn, health.rejections)
            self._move_recent(conn)
