"""A chart's buckets: how a range is cut, and one series' samples of one shard folded into them.

Buckets of a minute or longer are whole minutes on minute boundaries, so the gateway's minute
rollups (store/sqlite/rollups.py) answer every whole minute of the range: a week of 1 Hz samples
is 10,080 rollup rows to add up instead of 604,800 samples. The rows are read only where the
rollups do not reach: the partial minutes at the range's ends, and samples_recent (not yet
rolled up). Shorter buckets, a shard of a database no gateway of this release has opened (no
rollups yet), and a PostgreSQL store (no rollups: one GROUP BY over the (series, time) index)
are aggregated from the rows. Either way a bucket holds the same samples, and the engines'
answers for the same samples are the same (dialect.py numbers buckets alike in both)."""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..store.sqlite.rollups import MINUTE
from .dialect import Dialect

# Times beyond this many seconds from 1970 (143 million years) are cut in even buckets: minute
# numbers and their starts stay exact there, and fit SQLite's integers.
MINUTE_TIMES = 2.0 ** 52
# One row a bucket: bucket -> [count, sum of times, min, max, sum of values]
Merged = dict[int, list[float]]

_AGGREGATE = "count(value), sum(time), min(value), max(value), sum(value)"
_IN_RANGE = "series=:sid AND time>=:a AND time<:b"
# The rows of `samples` the rollups leave out: at the range's ends, outside its whole minutes [:wa, :wb).
# (samples_recent is not rolled up yet: read whole in the range.)
_ROWS_AT_ENDS = ("(SELECT time, value FROM samples WHERE series=:sid AND time>=:a AND time<:wa "
                 "UNION ALL SELECT time, value FROM samples WHERE series=:sid AND time>=:wb AND time<:b "
                 "UNION ALL SELECT time, value FROM samples_recent WHERE series=:sid AND time>=:a AND time<:b) AS s")


@dataclass(frozen=True)
class Buckets:
    """Bucket k is [origin + k * width, origin + (k + 1) * width), cut to [start, end). With
    `minutes` (the width in whole minutes, 0 for shorter buckets) origin is on a minute."""
    start: float
    end: float
    origin: float
    width: float
    minutes: int

    @classmethod
    def of(cls, start: float, end: float, count: int) -> Buckets:
        """At most `count` buckets over [start, end): whole minutes when they are a minute or longer."""
        even = (end - start) / count
        if even < MINUTE or not -MINUTE_TIMES < start < end < MINUTE_TIMES:
            return cls(start, end, start, max(even, 1e-6), 0)
        first = _floor_minute(start)
        minutes = math.ceil(even / MINUTE)
        while end - first * MINUTE > count * minutes * MINUTE:  # origin before start: one more bucket
            minutes += 1
        return cls(start, end, float(first * MINUTE), float(minutes * MINUTE), minutes)

    def _args(self, sid: int) -> dict:
        args = {"sid": sid, "a": self.start, "b": self.end, "w": self.width}
        if self.minutes:
            args.update(m0=int(self.origin) // MINUTE, per=self.minutes)
        return args

    def _row_bucket(self, dialect: Dialect) -> str:
        """A row's bucket number (time >= start >= origin: never negative, so truncation is floor)."""
        if self.minutes:  # by the sample's minute, as the rollups have it
            return f"({dialect.minute_of_time} - :m0) / :per"
        return dialect.integer("(time - :a) / :w")

    def fold(self, conn: Any, dialect: Dialect, sid: int, merged: Merged, *, rollups: bool = True) -> None:
        """Series sid's numeric samples in [start, end) of the shard on conn, added into merged.
        `rollups=False` aggregates every row (what the rollups must equal)."""
        args = self._args(sid)
        rows = dialect.samples("time, value", _IN_RANGE)
        # The minute rollups are SQLite's (store/sqlite/rollups.py); a PostgreSQL store has none.
        if rollups and self.minutes and dialect.has_table(conn, "rollups"):
            whole = (_ceil_minute(self.start), _floor_minute(self.end))  # the minutes wholly inside
            if whole[0] < whole[1]:
                args.update(ma=whole[0], mb=whole[1], wa=whole[0] * MINUTE, wb=whole[1] * MINUTE)
                rows = _ROWS_AT_ENDS
                _merge(dialect.run(
                    conn, "SELECT (minute - :m0) / :per AS k, sum(n), sum(tsum), min(lo), max(hi), sum(vsum) "
                    "FROM rollups WHERE series=:sid AND minute>=:ma AND minute<:mb GROUP BY k", args), merged)
        _merge(dialect.run(conn, f"SELECT {self._row_bucket(dialect)} AS k, {_AGGREGATE} FROM {rows} "
                           "WHERE value IS NOT NULL GROUP BY k", args), merged)


def _merge(rows: Iterable[tuple], merged: Merged) -> None:
    for bucket, count, tsum, mn, mx, vsum in rows:
        into = merged.get(bucket)
        if into is None:
            merged[bucket] = [count, tsum, mn, mx, vsum]
        else:
            into[0] += count
            into[1] += tsum
            into[2] = min(into[2], mn)
            into[3] = max(into[3], mx)
            into[4] += vsum


def _floor_minute(t: float) -> int:
    """The minute holding t (as MINUTE_OF_TIME has it)."""
    return math.floor(t / MINUTE)


def _ceil_minute(t: float) -> int:
    """The first minute that starts at or after t."""
    m = _floor_minute(t)
    return m if m * MINUTE == t else m + 1
