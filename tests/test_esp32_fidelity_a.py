"""Where a real ESP32 is stricter than the unix port (issue 21, items 1, 2, 6, 7).

The simulated HAL follows MicroPython's ESP32 port (v1.24-v1.26) at each of these places, and the
firmware runs unchanged on it, on the real MicroPython unix port:
  1. Pin.irq takes no hard= (ports/esp32/machine_pin.c): the pulse counter counts with a soft IRQ.
  2. ticks_ms wraps at 2**30 (py/mpconfig.h MICROPY_PY_TIME_TICKS_PERIOD): stored tick stamps
     survive days of uptime and the wrap.
  6. The ADC at 11 dB is calibrated from 150 to 2450 mV only (docs/esp32/quickref.rst): readings
     outside it are `range`, and boards whose shunt puts 20 mA outside it are refused.
  7. time counts from 2000 and floats are single precision: frames still carry Unix times.
The list of modelled behaviours, with the port sources: docs/virtual-node.md.
"""
from __future__ import annotations

import json
import struct

import pytest

from fieldnode.node.boards import validate_board
from fieldnode.infra.paths import BOARDS_DIR, SIMHAL_DIR
from support.nodesite import Site, wait_for
from test_node_control import PUMP, command, control_node, events, outputs, over_usb, telemetry

PRELUDE = """
import json, time, machine, simdev, simworld
from fnode.sensors import Hardware, Sensor

def world(obj):
    import simnode
    simnode.write_json(simnode.path("world.json"), obj)
    simworld.refresh()

out = {}
"""


def run(micropython, node, code: str, **env) -> dict:
    text = PRELUDE + code + "\nprint(json.dumps(out))\n"
    return micropython.eval_json(text, path=[SIMHAL_DIR], env={"FIELDNODE_SIM_NODE": str(node), **env},
                                 timeout=60)


# -- 1. Pin.irq --------------------------------------------------------------------------------
def test_pin_irq_refuses_the_arguments_the_esp32_port_does_not_take(micropython, tmp_path):
    out = run(micropython, tmp_path, """
pin = machine.Pin(35, machine.Pin.IN)
for kw in ({"hard": True}, {"hard": False}, {"priority": 1}):
    try:
        pin.irq(handler=lambda p: None, trigger=pin.IRQ_RISING, **kw)
        out[list(kw)[0] + str(list(kw.values())[0])] = "accepted"
    except TypeError as exc:
        out[list(kw)[0] + str(list(kw.values())[0])] = str(exc)
pin.irq(handler=lambda p: None, trigger=pin.IRQ_RISING, wake=None)
out["wake"] = "accepted"
""")
    assert out == {"hardTrue": "extra keyword arguments given", "hardFalse": "extra keyword arguments given",
                   "priority1": "extra keyword arguments given", "wake": "accepted"}


def test_a_pulse_sensor_counts_with_the_irq_the_esp32_port_has(micropython, tmp_path):
    # Before: Pulse asked for hard=True, the port raised TypeError and the sensor reported
    # err=driver every period without counting a pulse.
    out = run(micropython, tmp_path, """
hw = Hardware({"name": "t", "buses": {}})
s = Sensor({"name": "flow", "driver": "pulse", "pin": 35, "per_pulse": 0.5, "unit": "l",
            "period_s": 1}, hw)
out["first"] = s.sample()
machine.Pin(35).sim_pulses(40)
for _ in range(100):  # the soft IRQ handler runs between bytecodes once the pulses are queued
    time.sleep_ms(2)
    if s.driver is not None and s.driver.edges >= 40:
        break
out["second"] = s.sample()
out["values"] = s.values
""")
    assert out["first"] is None and out["second"] is None
    assert out["values"][0] == 20.0  # 40 pulses of 0.5 l


# -- 2. ticks wrap at 2**30 ----------------------------------------------------------------------
def test_the_node_ticks_wrap_at_2_30_as_on_the_esp32_and_asyncio_still_keeps_time(micropython, tmp_path):
    (tmp_path / "world.json").write_text(json.dumps({"ticks_skip_ms": (1 << 30) - 150}))
    out = run(micropython, tmp_path, """
import asyncio
out["before"] = time.ticks_ms()
async def nap():
    t0 = time.ticks_ms()
    await asyncio.sleep_ms(300)  # across the wrap
    return t0, time.ticks_ms()
t0, t1 = asyncio.run(nap())
out["t0"], out["t1"], out["slept"] = t0, t1, time.ticks_diff(t1, t0)
out["diff_half"] = time.ticks_diff((1 << 29) + 5, 0)  # a stamp older than 2**29 reads as in the future
out["add"] = time.ticks_add((1 << 30) - 1, 2)
try:
    time.ticks_add(0, 1 << 29)
except OverflowError as exc:
    out["overflow"] = str(exc)
world({"ticks_skip_ms": (1 << 30) - 150 + 86400000})
out["jumped"] = time.ticks_diff(time.ticks_ms(), t1)
""")
    assert (1 << 30) - 150 <= out["before"] < 1 << 30
    assert out["t0"] > out["t1"] and 300 <= out["slept"] < 1 << 20  # wrapped, yet ticks_diff is right
    assert out["diff_half"] == -(1 << 29) + 5
    assert out["add"] == 1
    assert out["overflow"] == "ticks interval overflow"
    assert 86400000 <= out["jumped"] < 86400000 + (1 << 20)


