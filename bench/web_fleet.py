"""The fleet page with 1,000 nodes in headless chromium: time to the first paint and to the whole
table, and how long a stored frame takes to show on the open page (live update).

    .venv/bin/python bench/web_fleet.py [--nodes 1000] [--rounds 10] [--out bench/results/web_fleet.json]

The database has the gateway's schema: N nodes, each with a boot frame (board, firmware) and four
readings with their last 20 samples. The page is served by `fieldnode web`'s server on loopback;
Debian's chromium (scripts/install-system-deps) is driven by Playwright. A live update is a frame
row and its samples committed to the database as the gateway commits them; the clock runs from
the commit to the moment the page's cell shows the new value (the feed looks twice a second, so
about 0.25 s of it is waiting for the next look).
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
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent

from fieldnode.store.sqlite.connection import connect  # noqa: E402
from fieldnode.store.sqlite.transaction import write_transaction  # noqa: E402
from fieldnode.web.app import WebOptions  # noqa: E402
from fieldnode.web.server import WebServer  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
READINGS = (("env.temp", "Cel"), ("env.hum", "%RH"), ("env.press", "Pa"), ("loop1", "bar"))
HISTORY = 20


class Fleet:
    """N nodes in a gateway database, and frames added to it as the gateway adds them."""

    def __init__(self, db: Path, nodes: int) -> None:
        self.conn = connect(db, synchronous="OFF")
        self.devices = [f"02f1e1{i:06x}" for i in range(nodes)]
        self.series: dict[tuple[str, str], int] = {}
        self.frame_id = 0
        self.sample_id = 0
        now = time.time()
        with write_transaction(self.conn):
            for n, dev in enumerate(self.devices):
                self.conn.execute("INSERT INTO devices (device, name, highest_counter, frames, first_seen, last_seen, "
                                  "last_source, last_kind, kid) VALUES (?,?,?,?,?,?,?,0,?)",
                                  (dev, f"node-{n:04d}", HISTORY, HISTORY + 1, now - 3600, now, "10.0.0.1:5683",
                                   dev + "0001"))
                for name, unit in READINGS + (("board", ""), ("fw", "")):
                    cur = self.conn.execute("INSERT INTO series (device, name, unit) VALUES (?,?,?)", (dev, name, unit))
                    self.series[(dev, name)] = cur.lastrowid
                self._frame(dev, now - 3600, [("board", None, "virtual"), ("fw", None, "0.1.0")], "samples")
                for k in range(HISTORY):
                    self._frame(dev, now - (HISTORY - k) * 60,
                                [(name, 20.0 + j + (k % 5) / 10, None) for j, (name, _) in enumerate(READINGS)],
                                "samples")

    def _frame(self, dev: str, t: float, records: list[tuple[str, float | None, str | None]], table: str) -> None:
        self.frame_id += 1
        self.conn.execute("INSERT INTO frames (id, device, counter, kid, kind, alg, tag, base_time, received, source, "
                          "raw) VALUES (?,?,?,?,0,4,x'00',?,?,'bench',x'00')",
                          (self.frame_id, dev, self.frame_id, dev + "0001", t, t))
        for name, value, string in records:
            self.sample_id += 1
            self.conn.execute(f"INSERT INTO {table} (id, frame_id, series, time, value, string) VALUES (?,?,?,?,?,?)",
                              (self.sample_id, self.frame_id, self.series[(dev, name)], t, value, string))

    def send(self, dev: str, value: float) -> None:
        now = time.time()
        with write_transaction(self.conn):
            self._frame(dev, now, [(name, value if j == 0 else 20.0, None) for j, (name, _) in enumerate(READINGS)],
                        "samples_recent")
            self.conn.execute("UPDATE devices SET last_seen=?, frames=frames+1 WHERE device=?", (now, dev))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "web_fleet.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fieldnode-webfleet-") as tmp:
        db = Path(tmp) / "gateway.db"
        fleet = Fleet(db, args.nodes)
        paint, table, live = [], [], []
        with WebServer(WebOptions(db=db), "127.0.0.1:0") as web, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for r in range(args.rounds + 1):  # round 0 warms the server and the browser, not kept
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                t0 = time.perf_counter()
                page.goto(web.url)
                page.wait_for_selector(f"#fleet-rows tr:nth-child({args.nodes})")
                ms_table = (time.perf_counter() - t0) * 1000
                fcp = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null")
                page.wait_for_selector("#live.on")
                dev = fleet.devices[r * 97 % args.nodes]
                value = 30.0 + r + 0.5
                cell = f"#fleet-rows tr[data-device='{dev}'] .reading[data-name='env.temp'] .value"
                t1 = time.perf_counter()
                fleet.send(dev, value)
                page.wait_for_function("([sel, text]) => document.querySelector(sel)?.textContent === text",
                                       arg=[cell, f"{value:g}"], polling="raf", timeout=30_000)
                ms_live = (time.perf_counter() - t1) * 1000
                page.close()
                print(f"round {r}: first paint {fcp:.0f} ms, whole table {ms_table:.0f} ms, live update "
                      f"{ms_live:.0f} ms", flush=True)
                if r:
                    paint.append(round(fcp, 1))
                    table.append(round(ms_table, 1))
                    live.append(round(ms_live, 1))
            browser.close()
        fleet.conn.close()
    result = {"benchmark": "web_fleet", "nodes": args.nodes,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()[0]},
              "first_paint_ms": paint, "table_ms": table, "live_ms": live}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"median: first paint {statistics.median(paint):.0f} ms, whole table {statistics.median(table):.0f} ms, "
          f"live update {statistics.median(live):.0f} ms; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
