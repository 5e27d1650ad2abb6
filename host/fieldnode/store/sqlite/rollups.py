"""Minute rollups: per series and minute, the count, sum of times, min, max and sum of the
numeric samples in `samples`, so a chart of a long range reads one row a minute instead of every
sample (a week of 1 Hz samples: 10,080 rows instead of 604,800; web/series.py).

The rollups cover exactly the rows of `samples`: the writer folds samples_recent into them in
the transaction that moves those rows into `samples` (writer.py), whatever their time (a node's
spool delivers old readings late). A reader takes whole minutes from here, and the rest (the
partial minutes at a range's ends, samples_recent) from the rows.

Added within schema 3 (made when a database is opened, as declarations.py): a database made
before it gets the table, rolled up from its samples once, in one transaction. An older
fieldnode writing the database never looks at the table, and moves samples without rolling
them up: `meta` keeps the highest sample id the rollups cover, so the next open by this release
rolls up what was moved meanwhile (sample ids only grow, and keep theirs when moved)."""
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


def _fold(rows: str) -> str:
    """The statement adding `rows` (a table and its WHERE clause) to the rollups."""
    return ("INSERT INTO rollups (series, minute, n, tsum, lo, hi, vsum) "
            f"SELECT series, {MINUTE_OF_TIME} AS m, count(*), sum(time), min(value), max(value), sum(value) "
            f"FROM {rows} AND value IS NOT NULL GROUP BY series, m "
            "ON CONFLICT (series, minute) DO UPDATE SET n=n+excluded.n, tsum=tsum+excluded.tsum, "
            "lo=min(lo, excluded.lo), hi=max(hi, excluded.hi), vsum=vsum+excluded.vsum")


_FOLD_RECENT = _fold("samples_recent WHERE true")
_FOLD_MOVED = _fold("samples WHERE id > :mark")  # what samples holds beyond the mark
_MARK = "rollups"  # meta key: the highest sample id the rollups cover
_SET_MARK = ("INSERT INTO meta (key, value) SELECT ?, coalesce(max(id), 0) FROM samples WHERE true "
             "ON CONFLICT (key) DO UPDATE SET value=excluded.value")


def fold_recent(conn: sqlite3.Connection) -> None:
    """Adds samples_recent to the rollups: in the transaction that moves it into samples, before
    the move; mark_folded() after it."""
    conn.execute(_FOLD_RECENT)


def mark_folded(conn: sqlite3.Connection) -> None:
    """Notes that the rollups cover every row of samples: after the move."""
    conn.execute(_SET_MARK, (_MARK,))


def ensure_rollups(conn: sqlite3.Connection) -> None:
    """The rollups table, made and filled from the samples already stored when it is missing,
    and brought up to the samples moved by a fieldnode that does not keep it."""
    if has_rollups(conn) and _mark(conn) == _highest_sample(conn):
        return
    with write_transaction(conn):  # checked again: another process may have done it meanwhile
        if not has_rollups(conn):
            conn.execute(ROLLUPS_TABLE)
            mark = 0
        else:
            mark = _mark(conn)
            if mark is None:  # never noted: rolled up again from nothing
                conn.execute("DELETE FROM rollups")
                mark = 0
        if mark < _highest_sample(conn):
            conn.execute(_FOLD_MOVED, {"mark": mark})
        mark_folded(conn)


def has_rollups(conn: sqlite3.Connection) -> bool:
    """False for a database no fieldnode of this release has opened for writing yet."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='rollups'").fetchone() is not None


def _mark(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE key=?", (_MARK,)).fetchone()
    return None if row is None else row[0]


def _highest_sample(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0]
