# The ESP32 port's time module for the virtual node (imported as `time`, see time.py): the unix
# port's clock with the ESP32 port's types and tick period, so firmware that is right on the board
# is right here:
# - time() is whole seconds (an int; the unix port gives a float), and localtime()/mktime() are UTC
#   (the ESP32 has no time zone; the unix port uses the host's).
# - With "epoch": 2000 in sim.json, time(), gmtime(), localtime() and mktime() count from
#   2000-01-01, as the ESP32 port does up to v1.26 (py/mpconfig.h MICROPY_EPOCH_IS_2000 by default;
#   shared/timeutils); without it from 1970, as the unix port (and the ESP32 port from v1.27) does.
# - ticks_ms()/ticks_us()/ticks_cpu() wrap at 2**30 and ticks_diff() is right within 2**29 only, as
#   on every 32-bit port (py/mpconfig.h MICROPY_PY_TIME_TICKS_PERIOD, extmod/modtime.c): a stamp
#   older than 6.2 days reads as in the future. They start at 0 at boot (ports/esp32/mphalport.c:
#   esp_timer_get_time() since boot), plus world.json "ticks_skip_ms": the host moves the node's
#   ticks forward by raising it, as if that much time had passed at once (the watchdog, the timer
#   thread and the simulated devices keep the host's clock and do not see the jump).
import sys

_path = sys.path
sys.path = ()  # with no path, the imports below find the built-in module, not this file
try:
    from time import *  # noqa: F401,F403 - sleep*, gmtime, time_ns as they are
    import time as host  # the unix port's own clock: for the simulated hardware
finally:
    sys.path = _path
    del _path

_builtin = host  # the name ntptime and older simulation code use
_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD >> 1
_boot_ms = host.ticks_ms()
_boot_us = host.ticks_us()


def _skip():
    import simworld  # here: simworld is imported after this module
    return int(simworld.value("ticks_skip_ms", 0))


def ticks_ms():
    return (host.ticks_diff(host.ticks_ms(), _boot_ms) + _skip()) & _MASK


def ticks_us():
    return (host.ticks_diff(host.ticks_us(), _boot_us) + _skip() * 1000) & _MASK


def ticks_cpu():
    return host.ticks_cpu() & _MASK


def ticks_add(ticks, delta):
    if not -_HALF < delta < _HALF:  # extmod/modtime.c: ticks_diff could not give it back
        raise OverflowError("ticks interval overflow")
    return (ticks + delta) & _MASK


def ticks_diff(end, start):
    return ((end - start + _HALF) & _MASK) - _HALF


_offset = None  # seconds between the node's clock and the host's; kept in rtc.json like the RTC
_shift = None  # seconds from 1970-01-01 to the node's epoch: 0, or 946684800 for 2000


def epoch_shift():
    global _shift
    if _shift is None:
        import simnode
        _shift = 946684800 if simnode.config().get("epoch", 1970) == 2000 else 0
    return _shift


def time():
    global _offset
    if _offset is None:
        _offset = _stored_offset()
    return int(host.time()) - epoch_shift() + _offset


def _stored_offset():
    import simnode  # here, not at the top: simnode imports this module
    try:
        return int(simnode.read_json(simnode.path("rtc.json"), {}).get("offset", 0))
    except (OSError, ValueError):
        return 0


def set_wall(seconds):
    # What RTC().datetime(...) does on the ESP32: it sets the clock time() reads. Returns the
    # offset for the RTC to keep across resets (a power-on clears it, as on the board).
    global _offset
    _offset = int(seconds) - (int(host.time()) - epoch_shift())
    return _offset


def localtime(secs=None):
    return gmtime(secs)


def gmtime(secs=None):
    return host.gmtime((time() if secs is None else secs) + epoch_shift())


def time_ns():
    time()  # loads the offset
    return host.time_ns() + (_offset - epoch_shift()) * 1_000_000_000


def mktime(t):
    # Days from 1970-01-01 to the date (the proleptic Gregorian calendar), then the time of day.
    y, m, d = t[0], t[1], t[2]
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + t[3] * 3600 + t[4] * 60 + t[5] - epoch_shift()
