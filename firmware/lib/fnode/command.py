# Commands the node receives (kind 3, host -> node): verify, check the counter, parse the SenML.
#
#   reader = CommandReader(key, kid, alg, last=counter_saved_in_nvs)
#   try:
#       cmd = reader.read(frame)        # Command, or cose.Rejected with .reason
#   except Rejected as e: ...           # answer with an ack "refused" / log e.reason
#   save reader.last                    # the counter of the last command applied
from micropython import const
from .cose import verify, Rejected, KIND_COMMAND, MAX_FRAME
from .hmac256 import HMAC256
from . import senml

# The last counter applied is kept in NVS as an i32 (esp32.NVS.set_i32 raises OverflowError beyond
# it): a command counter above this is refused unspent, as it could never be kept.
MAX_COUNTER = const(0x7FFFFFFF)
# Refusals that leave the last counter as it was.
UNSPENT = ("replay", "counter-range")


class Command:
    """A verified command: counter, bt, exp (absolute expiry, seconds since 1970) and items, a list
    of (name, value) for the actuators to set (value: number, str or bool)."""

    def __init__(self, counter, bt, exp, items):
        self.counter = counter
        self.bt = bt
        self.exp = exp
        self.items = items


class CommandReader:
    """Accepts command frames for one node: its key, kid and alg, its base name (default: from the
    device id in kid), and the counter of the last command applied (replay check)."""

    def __init__(self, key, kid, alg=4, bn=None, last=0, max_len=MAX_FRAME):
        self._mac = HMAC256(key)
        self._kid = bytes(kid)
        self._alg = alg
        self._bn = bn if bn is not None else senml.base_name(self._kid[:6])
        self._max_len = max_len
        self.last = last

    def read(self, frame):
        """The Command in frame, or Rejected (every reason of docs/frame-format.md that applies to
        a node: oversized ... wrong-kind, bad-senml, device-mismatch, replay, counter-range)."""
        kind, counter, payload = verify(frame, self._mac, self._kid, self._alg, KIND_COMMAND,
                                        self.last, self._max_len)
        if counter > MAX_COUNTER:
            raise Rejected("counter-range", "above 2^31-1", counter)
        # From here on the MAC has verified: a refusal names the counter, so the node can answer
        # it, and the counter is spent (the same frame again is a replay, not a second refusal).
        self.last = counter
        try:
            bn, bt, records = senml.parse(payload)
        except ValueError as e:
            raise Rejected("bad-senml", str(e), counter)
        if bn != self._bn:
            raise Rejected("device-mismatch", bn, counter)
        exp = None
        items = []
        for name, unit, value, err in records:
            if err is not None:
                raise Rejected("bad-senml", "a command record carries err", counter)
            if name == "exp":
                if exp is not None or type(value) not in (int, float):
                    raise Rejected("bad-senml", "exp must be one number", counter)
                exp = value
            else:
                items.append((name, value))
        if exp is None:
            raise Rejected("bad-senml", "command without exp", counter)
        return Command(counter, bt, exp, items)
