"""Store: the writer a gateway runs over a PostgreSQL database, on the gateway's commit thread.

Any number of gateways (machines, processes) write the same database: the replay window and
the command queue are rows they share (replay.py, commands.py); each gateway's counters and
health are rows of its own. A lost connection makes every batch fail at once (StoreUnavailable:
the gateway answers 5.03 and the nodes keep their frames) until a reconnection, tried with
exponential backoff between `backoff_min` and `backoff_max` seconds, succeeds. The outage is
logged when it starts and when it ends, and kept in the gateway's health row for `status`."""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Sequence

import psycopg
from psycopg import pq

from ...infra.errors import FieldnodeError
from ..records import REJECTIONS_KEPT, Health, Outcome, OutboxRows, StoreItem, StoreUnavailable
from ..target import PgTarget
from .batch import SeriesIds, claim_counters, write_rows
from .commands import WriterCommands
from .connection import connect
from .declarations import insert_declarations, stored_declarations
from .replay import replay_state

log = logging.getLogger(__name__)

# Errors that come from one frame's values (a value PostgreSQL cannot hold, a constraint): the
# batch is stored again frame by frame, and that frame alone is 'unstorable'.
ITEM_ERRORS = (OverflowError, ValueError, TypeError, psycopg.DataError, psycopg.IntegrityError)
# Two gateways' batches may still deadlock on rows this one does not order (commands): retried.
RETRIES = 3


