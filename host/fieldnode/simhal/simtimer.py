# machine.Timer: expiries checked each 10 ms tick of simtick (in the main thread), callbacks
# scheduled to run like soft timer callbacks on the ESP32 port.
from simclock import host as time  # the hardware's clock, as simtick's
import micropython
import simtick


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=0, **kwargs):
        self.id = id
        self._due = None
        self._period = 0
        self._cb = None
        self._mode = Timer.PERIODIC
        if kwargs:
            self.init(**kwargs)

    def init(self, *, mode=PERIODIC, period=-1, freq=-1, callback=None):
        if freq > 0:
            period = int(1000 / freq)
        if period <= 0:
            raise ValueError("period must be positive")
        self._mode = mode
        self._period = period
        self._cb = callback
        self._due = time.ticks_add(time.ticks_ms(), period)
        simtick.add_timer(self)

    def deinit(self):
        self._due = None
        simtick.remove_timer(self)

    def value(self):
        if self._due is None:
            return 0
        return max(0, time.ticks_diff(self._due, time.ticks_ms()))

    def _tick(self, now):
        due = self._due
        if due is None or time.ticks_diff(now, due) < 0:
            return
        if self._mode == Timer.PERIODIC:
            self._due = time.ticks_add(due, self._period)
        else:
            self._due = None
            simtick.remove_timer(self)
        if self._cb is not None:
            try:
                micropython.schedule(_fire, self)
            except RuntimeError:
                pass  # queue full: this expiry is lost, as an overrun is on the board


def _fire(timer):
    if simtick.in_flash_call():
        # None runs inside the ESP32's C flash driver: right after it, or (queue full) at the
        # next tick, so that an expiry is not lost to the simulation's own traffic.
        if not simtick.hold_back(_fire, timer):
            timer._due = time.ticks_ms()
            simtick.add_timer(timer)
        return
    cb = timer._cb
    if cb is not None:
        cb(timer)
