"""Load: 200 virtual nodes on loopback, one frame a second each: nothing lost, everything answered.

The figures (latency percentiles, retransmissions) are printed for the record; the bench
(bench/gateway_throughput.py) measures rates. Here only loss is asserted, never time.
"""
from __future__ import annotations

import asyncio
import sqlite3

from fieldnode.gateway import GatewayThread
from support.gateway_peers import Nodes
from support.senders import run_paced

NODES = 200
SECONDS = 5


def test_200_nodes_at_one_frame_a_second_lose_nothing(tmp_path):
    nodes = Nodes(tmp_path / "site.json", n=NODES)
    frames = [[nodes.frame(i) for _ in range(SECONDS)] for i in range(NODES)]
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0)) as gt:
        result = asyncio.run(run_paced(gt.address, frames, interval=1.0))
        counts = gt.call(lambda: dict(gt.gateway.counts))
    total = NODES * SECONDS
    print(f"\n{NODES} nodes x {SECONDS} frames in {result.elapsed:.1f} s: answered {result.acked}/{total}, "
          f"p50 {result.percentile(50) * 1000:.1f} ms, p99 {result.percentile(99) * 1000:.1f} ms, "
          f"max {max(result.latencies) * 1000:.1f} ms, retransmissions {result.retransmissions}")
    assert result.gave_up == 0 and result.codes == {"2.04": total}
    assert counts["accepted"] == total
    with sqlite3.connect(tmp_path / "gw.db") as conn:
        assert conn.execute("SELECT count(*) FROM frames").fetchone()[0] == total
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 2 * total
        assert conn.execute("SELECT count(DISTINCT device) FROM frames").fetchone()[0] == NODES
