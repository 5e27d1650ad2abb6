# The node application: a handful of asyncio tasks that never block one another.
#   the sampler (each sensor at its board period)     -> signed telemetry frames
#   the uplink (console + CoAP to the gateway)        -> see fnode.uplink
#   the Wi-Fi link keeper, the status LED, the watchdog
# The watchdog is fed only while every sensor has been sampled recently, the uplink shows
# signs of life and no task has died: a hung task, a deadlocked bus, a starved loop or a task
# killed by an exception ends in a hardware reset, not a silent node.
import asyncio
import gc
import json
import machine
import sys
import time
from micropython import const
from fnode import clock, log
from fnode.config import Config
from fnode.counter import Counter
from fnode.cose import KIND_TELEMETRY, KIND_BOOT, KIND_EVENT
from fnode.frame import FrameBuilder, base_name
from fnode.health import Heap, UNIT
from fnode.sensors import build, unix_time
from fnode.stamp import age, next_due

VERSION = "0.1.0"
BOARD_FILE = "board.json"
# Defaults of the board's timing settings (docs/firmware.md, "Timing settings"); a board file
# may shrink them (the tests do, to keep their meaning at a smaller scale) or stretch them.
WDT_TIMEOUT_MS = 30000  # board "watchdog_s"
_FAILSAFE_AFTER_S = const(300)  # default silence from the gateway before actuators go to failsafe
_UPLINK_STALL_MS = const(60000)  # board "uplink_stall_s"; the uplink's longest quiet spell: its 30 s retry backoff
watchdog = None  # the running machine.WDT: `fieldnode flash --app-only` feeds it from the raw REPL
# Default store-and-forward bound (board "spool_frames"); its flash: board "spool_kb" (docs/firmware.md).
_SPOOL_FRAMES = const(65536)
_FRAME_VERSION = const(2)  # board "frame_version": new nodes send frame format v2 (docs/frame-format.md)
_RESET_NAMES = (
    ("PWRON_RESET", "power_on"), ("HARD_RESET", "hard"), ("WDT_RESET", "watchdog"),
    ("DEEPSLEEP_RESET", "deepsleep"), ("SOFT_RESET", "soft"),
)

_HEALTH_S = const(300)  # default board "health_s": period of the health frame
_CHECK_MS = const(5000)  # the lowest free heap is read this often between health frames
_MAX_WAIT_MS = const(0x10000000)  # longer than any sampling period (2**28 ms, fnode.stamp)


def _add_readings(b, sensor, error):
    names, units, values = sensor.names, sensor.units, sensor.values
    for i in range(len(names)):
        if error is None:
            b.add(names[i], units[i], values[i])
        else:
            b.add_error(names[i], units[i], error)


def reset_cause_name():
    cause = machine.reset_cause()
    for attr, name in _RESET_NAMES:
        if getattr(machine, attr, None) == cause:
            return name
    return "unknown"


def load_board(path=BOARD_FILE):
    with open(path) as f:
        return json.load(f)


def forget_modules(before):
    # Modules imported since `before` (names in sys.modules) are forgotten, there and in their
    # package, so that the heap they hold is collected once nothing else refers to them. Only
    # user modules are in sys.modules; ports' built-in modules are not.
    for name in list(sys.modules):
        if name not in before:
            del sys.modules[name]
            package, _, attr = name.rpartition(".")
            package = sys.modules.get(package)
            if package is not None and hasattr(package, attr):
                delattr(package, attr)