DAY_MS = 86400 * 1000


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


def pass_days(site: Site, node, days: float, step_days: float = 1.75) -> None:
    """Moves the node's ticks forward `days`, in steps shorter than the 3.1 days a stored stamp may
    age between two looks (fnode.stamp), waiting after each for three samples of a 1 s sensor:
    the node's watchdog task (once a second) has run since the jump, as it would every second of
    real days."""
    skip = node.world.read().get("ticks_skip_ms", 0)
    end = skip + int(days * DAY_MS)
    while skip < end:
        skip = min(end, skip + int(step_days * DAY_MS))
        mark = node.output_mark()
        node.set_world(ticks_skip_ms=skip)
        wait_for(lambda mark=mark: len(telemetry(site, node, "loop1", mark)) >= 3, 30, "samples after the jump")


def test_a_relay_that_held_its_state_seven_days_accepts_a_change(site):
    # pump: off at boot, min_off_s 600. Before: the boot stamp, 7 days old, read as 5.4 days in
    # the future (ticks wrap at 2**30 ms on the ESP32) and the pump refused "min-off-time".
    node = control_node(site)
    assert over_usb(site, node, *command(site, [("pump", True)])) == ("refused", "min-off-time")
    pass_days(site, node, 7)
    assert over_usb(site, node, *command(site, [("pump", True)])) == ("applied", None)
    wait_for(lambda: node.outputs()["pins"][PUMP] == 1, 10, "the pump on")


def test_the_failsafe_holds_through_a_week_of_gateway_silence_across_the_tick_wrap(site):
    # Before: once the last answer was more than 6.2 days old it read as recent, the node logged
    # "gateway answers again" and dropped the failsafe state (and later failed safe once more).
    node = control_node(site, failsafe_after_s=5)
    mark = node.output_mark()
    node.set_world(wifi="down")
    wait_for(lambda: [e[1] for e in events(site, node, mark)] == ["failsafe"], 30, "the failsafe event")
    safe = outputs(node)
    pass_days(site, node, 7)
    assert b"gateway answers again" not in node.console_tail(1 << 20)
    assert [e[1] for e in events(site, node, mark)] == ["failsafe"]
    assert outputs(node) == safe


def test_periodic_deadlines_keep_their_period_across_the_wrap_and_start_again_after_a_missed_one(
        micropython, tmp_path):
    # The sampler and the health frame run on absolute deadlines (fnode.stamp.next_due): one
    # period after the last deadline, whenever the work ended, so the period does not drift by
    # the work's time; a node a whole period behind starts again from now, without a burst.
    out = run(micropython, tmp_path, """
from fnode.stamp import next_due
wrap = 1 << 30
out["on_time"] = next_due(1000, 500, 1000)
out["late_work"] = next_due(1000, 500, 1420)  # the work took 420 ms: still 1500, not 1920
out["across_wrap"] = next_due(wrap - 100, 500, wrap - 40)
out["missed"] = next_due(1000, 500, 1730)  # more than a period behind: from now
out["missed_across_wrap"] = next_due(wrap - 100, 500, 900)
""")
    assert out == {"on_time": 1500, "late_work": 1500, "across_wrap": 400, "missed": 2230,
                   "missed_across_wrap": 1400}


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: d["actuators"][0].update(min_on_s=73 * 3600), "min_on_s: seconds, from 0 to 259200"),
    (lambda d: d.update(failsafe_after_s=8 * 86400), "failsafe_after_s: a positive number of seconds, at most"),
    (lambda d: d["sensors"][0].update(period_s=2 * 86400), "period_s: a positive number of seconds, at most 86400"),
])
def test_board_check_refuses_durations_the_node_could_not_time(mutate, expected):
    # A stored stamp is kept at most 2**28 ms (3.1 days) old on the node (fnode.stamp).
    doc = json.loads((BOARDS_DIR / "esp32-devkitc.json").read_text())
    mutate(doc)
    assert any(expected in p for p in validate_board(doc)), validate_board(doc)


