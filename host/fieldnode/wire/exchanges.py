"""What each captured CoAP datagram is: a request carrying a frame (verified, or refused and why), a
retransmission, a duplicate frame, or the answer to a request, matched to it.

This is the reading side of the gateway's CoAP layer (gateway/exchange.py serves it): requests are
matched to answers by message id between the same two endpoints (a piggybacked ACK or a RST), or
by token for an answer sent as its own message (RFC 7252 §5.3.2). A request's frame is verified as
the gateway verifies it, with the keystore and a replay window over the capture; a command riding
in an answer is verified as the node would, with its own window (commands carry the host's counter
sequence, not the node's).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from . import coap
from .declaration import DeclarationBook
from .frame import (KIND_COMMAND, NODE_KINDS, Frame, FrameRejected, KeyLookup, ReplayWindow, Verifier,
                    parse_unverified)
from .pcap import Datagram, Endpoint

# How long a message id stays one exchange (RFC 7252 §4.8.2, the gateway keeps its answers as long).
EXCHANGE_LIFETIME = 247.0
# Frames remembered to tell a duplicate (the same frame again, in a new message) from a replay.
# Enough for hours of a busy site; beyond it the oldest are forgotten and a late copy is a replay.
REMEMBERED_FRAMES = 200_000

# Roles a datagram can have.
REQUEST, RETRANSMISSION, ANSWER, REPEATED_ANSWER, UNMATCHED_ANSWER = (
    "request", "retransmission", "answer", "repeated-answer", "unmatched-answer")
PING, EMPTY_ACK, RESET, BAD_COAP = "ping", "empty-ack", "reset", "bad-coap"
# Verdicts on a request's frame.
VERIFIED, DUPLICATE, REJECTED = "verified", "duplicate", "rejected"


@dataclass(slots=True, eq=False)
class Seen:
    """One datagram and what it turned out to be.

    frame: the request's frame (verified, or what a refused frame claims, marked unverified), or
    the command riding in an answer. first: the packet number this one refers to (the first
    transmission of a retransmission, the first copy of a duplicate, the request an answer
    answers). answer_after: seconds from the request's first transmission to this answer. A
    retransmission carries its first transmission's verdict and reason, not the frame again.
    """

    datagram: Datagram
    role: str
    message: coap.Message | None = None
    verdict: str | None = None
    reason: str | None = None
    detail: str | None = None
    frame: Frame | None = None
    first: int | None = None
    answer_after: float | None = None
    diagnostic: str | None = None


ANSWERS = frozenset((ANSWER, REPEATED_ANSWER, UNMATCHED_ANSWER))


@dataclass(slots=True, eq=False)
class Exchange:
    """What is kept of a request for its lifetime: enough to match its answers and retransmissions
    (a busy site has a quarter of a million in flight over 247 s, so not the datagram itself)."""

    number: int
    time: float
    digest: bytes  # of the whole datagram: a retransmission is the very same bytes
    token: bytes
    verdict: str | None
    reason: str | None
    transmissions: int = 1
    answer: str | None = None  # the role of the answer kept: ANSWER, RESET or EMPTY_ACK


class ExchangeTracker:
    """Feed it the datagrams in capture order; observe() says what each one is."""

    def __init__(self, key_lookup: KeyLookup, lifetime: float = EXCHANGE_LIFETIME,
                 declarations: DeclarationBook | None = None) -> None:
        # declarations: frame format v2's DeclarationBook to start from (decode --db); those seen join it.
        self._uplink = Verifier(key_lookup, ReplayWindow(), accept_kinds=NODE_KINDS, declarations=declarations)
        self._downlink = Verifier(key_lookup, ReplayWindow(), accept_kinds=(KIND_COMMAND,))
        self._lifetime = lifetime
        self._by_mid: OrderedDict[tuple[Endpoint, Endpoint, int], Exchange] = OrderedDict()
        self._by_token: dict[tuple[Endpoint, Endpoint, bytes], Exchange] = {}
        self._frames: OrderedDict[bytes, int] = OrderedDict()  # verified frame's digest -> its first packet
        self.expired_unanswered = 0  # exchanges that ended (lifetime over) without an answer

    def observe(self, d: Datagram) -> Seen:
        self._expire(d.time)
        try:
            msg = coap.decode(d.payload)
        except coap.CoapError as exc:
            return Seen(d, BAD_COAP, detail=exc.detail)
        if msg.code == coap.EMPTY:
            return self._empty(d, msg)
        if coap.is_request(msg.code):
            return self._request(d, msg)
        return self._answer(d, msg)

    def unanswered(self) -> int:
        """Requests that got no answer (an empty ACK promises one; it is not one)."""
        return self.expired_unanswered + sum(1 for x in self._by_mid.values() if _unanswered(x))

    # -- requests -----------------------------------------------------------------------------
    def _request(self, d: Datagram, msg: coap.Message) -> Seen:
        key = (d.src, d.dst, msg.mid)
        digest = _digest(d.payload)
        known = self._by_mid.get(key)
        if known is not None and known.digest == digest:
            known.transmissions += 1
            return Seen(d, RETRANSMISSION, msg, first=known.number, verdict=known.verdict, reason=known.reason)
        seen = Seen(d, REQUEST, msg)
        if msg.payload:
            self._judge(seen, msg.payload)
        exchange = Exchange(d.number, d.time, digest, msg.token, seen.verdict, seen.reason)
        self._by_mid[key] = exchange
        self._by_mid.move_to_end(key)
        if msg.token:
            self._by_token[(d.src, d.dst, msg.token)] = exchange
        return seen

    def _judge(self, seen: Seen, data: bytes) -> None:
        digest = _digest(data)
        first = self._frames.get(digest)
        if first is not None:
            # The very bytes of a frame already verified, in a new message: the node sent it again
            # after a lost answer (the gateway answers 2.03), or someone replays a capture.
            seen.verdict, seen.first = DUPLICATE, first
            seen.frame = parse_unverified(data)
            seen.frame.verified = True
            return
        try:
            seen.frame = self._uplink.verify(data)
        except FrameRejected as exc:
            seen.verdict, seen.reason, seen.detail = REJECTED, exc.reason, exc.detail
            seen.frame = _claimed(data)
            return
        seen.verdict = VERIFIED
        self._frames[digest] = seen.datagram.number
        if len(self._frames) > REMEMBERED_FRAMES:
            self._frames.popitem(last=False)

    # -- answers ------------------------------------------------------------------------------
    def _empty(self, d: Datagram, msg: coap.Message) -> Seen:
        if msg.mtype == coap.CON:
            return Seen(d, PING, msg)
        exchange = self._by_mid.get((d.dst, d.src, msg.mid))
        role = RESET if msg.mtype == coap.RST else EMPTY_ACK
        seen = Seen(d, role, msg)
        if exchange is not None:
            self._answered(exchange, seen)
        return seen

    def _answer(self, d: Datagram, msg: coap.Message) -> Seen:
        if msg.mtype in (coap.ACK, coap.RST):
            exchange = self._by_mid.get((d.dst, d.src, msg.mid))
        else:  # a separate response (CON or NON): the token says which request it answers
            exchange = self._by_token.get((d.dst, d.src, msg.token))
        seen = Seen(d, ANSWER, msg)
        if msg.code >> 5 in (4, 5):
            seen.diagnostic = msg.payload.decode("utf-8", "replace")
        elif msg.payload and msg.content_format == coap.CONTENT_FORMAT_COSE_MAC0:
            self._command(seen, msg.payload)
        if exchange is None:
            seen.role = UNMATCHED_ANSWER
            return seen
        self._answered(exchange, seen)
        return seen

    def _command(self, seen: Seen, data: bytes) -> None:
        try:
            seen.frame = self._downlink.verify(data)
            seen.verdict = VERIFIED
        except FrameRejected as exc:
            seen.verdict, seen.reason, seen.detail = REJECTED, exc.reason, exc.detail
            seen.frame = _claimed(data)

    def _answered(self, exchange: Exchange, seen: Seen) -> None:
        seen.first = exchange.number
        seen.answer_after = seen.datagram.time - exchange.time
        if exchange.answer is not None and exchange.answer != EMPTY_ACK:
            # The gateway sends its kept answer again for a retransmission (RFC 7252 §4.5).
            seen.role = REPEATED_ANSWER if seen.role == ANSWER else seen.role
            return
        exchange.answer = seen.role

    def _expire(self, now: float) -> None:
        while self._by_mid:
            key, exchange = next(iter(self._by_mid.items()))
            if now - exchange.time <= self._lifetime:
                return
            del self._by_mid[key]
            self.expired_unanswered += _unanswered(exchange)
            token_key = (key[0], key[1], exchange.token)
            if self._by_token.get(token_key) is exchange:
                del self._by_token[token_key]


def _unanswered(exchange: Exchange) -> bool:
    return exchange.answer is None or exchange.answer == EMPTY_ACK


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _claimed(data: bytes) -> Frame | None:
    """What a refused frame claims (unverified), when it can be read at all."""
    try:
        return parse_unverified(data)
    except FrameRejected:
        return None
