"""Load: 200 virtual nodes on loopback, one frame a second each: nothing lost, everything answered;
and a flood that must not grow the gateway's memory past its dedup cache's bound.

The figures (latency percentiles, retransmissions) are printed for the record; the bench
(bench/gateway_throughput.py) measures rates. Here only loss is asserted, never time.
"""
from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import sys
import time
import tracemalloc

import cbor2

from fieldnode.wire import coap
from fieldnode.wire.frame import FrameRejected, Verifier, compute_tag, device_base_name
from fieldnode.gateway import GatewayThread, read_status
from fieldnode.gateway.exchange import PENDING, MessageCache
from fieldnode.node.keystore import make_kid
from support.gateway_peers import Nodes
from support.nodesite import wait_for
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


def request(frame: bytes, mid: int) -> bytes:
    return coap.encode(coap.Message(coap.CON, coap.POST, mid, b"\x01", [(coap.URI_PATH, b"f"),
                                                                      (coap.CONTENT_FORMAT, b"\x11")], frame))


def deep_size(root: object) -> int:
    """The bytes of root and every object it holds, each counted once (what it keeps alive)."""
    seen: set[int] = set()
    stack, total = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is PENDING:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def test_a_flood_from_many_sources_keeps_the_dedup_cache_under_its_byte_bound(tmp_path):
    """Replays and garbage from many source addresses: each exchange is cached for 247 s, so a
    flood fills the cache. Its real size (every object in it, measured, not the cache's own
    estimate) stays under max_bytes, honest frames are all taken, and `status` shows the size."""
    nodes = Nodes(tmp_path / "site.json", n=2)
    cache = MessageCache(max_bytes=1 << 20)
    stored = nodes.frame(0)
    sizes = []
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), cache=cache, synchronous="NORMAL",
                       health_interval=0.1) as gt:
        gw = gt.gateway

        def flood(first: int) -> None:
            for n in range(first, first + 4000):
                addr = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 1024 + n % 60000)
                payload = stored if n % 2 else os.urandom(40 + n % 200)  # 2.03 answers, refusals
                gw.datagram_received(request(payload, n & 0xFFFF), addr)
            gw.datagram_received(request(nodes.frame(1), first & 0xFFFF), ("127.0.0.1", 9))

        gt.call(flood, 0)
        gt.call(gw.drain)
        for round_ in range(1, 6):  # 5 x 4000 exchanges: about ten times what 1 MiB holds
            gt.call(flood, round_ * 4000)
            gt.call(gw.drain)
            sizes.append(gt.call(lambda: (deep_size(vars(cache)), cache.bytes, len(cache))))
        counts = gt.call(lambda: dict(gw.counts))
        heartbeat = time.time()
        st = wait_for(lambda: (s := read_status(tmp_path / "gw.db")).workers[0]["heartbeat"] > heartbeat and s,
                      timeout=10, what="a heartbeat after the flood")
    for measured, estimate, entries in sizes:
        print(f"dedup cache: {entries} exchanges, measured {measured} bytes, estimate {estimate}")
        assert measured <= cache.max_bytes, (measured, entries)
        assert entries > 1000  # it holds what fits, not nothing
    # The honest node's 6 frames, and the replayed frame's first copy; every other copy is 2.03.
    assert counts["accepted"] == 6 + 1 and counts["duplicate"] == 6 * 2000 - 1
    assert 0 < st.workers[0]["dedup_bytes"] <= cache.max_bytes
    assert st.workers[0]["exchanges"] == sizes[-1][2]


def test_garbage_with_invalid_utf8_leaves_no_memory_behind(tmp_path):
    """cbor2's C decoder leaks each time a text string is not valid UTF-8 (agronholm/cbor2#257):
    the gateway decodes with invalid sequences replaced, so neither garbage (decoded before any
    MAC) nor a rogue node's signed payloads make its memory grow. Measured with tracemalloc around
    what the gateway runs for each datagram."""
    nodes = Nodes(tmp_path / "site.json", n=1)
    device = nodes.devices[0]
    verifier = Verifier(nodes.keystore().lookup)
    bad_text = b"\x70" + b"\xff" * 16  # a 16-byte text string that is not UTF-8
    protected = cbor2.dumps({1: 4, 4: make_kid(device, 1), 6: (7).to_bytes(4, "big"), -65537: 0})
    garbage = [
        b"\xd1\x84" + bad_text + b"\xa0\x40\x40",  # in the envelope
        b"\xd1\x84\x53\xa1\x01" + bad_text + b"\xa0\x40\x48" + bytes(8),  # in the protected header
        b"\xd1\x84\x41\xa0\xa1\x01" + bad_text + b"\x40\x48" + bytes(8),  # in the unprotected header
    ]
    # [{bn: the node's, bt: 1, n: bad_text, v: 1}]
    payload = b"\x81\xa4\x21" + cbor2.dumps(device_base_name(device)) + b"\x22\x01\x00" + bad_text + b"\x02\x01"
    tag = compute_tag(nodes.keys[device], 4, protected, payload)
    signed = cbor2.dumps(cbor2.CBORTag(17, [protected, {}, payload, tag]))
    assert verifier.verify(signed).records()[0]["n"] == "\ufffd" * 16  # stored as decoded

    def feed(n: int) -> None:
        for _ in range(n):
            for data in garbage + [signed]:
                try:
                    verifier.verify(data)
                except FrameRejected:
                    pass

    feed(100)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        feed(5000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes left behind by 20 000 frames"