# -- 6. the ADC's calibrated window --------------------------------------------------------------
def test_the_simulated_adc_is_right_only_inside_the_calibrated_window(micropython, tmp_path):
    out = run(micropython, tmp_path, """
a = machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_11DB)
for mv in (0, 150, 1000, 2450, 2700, 3000, 3300):
    world({"adc": {"34": mv / 1000}})
    out[str(mv)] = [a.read_uv(), a.read()]
""")
    for mv in (150, 1000, 2450):  # inside: right to about a millivolt, in whole millivolts
        uv, _ = out[str(mv)]
        assert abs(uv - mv * 1000) <= 1000 and uv % 1000 == 0
    assert out["0"] == [100000, 0]  # grounded: code 0, yet read_uv is above 0 (the calibration's offset)
    assert 2450000 < out["2700"][0] < 2700000 - 30000  # bent: reads low
    assert out["3000"][0] < 3000000 - 150000
    assert out["3300"] == [out["3300"][0], 4095] and out["3300"][0] < 2800000  # saturated


def test_a_current_loop_outside_the_adc_window_is_range_not_a_wrong_value(micropython, tmp_path):
    # Before: with the old 150 ohm shunt, 19 mA (2.85 V at the pin) read as a plausible, wrong
    # 18.1 mA, and the voltage input over its divider's reach read as a wrong value too.
    out = run(micropython, tmp_path, """
import sim_current_loop, sim_voltage
from fnode.drivers import current_loop, voltage
hw = Hardware({"name": "t", "buses": {}})
src = simdev.attach("loop1", sim_current_loop.CURRENT_LOOP(shunt_ohm=150, ma=19.0), adc=34)
old = Sensor({"name": "loop1", "driver": "current_loop", "pin": 34, "shunt_ohm": 150, "range": [0, 16],
              "period_s": 1}, hw)
out["150_at_19mA"] = [old.sample(), old.values[0]]
src.set(ma=12.0)
out["150_at_12mA"] = [old.sample(), old.values[0]]
src.shunt = 120.0
new = Sensor({"name": "loop2", "driver": "current_loop", "pin": 34, "shunt_ohm": 120, "range": [0, 16],
              "period_s": 1}, hw)
src.set(ma=19.0)
out["120_at_19mA"] = [new.sample(), new.values[0]]
src.set(ma=0.0)
out["120_open"] = [new.sample(), new.values[0]]
supply = simdev.attach("supply", sim_voltage.VOLTAGE(divider=3.0, volts=9.0), adc=35)
v = Sensor({"name": "supply", "driver": "voltage", "pin": 35, "divider": 3.0, "range": [0, 10],
            "period_s": 1}, hw)
out["div3_at_9V"] = [v.sample(), v.values[0]]
supply.set(volts=6.0)
out["div3_at_6V"] = [v.sample(), v.values[0]]
supply.set(volts=0.3)  # 100 mV at the pin: below the window, every input there reads the same
out["div3_at_0.3V"] = [v.sample(), v.values[0]]
""")
    assert out["150_at_19mA"][0] == "range"
    assert out["150_at_12mA"][0] is None and abs(out["150_at_12mA"][1] - 8.0) < 0.01
    assert out["120_at_19mA"][0] is None and abs(out["120_at_19mA"][1] - 15.0) < 0.01
    assert out["120_open"][0] == "broken-loop"
    assert out["div3_at_9V"][0] == "range"
    assert out["div3_at_6V"][0] is None and abs(out["div3_at_6V"][1] - 6.0) < 0.005
    assert out["div3_at_0.3V"][0] == "range"


@pytest.mark.parametrize("board,index,change,expected", [
    ("esp32-devkitc", 2, {"shunt_ohm": 150}, "shunt_ohm: 150 ohm puts 3.8-20 mA at 570-3000 mV, outside the ADC's "
                                             "calibrated 150-2450 mV: use 40 to 122 ohm"),
    ("esp32-devkitc", 2, {"shunt_ohm": 33}, "shunt_ohm: 33 ohm puts 3.8-20 mA at 125-660 mV"),
    ("esp32s3-devkitc", 2, {"divider": 3.0}, "divider: 3 puts the range's top (10) at 3333 mV on the pin, above the "
                                             "ADC's calibrated 2450 mV: use a divider of at least 4.08"),
])
def test_board_check_refuses_an_analog_input_outside_the_adc_window(board, index, change, expected):
    doc = json.loads((BOARDS_DIR / f"{board}.json").read_text())
    doc["sensors"][index].update(change)
    assert any(expected in p for p in validate_board(doc)), validate_board(doc)


