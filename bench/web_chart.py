"""The web page's chart query: one reading over 7 days of 1 Hz samples (604,800 rows), answered
reduced (min/max/mean per bucket, what the page asks for) against the same range returning every
row (what a page without server-side reduction would fetch), measured side by side.

    .venv/bin/python bench/web_chart.py [--days 7] [--rounds 5] [--out bench/results/web.json]

The database is the gateway's schema, one node with four readings at 1 Hz (2.4 M sample rows),
in the indexed samples table as the gateway leaves them, written as a database made before the
minute rollups: opening it then rolls them up (the one-time migration, timed). Each round adds a
minute of new samples to samples_recent (as the gateway does between two looks of a live page)
and times, for each way, the query and the JSON the server sends, in this process
(fieldnode.web.series): reduced from the rollups over connections opened for the question
(cold: SQLite's page cache empty, as after the server starts) and over kept ones (warm), every
row aggregated, every row returned. The reduced way is also timed over HTTP through the running
app (uvicorn, loopback), as the browser gets it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from fieldnode.store.sqlite.connection import connect  # noqa: E402
from fieldnode.store.sqlite.transaction import write_transaction  # noqa: E402
from fieldnode.web.app import WebOptions  # noqa: E402
from fieldnode.web.sqlite_reader import SqliteReader  # noqa: E402
from fieldnode.web.series import every_row, reduced  # noqa: E402
from fieldnode.web.server import WebServer  # noqa: E402

DEVICE = "02f1e1680001"
READINGS = (("env.temp", "Cel"), ("env.hum", "%RH"), ("env.press", "Pa"), ("loop1", "bar"))
BUCKETS = 600  # what the page asks for a chart 1200 pixels wide (one point every two pixels)
TARGET_MS = 200.0


def build(db: Path, seconds: int, end: float) -> int:
    """The node's samples, interleaved by time as the gateway stores them, in a database without
    rollups (as one made before them); the row count of one reading."""
    conn = connect(db, synchronous="OFF")
    start = end - seconds
    with write_transaction(conn):
        conn.execute("DROP TABLE rollups")
        ids = []
        for name, unit in READINGS:
            cur = conn.execute("INSERT INTO series (device, name, unit) VALUES (?,?,?)", (DEVICE, name, unit))
            ids.append(cur.lastrowid)
        conn.execute("INSERT INTO frames (id, device, counter, kid, kind, alg, tag, base_time, received, source, raw) "
                     "VALUES (1, ?, 1, ?, 0, 4, x'00', ?, ?, 'bench', x'00')", (DEVICE, DEVICE + "0001", start, start))
        chunk = 50_000
        for first in range(0, seconds, chunk):
            rows = []
            for i in range(first, min(first + chunk, seconds)):
                t = start + i
                for k, sid in enumerate(ids):
                    rows.append((i * len(ids) + k + 1, sid, t, 20.0 + k + (i % 600) / 100.0))
            conn.executemany("INSERT INTO samples (id, frame_id, series, time, value) VALUES (?, 1, ?, ?, ?)", rows)
    conn.close()
    return seconds


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000.0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "web.json")
    args = ap.parse_args()
    seconds = int(args.days * 86400)
    with tempfile.TemporaryDirectory(prefix="fieldnode-webbench-") as tmp:
        db = Path(tmp) / "gateway.db"
        end = float(int(time.time()))
        t0 = time.perf_counter()
        rows = build(db, seconds, end)
        print(f"built {rows * len(READINGS):,} sample rows in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        connect(db).close()  # what the gateway's first open of an older database does: rolls it up
        fill_s = time.perf_counter() - t0
        print(f"rolled them up (the migration when a gateway first opens such a database) in {fill_s:.1f} s",
              flush=True)
        reader = SqliteReader(db)
        name = READINGS[0][0]
        writer = connect(db, synchronous="OFF")
        sid = writer.execute("SELECT id FROM series WHERE name=?", (name,)).fetchone()[0]
        figures: dict[str, list[float]] = {k: [] for k in ("cold_ms", "warm_ms", "grouped_ms", "every_row_ms",
                                                             "warm_http_ms")}
        sizes: dict[str, int] = {}
        with WebServer(WebOptions(db=db), "127.0.0.1:0") as web:
            for r in range(args.rounds + 1):  # round 0 warms the page cache and is not kept
                # A minute of new samples, as the gateway adds them between two looks of a live page.
                t_new = end + r * 60
                writer.executemany("INSERT INTO samples_recent (id, frame_id, series, time, value) VALUES (?,1,?,?,?)",
                                   [(10**9 + r * 60 + i, sid, t_new + i, 21.0) for i in range(60)])
                start, stop = t_new + 60 - seconds, t_new + 60
                span = (reader, DEVICE, name, start, stop)
                fresh = SqliteReader(db)  # its connections are opened by the question, page cache empty
                ms_c, body_c = timed(lambda a=(fresh, *span[1:]): json.dumps(reduced(*a, BUCKETS)))
                fresh.close()
                ms_w, body_w = timed(lambda a=span: json.dumps(reduced(*a, BUCKETS)))
                ms_g, body_g = timed(lambda a=span: json.dumps(reduced(*a, BUCKETS, rollups=False)))
                assert body_c == body_w and json.loads(body_g)["n"] == json.loads(body_w)["n"]
                ms_a, body_a = timed(lambda a=span: json.dumps(every_row(*a)))
                url = f"{web.url}api/node/{DEVICE}/series/{name}?from={start}&to={stop}&buckets={BUCKETS}"
                with urllib.request.urlopen(url, timeout=60) as resp:  # the server's connections opened
                    resp.read()
                t1 = time.perf_counter()
                with urllib.request.urlopen(url, timeout=60) as resp:
                    got = json.loads(resp.read())
                ms_h = (time.perf_counter() - t1) * 1000.0
                assert got["n"] >= rows and len(got["t"]) <= BUCKETS, (got["n"], rows)
                if r:
                    for k, v in (("cold_ms", ms_c), ("warm_ms", ms_w), ("grouped_ms", ms_g), ("every_row_ms", ms_a),
                                 ("warm_http_ms", ms_h)):
                        figures[k].append(round(v, 2))
                    sizes = {"reduced_bytes": len(body_w), "every_row_bytes": len(body_a), "cold_bytes": len(body_c)}
                print(f"round {r}: from rollups cold {ms_c:.1f} ms, warm {ms_w:.1f} ms ({len(body_w):,} B); "
                      f"grouped per question {ms_g:.1f} ms; every row {ms_a:.1f} ms ({len(body_a):,} B); "
                      f"warm over HTTP {ms_h:.1f} ms", flush=True)
        writer.close()
        reader.close()
    result = {
        "benchmark": "web",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()[0]},
        "rows": rows, "readings": len(READINGS), "buckets": BUCKETS, "target_ms": TARGET_MS,
        "rollup_fill_s": round(fill_s, 2), **figures, **sizes,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    med = {k: statistics.median(v) for k, v in figures.items()}
    print(f"median: warm {med['warm_ms']:.1f} ms, cold {med['cold_ms']:.1f} ms, grouped {med['grouped_ms']:.1f} ms, "
          f"every row {med['every_row_ms']:.1f} ms ({med['every_row_ms'] / med['warm_ms']:.0f}x the warm); "
          f"warm over HTTP {med['warm_http_ms']:.1f} ms; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
