"""Reading the PostgreSQL store beside the writer: the gateway's look-up of a stored frame's tag."""
from __future__ import annotations

import psycopg

from ..records import StoreUnavailable
from ..target import PgTarget
from .connection import connect
from .replay import stored_tag


class PgTagReader:
    """Its own connection (the writer's belongs to the commit thread); reconnects when asked
    after a loss, and says StoreUnavailable meanwhile."""

    def __init__(self, target: PgTarget) -> None:
        self.target = target
        self._conn: psycopg.Connection | None = connect(target, application="fieldnode-gateway-reader")

    def stored_tag(self, kid: bytes, counter: int) -> bytes | None:
        try:
            if self._conn is None or self._conn.broken or self._conn.closed:
                self.close()
                self._conn = psycopg.connect(self.target.dsn, autocommit=True, connect_timeout=2)
            return stored_tag(self._conn, kid, counter)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL {self.target}: {exc}") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
