"""A node whose key was stolen signs whatever it likes. Its frames verify, so the MAC stops none of
them: what it sends must be refused (or stored) alone, and every honest node's frame still stored.
docs/security.md: a thief "can forge only that node's readings".

Hypothesis builds signed hostile packs: integers past 64 bits (and CBOR bignums), NaN and infinity,
huge strings, deep nesting, values of the wrong shape, in every frame kind a node sends. They go
into the gateway's datagram handler between honest nodes' frames, so they share batches.
"""
from __future__ import annotations

import math
import sqlite3
from collections import Counter

import cbor2
from hypothesis import HealthCheck, given, settings, strategies as st

from fieldnode.wire import coap
from fieldnode.wire.frame import (COSE_MAC0_TAG, KIND_ACK, KIND_BOOT, KIND_EVENT, KIND_TELEMETRY, LABEL_ALG, LABEL_KID,
                             LABEL_KIND, LABEL_PARTIAL_IV, SENML_BN, SENML_BT, SENML_N, SENML_T, SENML_U, SENML_V,
                             SENML_VB, SENML_VS, compute_tag, device_base_name)
from fieldnode.gateway import GatewayThread
from fieldnode.node.keystore import make_kid
from support.gateway_peers import Nodes

ROGUE, HONEST = 0, (1, 2)


def signed(nodes: Nodes, i: int, counter: int, kind: int, payload: bytes) -> bytes:
    """A frame of node i around any payload bytes, with a valid MAC."""
    d = nodes.devices[i]
    protected = cbor2.dumps({LABEL_ALG: nodes.alg, LABEL_KID: make_kid(d, 1),
                             LABEL_PARTIAL_IV: counter.to_bytes(4, "big"), LABEL_KIND: kind})
    tag = compute_tag(nodes.keys[d], nodes.alg, protected, payload)
    return cbor2.dumps(cbor2.CBORTag(COSE_MAC0_TAG, [protected, {}, payload, tag]))


def request(frame: bytes, mid: int) -> bytes:
    return coap.encode(coap.Message(coap.CON, coap.POST, mid, b"\x01\x02",
                                    [(coap.URI_PATH, b"f"), (coap.CONTENT_FORMAT, b"\x11")], frame))


numbers = st.one_of(
    st.integers(-2**40, 2**40), st.integers(2**63 - 2, 2**64 + 1), st.integers(-2**64, -2**63 + 1),
    st.sampled_from([2**1100, -2**1100, math.nan, math.inf, -math.inf, 1e308, -1e308]), st.floats())
leaves = st.one_of(numbers, st.text(max_size=20), st.booleans(), st.none(), st.binary(max_size=10))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.integers(-3, 6) | st.text(max_size=2), inner, max_size=3), max_leaves=10)
huge_text = st.integers(100, 1100).map(lambda n: "x" * n)


@st.composite
def record(draw) -> dict:
    """A record of the right shape with hostile numbers and sizes; now and then a field of any
    shape at all (which the shape check must refuse)."""
    rec = {SENML_N: draw(st.one_of(st.text(max_size=12), huge_text))}
    if draw(st.booleans()):
        rec[SENML_U] = draw(st.text(max_size=5))
    label, value = draw(st.one_of(st.tuples(st.just(SENML_V), numbers), st.tuples(st.just(SENML_VS), huge_text),
                                  st.tuples(st.just(SENML_VB), st.booleans()),
                                  st.tuples(st.just("err"), st.text(max_size=8))))
    rec[label] = value
    if draw(st.booleans()):
        rec[SENML_T] = draw(numbers)
    if draw(st.integers(0, 5)) == 0:
        rec[draw(st.sampled_from([SENML_N, SENML_U, SENML_V, SENML_VS, SENML_VB, SENML_T, "err", 5]))] = draw(values)
    return rec


