# machine for the virtual node: the ESP32 port's API over simulated hardware, so the firmware
# runs unchanged on the unix port. Pins, resets, sleep, WDT and RTC live here; the bus classes
# (I2C, SoftI2C, UART, ADC, PWM, Timer) are in their own modules, loaded on first use.
import _thread
import time
import micropython
import simclock
import simnode
import simtick

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
_CAUSES = {"pwron": PWRON_RESET, "hard": HARD_RESET, "wdt": WDT_RESET,
           "deepsleep": DEEPSLEEP_RESET, "soft": SOFT_RESET}

PIN_WAKE = EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
TOUCHPAD_WAKE = 5
ULP_WAKE = 6

_LAZY = {"I2C": "simi2c", "SoftI2C": "simi2c", "UART": "simuart", "ADC": "simadc",
         "PWM": "simpwm", "Timer": "simtimer"}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(name)
    value = getattr(__import__(mod), name)
    globals()[name] = value
    return value


# -- identity, clocks, resets ---------------------------------------------------------------
_freq = 160000000
_irq_state = 1


def unique_id():
    return simnode.unique_id()


def freq(hz=None):
    global _freq
    if hz is None:
        return _freq
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq = hz


def reset_cause():
    return _CAUSES.get(simnode.reset_cause_name(), PWRON_RESET)


def wake_reason():
    return TIMER_WAKE if simnode.reset_cause_name() == "deepsleep" else 0


def reset():
    simnode.end("hard")


def soft_reset():
    simnode.soft_end()


def deepsleep(time_ms=0):
    # The host restarts the node after time_ms (0: no timer wake-up, it stays asleep until the
    # host powers it on) with reset cause DEEPSLEEP_RESET. RTC memory survives.
    simnode.end("deepsleep", int(time_ms))


def lightsleep(time_ms=None):
    # Everything is kept; only time passes.
    if time_ms:
        time.sleep_ms(time_ms)


def idle():
    time.sleep_ms(1)  # the CPU waits for the next tick interrupt


def disable_irq():
    global _irq_state
    state, _irq_state = _irq_state, 0
    return state


def enable_irq(state=1):
    global _irq_state
    _irq_state = state


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    # Pulses from a pulse source are square waves: half a period at each level. A pin held at
    # one level times out: -2 waiting for the pulse to start, -1 while it lasts.
    rate = pin._rate()
    if rate > 0:
        return int(500000 / rate)
    time.sleep_us(timeout_us)
    return -1 if pin.value() == pulse_level else -2


# -- pins -----------------------------------------------------------------------------------
_pins = {}
_lock = _thread.allocate_lock()  # guards a pin's pending edges and pulses


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __new__(cls, id, *args, **kwargs):
        # One object per pad, as on the ESP32 port: Pin(5) is Pin(5).
        p = _pins.get(id)
        if p is None:
            _check_pin(id)
            p = object.__new__(cls)
            p.id = id
            p._mode = None
            p._pull = None
            p._out = 0
            p._ext = None  # level driven from outside by the simulation
            p._handler = None
            p._trigger = 0
            p._irq = None
            p._acc = 0.0
            p._owed = 0  # pulses waiting for the handler
            p._edges = []  # single edges (levels) waiting for the handler
            p._queued = False
            p._seen = None  # world level last seen at a tick
            p._pulse_dev = None
            _pins[id] = p
        return p

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        self.init(mode, pull, value=value, drive=drive)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if value is not None:
            self._out = 1 if value else 0
        if pull != -1:
            self._pull = pull
        if mode != -1 and mode is not None:
            if mode in (Pin.OUT, Pin.OPEN_DRAIN):
                pins = simnode.chip_pins()
                if pins and self.id in pins.get("input_only", ()):
                    raise ValueError("pin can only be input")
            self._mode = mode
        self._publish()

    def __repr__(self):
        return "Pin(%d)" % self.id

    def value(self, x=None):
        if x is None:
            if self._mode == Pin.OUT or (self._mode == Pin.OPEN_DRAIN and not self._out):
                return self._out
            return self._level()
        self._out = 1 if x else 0
        self._publish()

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def mode(self, mode=None):
        if mode is None:
            return self._mode
        self.init(mode)

    def pull(self, pull=None):
        if pull is None:
            return self._pull
        self._pull = pull

    def drive(self, drive=None):
        return Pin.DRIVE_2 if drive is None else None

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING, wake=None, **extra):
        # The ESP32 port's Pin.irq takes handler, trigger and wake only (ports/esp32/machine_pin.c,
        # v1.24-v1.26): hard= or priority= raise its mp_arg_parse_all TypeError (py/argcheck.c).
        # Its handler is always a soft IRQ (mp_sched_schedule), as _deliver runs it here.
        if extra:
            raise TypeError("extra keyword arguments given")
        if handler is None and trigger == (Pin.IRQ_FALLING | Pin.IRQ_RISING) and self._irq:
            return self._irq  # irq() with no arguments: the current IRQ object
        self._handler = handler
        self._trigger = trigger
        if self._irq is None:
            self._irq = _PinIRQ(self)
        if handler is None:
            simtick.unwatch(self)
        else:
            import simdev
            found = simdev.on("pulse", self.id)
            self._pulse_dev = found[0] if found else None
            self._seen = self._world_level()
            simtick.watch(self)
        return self._irq

    # -- simulation side: not part of the machine API ------------------------------------------
    def sim_drive(self, level):
        # Drives the pad from outside (None releases it); a change is an edge for the IRQ.
        old = self._level()
        self._ext = level
        new = self._level()
        if new != old:
            self._edge(new)

    def sim_pulses(self, n=1):
        # n pulses (rising then falling edge each) arrive, as from a pulse source.
        with _lock:
            self._owed += n
        self._queue()

    def _world_level(self):
        import simworld
        v = simworld.section("pins").get(str(self.id))
        return None if v is None else (1 if v else 0)

    def _level(self):
        if self._ext is not None:
            return self._ext
        v = self._world_level()
        if v is not None:
            return v
        return 1 if self._pull == Pin.PULL_UP else 0

    def _rate(self):
        dev = self._pulse_dev
        if dev is not None:
            return dev.rate_hz()
        import simworld
        return float(simworld.section("pulses").get(str(self.id), 0))

    def _publish(self):
        if self._mode in (Pin.OUT, Pin.OPEN_DRAIN):
            simnode.publish("pins", self.id, self._out)

    def _edge(self, level):
        with _lock:
            self._edges.append(level)
        self._queue()

    def _queue(self):
        if self._handler is not None and not self._queued:
            try:
                micropython.schedule(_deliver, self)
                self._queued = True
            except RuntimeError:
                pass  # the schedule queue is full: queued again at the next tick

    def _tick(self, dt):
        # Each tick (simtick._service, main thread): pulses due since the last tick and world
        # level changes.
        rate = self._rate()
        n = 0
        if rate > 0:
            self._acc += rate * dt / 1000
            n = int(self._acc)
            self._acc -= n
        lvl = self._world_level() if self._ext is None else None
        with _lock:
            self._owed += n
            if lvl is not None and lvl != self._seen:
                self._seen = lvl
                self._edges.append(lvl)
            due = self._owed or self._edges
        if due:
            self._queue()


