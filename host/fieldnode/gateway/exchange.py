"""The CoAP side of the gateway: which requests it serves, and message deduplication.

The gateway serves one resource: a confirmable (or non-confirmable) POST to /f with
Content-Format 17. Message deduplication follows RFC 7252 §4.5: the response to a message id
from an endpoint is kept for EXCHANGE_LIFETIME and sent again, unprocessed, when the same
message id comes again (a retransmission because our ACK was lost).
"""
from __future__ import annotations

import time
from typing import Any

from ..wire import coap

# RFC 7252 §4.8.2 with the default transmission parameters: MAX_TRANSMIT_SPAN 45 s +
# 2 * MAX_LATENCY 100 s + PROCESSING_DELAY 2 s.
EXCHANGE_LIFETIME = 247.0
NON_LIFETIME = 145.0

# Critical options this server understands. Uri-Host/Uri-Port name the origin; the gateway is the
# only one on its socket, so they are accepted and not otherwise used.
_KNOWN_CRITICAL = {coap.URI_HOST: (1, 255), coap.URI_PORT: (0, 2), coap.URI_PATH: (0, 255)}
_REPEATABLE = {coap.URI_PATH}
_CONTENT_FORMAT_MAX_LEN = 2

# Transport-level reasons the gateway counts besides the frame REASONS of fieldnode.wire.frame.
COAP_REASONS = ("bad-coap", "bad-option", "not-found", "method-not-allowed", "content-format")


def check_request(msg: coap.Message) -> tuple[int, str] | None:
    """(response code, reason) if the request is not a frame POST the gateway takes, else None.

    Checked in the order RFC 7252 implies: unrecognised critical options first (4.02, §5.4.1),
    then the resource (4.04), the method (4.05), the content format (4.15).
    """
    seen: set[int] = set()
    for number, value in msg.options:
        limits = _KNOWN_CRITICAL.get(number)
        if limits is not None:
            # A value of the wrong length, or a second non-repeatable occurrence, counts as an
            # unrecognised option (§5.4.3, §5.4.5); for a critical option that is a 4.02.
            if not limits[0] <= len(value) <= limits[1] or (number in seen and number not in _REPEATABLE):
                return coap.BAD_OPTION, "bad-option"
            seen.add(number)
        elif coap.is_critical(number):
            return coap.BAD_OPTION, "bad-option"
    if msg.option_values(coap.URI_PATH) != [b"f"]:
        return coap.NOT_FOUND, "not-found"
    if msg.code != coap.POST:
        return coap.METHOD_NOT_ALLOWED, "method-not-allowed"
    cf = msg.option(coap.CONTENT_FORMAT)  # elective: a repeat is ignored (§5.4.5)
    if cf is None or len(cf) > _CONTENT_FORMAT_MAX_LEN or coap.decode_uint(cf) != coap.CONTENT_FORMAT_COSE_MAC0:
        return coap.UNSUPPORTED_CONTENT_FORMAT, "content-format"
    return None


PENDING = object()  # a request whose frame is still being committed: a retransmission waits


# What one cached exchange costs besides its answer's bytes: the dict's slot, the key (source
# address tuple, host string, port, message id) and the entry (list, expiry float, bytes header).
# Measured with tracemalloc for IPv4 sources at ~420 bytes (tests/test_gateway_load.py pins the
# whole cache under its max_bytes); an IPv6 source costs a little more, so the bound is rounded up.
ENTRY_BYTES = 448
DEFAULT_CACHE_BYTES = 16 << 20


class MessageCache:
    """(endpoint, message id) -> the response sent (or PENDING), kept for EXCHANGE_LIFETIME.

    Bounded by memory: past max_bytes (ENTRY_BYTES an entry plus its answer) the oldest are
    dropped. A frame retransmitted after its entry was dropped is still not stored twice (the
    store answers 2.03), so the bound trades only the re-processing cost, never correctness.
    """

    def __init__(self, lifetime: float = EXCHANGE_LIFETIME, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.lifetime = lifetime
        self.max_bytes = max_bytes
        self.bytes = 0  # the estimate of what the entries hold, kept at or under max_bytes
        # Insertion order is expiry order (one lifetime for all), so purging pops from the front.
        self._entries: dict[Any, list] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _cost(response: Any) -> int:
        return ENTRY_BYTES if response is PENDING else ENTRY_BYTES + len(response)

    def get(self, key: Any) -> Any:
        """The cached response bytes, PENDING, or None when the message id is new."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self.forget(key)
            return None
        return entry[1]

    def put(self, key: Any, response: Any) -> None:
        entries = self._entries
        entry = entries.get(key)
        if entry is not None:
            # Keeps its place and expiry: it was created by the same exchange.
            self.bytes += self._cost(response) - self._cost(entry[1])
            entry[1] = response
        else:
            entries[key] = [time.monotonic() + self.lifetime, response]
            self.bytes += self._cost(response)
        while self.bytes > self.max_bytes and entries:
            oldest = next(iter(entries))
            self.bytes -= self._cost(entries.pop(oldest)[1])

    def forget(self, key: Any) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= self._cost(entry[1])

    def purge(self) -> int:
        """Drops expired entries; returns how many."""
        now = time.monotonic()
        entries = self._entries
        n = 0
        while entries:
            key = next(iter(entries))
            if entries[key][0] >= now:
                break
            self.bytes -= self._cost(entries.pop(key)[1])
            n += 1
        return n
