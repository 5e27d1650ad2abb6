# Getting frames off the node: every frame to the USB console at once, and to the gateway as a
# confirmable CoAP POST (RFC 7252), one outstanding at a time, retransmitted with RFC 7252's
# backoff. A frame leaves the queue only when the gateway's response says it was committed
# (2.xx) or refused for good (4.xx). With a spool, every frame is in flash before it is first
# sent and leaves it only on the gateway's answer, so a power cut loses no unacknowledged frame
# (flash wear: docs/firmware.md). An Uplink made without a spool keeps a few in RAM.
import asyncio
import socket
import struct
import sys
import time
from binascii import b2a_base64
from fnode import coap, log

RAM_SLOTS = 8
FRAME_MAX = 512  # the node's frames come from fnode.frame.FrameBuilder's 512-byte buffer
_SERVER_ERROR = 0xA0  # response codes 5.00 and above: the gateway could not store, try later
_COUNTER_AT = 19  # d1 84 58 19 a4 01 <alg> 04 48 <kid:8> 06 44 <counter:4>: docs/frame-format.md
_CONSOLE_PREFIX = b"FN1 "


def counter_of(frame):
    return struct.unpack_from(">I", frame, _COUNTER_AT)[0]


class Uplink:
    def __init__(self, gateway, link, spool=None, console=None):
        self.gateway = gateway  # (host, port) or None for a USB-only node
        self.link = link
        self.spool = spool
        self.console = console or sys.stdout
        self.ram = []  # [(counter, frame bytes)], only when there is no spool
        self.on_command = None  # called with a command frame the gateway sent in a response
        self.sock = None
        self.addr = None
        self.ex = coap.Exchange(FRAME_MAX)
        self.rx = bytearray(1280)
        self.last_ok = None  # ticks_ms of the gateway's last 2.xx answer (actuator failsafe watches it)
        self.acked = 0
        self.refused = 0
        self.timeouts = 0
        self.beat = time.ticks_ms()  # the sender's last sign of life, for the watchdog

    # -- producer side (samplers) --------------------------------------------------------------
    def submit(self, frame):
        if self.gateway is not None and self.spool is not None:
            # In flash before it is printed or sent: a frame seen on the console survives a reset
            # while it waits for its answer.
            self.spool.put(counter_of(frame), frame)
        out = self.console
        out.write(_CONSOLE_PREFIX)
        out.write(b2a_base64(frame))  # ends with "\n": one frame per line
        if self.gateway is None or self.spool is not None:
            return
        if len(self.ram) >= RAM_SLOTS:
            self.ram.pop(0)  # no spool: the oldest unsent frame goes
        self.ram.append((counter_of(frame), bytes(frame)))  # the builder's buffer is reused

    def pending(self):
        return len(self.spool) if self.spool is not None else len(self.ram)

    # -- the sender task -----------------------------------------------------------------------
    async def run(self):
        backoff = 0
        while True:
            self.beat = time.ticks_ms()
            if self.gateway is None:
                await asyncio.sleep_ms(1000)
                continue
            if not self.link.poll():
                self._close()
                await asyncio.sleep_ms(250)
                continue
            head = self.ram[0] if self.ram else (self.spool.peek() if self.spool is not None else None)
            if head is None:
                await asyncio.sleep_ms(20)
                continue
            if self.spool is not None:
                self.spool.doubt = head[0]  # from the first transmission until an answer comes
            code = await self.exchange(head[1])
            if code is None or code >= _SERVER_ERROR:  # no answer, or 5.xx: keep the frame
                self.timeouts += 1
                backoff = min(backoff * 2 or 1000, 30000)
                await asyncio.sleep_ms(backoff)
                continue
            backoff = 0
            if code == coap.RESET or code >= coap.BAD_REQUEST:
                self.refused += 1
                log.warn("gateway refused frame", head[0], "code", code)
            else:
                self.acked += 1
                self.last_ok = time.ticks_ms()
            if self.ram and self.ram[0][0] == head[0]:
                self.ram.pop(0)
            elif self.spool is not None:
                self.spool.drop(head[0])

    def _close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _socket(self):
        if self.sock is None:
            if self.addr is None:
                host, port = self.gateway
                self.addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            self.sock = s
        return self.sock

    async def exchange(self, frame):
        # One CON POST with RFC 7252 retransmission. -> response code (coap.RESET for a reset),
        # or None when the gateway did not answer in time.
        try:
            sock = self._socket()
        except OSError:
            return None
        ex = self.ex
        if not self._send(sock, ex.post(frame)):
            return None
        ex.start(time.ticks_ms())
        give_up = time.ticks_add(time.ticks_ms(), coap.MAX_TRANSMIT_WAIT_MS)
        while True:
            self.beat = time.ticks_ms()
            r = self._receive(sock)
            if r == coap.RESET or r > 0:
                if ex.need_ack:
                    self._send(sock, ex.ack())
                return r
            now = time.ticks_ms()
            if not ex.acked and ex.wait_ms(now) == 0:
                if not ex.retransmit(now) or not self._send(sock, ex.datagram()):
                    return None
            elif time.ticks_diff(now, give_up) > 0:
                return None  # acknowledged but the separate response never came
            await asyncio.sleep_ms(5)

    def _send(self, sock, datagram):
        try:
            sock.sendto(datagram, self.addr)
            return True
        except OSError:
            self._close()
            return False

    def _receive(self, sock):
        try:
            n = sock.readinto(self.rx)
        except OSError:
            return coap.NO_MATCH
        if not n:
            return coap.NO_MATCH
        ex = self.ex
        r = ex.parse(self.rx, n)
        if r > 0 and ex.payload_len and ex.content_format == coap.CONTENT_FORMAT_COSE \
                and self.on_command is not None:
            self.on_command(memoryview(self.rx)[ex.payload_start:ex.payload_start + ex.payload_len])
        return r
