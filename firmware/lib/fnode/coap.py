# The node's CoAP client piece (RFC 7252): one confirmable POST of a frame to /f with
# Content-Format 17, the answer matched to it, and the retransmission timing. No sockets and no
# asyncio here: the sender owns the socket and the clock and calls this module.
#
#   ex = Exchange()                          # once: preallocated request buffer
#   dgram = ex.post(frame)                   # new message id + token; memoryview into ex.buf
#   sock.sendto(dgram, gw); ex.start(time.ticks_ms())
#   ... n = sock.readinto(rx) / recv_into ...
#   r = ex.parse(rx, n)                      # NO_MATCH, RESET, EMPTY_ACK, or the response code
#   if r == CHANGED or r == VALID: drop the frame from the spool (VALID: the gateway had it)
#   if ex.payload_len: rx[ex.payload_start:ex.payload_start + ex.payload_len] is a command frame
#   on timeout: if ex.retransmit(time.ticks_ms()): sendto(dgram) again, else give up for now
#
# Allocation per message: none (the header goes into the preallocated buffer in front of the
# frame; the token is drawn 16 bits at a time and lives only in that buffer, since a 32-bit int
# would be a heap object on the ESP32). The frame itself is copied once into the buffer.
from micropython import const
from random import getrandbits
from time import ticks_add, ticks_diff

# RFC 7252 §4.8 transmission parameters. ACK_TIMEOUT is the board's "coap_ack_timeout_ms"
# (fnode.app sets it; §4.8.1 lets a deployment change it: a slow link wants more, a test less).
ack_timeout_ms = 2000
_ACK_RANDOM_FACTOR_PCT = const(150)  # ACK_RANDOM_FACTOR 1.5
MAX_RETRANSMIT = const(4)


def max_transmit_wait_ms():
    # ACK_TIMEOUT * (2**(MAX_RETRANSMIT + 1) - 1) * ACK_RANDOM_FACTOR: the longest an exchange
    # lasts (93 s with the default).
    return ack_timeout_ms * ((1 << (MAX_RETRANSMIT + 1)) - 1) * _ACK_RANDOM_FACTOR_PCT // 100

_CON = const(0)
_NON = const(1)
_ACK = const(2)
_RST = const(3)
_POST = const(2)
CHANGED = const(68)  # 2.04 stored
VALID = const(67)  # 2.03 already stored
BAD_REQUEST = const(128)  # 4.00, reason in the diagnostic payload
UNAUTHORIZED = const(129)  # 4.01 (unknown-kid, bad-mac)
UNPROCESSABLE = const(150)  # 4.22 (RFC 8132): need-declaration (frame format v2)
CONTENT_FORMAT_COSE = const(17)

# parse() results that are not response codes
NO_MATCH = const(-1)  # not the answer to this exchange (or malformed): ignore it
RESET = const(-2)  # the gateway refused the message itself (RST): do not retransmit
EMPTY_ACK = const(0)  # received; the response comes separately (RFC 7252 §5.2.2)

_TOKEN_LEN = const(4)
# header 4 + token 4 + Uri-Path "f" 2 + Content-Format 17 2 + payload marker 1
_HEAD = const(13)
_OPT_URI_PATH = const(11)
_OPT_CONTENT_FORMAT = const(12)
OPT_UPDATE_OFFER = const(65000)  # experimental-use range (RFC 7252 §12.2): an update waits, its version


def _extended(rx, pos, n, nibble):
    # An option delta or length nibble of 13 or 14 takes one or two more bytes (RFC 7252 3.1);
    # (-1, pos) when they run past the datagram.
    if nibble == 13:
        if pos >= n:
            return -1, pos
        return rx[pos] + 13, pos + 1
    if pos + 1 >= n:
        return -1, pos
    return ((rx[pos] << 8) | rx[pos + 1]) + 269, pos + 2