class Store:
    """The writer side over PostgreSQL; the same methods as the SQLite Store."""

    def __init__(self, target: PgTarget, *, synchronous: str = "FULL", outbox: OutboxRows | None = None,
                 command_resend: float = 30.0, shard: int = 0, backoff_min: float = 0.5,
                 backoff_max: float = 30.0) -> None:
        self.target = target
        self.shard = shard
        self.synchronous = synchronous
        self.outbox = outbox
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.identity = f"{socket.gethostname()}/{os.getpid()}/w{shard}"  # this writer's counter rows
        self._conn: psycopg.Connection | None = None
        self._series = SeriesIds()
        self._commands = WriterCommands(command_resend)
        self._lost_at: float | None = None  # time.time() of the outage under way
        self._why = ""
        self._retry_at = 0.0  # time.monotonic() of the next reconnection attempt
        self._backoff = 0.0
        self.outages = 0
        self.outage_detail = ""

    # -- connection ------------------------------------------------------------------------------

    def open(self) -> None:
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection:
        conn = connect(self.target, application=f"fieldnode-gateway-w{self.shard}")
        # FULL: a commit is on the server's disk before the node is answered; NORMAL may lose the
        # last acknowledged frames if the server crashes (never corrupts).
        conn.execute("SELECT set_config('synchronous_commit', %s, false)",
                     ("on" if self.synchronous == "FULL" else "off",))
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._series.forget()

    @property
    def state(self) -> str:
        """'connected', or since when and why not."""
        if self._lost_at is None:
            return "connected"
        return f"unavailable since {time.strftime('%H:%M:%S', time.localtime(self._lost_at))} ({self._why})"

    def _connection(self) -> psycopg.Connection:
        """The connection, reconnected if it was lost and the backoff has passed; else
        StoreUnavailable at once (the nodes retry; the gateway must not wait here)."""
        if self._conn is not None and not self._conn.broken and not self._conn.closed:
            return self._conn
        if self._lost_at is None:
            self._lost(RuntimeError("the connection is closed"))
        if time.monotonic() < self._retry_at:
            raise StoreUnavailable(f"PostgreSQL {self.target} unreachable ({self._why})")
        try:
            conn = self._connect()
        except (FieldnodeError, psycopg.Error) as exc:
            self._backoff = min(max(self._backoff * 2, self.backoff_min), self.backoff_max)
            self._retry_at = time.monotonic() + self._backoff
            self._why = str(exc).split(": ", 1)[-1][:200]
            log.warning("PostgreSQL %s still unreachable; next attempt in %.1f s", self.target, self._backoff)
            raise StoreUnavailable(f"PostgreSQL {self.target} unreachable ({self._why})") from None
        if self._conn is not None:
            self._conn.close()
        self._conn = conn
        self._series.forget()
        lasted = time.time() - self._lost_at
        self.outage_detail = (f"lost {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self._lost_at))} "
                              f"for {lasted:.1f} s ({self._why})")
        log.warning("PostgreSQL %s reconnected after %.1f s; acknowledging frames again", self.target, lasted)
        self._lost_at, self._backoff = None, 0.0
        return conn

    def _lost(self, exc: BaseException) -> None:
        self._lost_at = time.time()
        self._why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        self.outages += 1
        self._backoff = self.backoff_min
        self._retry_at = time.monotonic() + self._backoff
        log.error("PostgreSQL %s lost (%s): frames are not acknowledged until it is back; reconnecting "
                  "with backoff (%.1f s to %.0f s)", self.target, self._why, self.backoff_min, self.backoff_max)

    def _unavailable(self, conn: psycopg.Connection, exc: psycopg.Error) -> BaseException:
        """What a failed statement means: exc itself when the connection is sound (a lock timeout,
        a cancelled statement); else the connection is dropped and StoreUnavailable. A server
        that goes away in the middle of a pipelined executemany can leave a connection that
        psycopg does not call broken but that takes no statement any more."""
        sound = (not conn.broken and not conn.closed and conn.pgconn.status == pq.ConnStatus.OK
                 and conn.pgconn.pipeline_status == pq.PipelineStatus.OFF)
        if sound and not isinstance(exc, psycopg.InterfaceError):
            return exc
        conn.close()
        self._lost(exc)
        return StoreUnavailable(f"PostgreSQL {self.target} lost ({self._why})")

    # -- the writer's interface ------------------------------------------------------------------

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    def replay_state(self) -> Iterable[tuple[bytes, int, set[int]]]:
        return list(replay_state(self.conn))

    def declarations(self) -> list[tuple[bytes, bytes]]:
        """(device id, payload) of every frame format v2 declaration stored, by any gateway."""
        return stored_declarations(self.conn)

    def commit(self, items: Sequence[StoreItem], counter_deltas: dict[str, int],
               health: Health | None) -> list[Outcome]:
        """Stores a batch in one transaction; raises (after rolling back) if it cannot:
        StoreUnavailable when the database is out of reach."""
        conn = self._connection()
        now = time.time()
        for attempt in range(RETRIES):
            try:
                return self._commit_or_split(conn, items, counter_deltas, health, now)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                if attempt == RETRIES - 1:
                    raise
                log.info("batch of %d frames retried after %s", len(items), type(exc).__name__)
            except psycopg.Error as exc:
                raise self._unavailable(conn, exc) from None
        raise AssertionError("unreachable")

    def _commit_or_split(self, conn: psycopg.Connection, items: Sequence[StoreItem], counter_deltas: dict[str, int],
                         health: Health | None, now: float) -> list[Outcome]:
        try:
            return self._commit_batch(conn, items, counter_deltas, health, now, each=False)
        except ITEM_ERRORS as exc:
            if not items or conn.broken:
                raise
            log.warning("a batch of %d frames held one the database refuses (%s: %s); storing them one "
                        "at a time", len(items), type(exc).__name__, exc)
            return self._commit_batch(conn, items, counter_deltas, health, now, each=True)

    def _commit_batch(self, conn: psycopg.Connection, items: Sequence[StoreItem], counter_deltas: dict[str, int],
                      health: Health | None, now: float, each: bool) -> list[Outcome]:
        self._series.begin()
        try:
            with conn.transaction():
                if each:
                    outcomes = [self._store_alone(conn, item, now) for item in items]
                else:
                    outcomes = self._store_frames(conn, items, now) if items else []
                self._write_counters(conn, counter_deltas)
                if health is not None:
                    self._write_health(conn, health, now)
        except BaseException:
            self._series.forget()
            raise
        return outcomes

    def _store_alone(self, conn: psycopg.Connection, item: StoreItem, now: float) -> Outcome:
        """One frame in a savepoint: rolled back alone, and 'unstorable', if the database refuses it."""
        mark = self._series.mark()
        try:
            with conn.transaction():
                (outcome,) = self._store_frames(conn, [item], now)
        except ITEM_ERRORS as exc:
            self._series.forget(mark)
            f = item.frame
            log.warning("frame kid %s counter %d from %s cannot be stored (%s: %s); refused as unstorable",
                        f.kid.hex(), f.counter, item.source, type(exc).__name__, exc)
            return Outcome("unstorable")
        return outcome

    def _store_frames(self, conn: psycopg.Connection, items: Sequence[StoreItem], now: float) -> list[Outcome]:
        outcomes = [Outcome("stored") for _ in items]
        # A declaration (frame format v2) is outside the replay window: no counter, no frames row.
        framed = [i for i, item in enumerate(items) if item.frame.declared is None]
        refused = claim_counters(conn, [items[i] for i in framed])
        for i, why in zip(framed, refused, strict=True):
            outcomes[i].status = why or "stored"
        insert_declarations(conn, [item for item in items if item.frame.declared is not None])
        stored = [i for i, why in zip(framed, refused, strict=True) if why is None]
        if stored:
            self._write_stored(conn, items, stored, outcomes, now)
        return outcomes

    def _write_stored(self, conn: psycopg.Connection, items: Sequence[StoreItem], stored: list[int],
                      outcomes: list[Outcome], now: float) -> None:
        """The rows of the items whose counters were taken, acks closing their commands, and the
        next open command handed to each device that has one."""
        acks = write_rows(conn, [items[i] for i in stored], self._series, self.outbox, now)
        for n, records in acks.items():
            self._commands.answered(conn, items[stored[n]].frame.device.hex(), records, now)
        waiting = self._commands.open_devices(conn, now)
        for i in stored:
            dev = items[i].frame.device.hex()
            if dev in waiting:
                found = self._commands.claim(conn, dev, now)
                if found is None:
                    waiting.discard(dev)
                else:
                    outcomes[i].command_id, outcomes[i].command = found

    def index_recent(self) -> None:
        """Nothing to move: PostgreSQL keeps one samples table (see schema.py)."""

    def _write_counters(self, conn: psycopg.Connection, deltas: dict[str, int]) -> None:
        rows = sorted((self.identity, k, v) for k, v in deltas.items() if v)
        if rows:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO counters AS c (gateway, name, value) VALUES (%s,%s,%s) "
                                "ON CONFLICT (gateway, name) DO UPDATE SET value=c.value+excluded.value", rows)

    def _write_health(self, conn: psycopg.Connection, h: Health, now: float) -> None:
        conn.execute(
            "INSERT INTO gateway (host, listen, worker, pid, started, heartbeat, stopped, batch_pending, exchanges, "
            "dedup_bytes, store_outages, store_detail) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (host, listen, worker) DO UPDATE SET pid=excluded.pid, started=excluded.started, "
            "heartbeat=excluded.heartbeat, stopped=excluded.stopped, batch_pending=excluded.batch_pending, "
            "exchanges=excluded.exchanges, dedup_bytes=excluded.dedup_bytes, "
            "store_outages=excluded.store_outages, store_detail=excluded.store_detail",
            (socket.gethostname(), h.listen, h.worker, h.pid, h.started, now, h.stopped, h.batch_pending,
             h.exchanges, h.dedup_bytes, self.outages, self.outage_detail))

    @staticmethod
    def _write_rejections(conn: psycopg.Connection, rejections: list[tuple]) -> None:
        """The datagrams refused since the last round, every gateway's in one table: the newest
        REJECTIONS_KEPT ids stay."""
        if rejections:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO rejections (time, source, reason, detail, device) "
                                "VALUES (%s,%s,%s,%s,%s)", rejections)
            conn.execute("DELETE FROM rejections WHERE id <= (SELECT max(id) FROM rejections) - %s",
                         (REJECTIONS_KEPT,))

    def housekeeping(self, counter_deltas: dict[str, int], health: Health) -> None:
        """Periodic: counters, heartbeat, commands whose time has passed marked expired, the
        datagrams refused since the last round. Also the reconnection attempt when no frames come."""
        conn = self._connection()
        now = time.time()
        try:
            with conn.transaction():
                self._write_counters(conn, counter_deltas)
                self._write_health(conn, health, now)
                self._commands.expire(conn, now)
                self._write_rejections(conn, health.rejections)
        except psycopg.Error as exc:
            failed = self._unavailable(conn, exc)
            raise (failed if isinstance(failed, StoreUnavailable)
                   else StoreUnavailable(f"PostgreSQL {self.target}: {exc}")) from None
