"""Hostile datagrams for the gateway, each built from (kind, seed), with the outcomes it may have.

Used by test_gateway_hostile.py (what happens to each) and bench/gateway_throughput.py (how many a
second the gateway refuses)."""
from __future__ import annotations

import random

from fieldnode.wire import coap
from fieldnode.wire.frame import KIND_COMMAND, build_frame, device_base_name
from fieldnode.node.keystore import make_kid
from support.gateway_peers import Nodes

Built = tuple[bytes, tuple, set[str]]  # datagram, source address, acceptable outcomes
ANY_REFUSAL = frozenset({"rejected", "ignored", "ping"})


def request(frame: bytes, mid: int, *, token: bytes = b"\x10\x20", mtype: int = coap.CON, code: int = coap.POST,
            options: list | None = None) -> bytes:
    if options is None:
        options = [(coap.URI_PATH, b"f"), (coap.CONTENT_FORMAT, b"\x11")]
    return coap.encode(coap.Message(mtype, code, mid, token, options, frame))


def _coap_variant(r: random.Random, frame: bytes, mid: int) -> tuple[bytes, set[str]]:
    """Well-formed CoAP the gateway must refuse for what it is: wrong path, method, format, option."""
    variant = r.randrange(8)
    head = (mid >> 8, mid & 0xFF)
    if variant == 0:
        return request(frame, mid, options=[(coap.URI_PATH, b"g")]), {"rejected.not-found"}
    if variant == 1:
        return request(frame, mid, code=r.choice([1, 3, 4, 5])), {"rejected.method-not-allowed"}
    if variant == 2:
        return request(frame, mid, options=[(coap.URI_PATH, b"f"), (coap.CONTENT_FORMAT, b"\x00")]), \
            {"rejected.content-format"}
    if variant == 3:
        return request(frame, mid, options=[(coap.URI_PATH, b"f"), (coap.CONTENT_FORMAT, b"\x11"),
                                            (r.randrange(0, 30000) * 2 + 9, b"")]), {"rejected.bad-option"}
    if variant == 4:
        return bytes((0x40, 0, *head)), {"ping"}
    if variant == 5:
        return bytes((0x60 | r.randrange(2) << 4, r.choice([0, 68]), *head)), {"ignored"}
    if variant == 6:
        return bytes((0x40, r.choice([0x20, 0xC0, 0xE0]), *head)), {"rejected.bad-coap"}
    return request(frame, mid, code=68), {"rejected.bad-coap"}  # a response, not a request


class Attacks:
    """Builds hostile datagrams from (kind, seed); knows which outcome each kind must have."""

    KINDS = ("random", "random-payload", "truncated", "bitflip", "byte", "oversized", "duplicate", "replay",
             "wrong-kind", "unknown-kid", "device-mismatch", "bad-senml", "bad-header", "coap", "options",
             "retransmit", "short")

    def __init__(self, nodes: Nodes, stranger: Nodes) -> None:
        self.sent: list[bytes] = []  # real frames already sent: material to tamper with or replay
        self.last: Built | None = None
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

    def build(self, kind: str, seed: int, mid: int, addr: tuple) -> Built:
        """(datagram, source address, acceptable outcomes as 'outcome' or 'rejected.<reason>')."""
        r = random.Random(seed)
        frame = r.choice(self.sent)
        if kind in self.pools:
            return request(r.choice(self.pools[kind]), mid), addr, {f"rejected.{kind}"}
        if kind == "retransmit" and self.last is not None:
            # the same datagram from the same source: deduplicated if it was a request the
            # gateway answered, else refused again like the first time
            return self.last[0], self.last[1], {"retransmission"} | self.last[2]
        if kind in ("retransmit", "short"):
            return r.randbytes(r.randrange(0, 4)), addr, {"rejected.bad-coap"}
        data, ok = self._builders[kind](r, frame, mid)
        return data, addr, ok

    @staticmethod
    def _random(r: random.Random, frame: bytes, mid: int) -> tuple[bytes, set[str]]:
        data = bytearray(r.randbytes(r.randrange(0, 1500)))
        if len(data) >= 4:
            data[2:4] = mid.to_bytes(2, "big")  # unique (source, mid): no accidental dedup hits
        return bytes(data), set(ANY_REFUSAL)

    @staticmethod
    def _mutated(r: random.Random, frame: bytes, mid: int, *, bitflip: bool) -> tuple[bytes, set[str]]:
        f = bytearray(frame)
        pos = r.randrange(len(f))
        if bitflip:
            f[pos] ^= 1 << r.randrange(8)
        else:
            f[pos] = (f[pos] + r.randrange(1, 256)) & 0xFF
        return request(bytes(f), mid), {"rejected"}

    @staticmethod
    def _options(r: random.Random, frame: bytes, mid: int) -> tuple[bytes, set[str]]:
        head = bytes((0x40 | r.randrange(9), 0x02, mid >> 8, mid & 0xFF))
        return head + r.randbytes(r.randrange(0, 40)) + (b"\xff" + frame if r.random() < 0.5 else b""), \
            {"rejected", "ignored", "ping", "duplicate"}

    _builders = {
        "random": _random,
        "random-payload": lambda r, frame, mid: (request(r.randbytes(r.randrange(1, 1200)), mid), {"rejected"}),
        "truncated": lambda r, frame, mid: (request(frame[:r.randrange(1, len(frame))], mid), {"rejected"}),
        "bitflip": lambda r, frame, mid: Attacks._mutated(r, frame, mid, bitflip=True),
        "byte": lambda r, frame, mid: Attacks._mutated(r, frame, mid, bitflip=False),
        "oversized": lambda r, frame, mid: (request(frame + r.randbytes(r.randrange(1025 - len(frame), 1400)), mid),
                                            {"rejected.oversized"}),
        "duplicate": lambda r, frame, mid: (request(frame, mid), {"duplicate"}),
        "coap": _coap_variant,
        "options": _options,
    }
