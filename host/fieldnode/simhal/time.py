# time for the virtual node: the ESP32 port's clock (simclock) for the firmware, while asyncio keeps
# the unix port's own ticks. asyncio's C task queue (extmod/modasyncio.c) stamps a task it wakes
# with the port's mp_hal_ticks_ms() and compares stamps with the port's tick period; the ESP32's
# 2**30 ticks_ms in asyncio's Python half would not agree with it. So asyncio.core is always
# imported with the built-in time in sys.modules, and the firmware gets simclock.
import sys
import simclock
from simclock import *  # noqa: F401,F403 - what the firmware sees

_builtin = simclock.host
if "asyncio.core" in sys.modules:
    # asyncio.core is being imported and asked for this module (`from time import ticks_ms, ...`):
    # it gets the port's ticks from this module object; everyone after it gets simclock.
    ticks_ms = _builtin.ticks_ms
    ticks_diff = _builtin.ticks_diff
    ticks_add = _builtin.ticks_add
    sys.modules["time"] = simclock
else:
    _me = sys.modules["time"]
    sys.modules["time"] = _builtin
    try:
        import asyncio  # noqa: F401 - binds the built-in ticks now, before the firmware imports it
    except ImportError:
        pass  # no frozen asyncio on the path: nothing to bind
    finally:
        sys.modules["time"] = _me
    del _me
