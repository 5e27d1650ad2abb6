# Pulse counter (flow, energy, rain gauge...) on a pin interrupt, rising edge.
# The interrupt handler only adds one to a counter that nothing else writes. read_into loads it
# once (one word: atomic against the handler) and works from the difference to the previous
# load, so an edge that arrives during a read or a send is simply counted in the next period:
# none is lost and none is counted twice, without disabling interrupts.
# The handler is a soft IRQ: the ESP32 port's Pin.irq has no hard= (ports/esp32/machine_pin.c,
# v1.24-v1.26: TypeError) and schedules every handler with mp_sched_schedule, so it runs between
# bytecodes, like the code that reads the counter. The counter wraps at 2**30 to stay a small int
# (no allocation per edge); differences are taken modulo 2**30 (fine below 2**30 edges per period).
import time
from micropython import const

_WRAP = const(0x3FFFFFFF)


class Pulse:
    def __init__(self, pin, per_pulse):
        self.per_pulse = per_pulse
        self.edges = 0  # written by the handler only
        self.last = 0  # self.edges at the previous read
        self.total = 0  # pulses counted since start (a plain int: may grow past 2**30)
        self.t_last = time.ticks_ms()
        self.pin = pin
        pin.irq(handler=self._edge, trigger=pin.IRQ_RISING)

    def _edge(self, pin):
        self.edges = (self.edges + 1) & _WRAP

    def read_into(self, out):
        # out[0] = total since start * per_pulse, out[1] = rate over the period * per_pulse per s
        edges = self.edges
        now = time.ticks_ms()
        n = (edges - self.last) & _WRAP
        dt = time.ticks_diff(now, self.t_last)
        self.last = edges
        self.t_last = now
        self.total += n
        out[0] = self.total * self.per_pulse
        out[1] = n * self.per_pulse * 1000 / dt if dt > 0 else 0.0


def make(spec, hw):
    pin = hw.pin(spec["pin"])
    pull = spec.get("pull")
    if pull:
        pin.init(pin.IN, pin.PULL_UP if pull == "up" else pin.PULL_DOWN)
    return Pulse(pin, spec["per_pulse"])


def readings(spec):
    unit = spec.get("unit")
    return (("count", unit or "count"), ("rate", unit + "/s" if unit else "1/s"))
