"""Hostile input: >100k malformed, truncated, oversized, tampered, replayed datagrams at the gateway,
interleaved with real frames. Nothing crashes, every datagram gets exactly one outcome (refusals
with a reason), the counters add up, and every real frame is accepted and stored once.

Hypothesis picks, per datagram, a kind of attack and a seed; the datagram is derived from them
(so each one costs Hypothesis only two choices and shrinks to a readable case). Most go straight
into the gateway's datagram handler on its event loop, for speed; a few thousand go over UDP.
"""
from __future__ import annotations

import random
import socket
import sqlite3
import time
from collections import Counter

from hypothesis import HealthCheck, given, settings, strategies as st

from fieldnode.wire import coap
from fieldnode.wire.frame import KIND_COMMAND, REASONS, build_frame, device_base_name
from fieldnode.gateway import GatewayThread
from fieldnode.gateway.exchange import COAP_REASONS
from fieldnode.node.keystore import make_kid
from support.gateway_peers import Nodes

KNOWN_REASONS = set(REASONS) | set(COAP_REASONS)
FIRST_COUNTER = 1000  # real frames start here, so the pre-built "old" frames are below the window
EXAMPLES = 1200  # Hypothesis runs a few less than this (it skips repeats)
PER_EXAMPLE = 96


def request(frame: bytes, mid: int, *, token: bytes = b"\x10\x20", mtype: int = coap.CON, code: int = coap.POST,
            options: list | None = None) -> bytes:
    if options is None:
        options = [(coap.URI_PATH, b"f"), (coap.CONTENT_FORMAT, b"\x11")]
    return coap.encode(coap.Message(mtype, code, mid, token, options, frame))


