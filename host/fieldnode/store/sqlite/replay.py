"""The replay state as the tables hold it: per key id the highest counter stored, and the frames.

`schemas` names the databases to look in: a shard ("main") and the others attach_shards
attached, so a key's frames stored by a run with another number of workers still count."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence

from ..records import REPLAY_SPAN


def stored_tag(conn: sqlite3.Connection, kid: bytes, counter: int,
               schemas: Sequence[str] = ("main",)) -> bytes | None:
    """The tag of the stored frame with this key id and counter (for the 2.03 answer), looked
    for in each of the schemas (a shard and those attach_shards attached)."""
    for schema in schemas:
        row = conn.execute(f"SELECT tag FROM {schema}.frames WHERE kid=? AND counter=?",
                           (kid.hex(), counter)).fetchone()
        if row:
            return row[0]
    return None


def highest_counters(conn: sqlite3.Connection, kids: Iterable[str], schemas: Sequence[str]) -> dict[str, int]:
    """The highest counter stored for each key id (hex), 0 for a key with none, over every schema."""
    highest = dict.fromkeys(kids, 0)
    marks = ",".join("?" * len(highest))
    for schema in schemas:
        for kid, high in conn.execute(f"SELECT kid, highest_counter FROM {schema}.replay WHERE kid IN ({marks})",
                                      list(highest)):
            highest[kid] = max(high, highest[kid])
    return highest


def replay_state(conn: sqlite3.Connection, schemas: Sequence[str]) -> Iterator[tuple[bytes, int, set[int]]]:
    """(key id, highest counter, counters stored within the replay window below it), over
    every schema."""
    highest: dict[str, int] = {}
    for schema in schemas:
        for kid, high in conn.execute(f"SELECT kid, highest_counter FROM {schema}.replay"):
            highest[kid] = max(high, highest.get(kid, 0))
    for kid, high in highest.items():
        stored = set()
        for schema in schemas:
            stored.update(c for (c,) in conn.execute(
                f"SELECT counter FROM {schema}.frames WHERE kid=? AND counter>? AND counter<=?",
                (kid, high - REPLAY_SPAN, high)))
        yield bytes.fromhex(kid), high, stored
