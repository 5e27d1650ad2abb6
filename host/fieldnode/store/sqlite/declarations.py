"""The declarations of frame format v2 nodes (docs/frame-format.md, "Declaration"): kept so that
the gateway expands their telemetry after a restart, and so that `decode --db` and `monitor --db`
can show it expanded.

Added within schema 3 (CREATE IF NOT EXISTS when a database is opened): an older database gets
the table, and an older fieldnode never looks at it."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from ...infra.errors import FieldnodeError

DECLARATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS declarations (
    device   TEXT    NOT NULL,  -- as frames.device: the device id in hex
    id       TEXT    NOT NULL,  -- the declaration id in hex (first 4 bytes of SHA-256 of the payload)
    payload  BLOB    NOT NULL,  -- the declaration as the node sent it
    kid      TEXT    NOT NULL,  -- the key id and counter of the frame that brought it first (a
    counter  INTEGER NOT NULL,  -- declaration is outside the replay window: not in frames)
    received REAL    NOT NULL,
    PRIMARY KEY (device, id)
) WITHOUT ROWID
"""
DECLARATION_COLUMNS = 6
INSERT_DECLARATIONS = "INSERT OR IGNORE INTO declarations (device, id, payload, kid, counter, received)"


def stored_declarations(conn: sqlite3.Connection, schemas: Sequence[str] = ("main",)) -> Iterator[tuple[bytes, bytes]]:
    """(device id, declaration payload) of every declaration stored, over the schemas given (a
    database made before declarations has none)."""
    for schema in schemas:
        if conn.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE type='table' AND name='declarations'"
                        ).fetchone() is None:
            continue
        for device, payload in conn.execute(f"SELECT device, payload FROM {schema}.declarations"):
            yield bytes.fromhex(device), bytes(payload)


def read_declarations(db: Path | str) -> list[tuple[bytes, bytes]]:
    """(device id, payload) of every declaration a gateway database holds, in all its shards;
    opened read-only, so it can be read while the gateway runs."""
    from .shards import shard_paths  # shards -> connection -> schema -> this module
    paths = shard_paths(db)
    if not paths:
        raise FieldnodeError(f"database {db} does not exist: pass the --db the gateway uses")
    out: list[tuple[bytes, bytes]] = []
    for path in paths.values():
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                out.extend(stored_declarations(conn))
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise FieldnodeError(f"database {path}: {exc}; is it a fieldnode gateway database? "
                                 "Pass another --db") from None
    return out
