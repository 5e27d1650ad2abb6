# Gateway failover (docs/firmware.md, "Failover"): the uplink of a node provisioned with more than
# one gateway ("gws" besides "gw", fnode.config). Imported only by such a node (app.make_uplink),
# so a node with one gateway pays nothing for it, neither its code nor its names.
#
# Every transmission of a request (the first and each RFC 7252 retransmission) counts as
# unanswered until the gateway answers anything (an ACK, a response, a reset). When failover_after
# have gone unanswered in a row, the next one is not sent: the exchange ends, and the same frame
# goes at once to the next gateway of the list. After failback_s away from the preferred (first)
# gateway, the next frame goes to it again, with one transmission: answered, the node stays;
# unanswered, it goes back to where it came from. Frames stay queued meanwhile (the spool): one
# the silent gateway committed but did not answer gets 2.03 from the next on a shared store.
import time
from micropython import const
from fnode import coap, log, uplink
from fnode.config import parse_gateway
from fnode.stamp import age

_FAILOVER_AFTER = const(4)  # default board "failover_after": the first and 3 retransmissions, 30-45 s
_FAILBACK_S = const(300)  # default board "failback_s"


class Uplink(uplink.Uplink):
    def __init__(self, gateway, link, spool=None, console=None):
        super().__init__(gateway, link, spool, console)
        self.gateways = [gateway]  # in order of preference; self.gateway is the one in use
        self.current = 0  # its index
        self.unanswered = 0  # requests sent in a row to the gateway in use that no answer followed
        self.failover_after = _FAILOVER_AFTER
        self.failback_s = _FAILBACK_S
        self.moved_at = None  # ticks_ms of the move off the preferred gateway, or of the last try back
        self.trying_back = None  # the index to go back to if the preferred one is still silent
        self.moved = False  # the gateway moved to has not taken a frame yet: the event waits for it

    def also(self, board, more):
        # more: the "gws" setting, the gateways after the first, comma-separated. One the node
        # cannot use (written by hand: the host checks them) is left out; the others serve.
        for text in more.split(","):
            try:
                self.gateways.append(parse_gateway(text))
            except ValueError:
                log.error("gateway setting", repr(text), "is not HOST:PORT; left out")
        self.failover_after = board.get("failover_after", _FAILOVER_AFTER)
        self.failback_s = board.get("failback_s", _FAILBACK_S)

    def age(self, now):
        super().age(now)
        self.moved_at = age(self.moved_at, now)

    async def exchange(self, frame):
        self._failback()
        code = await super().exchange(frame)
        if code is None and self._silent():  # the same frame at once to the next gateway
            self._move()
            code = await super().exchange(frame)
        return code

    def _send(self, datagram):
        if datagram is not self.ex.ack_buf:  # a request (an empty ACK answers the gateway)
            if self._silent():
                return False  # enough went unanswered: the exchange ends, exchange() moves on
            self.unanswered += 1
        return super()._send(datagram)

    def _receive(self):
        r = super()._receive()
        if r != coap.NO_MATCH:  # the gateway in use answers (the preferred one, if it was tried)
            self.unanswered = 0
            self.trying_back = None
        return r

    def _took(self, counter):
        super()._took(counter)
        if self.moved:  # said once the gateway moved to has taken a frame: it carries the event
            self.moved = False
            if self.on_event is not None:
                self.on_event("uplink.failover", "gateway", None, self.current)

    def _silent(self):
        # Enough requests went unanswered to try another gateway: one, when the preferred one is
        # tried again after failback_s.
        if len(self.gateways) < 2:
            return False
        return self.unanswered >= (1 if self.trying_back is not None else self.failover_after)

    def _move(self):
        back = self.trying_back
        to = back if back is not None else (self.current + 1) % len(self.gateways)
        log.warn("uplink.failover", self.current, self.gateway, "->", to, self.gateways[to])
        self._move_to(to)
        self.moved = back is None  # back where it was: nothing new to say

    def _failback(self):
        # failback_s away from the preferred gateway: the next frame goes to it again.
        if self.current == 0 or time.ticks_diff(time.ticks_ms(), self.moved_at) < self.failback_s * 1000:
            return
        self.trying_back = self.current
        self._move_to(0)
        self.moved = True

    def _move_to(self, i):
        self._close()
        self.addr = None  # resolved again for the new gateway, once
        self.current = i
        self.gateway = self.gateways[i]
        self.unanswered = 0
        self.trying_back = None if i else self.trying_back
        self.moved_at = time.ticks_ms()
