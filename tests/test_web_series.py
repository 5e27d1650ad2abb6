"""What the page reads: the chart query's reduction (min, max and mean per time bucket, over both
sample tables and every shard, equal to the same figures computed from every row), and the fleet
over every shard."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from fieldnode.store.records import StoreItem
from fieldnode.store.sqlite.connection import connect
from fieldnode.store.sqlite.shards import shard_path
from fieldnode.store.sqlite.writer import Store
from fieldnode.web.fleet import Arrivals, fleet_rows
from fieldnode.web.reader import Reader
from fieldnode.web.rollup import Rollups
from fieldnode.web.series import every_row, reduced
from fieldnode.wire.frame import Verifier
from support.gateway_peers import Nodes

DEVICE = "02f1e1680001"


def _fill(path: Path, rows: list[tuple[float, float]], recent: list[tuple[float, float]], first_id: int) -> None:
    conn = connect(path)
    conn.execute("INSERT INTO series (device, name, unit) VALUES (?, 'env.temp', 'Cel')", (DEVICE,))
    conn.execute("INSERT INTO series (device, name, unit) VALUES (?, 'env.hum', '%RH')", (DEVICE,))
    sid = conn.execute("SELECT id FROM series WHERE name='env.temp'").fetchone()[0]
    other = conn.execute("SELECT id FROM series WHERE name='env.hum'").fetchone()[0]
    conn.executemany("INSERT INTO samples (id, frame_id, series, time, value) VALUES (?, 1, ?, ?, ?)",
                     [(first_id + i, sid, t, v) for i, (t, v) in enumerate(rows)])
    conn.executemany("INSERT INTO samples_recent (id, frame_id, series, time, value) VALUES (?, 1, ?, ?, ?)",
                     [(first_id + 10**6 + i, sid, t, v) for i, (t, v) in enumerate(recent)])
    conn.execute("INSERT INTO samples (id, frame_id, series, time, value) VALUES (?, 1, ?, 1000.5, 1e9)",
                 (first_id + 10**7, other))  # another reading: never in this chart
    conn.close()


def test_every_bucket_holds_the_min_max_and_mean_of_its_rows(tmp_path):
    rng = random.Random(7)
    db = tmp_path / "gw.db"
    shard0 = [(1000 + i * 0.7, rng.uniform(-5, 30)) for i in range(3000)]
    shard1 = [(1000 + i * 1.3 + 0.1, rng.uniform(-5, 30)) for i in range(1500)]
    _fill(db, shard0[:2500], shard0[2500:], 1)
    _fill(shard_path(db, 1), shard1, [], 5_000_000)
    reader = Reader(db)
    start, end, buckets = 1100.0, 2900.0, 37
    got = reduced(reader, DEVICE, "env.temp", start, end, buckets)
    rows = sorted(every_row(reader, DEVICE, "env.temp", start, end))
    assert len(rows) == got["n"] == sum(1 for t, _ in shard0 + shard1 if start <= t < end)
    width = (end - start) / buckets
    by_bucket: dict[int, list[tuple[float, float]]] = {}
    for t, v in rows:
        by_bucket.setdefault(int((t - start) / width), []).append((t, v))
    expected = [by_bucket[k] for k in sorted(by_bucket)]
    assert len(got["t"]) == len(expected) <= buckets
    assert got["min"] == pytest.approx([min(v for _, v in b) for b in expected])
    assert got["max"] == pytest.approx([max(v for _, v in b) for b in expected])
    assert got["mean"] == pytest.approx([sum(v for _, v in b) / len(b) for b in expected])
    assert got["t"] == pytest.approx([sum(t for t, _ in b) / len(b) for b in expected])
    reader.close()


def test_a_range_with_one_sample_a_bucket_is_every_sample_exactly(tmp_path):
    db = tmp_path / "gw.db"
    rows = [(5000.0 + i * 10, float(i)) for i in range(50)]
    _fill(db, rows, [], 1)
    reader = Reader(db)
    got = reduced(reader, DEVICE, "env.temp", 5000.0, 5500.0, 600)
    assert got["t"] == [t for t, _ in rows] and got["mean"] == [v for _, v in rows] == got["min"] == got["max"]
    reader.close()


def test_a_long_range_from_minute_rollups_counts_every_sample_once_late_ones_included(tmp_path):
    db = tmp_path / "gw.db"
    rng = random.Random(11)
    rows = [(60_000 + i * 7.0, rng.uniform(0, 100)) for i in range(20_000)]  # ~39 hours
    _fill(db, rows[5000:15000], [], 1)
    reader = Reader(db)
    rollups = Rollups()
    start, end, buckets = 60_000 + 30_000.0, 60_000 + 100_000.0, 200
    reduced(reader, DEVICE, "env.temp", start, end, buckets, rollups)  # caches what is stored so far
    # Then samples arrive, some with old times (a node's spool), some in samples_recent, and the
    # next question reaches further back than the first.
    conn = connect(db)
    sid = conn.execute("SELECT id FROM series WHERE name='env.temp'").fetchone()[0]
    late = rows[:5000] + rows[15000:]
    conn.executemany("INSERT INTO samples (id, frame_id, series, time, value) VALUES (?, 2, ?, ?, ?)",
                     [(2 * 10**7 + i, sid, t, v) for i, (t, v) in enumerate(late[:-1000])])
    conn.executemany("INSERT INTO samples_recent (id, frame_id, series, time, value) VALUES (?, 2, ?, ?, ?)",
                     [(3 * 10**7 + i, sid, t, v) for i, (t, v) in enumerate(late[-1000:])])
    conn.close()
    start = 60_000 + 10_000.0
    got = reduced(reader, DEVICE, "env.temp", start, end, buckets, rollups)
    width = got["bucket_s"]
    assert width % 60 == 0 and width >= (end - start) / buckets
    first = start // 60 * 60
    last = -(-end // 60) * 60  # the range rounded out to whole minutes
    inside = [(t, v) for t, v in rows if first <= t < last]
    by_bucket: dict[int, list[float]] = {}
    for t, v in inside:
        by_bucket.setdefault(int((t - first) // width), []).append(v)
    expected = [by_bucket[k] for k in sorted(by_bucket)]
    assert got["n"] == len(inside)
    assert got["min"] == pytest.approx([min(b) for b in expected])
    assert got["max"] == pytest.approx([max(b) for b in expected])
    assert got["mean"] == pytest.approx([sum(b) / len(b) for b in expected])
    reader.close()


def test_the_fleet_is_read_from_every_shard_the_gateway_workers_write(tmp_path):
    """With --workers 2 each worker stores its devices in its own file: the page lists them all,
    and a device stored in both (a run with another worker count) once, its frames added up."""
    nodes = Nodes(tmp_path / "keys.json", n=3)
    verifier = Verifier(nodes.keystore().lookup)
    db = tmp_path / "gw.db"
    stores = []
    for shard, devices in ((0, (0, 1)), (1, (1, 2))):
        store = Store(db, shard=shard)
        store.open()
        stores.append(store)
        frames = [nodes.frame(i) for i in devices for _ in range(3)]
        items = [StoreItem(verifier.verify(f), f, 1000.0 + 100 * shard + n, "127.0.0.1:5683", "")
                 for n, f in enumerate(frames)]
        assert {o.status for o in store.commit(items, {}, None)} == {"stored"}
    reader = Reader(db)
    rows = {r["device"]: r for r in fleet_rows(reader, Arrivals(), "site")}
    assert set(rows) == {d.hex() for d in nodes.devices}
    assert [rows[d.hex()]["frames"] for d in nodes.devices] == [3, 6, 3]
    assert rows[nodes.devices[1].hex()]["counter"] == 6
    assert set(rows[nodes.devices[2].hex()]["readings"]) == {"temp", "hum"}
    reader.close()
    for store in stores:
        store.close()