class Exchange:
    def __init__(self, max_frame=1024):
        self.buf = bytearray(_HEAD + max_frame)
        self.mv = memoryview(self.buf)
        self.ack_buf = bytearray(4)  # empty ACK for a separate confirmable response
        self.mid = getrandbits(16)  # §4.4: start from a random message id
        self.tries = 0
        self.timeout = 0
        self.deadline = 0
        self.length = 0
        self.code = 0
        self.content_format = -1
        self.payload_start = 0
        self.payload_len = 0
        self.offer_start = 0  # where the Update-Offer option's value is in the last answer
        self.offer_len = 0
        self.acked = False  # an ACK (empty or piggybacked) arrived: stop retransmitting
        self.need_ack = False  # the response was a CON: send ack() back

    def post(self, frame):
        """The datagram of a CON POST /f carrying frame (bytes or memoryview), new mid and token."""
        n = len(frame)
        if n + _HEAD > len(self.buf):
            raise ValueError("frame too long")
        self.mid = (self.mid + 1) & 0xFFFF
        b = self.buf
        b[0] = 0x40 | _TOKEN_LEN  # version 1, CON, token length
        b[1] = _POST
        b[2] = self.mid >> 8
        b[3] = self.mid & 0xFF
        t = getrandbits(16)  # a fresh random token per request (§5.3.1)
        b[4] = t >> 8
        b[5] = t & 0xFF
        t = getrandbits(16)
        b[6] = t >> 8
        b[7] = t & 0xFF
        b[8] = (_OPT_URI_PATH << 4) | 1  # Uri-Path (11), 1 byte
        b[9] = 0x66  # "f"
        b[10] = ((_OPT_CONTENT_FORMAT - _OPT_URI_PATH) << 4) | 1  # Content-Format (12), 1 byte
        b[11] = CONTENT_FORMAT_COSE
        b[12] = 0xFF
        self.mv[_HEAD:_HEAD + n] = frame
        self.length = _HEAD + n
        self.acked = False
        self.need_ack = False
        self.code = 0
        self.payload_len = 0
        return self.mv[:self.length]

    def datagram(self):
        """The request again (a retransmission is the same bytes, same message id)."""
        return self.mv[:self.length]

    # -- retransmission timing (RFC 7252 §4.2) --

    def start(self, now):
        """Call right after the first send; now is time.ticks_ms()."""
        self.tries = 0
        # initial timeout: random between ACK_TIMEOUT and ACK_TIMEOUT * ACK_RANDOM_FACTOR
        span = ack_timeout_ms * (_ACK_RANDOM_FACTOR_PCT - 100) // 100
        self.timeout = ack_timeout_ms + getrandbits(16) % (span + 1)
        self.deadline = ticks_add(now, self.timeout)

    def wait_ms(self, now):
        """Milliseconds until the next retransmission is due (0: due now)."""
        d = ticks_diff(self.deadline, now)
        return d if d > 0 else 0

    def retransmit(self, now):
        """True if the request should be sent again now (timeout doubled); False once
        MAX_RETRANSMIT retransmissions went unanswered: give up, keep the frame for later."""
        if self.tries >= MAX_RETRANSMIT:
            return False
        self.tries += 1
        self.timeout *= 2
        self.deadline = ticks_add(now, self.timeout)
        return True

    # -- the answer --

    def parse(self, rx, n):
        """Matches a received datagram rx[:n] to this exchange.

        Returns NO_MATCH, RESET, EMPTY_ACK, or the response code (CHANGED, VALID, 4.xx, 5.xx).
        With a code, content_format, payload_start and payload_len describe the payload in rx
        (a downlink command when content_format is 17, else a diagnostic text).
        """
        if n < 4 or (rx[0] >> 6) != 1:
            return NO_MATCH
        mtype = (rx[0] >> 4) & 3
        tkl = rx[0] & 15
        code = rx[1]
        mid = (rx[2] << 8) | rx[3]
        if mtype == _ACK or mtype == _RST:
            if mid != self.mid:
                return NO_MATCH
            if mtype == _RST:
                return RESET if n == 4 else NO_MATCH
            if code == 0:
                if n != 4:
                    return NO_MATCH
                self.acked = True
                return EMPTY_ACK
        elif code == 0:
            # an Empty CON/NON (a ping) is not an answer. A separate response may come before
            # its empty ACK (the ACK was lost): it counts as the ACK too (§5.2.2).
            return NO_MATCH
        if tkl != _TOKEN_LEN or n < 4 + tkl or (code >> 5) < 2:
            return NO_MATCH
        b = self.buf  # the request's token, bytes 4..7
        if rx[4] != b[4] or rx[5] != b[5] or rx[6] != b[6] or rx[7] != b[7]:
            return NO_MATCH
        cf = self._options(rx, 4 + tkl, n)
        if cf == -2:
            return NO_MATCH
        self.content_format = cf
        self.code = code
        self.acked = True
        if mtype == _CON:
            self.need_ack = True
            a = self.ack_buf
            a[0] = 0x60  # version 1, ACK, no token
            a[1] = 0
            a[2] = rx[2]
            a[3] = rx[3]
        return code

    def _options(self, rx, pos, n):
        # Walks the options to the payload; returns the Content-Format (-1: none, -2: malformed).
        number = 0
        cf = -1
        self.payload_start = n
        self.payload_len = 0
        self.offer_len = 0
        while pos < n:
            ib = rx[pos]
            pos += 1
            if ib == 0xFF:
                if pos == n:
                    return -2
                self.payload_start = pos
                self.payload_len = n - pos
                return cf
            delta = ib >> 4
            length = ib & 15
            if delta == 15 or length == 15:
                return -2
            if delta >= 13:
                delta, pos = _extended(rx, pos, n, delta)
                if delta < 0:
                    return -2
            if length >= 13:
                length, pos = _extended(rx, pos, n, length)
                if length < 0:
                    return -2
            number += delta
            if pos + length > n:
                return -2
            cf = self._option(rx, number, pos, length, cf)
            pos += length
        return cf

    def _option(self, rx, number, pos, length, cf):
        # An option the node reads: -> the Content-Format so far
        if number == _OPT_CONTENT_FORMAT:
            cf = 0
            for i in range(pos, pos + length):
                cf = (cf << 8) | rx[i]
        elif number == OPT_UPDATE_OFFER:
            self.offer_start = pos
            self.offer_len = length
        return cf

    def ack(self):
        """The empty ACK to send when parse() set need_ack (a separate CON response)."""
        self.need_ack = False
        return self.ack_buf
