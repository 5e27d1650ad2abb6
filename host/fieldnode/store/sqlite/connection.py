"""Opening a store database file: private to its owner, WAL, schema in place."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ...infra.errors import FieldnodeError
from .schema import ensure_schema

# How long the writer waits for another writer (a second worker, `fieldnode command`) to finish.
BUSY_TIMEOUT_MS = 10_000

# Owner only: the database holds every reading and the command queue. SQLite creates the -wal,
# -shm and -journal files with the permissions of the database file (os_unix.c, findCreateFileMode),
# so creating the database file 0600 before SQLite opens it makes all of them 0600.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def create_private(path: Path) -> None:
    """path (and its missing directories) created for the owner only; an existing file is left
    as it is (a site may have opened it to a group on purpose)."""
    if path.exists():
        # Never open and close a database file this process may have open in SQLite: closing any
        # descriptor of a file drops every POSIX lock the process holds on it, SQLite's included
        # (sqlite.org/howtocorrupt.html, 2.2), and another connection then reads a WAL it must not.
        return
    if not path.parent.exists():
        path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    try:  # an empty file is an empty SQLite database
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    except FileExistsError:
        pass  # made a moment ago by another process (not open here: the check above was before)


def connect(path: Path | str, *, synchronous: str = "FULL", create: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, schema in place."""
    path = Path(path)
    if not create and not path.exists():
        raise FieldnodeError(f"database {path} does not exist: start the gateway with --db {path} "
                             "first, or pass the --db the gateway uses")
    try:
        if create:
            create_private(path)
        # The statement cache holds every multi-row INSERT (insert_rows) besides the rest.
        # uri=True lets attach_shards open the other shards read-only ("file:...?mode=ro").
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False, cached_statements=512, uri=True)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives a power cut, which is what the 2.04 promises the node.
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if create:
            ensure_schema(conn)
    except sqlite3.DatabaseError as exc:
        raise FieldnodeError(f"database {path}: {exc}; is it a fieldnode gateway database? "
                             "Pass another --db") from None
    except OSError as exc:
        raise FieldnodeError(f"database {path}: {exc.strerror}; pass a writable --db PATH") from None
    return conn
