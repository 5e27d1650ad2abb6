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
from collections import Counter

from hypothesis import HealthCheck, given, settings, strategies as st

from fieldnode.wire import coap
from fieldnode.wire.frame import REASONS
from fieldnode.gateway import GatewayThread
from fieldnode.gateway.exchange import COAP_REASONS
from support.gateway_peers import Nodes
from support.hostile import Attacks, request

KNOWN_REASONS = set(REASONS) | set(COAP_REASONS)
FIRST_COUNTER = 1000  # real frames start here, so the pre-built "old" frames are below the window
EXAMPLES = 1200  # Hypothesis runs a few less than this (it skips repeats)
PER_EXAMPLE = 96


class Siege:
    """One gateway under attack: hostile datagrams with real frames among them, and a record of
    what was sent and which outcomes each may have."""

    def __init__(self, gt: GatewayThread, nodes: Nodes, attacks: Attacks) -> None:
        self.gt, self.gw, self.nodes, self.attacks = gt, gt.gateway, nodes, attacks
        self.events: list = []
        gt.call(self.gw.subscribe, self.events.append)
        self.real_sent: list[tuple[bytes, int]] = []
        self.expectations: list[tuple[str, int, set[str], int]] = []  # kind, seed, acceptable, event index
        self.mids: Counter = Counter()
        self.fed = 0
        # Answers go to sockets nobody reads (the kernel drops what overflows): one per source.
        self.sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
        for sink in self.sinks:
            sink.bind(("127.0.0.1", 0))
        self.real_addr = self.sinks[0].getsockname()
        self.hostile_addrs = [sink.getsockname() for sink in self.sinks[1:]]

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def next_mid(self, addr) -> int:
        self.mids[addr] += 1
        assert self.mids[addr] < 0x10000
        return self.mids[addr]

    def real_frame(self, i: int | None = None) -> bytes:
        i = len(self.real_sent) % 3 if i is None else i
        f = self.nodes.frame(i)
        self.real_sent.append((self.nodes.devices[i], self.nodes.counters[self.nodes.devices[i]]))
        self.attacks.sent.append(f)
        return f

    def feed(self, batch: list[tuple[str, int, bytes, tuple, set[str] | None]]) -> None:
        """On the gateway's loop: each datagram into its handler, noting which event it caused."""
        self.fed += len(batch)
        for kind, seed, data, addr, ok in batch:
            before = len(self.events)
            self.gw.datagram_received(data, addr)
            if ok is not None:
                self.expectations.append((kind, seed, ok, before if len(self.events) > before else -1))

    def direct(self) -> None:
        """Hypothesis's recipes straight into the datagram handler, a real frame every 48."""
        real = lambda: ("real", 0, request(self.real_frame(), self.next_mid(self.real_addr)),  # noqa: E731
                        self.real_addr, None)
        self.gt.call(self.feed, [real() for _ in range(3)])  # every node speaks first: "old" frames are old

        @given(st.lists(st.tuples(st.sampled_from(Attacks.KINDS), st.integers(0, 2**32 - 1)),
                        min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        def attack(recipes):
            batch = []
            for n, (kind, seed) in enumerate(recipes):
                addr = self.hostile_addrs[seed % len(self.hostile_addrs)]
                data, src, ok = self.attacks.build(kind, seed, self.next_mid(addr) if kind != "retransmit" else 0,
                                                   addr)
                self.attacks.last = (data, src, ok)
                batch.append((kind, seed, data, src, ok))
                if n % 48 == 0:
                    batch.append(real())
            self.gt.call(self.feed, batch)

        attack()
        self.gt.call(self.gw.drain)

    def over_udp(self, bursts: int) -> int:
        """Hostile bursts over real UDP, each followed by a real frame whose answer is awaited
        (that paces the sender like nodes, so the socket never overflows). Returns how many sent."""
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        node = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        node.bind(("127.0.0.1", 0))
        node.settimeout(5)
        r = random.Random(1)
        kinds = [k for k in Attacks.KINDS if k != "retransmit"]
        sent = 0
        try:
            for burst in range(bursts):
                for _ in range(10):
                    data, _, _ = self.attacks.build(r.choice(kinds), r.getrandbits(32),
                                                    self.next_mid(udp.getsockname()), udp.getsockname())
                    udp.sendto(data, self.gt.address)
                    sent += 1
                node.sendto(request(self.real_frame(burst % 3), self.next_mid(node.getsockname())), self.gt.address)
                ans = coap.decode(node.recv(2048))
                assert ans.code == coap.CHANGED, (ans, coap.code_text(ans.code))
        finally:
            udp.close()
            node.close()
        self.gt.call(self.gw.drain)
        return sent + bursts

    def wrong_outcomes(self) -> list[tuple[str, int, str]]:
        """The hostile datagrams whose outcome was not one their kind may have."""
        wrong = []
        for kind, seed, ok, idx in self.expectations:
            if kind == "real":
                continue
            if idx < 0:
                assert "duplicate" in ok, (kind, seed)  # answered after the commit of the real frame
                continue
            e = self.events[idx]
            label = f"rejected.{e.reason}" if e.outcome == "rejected" else e.outcome
            if label not in ok and e.outcome not in ok:
                wrong.append((kind, seed, label))
        return wrong


def test_hostile_datagrams_are_refused_and_real_frames_all_stored(tmp_path):
    nodes = Nodes(tmp_path / "site.json", n=3)
    stranger = Nodes(tmp_path / "stranger.json", n=1, first=99)
    for i in range(3):
        nodes.counters[nodes.devices[i]] = FIRST_COUNTER - 1
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), synchronous="NORMAL",
                       health_interval=0.5) as gt:
        siege = Siege(gt, nodes, Attacks(nodes, stranger))
        try:
            siege.direct()
            total = siege.fed + siege.over_udp(300)
        finally:
            siege.close()
        counts = gt.call(lambda: dict(gt.gateway.counts))
    events = siege.events
    assert sum(1 for kind, *_ in siege.expectations if kind != "real") >= 100_000

    # Exactly one outcome per datagram, refusals always with a known reason.
    outcome_sum = sum(v for k, v in counts.items() if k != "datagrams")
    assert outcome_sum == counts["datagrams"] == total, counts
    reasons = {k[9:] for k in counts if k.startswith("rejected.")}
    assert reasons <= KNOWN_REASONS, reasons - KNOWN_REASONS
    assert counts.get("failed", 0) == 0
    assert len(events) == total
    assert all(e.reason in KNOWN_REASONS for e in events if e.outcome == "rejected")

    # The hostile ones: each kind got what it must.
    wrong = siege.wrong_outcomes()
    assert not wrong, wrong[:10]
    assert counts["accepted"] == len(siege.real_sent), "every real frame accepted"
    with sqlite3.connect(tmp_path / "gw.db") as conn:
        stored = conn.execute("SELECT device, counter FROM frames").fetchall()
        persisted = dict(conn.execute("SELECT name, value FROM counters"))
    assert sorted(stored) == sorted((d.hex(), c) for d, c in siege.real_sent), "stored exactly the real frames"
    assert persisted == {k: v for k, v in counts.items() if v}, "the persisted counters are the live ones"
