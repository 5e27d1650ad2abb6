"""A node's readings over a range for its charts, its events on the same axis, its last boot.

A chart is answered with at most `buckets` points: the range is cut into equal time buckets and
each bucket gives the min, max and mean of its samples (and the mean of their times, so a bucket
holding one sample is that sample exactly). SQLite does the grouping over the (series, time)
index, so a week of 1 Hz samples (604,800 rows) crosses to the browser as a few hundred points
(bench/web_chart.py measures it against returning every row)."""
from __future__ import annotations

import sqlite3

from .reader import Reader
from .rollup import Rollups, bucket_width

MAX_BUCKETS = 2000
# Frames with these records are shown as events on the time axis: boots (the `reset` record of a
# boot frame) and the firmware's event frames (`event`: thresholds, failsafe, interlocks, queue losses).
EVENT_NAMES = ("event", "reset")
EVENT_LIMIT = 500
# Records that are not measurements over time: a boot frame's strings and schema, an ack's fields.
NOT_CHARTED = frozenset(("fw", "board", "reset", "schema", "event", "ack", "result", "reason"))
_SAMPLES = ("(SELECT id, frame_id, time, value, string FROM samples WHERE series=:sid AND time>=:a AND time<:b "
            "UNION ALL SELECT id, frame_id, time, value, string FROM samples_recent WHERE series=:sid "
            "AND time>=:a AND time<:b)")


def series_of(reader: Reader, device: str) -> list[dict]:
    """The device's readings (name, unit) across shards, numeric ones first."""
    found: dict[tuple[str, str], dict] = {}
    with reader.shards() as shards:
        for _, conn in shards:
            for name, unit in conn.execute("SELECT name, unit FROM series WHERE device=? ORDER BY name", (device,)):
                found[(name, unit)] = {"name": name, "unit": unit, "chart": name not in NOT_CHARTED}
    return sorted(found.values(), key=lambda s: s["name"])


def reduced(reader: Reader, device: str, name: str, start: float, end: float, buckets: int,
            rollups: Rollups | None = None) -> dict:
    """{"t": [...], "min": [...], "max": [...], "mean": [...], "n": rows in range, "unit"} for the
    numeric samples of device's reading `name` in [start, end), at most `buckets` points. With
    `rollups`, a range long enough for buckets of a minute or more is answered from minute
    rollups: buckets of whole minutes, the range's ends rounded out to whole minutes."""
    buckets = max(1, min(int(buckets), MAX_BUCKETS))
    minute_width = bucket_width(start, end, buckets) if rollups is not None else None
    if minute_width is not None:
        start, width = start // 60 * 60, minute_width
    else:
        width = max((end - start) / buckets, 1e-6)
    merged: dict[int, list[float]] = {}  # bucket -> [count, sum of times, min, max, sum]
    unit = ""
    with reader.shards() as shards:
        for shard, conn in shards:
            for sid, series_unit in conn.execute("SELECT id, unit FROM series WHERE device=? AND name=?",
                                                 (device, name)).fetchall():
                unit = series_unit
                if rollups is not None and minute_width is not None:
                    rollups.add(conn, shard, sid, start, end, width, merged)
                else:
                    _reduce_shard(conn, sid, start, end, width, merged)
    t, lo, hi, mean = [], [], [], []
    total = 0
    for _, (count, tsum, mn, mx, vsum) in sorted(merged.items()):
        total += int(count)
        t.append(tsum / count)
        lo.append(mn)
        hi.append(mx)
        mean.append(vsum / count)
    return {"t": t, "min": lo, "max": hi, "mean": mean, "n": total, "unit": unit, "bucket_s": width}