@st.composite
def hostile_payloads(draw, bn: str) -> bytes:
    """The CBOR bytes of a pack: mostly the right shape (base name bn) with hostile contents."""
    shape = draw(st.sampled_from(["pack", "pack", "pack", "deep", "anything"]))
    if shape == "deep":  # nesting cbor2's encoder would not even make
        depth = draw(st.integers(1, 1000))
        head = draw(st.sampled_from([b"\x81", b"\xa1\x00"]))
        return head * depth + b"\x00"
    if shape == "anything":
        return cbor2.dumps(draw(values))
    first = draw(record())
    first[SENML_BN] = bn  # the rogue's own: it passes device-mismatch, as a thief's frames would
    first[SENML_BT] = draw(st.one_of(numbers, st.just(1_764_057_600)))
    return cbor2.dumps([first] + draw(st.lists(record(), max_size=3)))


def test_a_rogue_node_s_signed_hostile_packs_never_cost_an_honest_node_a_frame(tmp_path):
    nodes = Nodes(tmp_path / "site.json", n=3)
    rogue_bn = device_base_name(nodes.devices[ROGUE])
    addr = ("127.0.0.1", 9)  # answers go nowhere
    mid = [0]
    honest_sent: list[tuple[str, int]] = []
    rogue_sent: list[int] = []  # event index of each rogue frame's outcome

    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), synchronous="NORMAL",
                       batch_delay=0.05) as gt:
        gw = gt.gateway
        events = []
        gt.call(gw.subscribe, events.append)

        def feed(datagrams: list[tuple[str, bytes]]) -> None:
            for who, data in datagrams:
                if who == "rogue":
                    rogue_sent.append(len(events))  # its event may come after the batch commits
                gw.datagram_received(data, addr)

        def next_mid() -> int:
            mid[0] += 1
            return mid[0]

        @given(st.lists(st.tuples(hostile_payloads(rogue_bn), st.sampled_from([KIND_TELEMETRY, KIND_EVENT, KIND_BOOT,
                                                                         KIND_ACK])), min_size=1, max_size=6))
        @settings(max_examples=250, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        def attack(hostile):
            batch = []
            for payload, kind in hostile:
                nodes.counters[nodes.devices[ROGUE]] += 1
                frame = signed(nodes, ROGUE, nodes.counters[nodes.devices[ROGUE]], kind, payload)
                batch.append(("rogue", request(frame, next_mid())))
                i = HONEST[len(honest_sent) % 2]
                batch.append(("honest", request(nodes.frame(i), next_mid())))
                honest_sent.append((nodes.devices[i].hex(), nodes.counters[nodes.devices[i]]))
            gt.call(feed, batch)
            gt.call(gw.drain)

        attack()
        gt.call(gw.drain)
        counts = gt.call(lambda: dict(gw.counts))

    assert counts.get("failed", 0) == 0, counts  # no 5.03 (store-failed) and no 5.00 (internal-error)
    rogue, honest = Counter(), Counter()
    for e in events:
        label = f"{e.outcome}.{e.reason}" if e.reason else e.outcome
        (honest if e.frame is not None and e.frame.kid[:6] != nodes.devices[ROGUE] else rogue)[label] += 1
    assert honest == {"accepted": len(honest_sent)}, honest
    assert sum(rogue.values()) == len(rogue_sent), (rogue, len(rogue_sent))  # one answer each
    assert set(rogue) <= {"accepted", "rejected.bad-senml", "rejected.oversized"}, rogue
    assert rogue["rejected.bad-senml"] > 0 and rogue["accepted"] > 0  # the attack reached the checks
    with sqlite3.connect(tmp_path / "gw.db") as conn:
        stored = conn.execute("SELECT device, counter FROM frames WHERE device != ?",
                              (nodes.devices[ROGUE].hex(),)).fetchall()
        rogue_stored = conn.execute("SELECT count(*) FROM frames WHERE device = ?",
                                    (nodes.devices[ROGUE].hex(),)).fetchone()[0]
    assert sorted(stored) == sorted(honest_sent), "every honest frame stored, once"
    assert rogue_stored == rogue["accepted"]
