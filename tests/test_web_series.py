"""What the page reads: the chart query's reduction (min, max and mean per time bucket, over both
sample tables and every shard, from the gateway's minute rollups where buckets are whole minutes,
equal to the same figures computed from every row), and the fleet over every shard; on a
PostgreSQL store the same answers for the same samples, and every gateway's frames in the feed."""
from __future__ import annotations

import math
import random
import sqlite3
from pathlib import Path

import psycopg
import pytest

from fieldnode.store.backend import make_writer
from fieldnode.store.postgres.connection import connect as pg_connect
from fieldnode.store.records import StoreItem
from fieldnode.store.sqlite.connection import connect
from fieldnode.store.sqlite.shards import shard_path
from fieldnode.store.sqlite.writer import Store
from fieldnode.web.fleet import Arrivals, fleet_rows
from fieldnode.web.sqlite_reader import SqliteReader
from fieldnode.web.pg_reader import PgReader
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
    reader = SqliteReader(db)
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
    reader = SqliteReader(db)
    got = reduced(reader, DEVICE, "env.temp", 5000.0, 5500.0, 600)
    assert got["t"] == [t for t, _ in rows] and got["mean"] == [v for _, v in rows] == got["min"] == got["max"]
    reader.close()


def _through_gateway(path: Path, moved: list[tuple[float, float]], late: list[tuple[float, float]],
                     recent: list[tuple[float, float]], first_id: int) -> int:
    """env.temp's samples stored as the gateway stores them: into samples_recent, then moved into
    samples (and so rolled up) in bulk; `late` after the others (old times, a node's spool);
    `recent` left in samples_recent. Returns the series id."""
    conn = connect(path)
    sid = conn.execute("INSERT INTO series (device, name, unit) VALUES (?, 'env.temp', 'Cel')", (DEVICE,)).lastrowid
    other = conn.execute("INSERT INTO series (device, name, unit) VALUES (?, 'env.hum', '%RH')", (DEVICE,)).lastrowid
    store = Store(path)
    store.open()
    next_id = first_id
    for chunk in (moved[: len(moved) // 2], moved[len(moved) // 2:], late, recent):
        rows = [(next_id + i, sid, t, v) for i, (t, v) in enumerate(chunk)]
        rows.append((next_id + len(chunk), other, moved[-1][0], 1e9))  # another reading: never in this chart
        next_id += len(rows)
        conn.executemany("INSERT INTO samples_recent (id, frame_id, series, time, value) VALUES (?, 1, ?, ?, ?)",
                         rows)
        if chunk is not recent:
            store.index_recent()
    store.close()
    conn.close()
    return sid


def _assert_same_chart(got: dict, expected: dict) -> None:
    """The same buckets and samples; sums of times and values may differ in the last bits (added up
    in another order)."""
    assert {k: got[k] for k in ("n", "unit", "bucket_s", "min", "max")} == {
        k: expected[k] for k in ("n", "unit", "bucket_s", "min", "max")}
    assert got["t"] == pytest.approx(expected["t"], rel=1e-12)
    assert got["mean"] == pytest.approx(expected["mean"], rel=1e-9)


def _every_row_bucketed(rows: list[tuple[float, float]], origin: float, width: float) -> list[list[tuple]]:
    by_bucket: dict[int, list[tuple[float, float]]] = {}
    for t, v in rows:
        by_bucket.setdefault(int((t - origin) // width), []).append((t, v))
    return [by_bucket[k] for k in sorted(by_bucket)]


def test_a_long_range_from_the_minute_rollups_equals_every_row_aggregated_ends_and_recent_samples_included(
        tmp_path):
    """Buckets of whole minutes: the whole minutes of the range are read from the gateway's rollups,
    the partial minutes at both ends and samples_recent from the rows; the answer is the one every
    row gives, late samples (old times, moved after newer ones) and samples on minute edges included."""
    rng = random.Random(11)
    db = tmp_path / "gw.db"
    t0 = 1_700_000_040.0  # on a minute
    rows = [(t0 + i * 7.3 + rng.random(), rng.uniform(-20, 100)) for i in range(20_000)]  # ~41 hours
    edges = [(t0 + 60 * k, rng.uniform(0, 1)) for k in range(1, 3000)]  # a minute's first instant ...
    edges += [(math.nextafter(t, 0.0), rng.uniform(0, 1)) for t, _ in edges]  # ... and the last before it
    moved, late, recent = rows[5000:16000] + edges, rows[:5000] + rows[16000:19000], rows[19000:]
    _through_gateway(db, moved, late, recent, 1)
    shard1 = [(t0 + 5000 + i * 13.1, rng.uniform(-20, 100)) for i in range(5000)]
    _through_gateway(shard_path(db, 1), shard1[:4000], [], shard1[4000:], 10**7)
    reader = SqliteReader(db)
    start, end, buckets = t0 + 1234.5, t0 + 140_000.25, 300  # neither end on a minute
    got = reduced(reader, DEVICE, "env.temp", start, end, buckets)
    _assert_same_chart(got, reduced(reader, DEVICE, "env.temp", start, end, buckets, rollups=False))
    width = got["bucket_s"]
    assert width % 60 == 0 and width >= (end - start) / buckets
    stored = sorted(every_row(reader, DEVICE, "env.temp", start, end))
    assert len(stored) == got["n"] == sum(1 for t, _ in rows + edges + shard1 if start <= t < end)
    expected = _every_row_bucketed(stored, start // 60 * 60, width)
    assert len(expected) == len(got["t"]) <= buckets
    assert got["min"] == [min(v for _, v in b) for b in expected]
    assert got["max"] == [max(v for _, v in b) for b in expected]
    assert got["mean"] == pytest.approx([sum(v for _, v in b) / len(b) for b in expected])
    assert got["t"] == pytest.approx([sum(t for t, _ in b) / len(b) for b in expected])
    # The whole minutes come from the rollups: their samples deleted behind the rollups' back
    # change the rows' answer, not the rollups'; the ends still come from the rows.
    conn = connect(db)
    first_whole, last_whole = math.ceil(start / 60) * 60, end // 60 * 60
    conn.execute("DELETE FROM samples WHERE time >= ? AND time < ?", (first_whole, last_whole))
    conn.execute("DELETE FROM samples WHERE time >= ? AND time < ?", (start, start + 1))
    conn.close()
    again = reduced(reader, DEVICE, "env.temp", start, end, buckets)
    assert again["n"] == got["n"] - sum(1 for t, _ in moved + late if start <= t < start + 1) > 0
    assert reduced(reader, DEVICE, "env.temp", start, end, buckets, rollups=False)["n"] < again["n"]
    reader.close()


def test_a_database_without_rollups_is_charted_from_its_rows_until_a_gateway_opens_it(tmp_path):
    """A database made before rollups (or a shard no gateway of this release has opened): the
    page aggregates its rows; the gateway rolls its samples up when it opens it, same answer."""
    db = tmp_path / "gw.db"
    rows = [(1_700_000_040.0 + i * 9.5, float(i % 101)) for i in range(10_000)]
    _through_gateway(db, rows[:9000], [], rows[9000:], 1)
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE rollups")
    reader = SqliteReader(db)
    start, end = rows[10][0] + 0.5, rows[-10][0] + 0.5
    from_rows = reduced(reader, DEVICE, "env.temp", start, end, 200)
    assert from_rows["n"] == 9980 and from_rows["bucket_s"] % 60 == 0
    store = Store(db)
    store.open()
    store.close()
    _assert_same_chart(reduced(reader, DEVICE, "env.temp", start, end, 200), from_rows)
    reader.close()


def test_a_range_of_short_buckets_is_aggregated_from_the_rows_exactly(tmp_path):
    db = tmp_path / "gw.db"
    rows = [(6000.0 + i * 0.25, float(i % 17)) for i in range(4000)]
    _through_gateway(db, rows[:3000], [], rows[3000:], 1)
    reader = SqliteReader(db)
    start, end, buckets = 6010.1, 6950.0, 600  # 1.6 s buckets: shorter than a minute
    got = reduced(reader, DEVICE, "env.temp", start, end, buckets)
    assert got["bucket_s"] == pytest.approx((end - start) / buckets)
    expected = _every_row_bucketed([(t, v) for t, v in rows if start <= t < end], start, got["bucket_s"])
    assert got["n"] == sum(len(b) for b in expected)
    assert got["min"] == [min(v for _, v in b) for b in expected]
    assert got["max"] == [max(v for _, v in b) for b in expected]
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
    reader = SqliteReader(db)
    rows = {r["device"]: r for r in fleet_rows(reader, Arrivals(), "site")}
    assert set(rows) == {d.hex() for d in nodes.devices}
    assert [rows[d.hex()]["frames"] for d in nodes.devices] == [3, 6, 3]
    assert rows[nodes.devices[1].hex()]["counter"] == 6
    assert set(rows[nodes.devices[2].hex()]["readings"]) == {"temp", "hum"}
    reader.close()
    for store in stores:
        store.close()


def test_the_fleet_row_carries_the_heap_a_node_last_reported_apart_from_its_readings(tmp_path):
    """Boot and health frames carry heap.free, heap.low and heap.block (docs/firmware.md, "Memory"):
    the fleet shows the last of them in a cell of their own, not as readings; a node that never
    reported has none."""
    nodes = Nodes(tmp_path / "keys.json", n=2)
    verifier = Verifier(nodes.keystore().lookup)
    store = Store(tmp_path / "gw.db")
    store.open()
    heap = [{"n": "heap.free", "v": 41000}, {"n": "heap.low", "v": 38000}, {"n": "heap.block", "v": 30000}]
    later = [{"n": "heap.free", "v": 40000}, {"n": "heap.low", "v": 37000}, {"n": "heap.block", "v": 29000}]
    frames = [nodes.frame(0, records=heap), nodes.frame(0), nodes.frame(0, records=later), nodes.frame(1)]
    items = [StoreItem(verifier.verify(f), f, 1000.0 + n, "127.0.0.1:5683", "") for n, f in enumerate(frames)]
    assert {o.status for o in store.commit(items, {}, None)} == {"stored"}
    reader = SqliteReader(tmp_path / "gw.db")
    rows = {r["device"]: r for r in fleet_rows(reader, Arrivals(), "site")}
    reporting, silent = (rows[d.hex()] for d in nodes.devices)
    assert reporting["heap"] == {"free": 40000, "low": 37000, "block": 29000}  # the last report
    assert not any(name.startswith("heap.") for name in reporting["readings"])
    assert set(reporting["readings"]) == {"temp", "hum"}
    assert silent["heap"] is None
    reader.close()
    store.close()


# -- PostgreSQL: the same questions, one GROUP BY over the samples ------------------------------------

def _into_postgres(target, rows: list[tuple[float, float]]) -> None:
    """env.temp's samples (and one of another reading) in a PostgreSQL store's tables."""
    conn = pg_connect(target)  # makes the schema
    with conn:
        sid, other = (conn.execute("INSERT INTO series (device, name, unit) VALUES (%s, %s, %s) RETURNING id",
                                   (DEVICE, name, unit)).fetchone()[0]
                      for name, unit in (("env.temp", "Cel"), ("env.hum", "%RH")))
        with conn.cursor() as cur, cur.copy("COPY samples (id, frame_id, series, time, value) FROM STDIN") as copy:
            for i, (t, v) in enumerate(rows):
                copy.write_row((i + 1, 1, sid, t, v))
            copy.write_row((len(rows) + 1, 1, other, rows[-1][0], 1e9))  # another reading: never in this chart


def test_a_postgresql_store_is_charted_as_sqlite_charts_the_same_samples(tmp_path, pg_db):
    """Long ranges (whole-minute buckets: SQLite from its rollups, PostgreSQL by GROUP BY over the
    rows), short buckets and a sample a bucket: the same buckets, samples, min and max."""
    rng = random.Random(5)
    t0 = 1_700_000_040.0
    rows = [(t0 + i * 6.1 + rng.random(), rng.uniform(-20, 100)) for i in range(12_000)]
    rows += [(t0 + 60 * k, rng.uniform(0, 1)) for k in range(1, 1200)]  # on minute edges ...
    rows += [(math.nextafter(t0 + 60 * k, 0.0), rng.uniform(0, 1)) for k in range(1, 1200)]  # ... and just before
    db = tmp_path / "gw.db"
    _through_gateway(db, rows[2000:9000] + rows[12_000:], rows[:2000], rows[9000:12_000], 1)
    _into_postgres(pg_db, rows)
    sqlite_reader, pg_reader = SqliteReader(db), PgReader(pg_db)
    for start, end, buckets in ((t0 + 1234.5, t0 + 70_000.25, 300), (t0 + 100.1, t0 + 1000.0, 600),
                                (t0 - 50.0, t0 + 90_000.0, 100), (t0 + 500.0, t0 + 560.0, 600)):
        on_pg = reduced(pg_reader, DEVICE, "env.temp", start, end, buckets)
        on_sqlite = reduced(sqlite_reader, DEVICE, "env.temp", start, end, buckets)
        assert on_pg["n"] > 0
        _assert_same_chart(on_pg, on_sqlite)
        assert sorted(every_row(pg_reader, DEVICE, "env.temp", start, end)) == sorted(
            every_row(sqlite_reader, DEVICE, "env.temp", start, end))
    sqlite_reader.close()
    pg_reader.close()


def test_on_postgresql_the_fleet_and_the_feed_read_every_gateways_frames_whatever_their_commit_order(
        tmp_path, pg_db):
    """Two gateways share the store: the fleet lists every device once with its frames; a frame
    whose id is below one already seen (its gateway committed later) still reaches the feed."""
    nodes = Nodes(tmp_path / "keys.json", n=3)
    verifier = Verifier(nodes.keystore().lookup)
    writers = [make_writer(pg_db, shard=0), make_writer(pg_db, shard=1)]
    for shard, (writer, devices) in enumerate(zip(writers, ((0, 1), (1, 2)), strict=True)):
        writer.open()
        frames = [nodes.frame(i) for i in devices for _ in range(3)]
        items = [StoreItem(verifier.verify(f), f, 1000.0 + 100 * shard + n, "127.0.0.1:5683", "")
                 for n, f in enumerate(frames)]
        assert {o.status for o in writer.commit(items, {"frames": len(items)}, None)} == {"stored"}
        writer.close()
    reader = PgReader(pg_db)
    rows = {r["device"]: r for r in fleet_rows(reader, Arrivals(), "site")}
    assert set(rows) == {d.hex() for d in nodes.devices}
    assert [rows[d.hex()]["frames"] for d in nodes.devices] == [3, 6, 3]
    assert rows[nodes.devices[1].hex()]["counter"] == 6
    assert set(rows[nodes.devices[2].hex()]["readings"]) == {"temp", "hum"}
    assert reader.counters()["frames"] == 12
    marks = {0: reader.heads()[0][0]}
    insert = ("INSERT INTO frames (id, device, counter, kid, kind, alg, tag, base_time, received, source, raw) "
              "VALUES (nextval('frames_id_seq'), %s, %s, %s, 0, 5, %s, 0, %s, 'test', %s)")
    with psycopg.connect(pg_db.dsn) as slow, psycopg.connect(pg_db.dsn, autocommit=True) as fast:
        slow.execute(insert, ("0000000000aa", 1, "0000000000aa0001", b"t", 2000.0, b"r"))  # takes the lower id
        fast.execute(insert, ("0000000000bb", 1, "0000000000bb0001", b"t", 2001.0, b"r"))  # commits first
        found, marks = reader.frames_after(marks)
        assert found == [("0000000000bb", 2001.0)]
        slow.commit()
    found, marks = reader.frames_after(marks)
    assert found == [("0000000000aa", 2000.0)]
    assert reader.frames_after(marks)[0] == []
    reader.close()
