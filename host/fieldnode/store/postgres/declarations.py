"""Frame format v2 declarations in PostgreSQL (docs/frame-format.md, "Declaration"), as the SQLite
store keeps them (store/sqlite/declarations.py): one row a device and declaration id, the first
one kept. Every gateway on the database reads them all when it starts, so it expands the
telemetry of a node that declared itself to another gateway without asking it again."""
from __future__ import annotations

from collections.abc import Sequence

import psycopg

from ...infra.errors import FieldnodeError
from ..records import StoreItem
from ..target import PgTarget
from .connection import connect, first_line

INSERT = ("INSERT INTO declarations (device, id, payload, kid, counter, received) VALUES (%s,%s,%s,%s,%s,%s) "
          "ON CONFLICT (device, id) DO NOTHING")


def insert_declarations(conn: psycopg.Connection, items: Sequence[StoreItem]) -> None:
    """The declaration frames' rows, in key order: two gateways inserting the same declarations
    wait for one another in the same order, never in a circle."""
    rows = sorted({(i.frame.device.hex(), i.frame.declaration.hex()): (
        bytes(i.frame.declared.payload), i.frame.kid.hex(), i.frame.counter, i.received) for i in items}.items())
    if rows:
        with conn.cursor() as cur:
            cur.executemany(INSERT, [key + row for key, row in rows])


def stored_declarations(conn: psycopg.Connection) -> list[tuple[bytes, bytes]]:
    """(device id, declaration payload) of every declaration stored (none in a database of
    schema 1, which a reader does not upgrade)."""
    if conn.execute("SELECT to_regclass('declarations') IS NULL").fetchone()[0]:
        return []
    return [(bytes.fromhex(device), bytes(payload))
            for device, payload in conn.execute("SELECT device, payload FROM declarations ORDER BY device, id")]


def read_declarations(target: PgTarget) -> list[tuple[bytes, bytes]]:
    """The declarations a PostgreSQL store holds (`decode --db`, `monitor --db`)."""
    with connect(target, create=False, application="fieldnode-declarations") as conn:
        try:
            return stored_declarations(conn)
        except psycopg.Error as exc:
            raise FieldnodeError(f"PostgreSQL {target}: cannot read its declarations ({first_line(exc)})") from None
