"""A node's readings over a range for its charts, its events on the same axis, its last boot.

A chart is answered with at most `buckets` points: the range is cut into equal time buckets and
each bucket gives the min, max and mean of its samples (and the mean of their times, so a bucket
holding one sample is that sample exactly). SQLite does the grouping, from the gateway's minute
rollups where buckets are whole minutes (buckets.py), so a week of 1 Hz samples (604,800 rows)
is 10,080 rollup rows read and crosses to the browser as a few hundred points
(bench/web_chart.py measures it against returning every row)."""
from __future__ import annotations

import sqlite3

from .buckets import Buckets, Merged
from .reader import Reader

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


def reduced(reader: Reader, device: str, name: str, start: float, end: float, buckets: int, *,
            rollups: bool = True) -> dict:
    """{"t": [...], "min": [...], "max": [...], "mean": [...], "n": rows in range, "unit", "bucket_s"}
    for the numeric samples of device's reading `name` in [start, end), at most `buckets` points
    (buckets.py: whole minutes when a bucket is a minute or longer, then read from the gateway's
    minute rollups where they reach). `rollups=False` aggregates every row instead (the same answer)."""
    cut = Buckets.of(start, end, max(1, min(int(buckets), MAX_BUCKETS)))
    merged: Merged = {}
    unit = ""
    with reader.shards() as shards:
        for _, conn in shards:
            for sid, series_unit in conn.execute("SELECT id, unit FROM series WHERE device=? AND name=?",
                                                 (device, name)).fetchall():
                unit = series_unit
                cut.fold(conn, sid, merged, rollups=rollups)
    t, lo, hi, mean = [], [], [], []
    total = 0
    for _, (count, tsum, mn, mx, vsum) in sorted(merged.items()):
        total += int(count)
        t.append(tsum / count)
        lo.append(mn)
        hi.append(mx)
        mean.append(vsum / count)
    return {"t": t, "min": lo, "max": hi, "mean": mean, "n": total, "unit": unit, "bucket_s": cut.width}


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
