# time for the virtual node: the unix port's clock with the ESP32 port's types, so firmware that
# is right on the board is right here: time() is whole seconds (an int; the unix port gives a
# float), and localtime()/mktime() are UTC (the ESP32 has no time zone; the unix port uses the
# host's).
import sys

_path = sys.path
sys.path = ()  # with no path, the imports below find the built-in module, not this file
try:
    from time import *  # noqa: F401,F403 - ticks_*, sleep*, gmtime, time_ns as they are
    import time as _builtin
finally:
    sys.path = _path
    del _path


_offset = None  # seconds between the node's clock and the host's; kept in rtc.json like the RTC


def time():
    global _offset
    if _offset is None:
        _offset = _stored_offset()
    return int(_builtin.time()) + _offset


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
    _offset = int(seconds) - int(_builtin.time())
    return _offset


def localtime(secs=None):
    return _builtin.gmtime(time() if secs is None else secs)


def gmtime(secs=None):
    return _builtin.gmtime(time() if secs is None else secs)


def time_ns():
    time()  # loads the offset
    return _builtin.time_ns() + _offset * 1_000_000_000


def mktime(t):
    # Days from 1970-01-01 to the date (the proleptic Gregorian calendar), then the time of day.
    y, m, d = t[0], t[1], t[2]
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + t[3] * 3600 + t[4] * 60 + t[5]
