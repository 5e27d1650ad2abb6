# The node application: a handful of asyncio tasks that never block one another.
#   one sampler per sensor (at the board's period)  -> signed telemetry frames
#   the uplink (console + CoAP to the gateway)        -> see fnode.uplink
#   the Wi-Fi link keeper, the status LED, the watchdog
# The watchdog is fed only while every sampler has made progress recently: a hung task, a
# deadlocked bus or a starved loop ends in a hardware reset, not a silent node.
import asyncio
import gc
import json
import machine
import time
from fnode import log
from fnode.config import Config
from fnode.counter import Counter
from fnode.cose import KIND_TELEMETRY, KIND_BOOT
from fnode.frame import FrameBuilder
from fnode.senml import base_name
from fnode.sensors import build, unix_time

VERSION = "0.1.0"
BOARD_FILE = "board.json"
WDT_TIMEOUT_MS = 30000
_RESET_NAMES = (
    ("PWRON_RESET", "power_on"), ("HARD_RESET", "hard"), ("WDT_RESET", "watchdog"),
    ("DEEPSLEEP_RESET", "deepsleep"), ("SOFT_RESET", "soft"),
)


def reset_cause_name():
    cause = machine.reset_cause()
    for attr, name in _RESET_NAMES:
        if getattr(machine, attr, None) == cause:
            return name
    return "unknown"


def load_board(path=BOARD_FILE):
    with open(path) as f:
        return json.load(f)


class Node:
    def __init__(self, board, cfg, uplink):
        self.board = board
        self.cfg = cfg
        self.uplink = uplink
        self.device = machine.unique_id()
        self.counter = Counter(cfg.nvs)
        self.builder = FrameBuilder(cfg.key(), cfg.kid(), cfg.alg(), base_name(self.device))
        self.hw, self.sensors = build(board)
        self.progress = {}  # sensor name -> ticks_ms of its last completed sample
        self.started = time.ticks_ms()

    def boot_frame(self):
        b = self.builder
        b.begin(KIND_BOOT, self.counter.take(), unix_time())
        b.add_str("fw", VERSION)
        b.add_str("board", self.board["name"])
        b.add_str("reset", reset_cause_name())
        b.add("schema", None, 1)
        return b.finish()

    def telemetry_frame(self, sensor, error):
        b = self.builder
        b.begin(KIND_TELEMETRY, self.counter.take(), unix_time())
        names, units, values = sensor.names, sensor.units, sensor.values
        for i in range(len(names)):
            if error is None:
                b.add(names[i], units[i], values[i])
            else:
                b.add_error(names[i], units[i], error)
        return b.finish()

    async def sampler(self, sensor):
        while True:
            error = sensor.sample()
            if error is not None:
                log.warn(sensor.name, "read failed:", error)
            self.uplink.submit(self.telemetry_frame(sensor, error))
            self.progress[sensor.name] = time.ticks_ms()
            await asyncio.sleep_ms(sensor.period_ms)

    def healthy(self, now):
        # Every sampler has completed a sample within twice its period (or is still starting).
        for sensor in self.sensors:
            last = self.progress.get(sensor.name, self.started)
            if time.ticks_diff(now, last) > 2 * sensor.period_ms + 5000:
                return False
        return True

    async def watchdog(self, wdt):
        while True:
            if self.healthy(time.ticks_ms()):
                wdt.feed()
            else:
                log.error("a task stopped making progress; letting the watchdog reset the node")
            await asyncio.sleep_ms(1000)


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


async def main():
    from fnode.uplink import Uplink
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
    uplink = Uplink(cfg.gateway(), link)
    node = Node(board, cfg, uplink)
    uplink.on_command = None  # commands are wired in by fnode.actuators when the board has any
    uplink.submit(node.boot_frame())
    for sensor in node.sensors:
        asyncio.create_task(node.sampler(sensor))
    asyncio.create_task(uplink.run())
    led = board.get("status_led")
    if led:
        asyncio.create_task(status_led(led["pin"], led.get("active_high", True),
                                       lambda: (100, 1900) if link.up() else (100, 200)))
    wdt = machine.WDT(timeout=WDT_TIMEOUT_MS)
    gc.collect()
    await node.watchdog(wdt)


def run():
    try:
        asyncio.run(main())
    finally:
        asyncio.new_event_loop()
