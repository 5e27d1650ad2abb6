"""Reading the PostgreSQL store beside the writer: the gateway's look-up of a stored frame's tag."""
from __future__ import annotations

import time

import psycopg

from ..records import StoreUnavailable
from ..target import PgTarget
from .connection import connect
from .replay import stored_tag


# The reader runs on the gateway's event loop: after a loss it tries to reconnect at most this
# often, and says StoreUnavailable at once in between (the node is answered 5.03 and retries).
RECONNECT_EVERY_S = 1.0


class PgTagReader:
    """Its own connection (the writer's belongs to the commit thread)."""

    def __init__(self, target: PgTarget) -> None:
        self.target = target
        self._conn: psycopg.Connection | None = connect(target, application="fieldnode-gateway-reader")
        self._next_try = 0.0

    def stored_tag(self, kid: bytes, counter: int) -> bytes | None:
        try:
            if self._conn is None or self._conn.broken or self._conn.closed:
                self.close()
                if time.monotonic() < self._next_try:
                    raise StoreUnavailable(f"PostgreSQL {self.target} unreachable")
                self._next_try = time.monotonic() + RECONNECT_EVERY_S
                self._conn = psycopg.connect(self.target.dsn, autocommit=True, connect_timeout=2)
            return stored_tag(self._conn, kid, counter)
        except psycopg.Error as exc:
            if self._conn is not None and (self._conn.broken or self._conn.pgconn.status != psycopg.pq.ConnStatus.OK):
                self.close()
            raise StoreUnavailable(f"PostgreSQL {self.target}: {exc}") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


LAST_BOOT_BOARD = (
    "SELECT f.received, s.string FROM series r JOIN samples s ON s.series = r.id JOIN frames f ON f.id = s.frame_id "
    "WHERE r.device = %s AND r.name = 'board' AND f.kind = 2 AND s.string IS NOT NULL ORDER BY s.id DESC LIMIT 1")


def last_boot_board_in(conn: psycopg.Connection, device_hex: str) -> tuple[float, str] | None:
    """(received, board name) of the device's latest stored boot frame."""
    row = conn.execute(LAST_BOOT_BOARD, (device_hex,)).fetchone()
    return None if row is None else (row[0], row[1])


def last_boot_board(target: PgTarget, device_hex: str) -> tuple[float, str] | None:
    with connect(target, create=False, application="fieldnode-mqtt-commands") as conn:
        return last_boot_board_in(conn, device_hex)


def highest_queued_counter(target: PgTarget, device_hex: str) -> int:
    """The highest command counter queued for the device by anyone, 0 for none."""
    with connect(target, create=False, application="fieldnode-mqtt-commands") as conn:
        return conn.execute("SELECT COALESCE(MAX(counter), 0) FROM commands WHERE device=%s",
                            (device_hex,)).fetchone()[0]
