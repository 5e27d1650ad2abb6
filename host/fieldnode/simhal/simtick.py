# One background thread stands in for the hardware that runs beside the CPU: the watchdog timer,
# edges arriving on input pins, and machine.Timer. It starts on first need. It never runs the
# firmware's code itself: callbacks go through micropython.schedule, so they run in the main
# thread between bytecodes, as soft IRQ handlers do on the ESP32 port.
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
    last = time.ticks_ms()
    while True:
        time.sleep_ms(TICK_MS)
        now = time.ticks_ms()
        dt = time.ticks_diff(now, last)
        last = now
        d = wdt_deadline
        if d is not None and time.ticks_diff(now, d) >= 0:
            _bark()
        try:
            _world_changed(now)
            for p in pins:
                p._tick(dt)
            for t in timers:
                t._tick(now)
        except Exception as exc:  # a broken device must not stop the watchdog
            print("sim: timer thread:", repr(exc))


def _world_changed(now):
    # Devices get world.json values through set(), in the main thread, when a bus uses them. A
    # device nobody reads over a bus (a pulse source) must still follow the world, so every
    # WORLD_MS the main thread is asked to look. Only asked: this thread touches no module state
    # and reads no file, because the firmware may be importing modules or inside a littlefs call
    # into the Python block device meanwhile, and the unix port's threads do not survive that
    # (seen as a corrupted heap when the watchdog, hence this thread, starts before the drivers).
    global _world_due
    if time.ticks_diff(now, _world_due) < 0:
        return
    _world_due = time.ticks_add(now, WORLD_MS)
    try:
        micropython.schedule(_apply_world, None)
    except RuntimeError:
        pass  # queue full: next time


def _apply_world(_):
    dev = sys.modules.get("simdev")
    if dev is not None and getattr(dev, "_devices", None) is not None:  # built (not being imported)
        dev.devices()


def _bark():
    import simnode
    print("E (sim) task_wdt: watchdog not fed within", wdt_timeout, "ms, resetting")
    simnode.end("wdt")
