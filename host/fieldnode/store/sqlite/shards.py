"""Shards: with N workers, one database file a worker, and the others attached read-only."""
from __future__ import annotations

import glob
import sqlite3
import urllib.parse
from pathlib import Path

from ...infra.errors import FieldnodeError
from .connection import connect

# SQLite attaches at most 10 databases to a connection: the writer's own shard plus 10 others.
MAX_SHARDS = 11


def shard_path(db: Path | str, index: int) -> Path:
    """Shard 0 is the database named by --db; shard k of gateway.db is gateway.shard<k>.db beside it."""
    db = Path(db)
    return db if index == 0 else db.with_name(f"{db.stem}.shard{index}{db.suffix}")


def shard_paths(db: Path | str) -> dict[int, Path]:
    """The shards of db that exist, by index (0 included when db exists)."""
    db = Path(db)
    found = {0: db} if db.exists() else {}
    for path in db.parent.glob(f"{glob.escape(db.stem)}.shard*{glob.escape(db.suffix)}"):
        digits = path.name[len(db.stem) + len(".shard"):len(path.name) - len(db.suffix)]
        if digits.isdigit() and shard_path(db, int(digits)) == path:
            found[int(digits)] = path
    return dict(sorted(found.items()))


def create_shards(db: Path | str, workers: int) -> None:
    """Shards 0..workers-1 of db, with their schema (harmless when they exist)."""
    for index in range(workers):
        connect(shard_path(db, index)).close()


def attach_shards(conn: sqlite3.Connection, db: Path | str, own: int) -> list[str]:
    """ATTACHes every other existing shard of db read-only as shard<k>; returns the schema names."""
    others = [(k, p) for k, p in shard_paths(db).items() if k != own]
    if len(others) >= MAX_SHARDS:
        raise FieldnodeError(f"{db} has {len(others) + 1} shard files; the gateway reads at most {MAX_SHARDS} "
                             "together (SQLite attaches 10 databases) and never makes more: pass the --db "
                             "of this gateway's own files")
    names = []
    for k, path in others:
        uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
        conn.execute("ATTACH DATABASE ? AS ?", (uri, f"shard{k}"))
        names.append(f"shard{k}")
    return names

