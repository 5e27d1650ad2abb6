"""Live pages against the gateway's store rate: 1,000 virtual nodes sending one frame a second
each into a gateway serving the web page from its own process (as `fieldnode gateway --http`),
with 50 pages following the live feed, against the same load with no page open.

    .venv/bin/python bench/web_live_load.py [--nodes 1000] [--pages 50] [--seconds 20] [--rounds 2]

The pages are 50 event-stream clients (`GET /api/events`, what each open page holds, read to the
end of every message) in a process of their own; the senders are another process (RFC 7252
retransmission, tests/support/senders.py). The store rate is the frames the gateway stored over
the time the load took; rounds alternate without / with pages, and the ratio is taken round by
round (bench/report.py judges the median).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fieldnode.gateway import GatewayThread  # noqa: E402
from fieldnode.web.app import WebOptions  # noqa: E402
from fieldnode.web.server import WebServer  # noqa: E402
from support.gateway_peers import Nodes  # noqa: E402
from support.senders import run_paced  # noqa: E402

TARGET = 0.9


def _sender(addr: tuple, frames: list[list[bytes]], conn) -> None:
    r = asyncio.run(run_paced(addr, frames, 1.0))
    conn.send({"sent": r.sent, "answered": r.acked, "gave_up": r.gave_up, "retransmissions": r.retransmissions,
               "elapsed_s": r.elapsed, "p99_ms": r.percentile(99) * 1000})
    conn.close()


async def _pages(host: str, port: int, pages: int, seconds: float) -> dict:
    counts = {"messages": 0, "bytes": 0}

    async def page() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), left)
                except TimeoutError:
                    break
                if not chunk:
                    break
                counts["bytes"] += len(chunk)
                counts["messages"] += chunk.count(b"event: nodes")
        finally:
            writer.close()

    await asyncio.gather(*(page() for _ in range(pages)))
    return counts


def _pages_process(host: str, port: int, pages: int, seconds: float, conn) -> None:
    conn.send(asyncio.run(_pages(host, port, pages, seconds)))
    conn.close()


def one_round(nodes: Nodes, n: int, per_node: int, pages: int, db: Path) -> dict:
    ctx = multiprocessing.get_context("spawn")
    frames = [[nodes.frame(i) for _ in range(per_node)] for i in range(n)]
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0)) as gt, \
            WebServer(WebOptions(db=db), "127.0.0.1:0") as web:
        readers = None
        if pages:
            parent_p, child_p = ctx.Pipe()
            readers = ctx.Process(target=_pages_process, args=(*web.address, pages, per_node + 15, child_p))
            readers.start()
            time.sleep(3)  # every page connected before the load starts
        parent, child = ctx.Pipe()
        sender = ctx.Process(target=_sender, args=(gt.address, frames, child))
        sender.start()
        load = parent.recv()
        sender.join()
        stored = gt.call(lambda: dict(gt.gateway.counts)).get("accepted", 0)
        seen = None
        if readers is not None:
            seen = parent_p.recv()
            readers.join()
    return {"stored": stored, "rate": stored / load["elapsed_s"], "p99_ms": load["p99_ms"],
            "retransmissions": load["retransmissions"], "gave_up": load["gave_up"], "pages": seen}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--pages", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=20, help="frames per node (one a second)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "web_live_load.json")
    args = ap.parse_args()
    without, with_pages = [], []
    with tempfile.TemporaryDirectory(prefix="fieldnode-webload-") as tmp:
        nodes = Nodes(Path(tmp) / "site.json", n=args.nodes)
        for r in range(args.rounds):
            for pages, into in ((0, without), (args.pages, with_pages)):
                got = one_round(nodes, args.nodes, args.seconds, pages, Path(tmp) / f"gw-{r}-{pages}.db")
                into.append(got)
                print(f"round {r}, {pages} pages: stored {got['stored']:,} at {got['rate']:,.0f}/s, p99 "
                      f"{got['p99_ms']:.1f} ms, retransmissions {got['retransmissions']}, pages saw {got['pages']}",
                      flush=True)
    ratios = [w["rate"] / o["rate"] for w, o in zip(with_pages, without, strict=True)]
    result = {"benchmark": "web_live_load", "nodes": args.nodes, "pages": args.pages, "seconds": args.seconds,
              "target": TARGET, "without": without, "with_pages": with_pages, "ratios": ratios,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()[0]}}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"store rate with {args.pages} pages / without: median {statistics.median(ratios):.3f} "
          f"(rounds {', '.join(f'{x:.3f}' for x in ratios)}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
