# Getting frames off the node: every frame to the USB console, and to the gateway as a
# confirmable CoAP POST (RFC 7252), one outstanding at a time, retransmitted with RFC 7252's
# backoff. A frame leaves the queue only when the gateway's response says it was committed
# (2.xx) or refused for good (4.xx; not 4.01 unknown-kid: the gateway lacks the key, which a
# restart with the right keys mends, so the frame is kept and sent again after a backoff; nor
# 4.22 need-declaration: a frame format v2 node's declaration goes first, then the frame again).
# With a spool, a frame waits in RAM for its answer and goes to flash if none comes promptly;
# its console line is printed when it is answered or in flash, so every printed frame survives
# a power cut (fnode.spool, docs/firmware.md). An Uplink without a spool keeps a few in RAM and
# prints at once.
# The sender task waits on an asyncio.Event while it has nothing to send: submit() sets it, as
# micropython-async's queues do. set() runs in task context only (a sampler, a command), never
# from a hard IRQ, where MicroPython's asyncio.Event is not safe.
import asyncio
import socket
import sys
import time
from binascii import b2a_base64
from micropython import const
from fnode import coap, log
from fnode.cose import counter_of
from fnode.stamp import age

_RAM_SLOTS = const(8)
_FRAME_MAX = const(512)  # the node's frames come from fnode.frame.FrameBuilder's 512-byte buffer
_SUCCESS = const(0x40)  # response codes 2.00 and above
_SERVER_ERROR = const(0xA0)  # response codes 5.00 and above: the gateway could not store, try later
_CONSOLE_PREFIX = b"FN1 "
_RX_MAX = const(1280)  # the largest datagram read: an IPv6 minimum MTU's worth, as RFC 7252 §4.6 sizes them
_LINK_POLL_MS = const(250)  # the Wi-Fi driver has no event to wait on: its status is read this often
_UNKNOWN_KID = b"unknown-kid"
_NEED_DECLARATION = b"need-declaration"
_KEY_RETRY_MAX_MS = const(30000)  # default bound of the backoff while the gateway does not know the key
# default bound of the backoff while the gateway is silent (board "uplink_backoff_max_s")
_BACKOFF_MAX_MS = const(30000)
_BEAT_MS = const(10000)  # a long backoff still shows the watchdog signs of life this often


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
        self.ex = coap.Exchange(_FRAME_MAX)
        self.answer = b""  # the last datagram received
        self.last_ok = None  # ticks_ms of the gateway's last 2.xx answer (actuator failsafe watches it)
        self.acked = 0
        self.refused = 0
        self.timeouts = 0
        # The sender's last sign of life, for the watchdog; None while it waits for a frame (it
        # waits on an event then: nothing in progress can stall).
        self.beat = time.ticks_ms()
        self.key_retry_max_ms = _KEY_RETRY_MAX_MS
        self.backoff_max_ms = _BACKOFF_MAX_MS
        self.on_event = None  # called (event, name, unit, value) to send an event frame
        self.on_idle = None  # called when everything queued has been sent (the spool is empty)
        self.on_need_declaration = None  # v2: -> a new declaration frame, when the gateway asks for it
        self.on_acked = None  # called with a frame's counter when the gateway took it (a trial is kept)
        self.on_offer = None  # called with the version of an update the gateway's answer offers
        self.unknown_kid = 0  # 4.01 unknown-kid answers since the gateway last took a frame
        self.unknown_since = None  # ticks_ms of the first of them (aged: at most 3.1 days back)
        self._queued = asyncio.Event()  # set by submit(): the sender and the spool's task wake on it
        if spool is not None:
            spool.on_out = self._print  # printed once answered or safe in flash

    # -- producer side (samplers) --------------------------------------------------------------
    def submit(self, frame):
        if self.spool is not None:
            # Printed by the spool once answered or in flash: a frame seen on the console
            # survives a reset while it waits for its answer (or for a usable gateway setting:
            # see app.py).
            self.spool.put(counter_of(frame), frame)
            self._queued.set()
            return
        self._print(frame)
        if self.gateway is None:
            return
        if len(self.ram) >= _RAM_SLOTS:
            self.ram.pop(0)  # no spool: the oldest unsent frame goes
        self.ram.append((counter_of(frame), bytes(frame)))  # the builder's buffer is reused
        self._queued.set()

    def _print(self, frame):
        out = self.console
        out.write(_CONSOLE_PREFIX)
        out.write(b2a_base64(frame))  # ends with "\n": one frame per line

    def age(self, now):
        # The tick stamps kept, moved on before they could read as in the future (fnode.stamp;
        # app.Node.age_stamps calls it each second).
        self.last_ok = age(self.last_ok, now)
        self.beat = age(self.beat, now)
        self.unknown_since = age(self.unknown_since, now)

    def pending(self):
        return len(self.spool) if self.spool is not None else len(self.ram)

    # -- the sender task -----------------------------------------------------------------------
    async def run(self):
        backoff = 0
        while True:
            self.beat = time.ticks_ms()
            if self.gateway is None:
                await self._idle()  # nowhere to send: frames go to the console (and the spool)
                continue
            if not self.link.poll():
                self._close()
                await asyncio.sleep_ms(_LINK_POLL_MS)
                continue
            head = self.ram[0] if self.ram else (self.spool.peek() if self.spool is not None else None)
            if head is None:
                await self._idle()
                continue
            if self.spool is not None:
                self.spool.doubt = head[0]  # from the first transmission until an answer comes
            code = await self.exchange(head[1])
            if code is None or code >= _SERVER_ERROR:  # no answer, or 5.xx: keep the frame
                self.timeouts += 1
                backoff = min(backoff * 2 or 1000, self.backoff_max_ms)
                await asyncio.sleep_ms(backoff)
                continue
            if code == coap.UNAUTHORIZED and self._reason() == _UNKNOWN_KID:
                backoff = min(backoff * 2 or 1000, self.key_retry_max_ms)
                self._key_unknown(head[0], backoff)
                await self._pause(backoff)
                continue
            if code == coap.UNPROCESSABLE and self.on_need_declaration is not None \
                    and self._reason() == _NEED_DECLARATION:
                backoff = await self._declare(backoff)
                continue
            backoff = 0
            if code < coap.BAD_REQUEST and code != coap.RESET:
                self._key_known()
            if code == coap.RESET or code >= coap.BAD_REQUEST:
                self.refused += 1
                log.warn("gateway refused frame", head[0], "code", code)
            else:
                self._took(head[0])
            self._drop(head[0])

    def _drop(self, counter):
        # The frame at the head is answered for good: it leaves the queue.
        if self.ram and self.ram[0][0] == counter:
            self.ram.pop(0)
        elif self.spool is not None:
            self.spool.drop(counter)

    async def _declare(self, backoff):
        # The gateway lacks the declaration the frame at the head refers to (frame format v2): the
        # frame stays, a new declaration goes at once, out of the queue (queued, it would wait
        # behind the frame that needs it), then the frame again. -> the backoff to keep.
        frame = self.on_need_declaration()
        self._print(frame)
        code = await self.exchange(frame)
        if code is not None and _SUCCESS <= code < coap.BAD_REQUEST:  # 2.xx: the gateway holds it
            return 0
        backoff = min(backoff * 2 or 1000, self.backoff_max_ms)
        await self._pause(backoff)
        return backoff

    def _took(self, counter):
        self.acked += 1
        self.last_ok = time.ticks_ms()
        if self.on_acked is not None:
            self.on_acked(counter)

    def _reason(self):
        # The diagnostic payload of the answer exchange() returned (the reason of a 4.xx).
        ex = self.ex
        return self.answer[ex.payload_start:ex.payload_start + ex.payload_len] if ex.payload_len else b""

    def _key_unknown(self, counter, backoff):
        # The gateway does not know this node's key id: after a revoke that is meant, but a
        # gateway started with an old key export does it to every node. The frame is kept
        # (the queue is bounded) and sent again after the backoff.
        if self.unknown_kid == 0:
            self.unknown_since = time.ticks_ms()
        self.unknown_kid += 1
        log.warn("gateway does not know our key (4.01 unknown-kid): frame", counter, "kept, retry in", backoff, "ms")

    def _key_known(self):
        # The gateway took a frame again after refusing the key: said once, in a signed event.
        if not self.unknown_kid:
            return
        secs = time.ticks_diff(time.ticks_ms(), self.unknown_since) // 1000
        log.info("gateway knows our key again after", secs, "s,", self.unknown_kid, "refusals")
        self.unknown_kid = 0
        if self.on_event is not None:
            self.on_event("gateway.key-unknown", "duration", "s", secs)

    async def _idle(self):
        # Nothing to send: sleep until submit() queues a frame. The caller has just looked for
        # one, and nothing is queued between that look and the wait (no await in between), so
        # no wake-up is lost by clearing here; the spool's task clears the same event the same way.
        self.beat = None
        self._queued.clear()
        if self.on_idle is not None and self.gateway is not None:
            self.on_idle()  # may queue a frame: set after the clear, so the wait returns at once
        await self._queued.wait()

    async def _pause(self, ms):
        # A backoff longer than the watchdog's patience, in slices that show the loop is alive.
        while ms > 0:
            self.beat = time.ticks_ms()
            step = min(ms, _BEAT_MS)
            await asyncio.sleep_ms(step)
            ms -= step

    async def settle(self):
        # The spool's task, beside the sender (a sender that hangs or dies does not keep frames
        # from flash and the console): frames that waited spool.after_ms in RAM for their answer
        # go to flash. Sleeps until the oldest is due, or until a frame is queued.
        spool = self.spool
        while True:
            if not spool.ram:
                self._queued.clear()
                await self._queued.wait()
                continue
            wait = time.ticks_diff(spool.ram[0][2], time.ticks_ms()) + spool.after_ms
            if wait > 0:
                await asyncio.sleep_ms(wait)
            else:
                spool.settle(time.ticks_ms())

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
        ex = self.ex
        if not self._send(ex.post(frame)):
            return None
        ex.start(time.ticks_ms())
        give_up = time.ticks_add(time.ticks_ms(), coap.max_transmit_wait_ms())
        while True:
            self.beat = time.ticks_ms()
            r = self._receive()
            if r == coap.RESET or r > 0:
                if ex.need_ack:
                    self._send(ex.ack())
                return r
            now = time.ticks_ms()
            if not ex.acked and ex.wait_ms(now) == 0:
                # From a new socket if the old one was closed: its answer comes to the new one.
                if not ex.retransmit(now) or not self._send(ex.datagram()):
                    return None
            elif time.ticks_diff(now, give_up) > 0:
                return None  # acknowledged but the separate response never came
            await asyncio.sleep_ms(5)

    def _send(self, datagram):
        try:
            self._socket().sendto(datagram, self.addr)
            return True
        except OSError:
            self._close()
            return False

    def _receive(self):
        # One datagram a call: recv, not readinto, which reads queued datagrams into one buffer
        # (py/stream.c). The port has no recv_into, so each answer is a new bytes object; there
        # are a few per frame. b"" is a zero-length datagram or a socket the ESP32 port already
        # marked peer-closed by one (ports/esp32/modsocket.c): it never reads again, so it goes,
        # and the next send opens a new one.
        sock = self.sock
        if sock is None:
            return coap.NO_MATCH
        try:
            rx = sock.recv(_RX_MAX)
        except OSError:  # EAGAIN: nothing queued
            return coap.NO_MATCH
        if not rx:
            self._close()
            return coap.NO_MATCH
        ex = self.ex
        r = ex.parse(rx, len(rx))
        self.answer = rx  # _reason() reads a 4.xx's diagnostic payload from it
        if r > 0 and ex.payload_len and ex.content_format == coap.CONTENT_FORMAT_COSE \
                and self.on_command is not None:
            self.on_command(memoryview(rx)[ex.payload_start:ex.payload_start + ex.payload_len])
        if r > 0 and ex.offer_len and self.on_offer is not None:
            self.on_offer(memoryview(rx)[ex.offer_start:ex.offer_start + ex.offer_len])
        return r