class Attacks:
    """Builds hostile datagrams from (kind, seed); knows which outcome each kind must have."""

    def __init__(self, nodes: Nodes, stranger: Nodes) -> None:
        self.sent: list[bytes] = []  # real frames already sent: material to tamper with or replay
        self.last: tuple[bytes, tuple, set[str]] | None = None
        d0, d1 = nodes.devices[0], nodes.devices[1]
        r = random.Random(7)
        recs = lambda: [{"n": "temp", "u": "Cel", "v": r.uniform(-20, 40)}]  # noqa: E731
        self.pools = {
            "replay": [nodes.frame(i % 3, counter=1 + i, records=recs()) for i in range(60)],
            "wrong-kind": [nodes.frame(i % 3, counter=5000 + i, kind=KIND_COMMAND) for i in range(20)],
            "unknown-kid": [stranger.frame(0, counter=1 + i) for i in range(20)],
            "device-mismatch": [nodes.frame(1, counter=6000 + i, bn=device_base_name(d0)) for i in range(20)],
            "bad-senml": [nodes.frame(0, counter=7000 + i, records=[{"n": "x"}]) for i in range(20)],
            # alg 5 (32-byte tag) for a node provisioned with alg 4: a "downgrade/upgrade" attempt
            "bad-header": [build_frame(nodes.keys[d1], make_kid(d1, 1), 5, 8000 + i, 0, device_base_name(d1),
                                       1, [{"n": "t", "v": 1}]) for i in range(20)],
        }

    KINDS = ("random", "random-payload", "truncated", "bitflip", "byte", "oversized", "duplicate", "replay",
             "wrong-kind", "unknown-kid", "device-mismatch", "bad-senml", "bad-header", "coap", "options",
             "retransmit", "short")

    def build(self, kind: str, seed: int, mid: int, addr: tuple) -> tuple[bytes, tuple, set[str]]:
        """(datagram, source address, acceptable outcomes as 'outcome' or 'rejected.<reason>')."""
        r = random.Random(seed)
        any_refusal = {"rejected", "ignored", "ping"}
        frame = r.choice(self.sent)
        if kind == "random":
            data = bytearray(r.randbytes(r.randrange(0, 1500)))
            if len(data) >= 4:
                data[2:4] = mid.to_bytes(2, "big")  # unique (source, mid): no accidental dedup hits
            return bytes(data), addr, any_refusal
        if kind == "random-payload":
            return request(r.randbytes(r.randrange(1, 1200)), mid), addr, {"rejected"}
        if kind == "truncated":
            return request(frame[:r.randrange(1, len(frame))], mid), addr, {"rejected"}
        if kind in ("bitflip", "byte"):
            f = bytearray(frame)
            pos = r.randrange(len(f))
            if kind == "bitflip":
                f[pos] ^= 1 << r.randrange(8)
            else:
                f[pos] = (f[pos] + r.randrange(1, 256)) & 0xFF
            return request(bytes(f), mid), addr, {"rejected"}
        if kind == "oversized":
            return request(frame + r.randbytes(r.randrange(1025 - len(frame), 1400)), mid), addr, \
                {"rejected.oversized"}
        if kind == "duplicate":
            return request(frame, mid), addr, {"duplicate"}
        if kind in self.pools:
            want = "replay" if kind == "replay" else kind
            return request(r.choice(self.pools[kind]), mid), addr, {f"rejected.{want}"}
        if kind == "coap":
            variant = r.randrange(8)
            if variant == 0:
                return request(frame, mid, options=[(coap.URI_PATH, b"g")]), addr, {"rejected.not-found"}
            if variant == 1:
                return request(frame, mid, code=r.choice([1, 3, 4, 5])), addr, {"rejected.method-not-allowed"}
            if variant == 2:
                return request(frame, mid, options=[(coap.URI_PATH, b"f"), (coap.CONTENT_FORMAT, b"\x00")]), \
                    addr, {"rejected.content-format"}
            if variant == 3:
                return request(frame, mid, options=[(coap.URI_PATH, b"f"), (coap.CONTENT_FORMAT, b"\x11"),
                                                    (r.randrange(0, 30000) * 2 + 9, b"")]), addr, \
                    {"rejected.bad-option"}
            if variant == 4:
                return bytes((0x40, 0, mid >> 8, mid & 0xFF)), addr, {"ping"}
            if variant == 5:
                return bytes((0x60 | r.randrange(2) << 4, r.choice([0, 68]), mid >> 8, mid & 0xFF)), addr, {"ignored"}
            if variant == 6:
                return bytes((0x40, r.choice([0x20, 0xC0, 0xE0]), mid >> 8, mid & 0xFF)), addr, {"rejected.bad-coap"}
            return request(frame, mid, code=68), addr, {"rejected.bad-coap"}  # a response, not a request
        if kind == "options":
            head = bytes((0x40 | r.randrange(9), 0x02, mid >> 8, mid & 0xFF))
            return head + r.randbytes(r.randrange(0, 40)) + (b"\xff" + frame if r.random() < 0.5 else b""), addr, \
                {"rejected", "ignored", "ping", "duplicate"}
        if kind == "retransmit" and self.last is not None:
            # the same datagram from the same source: deduplicated if it was a request the
            # gateway answered, else refused again like the first time
            return self.last[0], self.last[1], {"retransmission"} | self.last[2]
        if kind == "short" or kind == "retransmit":
            return r.randbytes(r.randrange(0, 4)), addr, {"rejected.bad-coap"}
        raise AssertionError(kind)


