"""Series and sample rows: a verified frame's SenML records as rows of samples_recent.

The hot path of the store: straight from the decoded CBOR to flat lists of values (one a kind
of value), no intermediate dicts or row tuples."""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ...wire.frame import SENML_BT, SENML_ERR, SENML_N, SENML_T, SENML_U, SENML_V, SENML_VB, SENML_VS, present

SAMPLE_NAMES = "id, frame_id, series, time, value, string, bool, err"
# A row is written with the four columns every sample has and the one its value goes in, one
# INSERT a kind of value (the other columns default to NULL): CPython's sqlite3 binds None
# through its adapter lookup (~0.3 µs each, 3.11), so three NULLs bound with each numeric
# sample cost more than the rest of its row.
SAMPLE_COLUMNS = 5
VALUE_COLUMNS = ("value", "string", "bool", "err")
INSERT_SAMPLES = tuple(f"INSERT INTO samples_recent (id, frame_id, series, time, {c})" for c in VALUE_COLUMNS)


class SampleRows:
    """Gives sample rows their ids and series ids. One per writer; a batch's transaction calls
    start() first, and forget() when it rolls back."""

    def __init__(self) -> None:
        # (device, name, unit) -> series id. Entries made in a transaction that rolls back are
        # forgotten with it (the rows they name are gone).
        self._series: dict[tuple[str, str, str], int] = {}
        self._added: list[tuple[str, str, str]] = []
        self._sample_id = 0

    def begin(self) -> None:
        """A new transaction: what it adds to the series cache is what a rollback forgets."""
        self._added.clear()

    def start(self, conn: sqlite3.Connection) -> None:
        """Ids are given here, so rows go in many to a statement (the write lock is held). A
        sample's id is above every id in both sample tables: the move keeps ids."""
        self._sample_id, = conn.execute(
            "SELECT max((SELECT COALESCE(MAX(id), 0) FROM samples), (SELECT COALESCE(MAX(id), 0) FROM samples_recent))"
        ).fetchone()

    def mark(self) -> int:
        return len(self._added)

    def forget(self, keep: int) -> None:
        """Forgets the series ids made after the first `keep` of this transaction (rolled back)."""
        for key in self._added[keep:]:
            self._series.pop(key, None)
        del self._added[keep:]

    def clear(self) -> None:
        self._series.clear()

    def add(self, conn: sqlite3.Connection, out: Sequence[list], frame_id: int, dev: str, pack: list) -> None:
        """The sample rows of a verified pack, flattened onto out[k] (SAMPLE_COLUMNS values a row)
        by the kind k of their value (VALUE_COLUMNS: number, string, boolean, error)."""
        series = self._series
        bt = pack[0][SENML_BT]
        numbers, strings, booleans, errors = (rows.extend for rows in out)
        sample_id = self._sample_id
        for rec in pack:
            key = (dev, rec[SENML_N], rec.get(SENML_U, ""))
            sid = series.get(key)
            if sid is None:
                sid = self._series_id(conn, key)
            at = bt + rec[SENML_T] if SENML_T in rec else bt
            sample_id += 1
            value = rec.get(SENML_V)
            if value is not None:
                numbers((sample_id, frame_id, sid, at, present(value)))
            elif SENML_VS in rec:
                strings((sample_id, frame_id, sid, at, rec[SENML_VS]))
            elif SENML_VB in rec:
                booleans((sample_id, frame_id, sid, at, rec[SENML_VB]))
            else:
                errors((sample_id, frame_id, sid, at, rec[SENML_ERR]))
        self._sample_id = sample_id

    def _series_id(self, conn: sqlite3.Connection, key: tuple[str, str, str]) -> int:
        conn.execute("INSERT OR IGNORE INTO series (device, name, unit) VALUES (?,?,?)", key)
        (sid,) = conn.execute("SELECT id FROM series WHERE device=? AND name=? AND unit=?", key).fetchone()
        self._series[key] = sid
        self._added.append(key)
        return sid