class Node:
    def __init__(self, board, cfg, uplink):
        self.board_name = board["name"]  # not the board: its parsed JSON is freed after boot
        self.cfg = cfg
        self.uplink = uplink
        self.device = machine.unique_id()
        self.counter = Counter(cfg.nvs)
        self.builder = FrameBuilder(cfg.key(), cfg.kid(), cfg.alg(), base_name(self.device))
        self.hw, self.sensors = build(board)
        self.actuators = None
        if board.get("actuators"):
            from fnode.actuators import Actuators
            self.actuators = Actuators(board, self.sensors)
        self.rules = None
        if board.get("alerts") or board.get("rules"):
            from fnode.rules import Rules
            self.rules = Rules(board, self.sensors, self.actuators)
        self.commands = self.actuators is not None  # commands move actuators: no actuators, no commands
        self.progress = {}  # sensor name -> ticks_ms of its last completed sample
        self.stopped = None  # name of a task that ended (an exception escaped it): reset
        self.started = time.ticks_ms()
        self.stall_ms = board.get("uplink_stall_s", _UPLINK_STALL_MS // 1000) * 1000
        self.heap = Heap(board.get("low_heap_bytes"))  # after the drivers: what is left
        # Updates (fnode.ota, fnode.onupdate): the slot's size, the block size, the offer last refused, the
        # versions not fetched again (what runs, what failed), the boot frame's counter on trial.
        self.slot_kb = board.get("app_slot_kb", 256)
        self.block = board.get("update_block", 1024)
        self.updating = False
        self.refused = None
        self.known = ()
        self.first = 0
        self.v2 = board.get("frame_version", _FRAME_VERSION) == 2
        if self.v2:
            self.declaration_frame(declare_only=True)

    def declaration_frame(self, declare_only=False):
        # Frame format v2: every reading (the sensors', then the health frame's) has its short name,
        # and telemetry refers to the declaration by its id. Made at boot and again whenever the
        # gateway asks for it (Uplink.on_need_declaration) by fnode.declare, imported for it and
        # forgotten after it; the declaration is made again each time from the sensors (the same
        # bytes), so neither stays on the heap between times.
        return self.aside("declare", "of_node", declare_only)

    def boot_frame(self):
        b = self.builder
        counter = self.counter.take()
        b.begin(KIND_BOOT, counter, unix_time())
        b.add_str("fw", VERSION)
        b.add_str("board", self.board_name)
        b.add_str("reset", reset_cause_name())
        b.add("schema", None, 1)
        boot = sys.modules.get("fnboot")
        if boot is not None and (boot.state or boot.fw_state):
            self.aside("onupdate", "at_boot", b, counter)
        self.heap.add_records(b)
        return b.finish()

    def telemetry_frame(self, sensor, error):
        # Few locals on purpose: MicroPython puts large call frames on the heap, and finish()
        # allocating while one is open makes every later allocation slower (see bench/node_frame.py).
        self.builder.begin(KIND_TELEMETRY, self.counter.take(), unix_time())
        _add_readings(self.builder, sensor, error)
        return self.builder.finish()

    def event_frame(self, event, name=None, unit=None, value=None):
        b = self.builder
        b.begin(KIND_EVENT, self.counter.take(), unix_time())
        b.add_str("event", event)
        if name is not None:
            b.add(name, unit, value)
        return b.finish()

    def report_loss(self):
        # Frames dropped from a full spool are reported when the uplink has sent everything
        # (Uplink.on_idle: the link is up and the spool empty), so the report itself is not
        # dropped. A task that looked every 2 s could keep missing that moment: health frames
        # on a 2 s schedule kept the spool busy exactly when it looked.
        spool = self.uplink.spool
        lost = spool.lost
        if lost:
            self.uplink.submit(self.event_frame("queue.loss", "lost", "count", lost))
            spool.loss_reported(lost)

    def emit_event(self, event, name=None, unit=None, value=None):
        self.uplink.submit(self.event_frame(event, name, unit, value))

    def aside(self, module, name, *args):
        # fnode.<module>'s function name(node, *args), the module imported for it and forgotten
        # after it, as the command path is (take_command): code a node needs at boot or rarely
        # (the v2 declaration, the boot frame's update records, the first ack on trial) does
        # not stay on the heap (docs/firmware.md, "Memory budget").
        before = set(sys.modules)
        try:
            return getattr(getattr(__import__("fnode." + module), module), name)(self, *args)
        finally:
            forget_modules(before)

    def take_offer(self, offer):
        # uplink.on_offer: the gateway's ack says an update waits. Unless it is refused already,
        # running or rolled back from (the gateway learns that from our frames), the update path
        # (fnode.ota, fnode.blockget, ...) is imported in a task for it and forgotten after it.
        offer = bytes(offer)
        if self.updating or offer == self.refused or offer in self.known:
            return
        self.updating = True
        asyncio.create_task(self.update(offer))

    async def update(self, offer):
        before = set(sys.modules)
        try:
            from fnode.ota import Update
            self.refused = await Update(self, self.slot_kb, self.block).run(offer)
        except MemoryError:
            log.error("update postponed: out of memory")
        finally:
            forget_modules(before)
            self.updating = False

    def trial_acked(self, counter):
        # uplink.on_acked while what runs is on trial (fnboot): the gateway's first ack of a frame
        # made since the reset into the trial (from the boot frame's counter on) keeps it. One
        # made before (still in the spool, or answered 2.03 as stored already) proves nothing.
        if counter >= self.first:
            self.uplink.on_acked = None
            self.aside("onupdate", "kept")

    def sample(self, sensor):
        error = sensor.sample()
        if error is not None:
            log.warn(sensor.name, "read failed:", error)
        if self.rules is not None:
            self.rules.after_sample(sensor, time.ticks_ms(), self)
        if self.actuators is not None:
            name = self.actuators.enforce_interlock()
            while name is not None:
                self.emit_event("interlock", name + ".forced", None, 1)
                name = self.actuators.enforce_interlock()
        self.uplink.submit(self.telemetry_frame(sensor, error))
        self.progress[sensor.name] = time.ticks_ms()

    async def sampler(self):
        # Every sensor on its own fixed schedule (start + k periods, fnode.stamp.next_due), in one
        # task: a task a sensor would cost a Task and two generator frames each (docs/firmware.md,
        # "Memory budget"), and samples cannot overlap anyway, as a driver's read never yields.
        # Sleeps until the earliest deadline.
        sensors = self.sensors
        due = [self.started] * len(sensors)
        while True:
            wait = _MAX_WAIT_MS
            for i in range(len(sensors)):
                if time.ticks_diff(due[i], time.ticks_ms()) <= 0:
                    self.sample(sensors[i])
                    due[i] = next_due(due[i], sensors[i].period_ms, time.ticks_ms())
                left = time.ticks_diff(due[i], time.ticks_ms())
                if left < wait:
                    wait = left
            await asyncio.sleep_ms(max(0, wait))  # 0: still lets the other tasks run

    def take_command(self, frame):
        # Where a command frame comes in (CoAP response, console line). The receiving side -
        # fnode.oncommand, fnode.command (COSE verification), the CBOR decoder, the SenML parser -
        # is imported for it and forgotten after it: ~8 KB of an ESP32's heap that commands, rare,
        # need only for a moment (docs/firmware.md, "Memory budget"). A heap too full to import it
        # drops the command, which the gateway sends again (no ack), instead of killing the task.
        before = set(sys.modules)
        try:
            self.handle_command(frame)
        except MemoryError:
            log.error("command dropped: out of memory")
        finally:
            forget_modules(before)

    def handle_command(self, frame):
        # Reading, checking and applying a command: fnode.oncommand, imported with the rest of
        # the command path and forgotten with it (take_command).
        from fnode.oncommand import handle
        handle(self, frame)

    def failsafe_check(self, now, limit_ms):
        # Heard nothing valid from the gateway for limit_ms: every actuator to its safe state, once
        # (local rules may move them afterwards: they need no network). When the gateway answers
        # again the outputs stay as they are until commanded, and the next silence fails safe again.
        last = self.uplink.last_ok if self.uplink.last_ok is not None else self.started
        silent = time.ticks_diff(now, last) > limit_ms
        if silent and not self.actuators.failsafe_active:
            self.actuators.go_failsafe()
            log.warn("gateway silent: actuators in failsafe state")
            self.emit_event("failsafe")
        elif not silent and self.actuators.failsafe_active:
            self.actuators.failsafe_active = False
            log.info("gateway answers again: outputs stay in failsafe until commanded")

    async def console_commands(self):
        # Downlink over USB: a line "FN1 <base64 command frame>" typed into the console, read
        # without blocking the loop (fnode.consolein).
        from fnode.consolein import ConsoleIn
        await ConsoleIn().lines(self.console_line)

    def console_line(self, line):
        from binascii import a2b_base64
        if bytes(line[:4]) != b"FN1 ":
            return
        try:
            frame = a2b_base64(line[4:])
        except ValueError:
            log.warn("console: undecodable frame line")
            return
        self.take_command(frame)

    def spawn(self, name, coro):
        asyncio.create_task(self._guard(name, coro))

    async def _guard(self, name, coro):
        # Every task runs for ever. One that ends stops feeding the watchdog: an exception that
        # escaped it is said on the console, as a reset alone would not tell why.
        try:
            await coro
            log.error("task", name, "ended")
        except Exception as exc:
            log.error("task", name, "died:", repr(exc))
            sys.print_exception(exc)
        self.stopped = name

    def unhealthy(self, now):
        # -> what stopped making progress, or None. Every task is alive, the uplink's loop has
        # run lately, every sampler has completed a sample within twice its period (or is still
        # starting).
        if self.stopped is not None:
            return self.stopped
        beat = self.uplink.beat  # None: the sender waits for a frame, nothing in progress
        if beat is not None and time.ticks_diff(now, beat) > self.stall_ms:
            return "uplink"
        for sensor in self.sensors:
            last = self.progress.get(sensor.name, self.started)
            if time.ticks_diff(now, last) > 2 * sensor.period_ms + 5000:
                return sensor.name
        return None

    def age_stamps(self, now):
        # Every tick stamp the node keeps, moved forward before it could read as in the future
        # (fnode.stamp: ticks wrap at 2**30 ms on the ESP32). Called each second by the watchdog.
        self.started = age(self.started, now)
        up = self.uplink
        up.age(now)
        up.link.next_try = age(up.link.next_try, now)  # a deadline long past stays past
        progress = self.progress
        for sensor in self.sensors:
            last = progress.get(sensor.name)
            if last is not None:
                progress[sensor.name] = age(last, now)
        if self.actuators is not None:
            self.actuators.age(now)

    def heap_check(self, now, due, period_ms):
        # Keeps the lowest free heap and raises heap.low once per fall below the board's threshold;
        # sends the health frame when its deadline (board "health_s", absolute: no drift) is
        # reached. -> the next deadline.
        heap = self.heap
        if heap.check():
            log.warn("low memory:", heap.free, "bytes free")
            self.emit_event("heap.low", "heap.free", UNIT, heap.free)
        if time.ticks_diff(now, due) >= 0:
            due = next_due(due, period_ms, now)
            heap.measure()
            self.uplink.submit(health_frame(self))
        return due

    async def watchdog(self, wdt, failsafe_ms, health_ms):
        # The main loop, every second: the tick stamps aged, the hardware watchdog fed while every
        # task makes progress, the actuators' failsafe checked (failsafe_ms, or None), the heap
        # looked at every _CHECK_MS and the health frame sent on time (the loop wakes for it).
        # One loop, not a task each: a task costs a Task and its generator's frame for ever
        # (docs/firmware.md, "Memory budget"). A look a few milliseconds late changes nothing
        # against their limits (seconds to minutes), and after a stall they look once.
        due = time.ticks_add(time.ticks_ms(), health_ms)
        looked = time.ticks_ms()
        while True:
            now = time.ticks_ms()
            self.age_stamps(now)
            stuck = self.unhealthy(now)
            if stuck is None:
                wdt.feed()
            else:
                log.error(stuck, "stopped making progress; letting the watchdog reset the node")
            if failsafe_ms is not None:
                self.failsafe_check(now, failsafe_ms)
            if time.ticks_diff(now, looked) >= _CHECK_MS or time.ticks_diff(now, due) >= 0:
                looked = now
                due = self.heap_check(now, due, health_ms)
            await asyncio.sleep_ms(min(1000, max(0, time.ticks_diff(due, time.ticks_ms()))))


def health_frame(node):
    # The periodic health frame: a telemetry frame of the heap readings (fnode.health).
    node.builder.begin(KIND_TELEMETRY, node.counter.take(), unix_time())
    node.heap.add_records(node.builder)
    return node.builder.finish()


async def status_led(pin, active_high, pattern):
    # pattern() -> (on_ms, off_ms): slow blink = sending, fast = no link, solid = not provisioned
    led = machine.Pin(pin, machine.Pin.OUT)
    on, off = (1, 0) if active_high else (0, 1)
    while True:
        on_ms, off_ms = pattern()
        led.value(on)
        await asyncio.sleep_ms(on_ms)
        if off_ms:
            led.value(off)
            await asyncio.sleep_ms(off_ms)


async def unprovisioned(reason, board):
    # Refuse to send, say why, keep the REPL reachable for `fieldnode provision`.
    led = board.get("status_led")
    if led:
        asyncio.create_task(status_led(led["pin"], led.get("active_high", True), lambda: (1000, 0)))
    while True:
        log.error("not sending:", reason)
        await asyncio.sleep_ms(30000)


def checked_gateway(cfg):
    # -> ((host, port) or None, the unusable setting or None). A bad setting must not stop the
    # node at boot (no watchdog, nothing sent): it samples, spools and prints its frames, and
    # says what to do on the console and in a signed event.
    try:
        return cfg.gateway(), None
    except ValueError:
        bad = cfg.setting("gw")
        log.error("gateway setting", repr(bad), "is not HOST:PORT; sending over USB only until provisioned",
                  "again: fieldnode provision --port ... --rotate --gateway HOST:PORT")
        return None, bad


def make_uplink(board, cfg, gateway, link):
    # -> (uplink, spool). A node meant for a gateway spools even while its setting is unusable:
    # provisioned again, it delivers what it measured meanwhile.
    from fnode.spool import Spool
    from fnode.uplink import Uplink

    more = cfg.setting("gws") if gateway is not None else None
    if more:  # gateways to fail over to: only such a node loads fnode.failover (and interns its names)
        from fnode.failover import Uplink
    spool = None
    if cfg.setting("gw"):
        kb = board.get("spool_kb")
        spool = Spool(nvs=cfg.nvs, capacity=board.get("spool_frames", _SPOOL_FRAMES),
                      budget=kb * 1024 if kb else None, after_ms=board.get("spool_after_ms", 1000))
    from fnode import coap
    coap.ack_timeout_ms = board.get("coap_ack_timeout_ms", coap.ack_timeout_ms)
    uplink = Uplink(gateway, link, spool)
    uplink.key_retry_max_ms = board.get("key_retry_max_s", 30) * 1000
    uplink.backoff_max_ms = board.get("uplink_backoff_max_s", uplink.backoff_max_ms // 1000) * 1000
    if more:
        uplink.also(board, more)
    return uplink, spool


async def main():
    from fnode.wifi import Link

    cfg = Config()
    try:
        board = load_board()
    except (OSError, ValueError) as exc:
        log.error("cannot read", BOARD_FILE, "-", exc, "- flash the application again (fieldnode flash --app-only)")
        return
    log.info("fieldnode", VERSION, "board", board["name"], "reset", reset_cause_name())
    missing = cfg.missing()
    if missing:
        await unprovisioned(missing, board)
        return
    ssid, password = cfg.wifi()
    link = Link(ssid, password)
    link.backoff_max_ms = board.get("wifi_backoff_max_s", link.backoff_max_ms // 1000) * 1000
    gateway, bad_gateway = checked_gateway(cfg)
    uplink, spool = make_uplink(board, cfg, gateway, link)
    # The watchdog starts before the drivers touch their buses: a bus still held after the reset
    # (a slave that keeps SDA low) must end in another reset, not in a start-up that never ends.
    global watchdog
    wdt = watchdog = machine.WDT(timeout=board.get("watchdog_s", WDT_TIMEOUT_MS // 1000) * 1000)
    node = Node(board, cfg, uplink)
    uplink.on_event = node.emit_event
    boot = node.boot_frame()
    if spool is not None:  # the first ack on trial is waited for by boot_frame() (fnode.onupdate.at_boot)
        uplink.on_offer = node.take_offer
    uplink.submit(boot)
    if node.v2:
        uplink.submit(node.declaration_frame())
        uplink.on_need_declaration = node.declaration_frame
    if bad_gateway:
        node.emit_event("config.bad-gateway")
    failsafe_ms = None
    if node.commands:
        uplink.on_command = node.take_command
        node.spawn("console", node.console_commands())
        if spool is not None:  # a node meant for a gateway fails safe without one, bad setting or not
            failsafe_ms = board.get("failsafe_after_s", _FAILSAFE_AFTER_S) * 1000
    if node.sensors:
        node.spawn("sampler", node.sampler())
    node.spawn("uplink", uplink.run())
    if gateway:
        node.spawn("clock", clock.keeper(link, gateway[0], uplink))
    if spool is not None:
        uplink.on_idle = node.report_loss
        node.spawn("spool", uplink.settle())
    health_ms = int(board.get("health_s", _HEALTH_S) * 1000)
    led = board.get("status_led")
    if led:
        asyncio.create_task(status_led(led["pin"], led.get("active_high", True),
                                       lambda: (100, 1900) if link.up() else (100, 200)))
    board = None  # what outlives the boot took its part of it (sensor specs, buses)
    gc.collect()
    await node.watchdog(wdt, failsafe_ms, health_ms)


def run():
    try:
        asyncio.run(main())
    finally:
        asyncio.new_event_loop()
