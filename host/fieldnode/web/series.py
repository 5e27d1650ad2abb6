"""A node's readings over a range for its charts, its events on the same axis, its last boot.

A chart is answered with at most `buckets` points: the range is cut into equal time buckets and
each bucket gives the min, max and mean of its samples (and the mean of their times, so a bucket
holding one sample is that sample exactly). The database does the grouping: SQLite from the
gateway's minute rollups where buckets are whole minutes (buckets.py), so a week of 1 Hz samples
(604,800 rows) is 10,080 rollup rows read and crosses to the browser as a few hundred points
(bench/web_chart.py measures it against returning every row); PostgreSQL with one GROUP BY over
the samples. Every query is written once, for both engines (dialect.py)."""
from __future__ import annotations

from typing import Any

from .buckets import Buckets, Merged
from .reader import Reader

MAX_BUCKETS = 2000
# Frames with these records are shown as events on the time axis: boots (the `reset` record of a
# boot frame) and the firmware's event frames (`event`: thresholds, failsafe, interlocks, queue losses).
EVENT_NAMES = ("event", "reset")
EVENT_LIMIT = 500
# Records that are not measurements over time: a boot frame's strings and schema, an ack's fields.
NOT_CHARTED = frozenset(("fw", "board", "reset", "schema", "event", "ack", "result", "reason"))
_IN_RANGE = "series=:sid AND time>=:a AND time<:b"
_EVENT_SERIES = ", ".join(f"'{name}'" for name in EVENT_NAMES)


def _samples(reader: Reader) -> str:
    """A series' samples in [:a, :b), every sample table of the engine."""
    return reader.dialect.samples("id, frame_id, time, value, string", _IN_RANGE)


def series_of(reader: Reader, device: str) -> list[dict]:
    """The device's readings (name, unit) across shards, numeric ones first."""
    found: dict[tuple[str, str], dict] = {}
    with reader.shards() as shards:
        for _, conn in shards:
            for name, unit in reader.dialect.run(conn, "SELECT name, unit FROM series WHERE device=:dev ORDER BY name",
                                                 {"dev": device}):
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
            for sid, series_unit in reader.dialect.run(
                    conn, "SELECT id, unit FROM series WHERE device=:dev AND name=:name",
                    {"dev": device, "name": name}).fetchall():
                unit = series_unit
                cut.fold(conn, reader.dialect, sid, merged, rollups=rollups)
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
            for (sid,) in reader.dialect.run(conn, "SELECT id FROM series WHERE device=:dev AND name=:name",
                                             {"dev": device, "name": name}).fetchall():
                out.extend(reader.dialect.run(conn, f"SELECT time, value FROM {_samples(reader)} ORDER BY time",
                                              {"sid": sid, "a": start, "b": end}).fetchall())
    return out


def events(reader: Reader, device: str, start: float, end: float) -> list[dict]:
    """Boots and event frames of the device in range, oldest first: {time, what, records}."""
    out = []
    with reader.shards() as shards:
        for _, conn in shards:
            for sid, name in reader.dialect.run(
                    conn, f"SELECT id, name FROM series WHERE device=:dev AND name IN ({_EVENT_SERIES})",
                    {"dev": device}).fetchall():
                rows = reader.dialect.run(conn, f"SELECT * FROM {_samples(reader)} ORDER BY time DESC "
                                          f"LIMIT {EVENT_LIMIT}", {"sid": sid, "a": start, "b": end}).fetchall()
                for sample_id, frame_id, t, _value, string in rows:
                    what = f"boot ({string})" if name == "reset" else (string or "event")
                    out.append({"time": t, "what": what,
                                "records": frame_records(reader, conn, sample_id, frame_id)})
    out.sort(key=lambda e: e["time"])
    return out


def frame_records(reader: Reader, conn: Any, sample_id: int, frame_id: int) -> list[dict]:
    """The records of the frame a sample belongs to. A frame's samples have ids close together
    (the writer numbers them in order; dialect.py says how close), so this is a range of ids on
    the sample tables, not a scan."""
    window = reader.dialect.frame_window
    near = reader.dialect.samples("id, frame_id, series, value, string, bool, err", "id BETWEEN :lo AND :hi")
    rows = reader.dialect.run(
        conn, f"SELECT s.id, r.name, r.unit, s.value, s.string, s.bool, s.err FROM {near} "
        "JOIN series r ON r.id = s.series WHERE s.frame_id = :frame ORDER BY s.id",
        {"lo": sample_id - window, "hi": sample_id + window, "frame": frame_id}).fetchall()
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
            row = reader.dialect.run(conn, "SELECT id FROM series WHERE device=:dev AND name='fw'",
                                     {"dev": device}).fetchone()
            if row is None:
                continue
            found = reader.dialect.run(conn, f"SELECT id, frame_id, time FROM {_samples(reader)} "
                                       "ORDER BY time DESC LIMIT 1", {"sid": row[0], "a": 0, "b": 1e12}).fetchone()
            if found and (best is None or found[2] > best["time"]):
                best = {"time": found[2], "records": frame_records(reader, conn, found[0], found[1])}
    return best