def test_hostile_datagrams_are_refused_and_real_frames_all_stored(tmp_path):
    nodes = Nodes(tmp_path / "site.json", n=3)
    stranger = Nodes(tmp_path / "stranger.json", n=1, first=99)
    attacks = Attacks(nodes, stranger)
    for i in range(3):
        nodes.counters[nodes.devices[i]] = FIRST_COUNTER - 1
    # Answers go to sockets nobody reads (the kernel drops what overflows): one per source.
    sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    for s in sinks:
        s.bind(("127.0.0.1", 0))
    hostile_addrs = [s.getsockname() for s in sinks[1:]]
    real_addr = sinks[0].getsockname()
    mids = Counter()

    def next_mid(addr) -> int:
        mids[addr] += 1
        assert mids[addr] < 0x10000
        return mids[addr]

    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), synchronous="NORMAL",
                       health_interval=0.5) as gt:
        gw = gt.gateway
        events = []
        gt.call(gw.subscribe, events.append)
        real_sent: list[tuple[bytes, int]] = []
        expectations: list[tuple[str, int, set[str], int]] = []  # kind, seed, acceptable, event index

        def real_frame() -> tuple[bytes, tuple]:
            i = len(real_sent) % 3
            f = nodes.frame(i)
            real_sent.append((nodes.devices[i], nodes.counters[nodes.devices[i]]))
            attacks.sent.append(f)
            return request(f, next_mid(real_addr)), real_addr

        fed = [0]

        def feed(batch: list[tuple[str, int, bytes, tuple, set[str]]]) -> None:
            fed[0] += len(batch)
            for kind, seed, data, addr, ok in batch:
                before = len(events)
                gw.datagram_received(data, addr)
                if ok is not None:
                    expectations.append((kind, seed, ok, before if len(events) > before else -1))

        # Every node speaks first, so the "old" frames are old.
        gt.call(feed, [("real", 0, *real_frame(), None) for _ in range(3)])

        @given(st.lists(st.tuples(st.sampled_from(Attacks.KINDS), st.integers(0, 2**32 - 1)),
                        min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        def attack(recipes):
            batch = []
            for n, (kind, seed) in enumerate(recipes):
                addr = hostile_addrs[seed % len(hostile_addrs)]
                data, src, ok = attacks.build(kind, seed, next_mid(addr) if kind != "retransmit" else 0, addr)
                attacks.last = (data, src, ok)
                batch.append((kind, seed, data, src, ok))
                if n % 48 == 0:
                    batch.append(("real", 0, *real_frame(), None))
            gt.call(feed, batch)

        started = time.monotonic()
        attack()
        direct = fed[0]
        hostile = sum(1 for kind, *_ in expectations if kind != "real")
        gt.call(gw.drain)
        direct_time = time.monotonic() - started

        # A few thousand over real UDP: hostile bursts, each followed by a real frame whose
        # answer is awaited (that paces the sender like nodes, so the socket never overflows).
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        node = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        node.bind(("127.0.0.1", 0))
        node.settimeout(5)
        r = random.Random(1)
        udp_sent = 0
        for burst in range(300):
            for _ in range(10):
                kind = r.choice([k for k in Attacks.KINDS if k != "retransmit"])
                data, _, _ = attacks.build(kind, r.getrandbits(32), next_mid(udp.getsockname()), udp.getsockname())
                udp.sendto(data, gt.address)
                udp_sent += 1
            f = nodes.frame(burst % 3)
            real_sent.append((nodes.devices[burst % 3], nodes.counters[nodes.devices[burst % 3]]))
            node.sendto(request(f, next_mid(node.getsockname())), gt.address)
            ans = coap.decode(node.recv(2048))
            assert ans.code == coap.CHANGED, (ans, coap.code_text(ans.code))
        gt.call(gw.drain)
        counts = gt.call(lambda: dict(gw.counts))
    for s in sinks + [udp, node]:
        s.close()

    total = direct + udp_sent + 300
    assert hostile >= 100_000, hostile
    assert direct_time < 90, f"direct phase took {direct_time:.0f} s"

    # Exactly one outcome per datagram, refusals always with a known reason.
    outcome_sum = sum(v for k, v in counts.items() if k != "datagrams")
    assert outcome_sum == counts["datagrams"] == total, counts
    reasons = {k[9:] for k in counts if k.startswith("rejected.")}
    assert reasons <= KNOWN_REASONS, reasons - KNOWN_REASONS
    assert counts.get("failed", 0) == 0
    assert len(events) == total
    assert all(e.reason in KNOWN_REASONS for e in events if e.outcome == "rejected")

    # The hostile ones: each kind got what it must.
    wrong = []
    for kind, seed, ok, idx in expectations:
        if kind == "real":
            continue
        if idx < 0:
            assert "duplicate" in ok, (kind, seed)  # answered after the commit of the real frame
            continue
        e = events[idx]
        label = f"rejected.{e.reason}" if e.outcome == "rejected" else e.outcome
        if label not in ok and e.outcome not in ok:
            wrong.append((kind, seed, label))
    assert not wrong, wrong[:10]
    assert counts["accepted"] == len(real_sent), "every real frame accepted"
    with sqlite3.connect(tmp_path / "gw.db") as conn:
        stored = conn.execute("SELECT device, counter FROM frames").fetchall()
        persisted = dict(conn.execute("SELECT name, value FROM counters"))
    assert sorted(stored) == sorted((d.hex(), c) for d, c in real_sent), "stored exactly the real frames"
    assert persisted == {k: v for k, v in counts.items() if v}, "the persisted counters are the live ones"
