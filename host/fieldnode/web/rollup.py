"""Minute rollups for long chart ranges: per series, count, sum of times, min, max and sum of
values of every minute, kept in this process and brought up to date on each question.

A week of 1 Hz samples is 604,800 table rows to aggregate (the (series, time) index does not hold
the value, so every row is a page lookup: ~0.4 s here), and a page showing "last week" asks again
every few seconds while live. A week is 10,080 minutes: once rolled up, a chart of any range in
it is a sum over minutes. Exact, late frames included: a series' rollup covers every sample with
an id up to its watermark (ids only grow with each commit, and a sample keeps its id when the
gateway moves it into the indexed table), so each question first adds the samples above the
watermark, whatever their time (a node's spool sends old readings late), then reaches back in
time if the range starts before what is covered, taking only ids up to the watermark."""
from __future__ import annotations

import math
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass, field

MINUTE = 60
CACHED_SERIES = 32  # series kept (least recently charted dropped first): a week is ~1.5 MB each
MAX_SPAN_S = 31 * 86400  # longer ranges are aggregated from the rows each time (memory stays bounded)


@dataclass
class _Series:
    lo: int  # first minute covered
    mark: int  # highest sample id folded in
    minutes: dict[int, list[float]] = field(default_factory=dict)  # minute -> [count, tsum, min, max, vsum]


def bucket_width(start: float, end: float, buckets: int) -> float | None:
    """The width used for a range: whole minutes when the range is long enough for rollups, else None."""
    raw = (end - start) / buckets
    if raw < MINUTE or end - start > MAX_SPAN_S:
        return None
    return math.ceil(raw / MINUTE) * MINUTE


class Rollups:
    def __init__(self, cached_series: int = CACHED_SERIES) -> None:
        self._series: OrderedDict[tuple[int, int], _Series] = OrderedDict()
        self._cached = cached_series

    def add(self, conn: sqlite3.Connection, shard: int, sid: int, start: float, end: float, width: float,
            merged: dict[int, list[float]]) -> None:
        """Folds series sid's minutes in [start, end) into merged (bucket -> [count, tsum, min, max,
        vsum], buckets of `width` from `start`, both whole minutes). In the caller's read transaction."""
        first, last = int(start // MINUTE), math.ceil(end / MINUTE)
        s = self._up_to_date(conn, shard, sid, first)
        per_bucket = int(width // MINUTE)
        for minute in range(first, last):
            agg = s.minutes.get(minute)
            if agg is None:
                continue
            k = (minute - first) // per_bucket
            into = merged.get(k)
            if into is None:
                merged[k] = list(agg)
            else:
                into[0] += agg[0]
                into[1] += agg[1]
                into[2] = min(into[2], agg[2])
                into[3] = max(into[3], agg[3])
                into[4] += agg[4]

    def _up_to_date(self, conn: sqlite3.Connection, shard: int, sid: int, first: int) -> _Series:
        key = (shard, sid)
        mark = _highest_id(conn)
        s = self._series.get(key)
        if s is None:
            s = _Series(lo=first, mark=mark)
            self._fold(s, conn, "series=:sid AND time>=:a AND id<=:mark", {"sid": sid, "a": first * MINUTE,
                                                                           "mark": mark})
            self._series[key] = s
            while len(self._series) > self._cached:
                self._series.popitem(last=False)
        else:
            self._series.move_to_end(key)
            if mark > s.mark:  # new samples, whatever their time; those before lo come with a reach back
                # Unary + keeps SQLite on the id range (the new rows) rather than the series index.
                self._fold(s, conn, "+series=:sid AND id>:old AND id<=:mark AND +time>=:lo",
                           {"sid": sid, "old": s.mark, "mark": mark, "lo": s.lo * MINUTE})
                s.mark = mark
            if first < s.lo:
                self._fold(s, conn, "series=:sid AND time>=:a AND time<:lo AND id<=:mark",
                           {"sid": sid, "a": first * MINUTE, "lo": s.lo * MINUTE, "mark": s.mark})
                s.lo = first
        return s

    @staticmethod
    def _fold(s: _Series, conn: sqlite3.Connection, where: str, args: dict) -> None:
        rows = conn.execute(
            "SELECT CAST(time / 60 AS INTEGER) AS m, count(value), sum(time), min(value), max(value), sum(value) "
            f"FROM (SELECT id, series, time, value FROM samples WHERE {where} AND value IS NOT NULL UNION ALL "
            f"SELECT id, series, time, value FROM samples_recent WHERE {where} AND value IS NOT NULL) GROUP BY m",
            args)
        for minute, count, tsum, mn, mx, vsum in rows:
            agg = s.minutes.get(minute)
            if agg is None:
                s.minutes[minute] = [count, tsum, mn, mx, vsum]
            else:
                agg[0] += count
                agg[1] += tsum
                agg[2] = min(agg[2], mn)
                agg[3] = max(agg[3], mx)
                agg[4] += vsum


def _highest_id(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT max((SELECT coalesce(max(id), 0) FROM samples), "
                        "(SELECT coalesce(max(id), 0) FROM samples_recent))").fetchone()[0]