def _reduce_shard(conn: sqlite3.Connection, sid: int, start: float, end: float, width: float,
                  merged: dict[int, list[float]]) -> None:
    args = {"sid": sid, "a": start, "b": end, "w": width}
    for bucket, count, tsum, mn, mx, vsum in conn.execute(
            f"SELECT CAST((time - :a) / :w AS INTEGER) AS k, count(value), sum(time), min(value), max(value), "
            f"sum(value) FROM {_SAMPLES} WHERE value IS NOT NULL GROUP BY k", args):
        into = merged.get(bucket)
        if into is None:
            merged[bucket] = [count, tsum, mn, mx, vsum]
        else:
            into[0] += count
            into[1] += tsum
            into[2] = min(into[2], mn)
            into[3] = max(into[3], mx)
            into[4] += vsum


def every_row(reader: Reader, device: str, name: str, start: float, end: float) -> list[tuple[float, float]]:
    """Every (time, value) in range: what the chart would fetch without reduction (the bench's baseline)."""
    out: list[tuple[float, float]] = []
    with reader.shards() as shards:
        for _, conn in shards:
            for (sid,) in conn.execute("SELECT id FROM series WHERE device=? AND name=?", (device, name)).fetchall():
                out.extend(conn.execute(f"SELECT time, value FROM {_SAMPLES} ORDER BY time",
                                        {"sid": sid, "a": start, "b": end}).fetchall())
    return out


def events(reader: Reader, device: str, start: float, end: float) -> list[dict]:
    """Boots and event frames of the device in range, oldest first: {time, what, records}."""
    out = []
    with reader.shards() as shards:
        for _, conn in shards:
            for sid, name in conn.execute(
                    f"SELECT id, name FROM series WHERE device=? AND name IN ({','.join('?' * len(EVENT_NAMES))})",
                    (device, *EVENT_NAMES)).fetchall():
                rows = conn.execute(f"SELECT * FROM {_SAMPLES} ORDER BY time DESC LIMIT {EVENT_LIMIT}",
                                    {"sid": sid, "a": start, "b": end}).fetchall()
                for sample_id, frame_id, t, _value, string in rows:
                    what = f"boot ({string})" if name == "reset" else (string or "event")
                    out.append({"time": t, "what": what, "records": frame_records(conn, sample_id, frame_id)})
    out.sort(key=lambda e: e["time"])
    return out


def frame_records(conn: sqlite3.Connection, sample_id: int, frame_id: int) -> list[dict]:
    """The records of the frame a sample belongs to. A frame's samples have consecutive ids (the
    writer numbers them in order), so this is a range of ids on both tables, not a scan."""
    rows = conn.execute(
        "SELECT s.id, r.name, r.unit, s.value, s.string, s.bool, s.err FROM "
        "(SELECT id, frame_id, series, value, string, bool, err FROM samples WHERE id BETWEEN ? AND ? UNION ALL "
        " SELECT id, frame_id, series, value, string, bool, err FROM samples_recent WHERE id BETWEEN ? AND ?) s "
        "JOIN series r ON r.id = s.series WHERE s.frame_id = ? ORDER BY s.id",
        (sample_id - 64, sample_id + 64, sample_id - 64, sample_id + 64, frame_id)).fetchall()
    out = []
    for _, name, unit, value, string, boolean, err in rows:
        shown = value if value is not None else string if string is not None else (
            bool(boolean) if boolean is not None else None)
        out.append({"name": name, "unit": unit, "value": shown, "err": err})
    return out


def last_boot(reader: Reader, device: str) -> dict | None:
    """The device's newest boot frame: {time, records}."""
    best = None
    with reader.shards() as shards:
        for _, conn in shards:
            row = conn.execute("SELECT id FROM series WHERE device=? AND name='fw'", (device,)).fetchone()
            if row is None:
                continue
            found = conn.execute(f"SELECT id, frame_id, time FROM {_SAMPLES} ORDER BY time DESC LIMIT 1",
                                 {"sid": row[0], "a": 0, "b": 1e12}).fetchone()
            if found and (best is None or found[2] > best["time"]):
                best = {"time": found[2], "records": frame_records(conn, found[0], found[1])}
    return best
