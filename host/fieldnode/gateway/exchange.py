"""The CoAP side of the gateway: which requests it serves, and message deduplication.

The gateway serves one resource: a confirmable (or non-confirmable) POST to /f with
Content-Format 17. Message deduplication follows RFC 7252 §4.5: the response to a message id
from an endpoint is kept for EXCHANGE_LIFETIME and sent again, unprocessed, when the same
message id comes again (a retransmission because our ACK was lost).
"""
from __future__ import annotations

import time
from typing import Any

from .. import coap

# RFC 7252 §4.8.2 with the default transmission parameters: MAX_TRANSMIT_SPAN 45 s +
# 2 * MAX_LATENCY 100 s + PROCESSING_DELAY 2 s.
EXCHANGE_LIFETIME = 247.0
NON_LIFETIME = 145.0

# Critical options this server understands. Uri-Host/Uri-Port name the origin; the gateway is the
# only one on its socket, so they are accepted and not otherwise used.
_KNOWN_CRITICAL = {coap.URI_HOST: (1, 255), coap.URI_PORT: (0, 2), coap.URI_PATH: (0, 255)}
_REPEATABLE = {coap.URI_PATH}
_CONTENT_FORMAT_MAX_LEN = 2

# Transport-level reasons the gateway counts besides the frame REASONS of fieldnode.frame.
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


class MessageCache:
    """(endpoint, message id) -> the response sent (or PENDING), kept for EXCHANGE_LIFETIME.

    Bounded: past max_entries the oldest are dropped. A frame retransmitted after its entry was
    dropped is still not stored twice (the store answers 2.03), so the bound trades only the
    re-processing cost, never correctness.
    """

    def __init__(self, lifetime: float = EXCHANGE_LIFETIME, max_entries: int = 131_072) -> None:
        self.lifetime = lifetime
        self.max_entries = max_entries
        # Insertion order is expiry order (one lifetime for all), so purging pops from the front.
        self._entries: dict[Any, list] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Any) -> Any:
        """The cached response bytes, PENDING, or None when the message id is new."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: Any, response: Any) -> None:
        entries = self._entries
        entry = entries.get(key)
        if entry is not None:
            entry[1] = response  # keeps its place and expiry: it was created by the same exchange
            return
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[key] = [time.monotonic() + self.lifetime, response]

    def forget(self, key: Any) -> None:
        self._entries.pop(key, None)

    def purge(self) -> int:
        """Drops expired entries; returns how many."""
        now = time.monotonic()
        entries = self._entries
        n = 0
        while entries:
            key = next(iter(entries))
            if entries[key][0] >= now:
                break
            del entries[key]
            n += 1
        return n