# -- 7. the 2000 epoch and single-precision floats ----------------------------------------------
def test_with_the_esp32_epoch_the_node_still_stamps_frames_in_unix_time(micropython, tmp_path):
    # The ESP32 port up to v1.26 counts time() from 2000: the firmware's 2000 branches run here,
    # and what leaves the node (frame times, the clock check) is still Unix time.
    import time

    from fieldnode.wire.frame import parse_unverified

    (tmp_path / "sim.json").write_text(json.dumps({"epoch": 2000}))
    before = int(time.time())
    out = run(micropython, tmp_path, """
import network, ntptime
from binascii import hexlify
from fnode import clock
from fnode.cose import KIND_TELEMETRY
from fnode.frame import FrameBuilder
from fnode.sensors import unix_time
out["gmtime0"] = list(time.gmtime(0)[:3])
out["time"] = time.time()
out["unix"] = unix_time()
out["valid"] = clock.valid()
out["rtc_year"] = machine.RTC().datetime()[0]
wlan = network.WLAN(network.STA_IF)
wlan.active(True)
wlan.connect("plant-floor", "sim")
for _ in range(200):  # the simulated access point answers within connect_ms
    if wlan.isconnected():
        break
    time.sleep_ms(10)
ntptime.host = "127.0.0.1"  # the gateway answers SNTP; no DNS on a test machine
out["ntp"] = ntptime.time()
machine.RTC().datetime((2000, 1, 1, 6, 0, 0, 0, 0))  # an RTC reset to its epoch: clock not set
out["unset_unix"] = unix_time()
out["unset_valid"] = clock.valid()
out["synced"] = clock.sync("127.0.0.1")
out["synced_unix"] = unix_time()
b = FrameBuilder(bytes(32), b"kid-0001", 4, "urn:dev:mac:240ac4000001:")
b.begin(KIND_TELEMETRY, 7, unix_time())
b.add("loop1", "bar", 3.71)
out["frame"] = hexlify(b.finish()).decode()
""")
    after = int(time.time())
    assert out["gmtime0"] == [2000, 1, 1]
    assert before - 946684800 <= out["time"] <= after - 946684800
    assert before <= out["unix"] <= after and out["valid"] is True
    assert out["rtc_year"] == time.gmtime(before).tm_year
    assert before - 946684800 <= out["ntp"] <= after - 946684800  # ntptime answers in the port's epoch
    assert out["unset_unix"] < 946684800 + 60 and out["unset_valid"] is False
    assert out["synced"] is True and before <= out["synced_unix"] <= after
    frame = parse_unverified(bytes.fromhex(out["frame"]))
    (rec,) = frame.records()
    assert before <= rec["t"] <= after  # the frame's time is Unix time
    # Readings go out as float32 (CBOR 0xfa), what a single-precision ESP32 float holds, even
    # though this unix port computes in doubles; the host presents them rounded to float32.
    assert b"\xfa" + struct.pack(">f", 3.71) in bytes.fromhex(out["frame"])
    assert abs(rec["v"] - 3.71) < 1e-6


def test_unix_time_allocates_nothing_per_frame_with_the_esp32_epoch(micropython, tmp_path):
    # Before: every call (one a frame) built gmtime(0)'s tuple to find the epoch.
    (tmp_path / "sim.json").write_text(json.dumps({"epoch": 2000}))
    out = run(micropython, tmp_path, """
import gc
from fnode.sensors import unix_time
unix_time()
def allocated(f):
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(100):
        f()
    n = gc.mem_alloc() - a
    gc.enable()
    return n
out["time"] = allocated(time.time)  # what the simulated time() itself costs
out["unix_time"] = allocated(unix_time)
""")
    assert out["unix_time"] - out["time"] < 100 * 8, out  # nothing of its own per call


def test_a_node_on_the_esp32_epoch_reaches_the_gateway_with_unix_times(site):
    import time

    start = int(time.time())
    node = site.node(epoch=2000)
    assert json.loads((node.node_dir / "sim.json").read_text())["epoch"] == 2000
    mark = node.output_mark()
    wait_for(lambda: len(telemetry(site, node, "loop1", mark)) >= 2, 30, "telemetry")
    counters = [c for c, _ in telemetry(site, node, "loop1", mark)]
    site.wait_stored(node, counters, 30)
    stored = {c: bt for c, _, bt in site.frames(node)}
    assert all(start <= stored[c] <= time.time() for c in counters), (start, stored)
