"""Minute rollups: per series and minute, the count, sum of times, min, max and sum of the
numeric samples in `samples`, so a chart of a long range reads one row a minute instead of every
sample (a week of 1 Hz samples: 10,080 rows instead of 604,800; web/series.py).

The rollups cover exactly the rows of `samples`: the writer folds samples_recent into them in
the transaction that moves those rows into `samples` (writer.py), whatever their time (a node's
spool delivers old readings late). A reader takes whole minutes from here, and the rest (the
partial minutes at a range's ends, samples_recent) from the rows.

Added within schema 3 (CREATE IF NOT EXISTS when a database is opened, as declarations.py): a
database made before it gets the table, rolled up from its samples once, in one transaction;
an older fieldnode never looks at it (and would leave it behind its samples: see docs/gateway.md)."""
from __future__ import annotations

import sqlite3

from .transaction import write_transaction

MINUTE = 60
ROLLUPS_TABLE = """
CREATE TABLE IF NOT EXISTS rollups (
    series  INTEGER NOT NULL,  -- series(id)
    minute  INTEGER NOT NULL,  -- floor(time / 60): the minute [60 minute, 60 minute + 60)
    n       INTEGER NOT NULL,  -- samples with a numeric value in it
    tsum    REAL    NOT NULL,  -- the sum of their times
    lo      REAL    NOT NULL,  -- min(value)
    hi      REAL    NOT NULL,  -- max(value)
    vsum    REAL    NOT NULL,  -- sum(value)
    PRIMARY KEY (series, minute)
) WITHOUT ROWID
"""

# floor(time / 60): CAST truncates toward zero, so a time before 1970 not on a minute is taken
# back one. (time / 60 rounded never reaches a whole number from below: 60 < 64, so a sample's
# minute agrees with comparisons of its time against 60 * minute, what a reader's ranges use.)
MINUTE_OF_TIME = "(CAST(time / 60 AS INTEGER) - (CAST(time / 60 AS INTEGER) * 60 > time))"

_FOLD = (f"INSERT INTO rollups (series, minute, n, tsum, lo, hi, vsum) "
         f"SELECT series, {MINUTE_OF_TIME} AS m, count(*), sum(time), min(value), max(value), sum(value) "
         "FROM {table} WHERE value IS NOT NULL GROUP BY series, m "
         "ON CONFLICT (series, minute) DO UPDATE SET n=n+excluded.n, tsum=tsum+excluded.tsum, "
         "lo=min(lo, excluded.lo), hi=max(hi, excluded.hi), vsum=vsum+excluded.vsum")
FOLD_RECENT = _FOLD.format(table="samples_recent")


def fold_recent(conn: sqlite3.Connection) -> None:
    """Adds samples_recent to the rollups: in the transaction that moves it into samples."""
    conn.execute(FOLD_RECENT)


def ensure_rollups(conn: sqlite3.Connection) -> None:
    """The rollups table, made and filled from the samples already stored when it is missing."""
    if has_rollups(conn):
        return
    with write_transaction(conn):
        if not has_rollups(conn):  # another process may have made it while this one waited
            conn.execute(ROLLUPS_TABLE)
            conn.execute(_FOLD.format(table="samples"))


def has_rollups(conn: sqlite3.Connection, schema: str = "main") -> bool:
    return conn.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE type='table' AND name='rollups'"
                        ).fetchone() is not None
