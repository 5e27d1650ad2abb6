"""CoAP messages (RFC 7252 §3): encode, and decode strictly.

The gateway's transport. Only the message layer lives here (header, token, options, payload);
what a request means is the gateway's business. Decoding refuses every malformed datagram with a
CoapError that says what is wrong and, when the header could be read, carries the type and
message id so the receiver can answer a confirmable message with a Reset (§4.2).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

VERSION = 1
CON, NON, ACK, RST = 0, 1, 2, 3
TYPE_NAMES = ("CON", "NON", "ACK", "RST")


def code(cls: int, detail: int) -> int:
    """The 8-bit code c.dd (RFC 7252 §3: 3-bit class, 5-bit detail)."""
    return cls << 5 | detail


EMPTY = 0
GET, POST, PUT, DELETE, FETCH, PATCH, IPATCH = 1, 2, 3, 4, 5, 6, 7
CREATED, DELETED, VALID, CHANGED, CONTENT = code(2, 1), code(2, 2), code(2, 3), code(2, 4), code(2, 5)
BAD_REQUEST, UNAUTHORIZED, BAD_OPTION, FORBIDDEN, NOT_FOUND, METHOD_NOT_ALLOWED = (
    code(4, 0), code(4, 1), code(4, 2), code(4, 3), code(4, 4), code(4, 5))
REQUEST_ENTITY_TOO_LARGE, UNSUPPORTED_CONTENT_FORMAT = code(4, 13), code(4, 15)
UNPROCESSABLE_ENTITY = code(4, 22)  # RFC 8132
INTERNAL_SERVER_ERROR, SERVICE_UNAVAILABLE = code(5, 0), code(5, 3)

# Option numbers (RFC 7252 §5.10, RFC 7959, RFC 7641).
IF_MATCH, URI_HOST, ETAG, IF_NONE_MATCH, OBSERVE, URI_PORT = 1, 3, 4, 5, 6, 7
LOCATION_PATH, URI_PATH, CONTENT_FORMAT, MAX_AGE, URI_QUERY, ACCEPT = 8, 11, 12, 14, 15, 17
LOCATION_QUERY, BLOCK2, BLOCK1, SIZE2, PROXY_URI, PROXY_SCHEME, SIZE1 = 20, 23, 27, 28, 35, 39, 60

# application/cose; cose-type="cose-mac0" (RFC 9052 §9.6 / IANA CoAP Content-Formats)
CONTENT_FORMAT_COSE_MAC0 = 17

PAYLOAD_MARKER = 0xFF
MAX_TOKEN = 8


def is_request(c: int) -> bool:
    return 1 <= c < 32


def is_response(c: int) -> bool:
    return 64 <= c < 192  # classes 2, 4 and 5


def code_text(c: int) -> str:
    """'2.04' for 68: how RFC 7252 writes codes."""
    return f"{c >> 5}.{c & 31:02d}"


def is_critical(number: int) -> bool:
    """An unrecognised critical option must make the request fail (RFC 7252 §5.4.1)."""
    return bool(number & 1)


class CoapError(ValueError):
    """A datagram that is not a well-formed CoAP message (RFC 7252 calls it a format error).

    mtype and mid are set when the fixed header was readable, so a CON can be answered with RST.
    """

    def __init__(self, detail: str, mtype: int | None = None, mid: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.mtype = mtype
        self.mid = mid


@dataclass(slots=True)
class Message:
    mtype: int
    code: int
    mid: int
    token: bytes = b""
    options: list[tuple[int, bytes]] = field(default_factory=list)  # in option-number order
    payload: bytes = b""

    def option(self, number: int) -> bytes | None:
        """The first value of an option, or None."""
        for num, value in self.options:
            if num == number:
                return value
        return None

    def option_values(self, number: int) -> list[bytes]:
        return [value for num, value in self.options if num == number]

    @property
    def uri_path(self) -> list[str]:
        """Uri-Path segments; bytes that are not UTF-8 decode with replacement (never matched)."""
        return [v.decode("utf-8", "replace") for v in self.option_values(URI_PATH)]

    @property
    def content_format(self) -> int | None:
        value = self.option(CONTENT_FORMAT)
        return None if value is None else decode_uint(value)

    def __repr__(self) -> str:
        return (f"<{TYPE_NAMES[self.mtype]} {code_text(self.code)} mid={self.mid} "
                f"token={self.token.hex()} options={[n for n, _ in self.options]} "
                f"payload={len(self.payload)}B>")


def encode_uint(n: int) -> bytes:
    """Option uint: the shortest big-endian form, zero as no bytes (RFC 7252 §3.2)."""
    if n < 0:
        raise ValueError("option uint must not be negative")
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def decode_uint(value: bytes) -> int:
    return int.from_bytes(value, "big")


def _ext(n: int) -> tuple[int, bytes]:
    """Nibble and extension bytes for an option delta or length (13: +1 byte, 14: +2 bytes)."""
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes((n - 13,))
    if n < 65805:
        return 14, (n - 269).to_bytes(2, "big")
    raise ValueError(f"option delta/length {n} does not fit (max 65804)")


def encode(msg: Message) -> bytes:
    if not 0 <= msg.mtype <= 3:
        raise ValueError(f"message type {msg.mtype}")
    if not 0 <= msg.mid <= 0xFFFF:
        raise ValueError(f"message id {msg.mid} is not 16-bit")
    if len(msg.token) > MAX_TOKEN:
        raise ValueError(f"token of {len(msg.token)} bytes (max {MAX_TOKEN})")
    out = bytearray((VERSION << 6 | msg.mtype << 4 | len(msg.token), msg.code, msg.mid >> 8,
                     msg.mid & 0xFF))
    out += msg.token
    last = 0
    # sorted() is stable: repeated options keep their order (Uri-Path segments).
    for number, value in sorted(msg.options, key=lambda o: o[0]):
        d, dext = _ext(number - last)
        ln, lext = _ext(len(value))
        out.append(d << 4 | ln)
        out += dext
        out += lext
        out += value
        last = number
    if msg.payload:
        out.append(PAYLOAD_MARKER)
        out += msg.payload
    return bytes(out)


def decode(data: bytes) -> Message:
    """Parses one datagram; CoapError for anything RFC 7252 calls a message format error."""
    n = len(data)
    if n < 4:
        raise CoapError(f"{n} bytes is shorter than the 4-byte header")
    b0 = data[0]
    mtype, tkl = b0 >> 4 & 3, b0 & 15
    mid = data[2] << 8 | data[3]
    if b0 >> 6 != VERSION:
        # §3: messages with an unknown version are silently ignored, so no type/mid for a Reset.
        raise CoapError(f"version {b0 >> 6}, not 1")
    c = data[1]
    if c == EMPTY:
        if n != 4 or tkl:  # §4.1: an Empty message is the header alone, token length 0
            raise CoapError("Empty message (code 0.00) with a token or bytes after the header", mtype, mid)
        return Message(mtype, c, mid)
    if c >> 5 in (1, 6, 7):
        raise CoapError(f"code {code_text(c)} is in a reserved class", mtype, mid)
    if tkl > MAX_TOKEN:
        raise CoapError(f"token length {tkl} (9-15 are reserved)", mtype, mid)
    pos = 4 + tkl
    if pos > n:
        raise CoapError("token runs past the end of the datagram", mtype, mid)
    options, payload = _OptionReader(data, pos, mtype, mid).read()
    return Message(mtype, c, mid, data[4:pos], options, payload)


class _OptionReader:
    """The options and payload after the token (§3.1): each option's delta and length nibbles,
    their extension bytes, its value; then the payload marker and the payload."""

    def __init__(self, data: bytes, pos: int, mtype: int, mid: int) -> None:
        self.data, self.pos, self.mtype, self.mid = data, pos, mtype, mid

    def error(self, text: str) -> CoapError:
        return CoapError(text, self.mtype, self.mid)

    def read(self) -> tuple[list[tuple[int, bytes]], bytes]:
        data, n = self.data, len(self.data)
        options: list[tuple[int, bytes]] = []
        number = 0
        while self.pos < n:
            ib = data[self.pos]
            self.pos += 1
            if ib == PAYLOAD_MARKER:
                if self.pos == n:
                    raise self.error("payload marker followed by an empty payload")
                return options, data[self.pos:]
            if ib >> 4 == 15 or ib & 15 == 15:
                raise self.error("option nibble 15 is reserved")
            delta = self.extended(ib >> 4, "delta")
            length = self.extended(ib & 15, "length")
            number += delta
            if number > 0xFFFF:
                raise self.error(f"option number {number} exceeds 65535")
            end = self.pos + length
            if end > n:
                raise self.error(f"option {number} value runs past the end of the datagram")
            options.append((number, data[self.pos:end]))
            self.pos = end
        return options, b""

    def extended(self, nibble: int, what: str) -> int:
        """A delta or length: the nibble itself, or 13 + one byte, or 269 + two bytes."""
        if nibble < 13:
            return nibble
        size = 1 if nibble == 13 else 2
        if self.pos + size > len(self.data):
            raise self.error(f"option {what} extension truncated")
        value = int.from_bytes(self.data[self.pos:self.pos + size], "big")
        self.pos += size
        return value + (13 if size == 1 else 269)


def reset(mid: int) -> bytes:
    """An RST answering message id mid (§4.2: rejecting a confirmable message)."""
    return bytes((VERSION << 6 | RST << 4, EMPTY, mid >> 8, mid & 0xFF))


def piggybacked(request: Message, c: int, payload: bytes = b"",
                options: Iterable[tuple[int, bytes]] = ()) -> Message:
    """The ACK carrying the response to a confirmable request (§5.2.1): same mid and token."""
    return Message(ACK, c, request.mid, request.token, list(options), payload)


__all__ = [
    "Message", "CoapError", "encode", "decode", "reset", "piggybacked", "encode_uint", "decode_uint",
    "code", "code_text", "is_request", "is_response", "is_critical", "CON", "NON", "ACK", "RST",
    "POST", "CHANGED", "VALID", "BAD_REQUEST", "UNAUTHORIZED", "URI_PATH", "CONTENT_FORMAT",
    "CONTENT_FORMAT_COSE_MAC0",
]
