# CoAP GET with block-wise transfer (RFC 7252 + RFC 7959 Block2), stop and wait, for the update
# download (fnode.ota): one block in flight, retransmitted on RFC 7252's timing. Imported only
# while an update runs. The request is built in a small preallocated buffer; each answer is one
# recv (the port has no recv_into): at most one block's datagram is alive at a time.
import asyncio
import select
import socket
from micropython import const
from random import getrandbits
from time import ticks_add, ticks_diff, ticks_ms
from fnode import coap
from fnode.coap import _extended

_OPT_URI_PATH = const(11)
_OPT_BLOCK2 = const(23)
_CONTENT = const(69)  # 2.05
_MAX_RETRANSMIT = const(4)
_RX_MAX = const(1024 + 64)
_POLL_MS = const(1)
# While a block is awaited the socket is polled for at most _POLL_MS, then the other tasks run:
# MicroPython's asyncio has no datagram stream to await, and each ms between the answer's arrival
# and its reading is a ms a block (at 20 ms round trips a 5 ms sleep cost ~20 % of the
# stop-and-wait limit, a 1 ms sleep ~5 %: bench/update_transfer.py). poll() wakes as soon as the
# answer is there; ipoll() allocates nothing.


def szx_of(size):
    # Block size (16..1024, a power of two) -> SZX (RFC 7959 §2.2).
    szx = 0
    while (16 << szx) < size and szx < 6:
        szx += 1
    return szx


class BlockGet:
    def __init__(self, addr, path):
        # path: the Uri-Path segments (bytes), each shorter than 269 bytes
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)
        self.req = bytearray(8 + sum(len(p) + 2 for p in path) + 4)
        self.path = path
        self.mid = getrandbits(16)
        self.payload = None  # the last block's data (memoryview into the answer)
        self.more = False
        self.szx = 6
        self.num = 0
        self.dgram = None
        self.tries = 0
        self.timeout = 0
        self.deadline = 0

    def close(self):
        self.sock.close()

    def _request(self, num, szx):
        b = self.req
        self.mid = (self.mid + 1) & 0xFFFF
        b[0] = 0x44  # version 1, CON, token length 4
        b[1] = 1  # GET
        b[2] = self.mid >> 8
        b[3] = self.mid & 0xFF
        for i in range(4, 8):
            b[i] = getrandbits(8)
        pos = 8
        delta = _OPT_URI_PATH
        for seg in self.path:
            n = len(seg)
            if n < 13:
                b[pos] = (delta << 4) | n
                pos += 1
            else:
                b[pos] = (delta << 4) | 13
                b[pos + 1] = n - 13
                pos += 2
            b[pos:pos + n] = seg
            pos += n
            delta = 0
        v = (num << 4) | szx
        n = 1 if v < 0x100 else (2 if v < 0x10000 else 3)
        b[pos] = ((_OPT_BLOCK2 - _OPT_URI_PATH) << 4) | n
        for i in range(n):
            b[pos + n - i] = (v >> (8 * i)) & 0xFF
        return memoryview(b)[:pos + 1 + n]

    def _parse(self, rx):
        # -> the response code if rx answers the request, else 0; sets payload, more, szx
        n = len(rx)
        b = self.req
        if n < 8 or rx[0] & 0xCF != 0x44 or rx[4:8] != b[4:8]:
            return 0
        if (rx[0] >> 4) & 3 == 2 and (rx[2] != b[2] or rx[3] != b[3]):
            return 0  # a piggybacked answer must carry the request's message id
        pos = 8
        number = 0
        self.payload = None
        while pos < n:
            ib = rx[pos]
            pos += 1
            if ib == 0xFF:
                self.payload = memoryview(rx)[pos:]
                break
            delta, length = ib >> 4, ib & 15
            if delta >= 13:
                delta, pos = _extended(rx, pos, n, delta)
            if length >= 13:
                length, pos = _extended(rx, pos, n, length)
            if delta < 0 or length < 0 or pos + length > n:
                return 0
            number += delta
            if number == _OPT_BLOCK2:
                v = 0
                for i in range(pos, pos + length):
                    v = (v << 8) | rx[i]
                self.more = bool(v & 8)
                self.szx = v & 7
                self.num = v >> 4
            pos += length
        return rx[1]

    def request(self, num, szx):
        # Sends the request for block num (of 16 << szx bytes); answer() waits for it. The
        # caller may store the previous block meanwhile: the round trip hides that work.
        self.dgram = self._request(num, szx)
        self.tries = 0
        ack = coap.ack_timeout_ms  # RFC 7252: between ACK_TIMEOUT and 1.5 times it
        self.timeout = ack + getrandbits(16) % (ack // 2 + 1)
        self._send()

    def _send(self):
        try:
            self.sock.sendto(self.dgram, self.addr)
        except OSError:
            pass  # as a datagram lost: retransmitted at the timeout
        self.deadline = ticks_add(ticks_ms(), self.timeout)

    async def answer(self):
        # -> the response code (2.05 with self.payload set), or None when the gateway did not
        # answer after RFC 7252's retransmissions
        while True:
            try:
                rx = self.sock.recv(_RX_MAX)
            except OSError:  # EAGAIN: nothing yet
                if ticks_diff(self.deadline, ticks_ms()) <= 0:
                    if self.tries >= _MAX_RETRANSMIT:
                        return None
                    self.tries += 1
                    self.timeout *= 2
                    self._send()
                self.poller.ipoll(_POLL_MS)
                await asyncio.sleep_ms(0)
                continue
            code = self._parse(rx)
            if code:
                return code

    async def get(self, num, szx):
        self.request(num, szx)
        return await self.answer()


CONTENT = _CONTENT
