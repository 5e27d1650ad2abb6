"""The command queue's rows in SQLite, and the writer's part in delivering them.

Commands live in shard 0. Another shard's writer reads them through its attachment and writes
their state changes over its own connection to shard 0 once its batch has committed: a
transaction cannot write both files without also locking shard 0."""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from .connection import connect
from .transaction import write_transaction

log = logging.getLogger(__name__)


def insert_command(db_path: Path | str, device: str, counter: int, frame: bytes, now: float, expires: float) -> int:
    """A new 'pending' row; its id."""
    conn = connect(db_path)
    try:
        with write_transaction(conn):
            cur = conn.execute("INSERT INTO commands (device, counter, frame, created, expires) VALUES (?,?,?,?,?)",
                               (device, counter, frame, now, expires))
        return int(cur.lastrowid)
    finally:
        conn.close()


def select_commands(db_path: Path | str, now: float, device: str | None, ids: Iterable[int] | None) -> list[tuple]:
    """Rows in CommandInfo's order, newest first; a pending or sent one past its expiry reads 'expired'."""
    conn = connect(db_path, create=False)
    try:
        sql = ("SELECT id, device, counter, CASE WHEN state IN ('pending','sent') AND expires<=? "
               "THEN 'expired' ELSE state END, created, expires, attempts, sent_at, result_at, reason, "
               "frame FROM commands")
        args: list = [now]
        where = []
        if device is not None:
            where.append("device=?")
            args.append(device)
        if ids is not None:
            id_list = list(ids)
            where.append(f"id IN ({','.join('?' * len(id_list))})")
            args.extend(id_list)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return conn.execute(sql + " ORDER BY id DESC", args).fetchall()
    finally:
        conn.close()


class WriterCommands:
    """What a shard's writer does with the queue within its batches: hands the oldest open
    command of a device out with the answer to its frame, and closes a command when its ack
    frame is stored. `resend`: seconds before a delivered, unanswered command goes out again."""

    def __init__(self, resend: float) -> None:
        self.resend = resend
        self.schema = "main"  # where the writer's connection sees shard 0's commands table
        self._conn: sqlite3.Connection | None = None  # shard 0 itself, for a writer of another shard
        self._writes: list[tuple[str, tuple]] = []
        self._given: set[str] = set()

    def open(self, db_path: Path | str, shard: int, synchronous: str) -> None:
        if shard != 0:
            self._conn = connect(db_path, synchronous=synchronous)
            self.schema = "shard0"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def begin(self) -> None:
        """A new transaction of the writer's."""
        self._writes.clear()
        self._given.clear()

    def mark(self) -> tuple[int, set[str]]:
        return len(self._writes), set(self._given)

    def restore(self, mark: tuple[int, set[str]]) -> None:
        """Back to mark(): what came after was rolled back."""
        del self._writes[mark[0]:]
        self._given = mark[1]

    def open_devices(self, conn: sqlite3.Connection, now: float) -> set[str]:
        """Devices with a command waiting to be delivered or answered."""
        return {d for (d,) in conn.execute(
            f"SELECT DISTINCT device FROM {self.schema}.commands WHERE state IN ('pending','sent') AND expires>?",
            (now,))}

    def next_for(self, conn: sqlite3.Connection, dev: str, now: float) -> tuple[int, bytes] | None:
        """The oldest command for dev not yet delivered (or delivered long ago and unanswered)."""
        if self.schema != "main" and dev in self._given:
            return None  # its 'sent' mark is not written yet: one command a device per batch
        row = conn.execute(
            f"SELECT id, frame FROM {self.schema}.commands WHERE device=? AND expires>? AND (state='pending' OR "
            "(state='sent' AND sent_at<?)) ORDER BY id LIMIT 1", (dev, now, now - self.resend)
        ).fetchone()
        if row is None:
            return None
        self._given.add(dev)
        self._write(conn, "UPDATE commands SET state='sent', sent_at=?, attempts=attempts+1 WHERE id=?",
                    (now, row[0]))
        return row[0], row[1]

    def answered(self, conn: sqlite3.Connection, dev: str, records: list[dict], now: float) -> None:
        """An ack frame of dev's: the command it answers is 'applied' or 'refused'."""
        by_name = {r["n"]: r for r in records}
        ack, result = by_name.get("ack", {}).get("v"), by_name.get("result", {}).get("vs")
        if type(ack) is not int or result not in ("applied", "refused"):
            return
        reason = by_name.get("reason", {}).get("vs")
        self._write(conn, "UPDATE commands SET state=?, result_at=?, reason=? WHERE device=? AND counter=? "
                    "AND state IN ('pending','sent')", (result, now, reason, dev, ack))

    def expire(self, conn: sqlite3.Connection, now: float) -> None:
        """Commands whose time has passed marked expired (by shard 0's writer, in its transaction)."""
        if self.schema == "main":
            conn.execute("UPDATE commands SET state='expired' WHERE state IN ('pending','sent') "
                         "AND expires<=?", (now,))

    def _write(self, conn: sqlite3.Connection, sql: str, args: tuple) -> None:
        if self.schema == "main":
            conn.execute(sql, args)  # in the batch's transaction
        else:
            self._writes.append((sql, args))

    def write_elsewhere(self, db_path: Path) -> None:
        """Shard 0's command rows, changed after this shard's commit. Should the process die in
        between, a command stays 'pending' (sent again with the next frame; a node applies a
        command counter once) or 'sent' (resent after resend, and acknowledged again)."""
        if not self._writes:
            return
        try:
            with write_transaction(self._conn):
                for sql, args in self._writes:
                    self._conn.execute(sql, args)
        except sqlite3.Error as exc:  # the frames are stored, so they are answered; as above
            log.warning("command states not written to %s: %s", db_path, exc)
        self._writes.clear()