def _deliver(pin):
    pin._queued = False
    h = pin._handler
    if h is None:
        return
    if simtick.in_flash_call():
        # None runs inside the ESP32's C flash driver: right after it (or at the next tick).
        pin._queued = simtick.hold_back(_deliver, pin)
        return
    if not _irq_state:
        pin._queue()  # IRQs disabled: try again after enable_irq()
        return
    with _lock:
        n = pin._owed
        pin._owed = 0
        edges = pin._edges
        pin._edges = []
    trig = pin._trigger
    for _ in range(n):
        if trig & Pin.IRQ_RISING:
            h(pin)
        if trig & Pin.IRQ_FALLING:
            h(pin)
    for lvl in edges:
        if trig & (Pin.IRQ_RISING if lvl else Pin.IRQ_FALLING):
            h(pin)


class _PinIRQ:
    def __init__(self, pin):
        self.pin = pin

    def trigger(self, t=None):
        if t is None:
            return self.pin._trigger
        self.pin._trigger = t

    def flags(self):
        return self.pin._trigger


def _check_pin(id):
    if not isinstance(id, int):
        raise ValueError("invalid pin")
    pins = simnode.chip_pins()
    if pins and id not in pins.get("gpios", ()):
        raise ValueError("invalid pin")


class Signal:
    def __init__(self, pin, *args, invert=False, **kwargs):
        if not isinstance(pin, Pin):
            pin = Pin(pin, *args, **kwargs)
        self.pin = pin
        self.invert = bool(invert)

    def value(self, x=None):
        if x is None:
            return self.pin.value() ^ self.invert
        self.pin.value((1 if x else 0) ^ self.invert)

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


# -- watchdog -------------------------------------------------------------------------------
class WDT:
    # Once started it cannot be stopped, as on the ESP32: not even by interrupting main.py into
    # the REPL, nor by a soft reset (ports/esp32/machine_wdt.c keeps its task-WDT user in a
    # static that main.c never removes): wdt.json tells the next soft boot to keep it running.
    # Unfed for timeout ms, simtick's thread resets the node (reset cause WDT_RESET); a hard
    # reset of any kind stops it (the host deletes wdt.json).
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError()
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        if timeout != simtick.wdt_timeout:
            simnode.write_json(simnode.path("wdt.json"), {"timeout": timeout})
        simtick.wdt_timeout = timeout
        self.feed()
        simtick.start()

    def feed(self):
        host = simclock.host  # the WDT counts real time, as simtick checks it
        simtick.wdt_deadline = host.ticks_add(host.ticks_ms(), simtick.wdt_timeout)


# -- RTC ------------------------------------------------------------------------------------
_RTC_FILE = simnode.path("rtc.json")
_RTC_MEMORY = 2048


class RTC:
    # The clock runs as the host's (so it agrees with time.time() on the unix port) plus an
    # offset set by datetime(); offset and memory survive resets and deep sleep, not power cuts.
    def __init__(self, id=0):
        self._state = simnode.read_json(_RTC_FILE, {})

    def init(self, datetime):
        self.datetime(datetime)

    def datetime(self, dt=None):
        if dt is None:
            t = time.localtime(time.time())
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        y, mo, d = dt[0], dt[1], dt[2]
        h, mi, s = (dt[4], dt[5], dt[6]) if len(dt) > 4 else (0, 0, 0)
        self._state["offset"] = time.set_wall(time.mktime((y, mo, d, h, mi, s, 0, 0)))
        self._save()

    def memory(self, data=None):
        if data is None:
            import binascii
            return binascii.unhexlify(self._state.get("memory", ""))
        if len(data) > _RTC_MEMORY:
            raise ValueError("buffer too long")
        import binascii
        self._state["memory"] = binascii.hexlify(data).decode()
        self._save()

    def _save(self):
        simnode.write_json(_RTC_FILE, self._state)
