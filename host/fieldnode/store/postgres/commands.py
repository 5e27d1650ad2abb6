"""The command queue's rows in PostgreSQL, and the writer's part in delivering them.

Several gateways take frames from the same devices, so a command is claimed: the oldest open
command of a device is locked FOR UPDATE SKIP LOCKED and marked 'sent' in the batch's
transaction. Another gateway's batch skips a row this one has locked (it hands that device no
command, or the next one) instead of waiting for it or sending it too. An ack frame closes its
command with one UPDATE that matches only an open command: the first ack closes it, a second
(through another gateway) finds nothing to change."""
from __future__ import annotations

from collections.abc import Iterable

import psycopg

from ..target import PgTarget
from .connection import connect

CLAIM = """
UPDATE commands SET state='sent', sent_at=%(now)s, attempts=attempts+1
WHERE id = (SELECT id FROM commands WHERE device=%(dev)s AND expires>%(now)s
            AND (state='pending' OR (state='sent' AND sent_at<%(stale)s))
            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, frame
"""


def insert_command(target: PgTarget, device: str, counter: int, frame: bytes, now: float, expires: float) -> int:
    """A new 'pending' row; its id."""
    with connect(target, create=False, application="fieldnode-command") as conn:
        (command_id,) = conn.execute(
            "INSERT INTO commands (device, counter, frame, created, expires) VALUES (%s,%s,%s,%s,%s) RETURNING id",
            (device, counter, frame, now, expires)).fetchone()
    return int(command_id)


def select_commands(target: PgTarget, now: float, device: str | None, ids: Iterable[int] | None) -> list[tuple]:
    """Rows in CommandInfo's order, newest first; a pending or sent one past its expiry reads 'expired'."""
    sql = ("SELECT id, device, counter, CASE WHEN state IN ('pending','sent') AND expires<=%s "
           "THEN 'expired' ELSE state END, created, expires, attempts, sent_at, result_at, reason, frame "
           "FROM commands WHERE (%s::text IS NULL OR device=%s) AND (%s::bigint[] IS NULL OR id = ANY(%s))")
    id_list = None if ids is None else list(ids)
    with connect(target, create=False, application="fieldnode-command") as conn:
        rows = conn.execute(sql + " ORDER BY id DESC", (now, device, device, id_list, id_list)).fetchall()
    return [row[:-1] + (bytes(row[-1]),) for row in rows]


class WriterCommands:
    """Within a writer's batch: the devices with open commands, a command claimed for a device,
    a command closed by its ack. `resend`: seconds before a delivered, unanswered command goes
    out again."""

    def __init__(self, resend: float) -> None:
        self.resend = resend

    @staticmethod
    def open_devices(conn: psycopg.Connection, now: float) -> set[str]:
        return {d for (d,) in conn.execute(
            "SELECT DISTINCT device FROM commands WHERE state IN ('pending','sent') AND expires>%s", (now,))}

    def claim(self, conn: psycopg.Connection, dev: str, now: float) -> tuple[int, bytes] | None:
        row = conn.execute(CLAIM, {"now": now, "dev": dev, "stale": now - self.resend}).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    @staticmethod
    def answered(conn: psycopg.Connection, dev: str, records: list[dict], now: float) -> None:
        """An ack frame of dev's: the open command it answers becomes 'applied' or 'refused'."""
        by_name = {r["n"]: r for r in records}
        ack, result = by_name.get("ack", {}).get("v"), by_name.get("result", {}).get("vs")
        if type(ack) is not int or result not in ("applied", "refused"):
            return
        reason = by_name.get("reason", {}).get("vs")
        conn.execute("UPDATE commands SET state=%s, result_at=%s, reason=%s WHERE device=%s AND counter=%s "
                     "AND state IN ('pending','sent')", (result, now, reason, dev, ack))

    @staticmethod
    def expire(conn: psycopg.Connection, now: float) -> None:
        conn.execute("UPDATE commands SET state='expired' WHERE state IN ('pending','sent') AND expires<=%s",
                     (now,))
