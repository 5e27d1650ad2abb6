"""Sensor drivers against their emulated chips, on the real MicroPython unix port.

Each test runs the firmware's driver (firmware/lib/fnode/drivers) unchanged, through the
simulated HAL (host/fieldnode/simhal: machine.I2C/UART/ADC/Pin and the _onewire twin), against a
register- or slot-level emulation of the chip. Values must follow what the emulated chip was set
to; faults injected at the bus (NACK, CRC, exception, silence) must come back as the error codes
of docs/sensors.md.
"""
from __future__ import annotations

import json
import math
from itertools import pairwise

import pytest

from conftest import REPO

SIMHAL = REPO / "host" / "fieldnode" / "simhal"

# Shared prelude: a Hardware over a board with one bus of each kind, and a helper that runs a
# driver's read_into and returns the values or the error code.
PRELUDE = """
import json, time, machine, simdev, simworld
from fnode.sensors import Hardware
from fnode.sensor import ReadError, bus_error
BOARD = {"name": "t", "buses": {
    "i2c0": {"type": "i2c", "id": 0, "scl": 22, "sda": 21, "freq": 400000},
    "ow0": {"type": "onewire", "pin": 4},
    "rs485": {"type": "uart", "id": 2, "tx": 17, "rx": 16, "de": 5, "baud": 9600},
    "rs232": {"type": "uart", "id": 1, "tx": 13, "rx": 14, "baud": 9600}}}
hw = Hardware(BOARD)

def read(driver, n):
    values = [None] * n
    try:
        driver.read_into(values)
    except (OSError, ReadError) as exc:
        return bus_error(exc).code
    return values

def make(module, spec):
    try:
        return module.make(spec, hw)
    except (OSError, ReadError) as exc:
        return bus_error(exc).code

def world(obj):
    # What the host does: replace world.json atomically; the node sees it on its next look.
    import simnode
    simnode.write_json(simnode.path("world.json"), obj)
    simworld.refresh()

out = {}
"""


@pytest.fixture
def run(micropython, tmp_path):
    def _run(code: str) -> dict:
        text = PRELUDE + code + "\nprint(json.dumps(out))\n"
        return micropython.eval_json(text, path=[SIMHAL], env={"FIELDNODE_SIM_NODE": str(tmp_path)},
                                     timeout=30)
    return _run


def close(a, b, tol):
    return a is not None and not isinstance(a, str) and abs(a - b) <= tol


# -- checksums against published examples (independent of the emulators) ----------------------
def test_checksums_match_the_datasheet_examples(run):
    out = run("""
from fnode.onewire import crc8 as maxim
from fnode.drivers.sht4x import crc8 as sensirion
from fnode.drivers.modbus import crc16
out["an27"] = maxim(bytes([0x02, 0x1C, 0xB8, 0x01, 0, 0, 0]), 7)
out["an27_zero"] = maxim(bytes([0x02, 0x1C, 0xB8, 0x01, 0, 0, 0, 0xA2]), 8)
out["beef"] = sensirion(b"\\xbe\\xef", 0)
out["modbus"] = crc16(b"\\x01\\x03\\x00\\x00\\x00\\x01", 6)
""")
    assert out["an27"] == 0xA2  # Maxim AN27: ROM 02 1C B8 01 00 00 00 -> CRC A2
    assert out["an27_zero"] == 0
    assert out["beef"] == 0x92  # SHT4x datasheet: CRC(0xBEEF) = 0x92
    assert out["modbus"] == 0x0A84  # "01 03 00 00 00 01 84 0A"


# -- BME280 -----------------------------------------------------------------------------------
def test_bme280_through_the_simulated_i2c(run):
    out = run("""
import sim_bme280
from fnode.drivers import bme280
chip = simdev.attach("env", sim_bme280.BME280(address=0x76), sda=21)
d = make(bme280, {"bus": "i2c0", "address": 0x76})
out["first"] = read(d, 3)
world({"devices": {"env": {"temp": -12.5, "hum": 80.0, "press": 95000.0}}})
out["world"] = read(d, 3)
out["other_address"] = make(bme280, {"bus": "i2c0", "address": 0x77})
chip.set(absent=True)                       # unplugged while running
out["unplugged"] = read(d, 3)
chip.set(absent=False)
out["back"] = read(d, 3)
chip._write_reg(0xE0, 0xB6)                 # a brown-out reset the chip alone: asleep, data "skipped"
out["after_chip_reset"] = [read(d, 3), read(d, 3)]  # says so once, and starts it again
bmp = simdev.attach("baro", sim_bme280.BME280(address=0x77), sda=21)
bmp.regs[0xD0] = 0x58                        # a BMP280 (no humidity) where a BME280 was configured
out["wrong_chip"] = make(bme280, {"bus": "i2c0", "address": 0x77})
""")
    t, h, p = out["first"]
    assert close(t, 21.0, 0.01) and close(h, 45.0, 0.01) and close(p, 101325.0, 0.5), out["first"]
    t, h, p = out["world"]
    assert close(t, -12.5, 0.01) and close(h, 80.0, 0.01) and close(p, 95000.0, 0.5), out["world"]
    assert out["other_address"] == "nack"
    assert out["unplugged"] == "nack"
    t, h, p = out["back"]
    assert close(t, -12.5, 0.01) and close(h, 80.0, 0.01) and close(p, 95000.0, 0.5), out["back"]
    assert out["after_chip_reset"][0] == "not-ready"
    t, h, p = out["after_chip_reset"][1]
    assert close(t, -12.5, 0.01) and close(h, 80.0, 0.01) and close(p, 95000.0, 0.5), out["after_chip_reset"]
    assert out["wrong_chip"] == "chip-id"


# -- SHT4x ------------------------------------------------------------------------------------
def test_sht4x_values_lag_one_period_and_faults(run):
    out = run("""
import sim_sht4x
from fnode.drivers import sht4x
chip = simdev.attach("room", sim_sht4x.SHT4x(address=0x44, temp=23.4, hum=41.2), sda=21)
d = make(sht4x, {"bus": "i2c0", "address": 0x44})
out["first"] = read(d, 2)           # waits out the first conversion (the chip NACKs before)
chip.set(temp=-20.0, hum=99.5)
out["lagged"] = read(d, 2)          # the answer to the command sent at the previous read
out["new"] = read(d, 2)
out["commands"] = chip.commands     # one per read, plus the one at attach
chip.set(corrupt=True)
read(d, 2)
out["crc"] = read(d, 2)
chip.set(corrupt="hum")
read(d, 2)
out["crc_hum"] = read(d, 2)
chip.set(corrupt=False)
read(d, 2)
out["ok_again"] = read(d, 2)
chip.set(absent=True)
out["nack"] = read(d, 2)
out["nack2"] = read(d, 2)
chip.set(absent=False)
out["back"] = read(d, 2)
out["missing"] = make(sht4x, {"bus": "i2c0", "address": 0x45})
world({"devices": {"room": {"hum": 130.0}}})
read(d, 2)
out["cropped"] = read(d, 2)
""")
    t, h = out["first"]
    assert close(t, 23.4, 0.01) and close(h, 41.2, 0.01), out
    assert out["lagged"] == out["first"]
    t, h = out["new"]
    assert close(t, -20.0, 0.01) and close(h, 99.5, 0.01), out
    assert out["commands"] == 4
    assert out["crc"] == "crc" and out["crc_hum"] == "crc"
    assert close(out["ok_again"][0], -20.0, 0.01)
    assert out["nack"] == "nack" and out["nack2"] == "nack"
    assert close(out["back"][0], -20.0, 0.01)  # re-triggered and waited: no stale value
    assert out["missing"] == "nack"
    assert out["cropped"][1] == 100.0  # 130 %RH is not a humidity: the datasheet crops it


# -- DS18B20 ----------------------------------------------------------------------------------
def test_ds18b20_search_convert_and_faults(run):
    out = run("""
import sim_ds18b20
from fnode.drivers import ds18b20
probes = [simdev.attach("p%d" % i, sim_ds18b20.DS18B20(serial=0x5A0 - 16 * i, temp=20.0 + i),
                        onewire=4) for i in range(3)]
spec = {"bus": "ow0", "count": 3}
out["readings"] = ds18b20.readings(spec)
d = make(ds18b20, spec)
out["roms"] = [r.hex() for r in d.roms]
out["sim_roms"] = sorted(p.rom_hex() for p in probes)
out["first"] = read(d, 3)           # nothing converted yet
time.sleep_ms(800)
out["values"] = read(d, 3)
world({"devices": {"p0": {"temp": -10.125}, "p2": {"temp": 85.5}}})
time.sleep_ms(800)
out["lagged"] = read(d, 3)          # converted before the world changed
time.sleep_ms(800)
out["changed"] = read(d, 3)
probes[1].set(corrupt=True)
time.sleep_ms(800)
out["crc"] = read(d, 3)
probes[1].set(corrupt=False, absent=True)
time.sleep_ms(800)
out["gone"] = read(d, 3)
out["count_short"] = make(ds18b20, spec)
out["count_over"] = make(ds18b20, {"bus": "ow0", "count": 1})
one = {"bus": "ow0", "roms": [probes[2].rom_hex()]}
out["one_readings"] = ds18b20.readings(one)
d1 = make(ds18b20, one)
time.sleep_ms(800)
out["one"] = read(d1, 1)
out["too_soon"] = read(d1, 1)       # the next conversion is still running
out["bad_rom"] = make(ds18b20, {"bus": "ow0", "roms": ["28341200000000d1"]})
out["not_hex"] = make(ds18b20, {"bus": "ow0", "roms": ["28-0000018f2a11"]})
for p in probes:
    p.set(absent=True)
out["no_presence"] = make(ds18b20, one)
""")
    assert [r[0] for r in out["readings"]] == ["temp1", "temp2", "temp3"]
    assert all(u == "Cel" for _, u in out["readings"])
    assert out["roms"] == out["sim_roms"]
    assert out["first"] == "not-ready"
    # ROM order: probe 2 has the lowest serial, so it is temp1.
    assert out["values"] == [22.0, 21.0, 20.0]
    assert out["lagged"] == [22.0, 21.0, 20.0]
    assert out["changed"] == [85.5, 21.0, -10.125]
    assert out["crc"] == "crc"
    assert out["gone"] == "nack"
    assert out["count_short"] == "nack"
    assert out["count_over"] == "count"
    assert out["one_readings"] == [["temp", "Cel"]]
    assert out["one"] == [85.5]
    assert out["too_soon"] == "not-ready"
    assert out["bad_rom"] == "config" and out["not_hex"] == "config"
    assert out["no_presence"] == "nack"


def test_onewire_needs_an_open_drain_pin(run):
    # The _onewire twin answers only on an open-drain pin, as the wired-AND bus does: the
    # firmware's OneWire must set the mode, or no probe is ever found.
    out = run("""
import _onewire, sim_ds18b20
simdev.attach("p", sim_ds18b20.DS18B20(), onewire=4)
pin = machine.Pin(4, machine.Pin.OUT)
out["push_pull"] = _onewire.reset(pin)
from fnode.onewire import OneWire
ow = OneWire(pin)
out["open_drain"] = ow.reset()
out["found"] = [r.hex() for r in ow.search()]
""")
    assert out["push_pull"] is False
    assert out["open_drain"] is True
    assert len(out["found"]) == 1


# -- ADXL345 ----------------------------------------------------------------------------------
def test_adxl345_rms_peak_crest_of_a_sine(run):
    out = run("""
import sim_adxl345
from fnode.drivers import adxl345
chip = simdev.attach("motor", sim_adxl345.ADXL345(address=0x53, amplitude=2.0, freq=50.0), sda=21)
spec = {"bus": "i2c0", "address": 0x53, "rate_hz": 800, "window": 32}
d = make(adxl345, spec)
out["regs"] = [chip.regs[r] for r in (0x2C, 0x2D, 0x31, 0x38)]
time.sleep_ms(60)
out["x"] = read(d, 3)
chip.set(axis=2, amplitude=5.0, freq=100.0)   # along gravity: the mean must still go
time.sleep_ms(60)
out["z"] = read(d, 3)
chip.set(amplitude=0.0)
time.sleep_ms(60)
out["still"] = read(d, 3)
chip.set(absent=True)
out["nack"] = read(d, 3)
out["nack_make"] = make(adxl345, spec)
chip.set(absent=False, devid=0x00)
out["chip_id"] = make(adxl345, spec)
chip.set(devid=0xE5)
out["bad_rate"] = make(adxl345, dict(spec, rate_hz=500))
chip.set(absent=False, devid=0xE5)
read(d, 3)
time.sleep_ms(20)  # the first driver's FIFO fills again: a new driver must not take those as its own
out["left"] = d.i2c.readfrom_mem(0x53, 0x39, 1)[0] & 0x3F  # FIFO_STATUS: entries waiting
class Standing:  # the chip's clock stands still: its first sample, 160 ms on, never comes due
    @staticmethod
    def ticks_us():
        return 0
    @staticmethod
    def ticks_diff(a, b):
        return a - b
running, sim_adxl345.time = sim_adxl345.time, Standing  # however long a busy machine takes here
slow = make(adxl345, dict(spec, rate_hz=6.25))  # one sample every 160 ms
out["empty"] = read(slow, 3)
sim_adxl345.time = running
chip.t0, chip.made = running.ticks_us(), 0  # and runs again from here
long = make(adxl345, dict(spec, window=64))
time.sleep_ms(60)
read(long, 3)
out["partial"] = long.count
time.sleep_ms(60)
read(long, 3)
out["full"] = long.count
""")
    assert out["regs"] == [0x0D, 0x08, 0x0B, 0x9F]  # 800 Hz, measure, full-res +-16 g, stream
    rms, peak, crest = out["x"]
    assert close(rms, 2.0 / math.sqrt(2), 0.05), out["x"]
    assert close(peak, 2.0, 0.08), out["x"]
    assert close(crest, math.sqrt(2), 0.08), out["x"]
    rms, peak, crest = out["z"]
    assert close(rms, 5.0 / math.sqrt(2), 0.06) and close(peak, 5.0, 0.12), out["z"]
    assert out["still"][0] < 0.05 and out["still"][1] < 0.1  # gravity alone is not vibration
    assert out["nack"] == "nack" and out["nack_make"] == "nack"
    assert out["chip_id"] == "chip-id"
    assert out["bad_rate"] == "config"
    assert out["left"] >= 2  # samples the first driver left in the FIFO ...
    assert out["empty"] == "not-ready"  # ... are not the new driver's
    assert out["partial"] == 32 and out["full"] == 64  # one FIFO per read, no waiting


# -- Modbus RTU ---------------------------------------------------------------------------------
MODBUS = """
import sim_modbus
from fnode.drivers import modbus
slave = sim_modbus.ModbusSlave(unit_id=7, holding={0: 2301, 1: 0xFFF6, 2: 7}, input={100: 3})
slave.set_u32("input", 101, 100000)
slave.set_float("input", 103, -12.5)
simdev.attach("meter", slave, uart=2)
slave.de = 5
REGS = [
    {"name": "volts", "address": 0, "kind": "holding", "scale": 0.1, "unit": "V"},
    {"name": "temp", "address": 1, "kind": "holding", "type": "s16", "unit": "Cel"},
    {"name": "mode", "address": 2, "kind": "holding"},
    {"name": "phases", "address": 100, "kind": "input"},
    {"name": "energy", "address": 101, "kind": "input", "type": "u32", "scale": 0.001, "unit": "kWh"},
    {"name": "flow", "address": 103, "kind": "input", "type": "f32", "unit": "l/s"},
]
spec = {"bus": "rs485", "unit_id": 7, "registers": REGS}
"""


def test_modbus_reads_registers_in_grouped_requests(run):
    out = run(MODBUS + """
out["readings"] = modbus.readings(spec)
d = make(modbus, spec)
out["values"] = read(d, 6)
out["requests"] = slave.requests
out["de_low"] = machine.Pin(5).value()
world({"devices": {"meter": {"holding": {"0": 2400}}}})
out["world"] = read(d, 6)
""")
    assert [r[0] for r in out["readings"]] == ["volts", "temp", "mode", "phases", "energy", "flow"]
    assert out["readings"][4][1] == "kWh"
    v = out["values"]
    assert close(v[0], 230.1, 1e-3) and v[1] == -10 and v[2] == 7 and v[3] == 3
    assert close(v[4], 100.0, 1e-6) and v[5] == -12.5
    assert out["requests"] == 2  # holding 0..2 and input 100..104: one request each
    assert out["de_low"] == 0  # the transceiver is released after sending
    assert close(out["world"][0], 240.0, 1e-3)


def test_modbus_errors(run):
    out = run(MODBUS + """
d = make(modbus, spec)
slave.holding.pop(2)
out["exception"] = read(d, 6)
slave.holding[2] = 7
slave.set(corrupt=True)
out["crc"] = read(d, 6)
slave.set(corrupt=False, silent=True)
asked = slave.requests
t0 = time.ticks_ms()
out["timeout"] = read(d, 6)
out["waited_ms"] = time.ticks_diff(time.ticks_ms(), t0)
out["asked_silent"] = slave.requests - asked
slave.set(silent=False)
out["back"] = read(d, 6)[2]
other = make(modbus, dict(spec, unit_id=8))
out["other_unit"] = read(other, 6)
# A bus without its DE pin in the board: the driver never enables the transmitter.
nodir = make(modbus, dict(spec, bus="rs232"))
simdev.attach("meter2", sim_modbus.ModbusSlave(unit_id=7, de=15), uart=1)
out["no_de"] = read(nodir, 6)
out["bad_type"] = make(modbus, dict(spec, registers=[{"name": "x", "address": 0, "type": "u8"}]))
out["no_address"] = make(modbus, dict(spec, registers=[{"name": "x", "kind": "input"}]))
""")
    assert out["exception"] == "modbus-2"
    assert out["crc"] == "crc"
    assert out["timeout"] == "timeout"
    assert out["waited_ms"] >= 100  # the whole timeout_ms (100 by default)...
    assert out["asked_silent"] == 1  # ...once: the first silent block ends the read, no retry loop
    assert out["back"] == 7
    assert out["other_unit"] == "timeout"
    assert out["no_de"] == "timeout"
    assert out["bad_type"] == "config" and out["no_address"] == "config"


# -- ADC: voltage and 4-20 mA -------------------------------------------------------------------
def test_voltage_divider_calibration_and_range(run):
    out = run("""
import sim_voltage
from fnode.drivers import voltage
src = simdev.attach("supply", sim_voltage.VOLTAGE(divider=2.5, volts=3.0), adc=34)
plain = make(voltage, {"pin": 34, "divider": 2.5, "range": [0, 5]})
cal = make(voltage, {"pin": 34, "divider": 2.5, "range": [0, 5], "cal": [1.05, -0.2], "samples": 4})
out["plain"] = read(plain, 1)
out["cal"] = read(cal, 1)
src.set(volts=5.05)               # inside the 2 % margin: clamped
out["clamped"] = read(plain, 1)
world({"devices": {"supply": {"volts": 6.0}}})
out["over"] = read(plain, 1)
src.set(volts=0.0)
out["zero_cal"] = read(cal, 1)    # offset -0.2 V at 0 V: beyond the margin below 0
out["readings"] = voltage.readings({"pin": 34, "divider": 2.0, "range": [0, 5]})
""")
    assert close(out["plain"][0], 3.0, 0.003)
    assert close(out["cal"][0], 3.0 * 1.05 - 0.2, 0.004)
    assert out["clamped"] == [5]
    assert out["over"] == "range"
    assert out["zero_cal"] == "range"
    assert out["readings"] == [["", "V"]]


def test_current_loop_broken_and_over_range(run):
    out = run("""
import sim_current_loop
from fnode.drivers import current_loop
src = simdev.attach("loop1", sim_current_loop.CURRENT_LOOP(shunt_ohm=120, ma=12.0), adc=34)
d = make(current_loop, {"pin": 34, "shunt_ohm": 120, "range": [0, 10], "unit": "bar"})
out["mid"] = read(d, 1)
src.set(ma=2.0)
out["broken"] = read(d, 1)
src.set(ma=0.0)
out["open"] = read(d, 1)
src.set(ma=21.0)
out["over"] = read(d, 1)
src.set(ma=20.2)
out["top"] = read(d, 1)
""")
    assert close(out["mid"][0], 5.0, 0.01)
    assert out["broken"] == "broken-loop" and out["open"] == "broken-loop"
    assert out["over"] == "range"
    assert out["top"] == [10]


def test_current_loop_calibration_applies_before_the_loop_checks(run):
    # A shunt 2 % low and an ADC offset: cal [1.02, -0.1] corrects the milliamps, and the
    # broken-loop and range limits apply to the corrected current, not the raw one.
    out = run("""
import sim_current_loop
from fnode.drivers import current_loop
src = simdev.attach("loop1", sim_current_loop.CURRENT_LOOP(shunt_ohm=120, ma=12.0), adc=34)
spec = {"pin": 34, "shunt_ohm": 120, "range": [0, 10], "unit": "bar", "cal": [1.02, -0.1]}
d = make(current_loop, spec)
out["mid"] = read(d, 1)
src.set(ma=3.8)                   # 3.776 mA after calibration: below 3.8, a broken loop
out["low"] = read(d, 1)
src.set(ma=3.85)                  # 3.827 mA: a live loop at the bottom of its range
out["bottom"] = read(d, 1)
src.set(ma=20.2)                  # 20.504 mA: over range once corrected
out["over"] = read(d, 1)
plain = make(current_loop, {k: v for k, v in spec.items() if k != "cal"})
src.set(ma=20.2)
out["plain_top"] = read(plain, 1)  # uncalibrated, 20.2 mA is still in range (clamped to 20)
""")
    assert close(out["mid"][0], (12.0 * 1.02 - 0.1 - 4) / 16 * 10, 0.01)
    assert out["low"] == "broken-loop"
    assert out["bottom"] == [0]
    assert out["over"] == "range"
    assert out["plain_top"] == [10]


# -- pulse counter -----------------------------------------------------------------------------
def test_pulses_are_counted_exactly_across_reads(run):
    # A second thread keeps delivering pulses to the pin (through the HAL's IRQ path) while the
    # main thread reads; every pulse must be counted once, whatever read it lands in.
    # Everything runs inside functions: the unix port's threads have no GIL, so the test must
    # not grow the module's globals while the feeder thread looks names up in them.
    out = run("""
import _thread
from fnode.drivers import pulse

def feeder(pin, state):
    for i in range(400):
        n = 1 + i % 3
        pin.sim_pulses(n)
        state["sent"] += n
        time.sleep_ms(1)
    state["done"] = True

def main():
    spec = {"pin": 35, "per_pulse": 0.5, "unit": "l"}
    out["readings"] = pulse.readings(spec)
    d = make(pulse, spec)
    pin = machine.Pin(35)
    state = {"sent": 0, "done": False}
    _thread.start_new_thread(feeder, (pin, state))
    counts = []
    t0 = time.ticks_ms()
    while not state["done"] and time.ticks_diff(time.ticks_ms(), t0) < 10000:
        counts.append(read(d, 2)[0])
        time.sleep_ms(7)
    for _ in range(20):  # let the last scheduled handlers run
        time.sleep_ms(5)
    before = time.ticks_ms()
    counts.append(read(d, 2)[0])
    after = time.ticks_ms()
    out["sent"] = state["sent"]
    out["counts"] = counts
    out["reads"] = len(counts)
    time.sleep_ms(200)
    pin.sim_pulses(30)
    time.sleep_ms(10)
    t = time.ticks_ms()
    out["rate"] = read(d, 2)
    # the period between the two reads, as short and as long as it can have been
    out["period_ms"] = [time.ticks_diff(t, after), time.ticks_diff(time.ticks_ms(), before)]

main()
""")
    assert out["readings"] == [["count", "l"], ["rate", "l/s"]]
    counts = out["counts"]
    assert out["reads"] > 10  # reads really interleaved with the pulses
    assert all(b >= a for a, b in pairwise(counts))
    assert counts[-1] == out["sent"] * 0.5
    count, rate = out["rate"]
    assert count == (out["sent"] + 30) * 0.5
    shortest, longest = out["period_ms"]
    assert 15 * 1000 / longest <= rate <= 15 * 1000 / shortest  # 15 l over the period between the reads


def test_pulse_source_from_the_world(run):
    out = run("""
import sim_pulse
from fnode.drivers import pulse
simdev.attach("flow", sim_pulse.PULSE(rate_hz=0.0), pulse=35)
d = make(pulse, {"pin": 35, "per_pulse": 1})
time.sleep_ms(50)
start = time.ticks_ms()
out["still"] = read(d, 2)       # rate 0: no pulse
end = time.ticks_ms()
world({"devices": {"flow": {"rate_hz": 200}}})
simdev.devices()  # the HAL applies world changes on the node's next bus access (I2C, UART...)
deadline = time.ticks_add(time.ticks_ms(), 20000)
count = 0
while count < 50 and time.ticks_diff(deadline, time.ticks_ms()) > 0:
    time.sleep_ms(50)
    previous, previous_start, previous_end = count, start, end
    start = time.ticks_ms()
    count, rate = read(d, 2)
    end = time.ticks_ms()
out["v"] = [previous, count, rate]
# the period between the last two reads, as short and as long as it can have been
out["period_ms"] = [time.ticks_diff(start, previous_end), time.ticks_diff(end, previous_start)]
""")
    assert out["still"] == [0, 0.0]
    previous, count, rate = out["v"]
    assert count >= 50, "the world's pulses never reached the pin"
    shortest, longest = out["period_ms"]
    assert (count - previous) * 1000 / longest <= rate <= (count - previous) * 1000 / shortest, out


# -- a failing sensor next to a working one ---------------------------------------------------
def test_sensor_failure_becomes_error_readings_while_others_report(run, tmp_path):
    # The node as the app builds it: sensors from a board, emulated devices from sim.json.
    (tmp_path / "sim.json").write_text(json.dumps({"devices": [
        {"name": "env", "type": "bme280", "sda": 21, "address": 118},
        {"name": "room", "type": "sht4x", "sda": 21, "address": 68, "init": {"temp": 19.0, "hum": 30.0}},
    ]}))
    out = run("""
from fnode.sensors import build
board = dict(BOARD, sensors=[
    {"name": "env", "driver": "bme280", "bus": "i2c0", "address": 118, "period_s": 1},
    {"name": "room", "driver": "sht4x", "bus": "i2c0", "address": 68, "period_s": 1},
    {"name": "meter", "driver": "modbus", "bus": "rs485", "unit_id": 3, "period_s": 1,
     "registers": [{"name": "power", "address": 0, "kind": "input", "unit": "W"}]},
])
hw, sensors = build(board)
env, room, meter = sensors
out["names"] = [list(s.names) for s in sensors]
out["ok"] = [env.sample(), list(env.values), room.sample(), list(room.values)]
out["meter"] = meter.sample()      # no slave on the UART at all
world({"devices": {"room": {"absent": True}, "env": {"temp": 30.0}}})
out["room_down"] = [room.sample(), room.sample(), env.sample(), env.values[0]]
world({"devices": {"room": {"absent": False}}})
out["room_back"] = [room.sample(), room.values[0]]
# A driver bug (an exception no bus raises): that sensor says "driver", the others carry on.
room.driver.read_into = lambda values: values[7]
out["room_bug"] = [room.sample(), env.sample()]
""")
    assert out["names"] == [["env.temp", "env.hum", "env.press"], ["room.temp", "room.hum"], ["meter.power"]]
    e_err, e_vals, r_err, r_vals = out["ok"]
    assert e_err is None and r_err is None
    assert close(e_vals[0], 21.0, 0.01) and close(r_vals[0], 19.0, 0.01)
    assert out["meter"] == "timeout"
    r1, r2, e_err, e_temp = out["room_down"]
    assert r1 == "nack" and r2 == "nack"
    assert e_err is None and close(e_temp, 30.0, 0.01)
    assert out["room_back"][0] is None and close(out["room_back"][1], 19.0, 0.01)
    assert out["room_bug"] == ["driver", None]


# -- every shipped board, through the devices the simulator attaches ----------------------------
# driver -> sensor -> {reading name after the sensor's name: (value, tolerance)}, for the devices
# fieldnode.sim.fleet attaches (with the vibration and pulses the test below sets)
EMULATED_READINGS = {
    "bme280": lambda s: {".temp": (21.0, 0.01)},
    "sht4x": lambda s: {".temp": (22.0, 0.01)},
    "ds18b20": lambda s: {".temp": (40.0, 0.0)},
    "current_loop": lambda s: {"": (sum(s["range"]) / 2, 0.01 * (s["range"][1] - s["range"][0]))},
    "voltage": lambda s: {"": (5.0, 0.02)},
    "pulse": lambda s: {".count": (7 * s["per_pulse"], 1e-12)},
    "modbus": lambda s: {f".{r['name']}": (1000 * r.get("scale", 1), 1e-3) for r in s["registers"]},
    "adxl345": lambda s: {".rms": (2.0 / math.sqrt(2), 0.08)},
}


@pytest.mark.parametrize("board_name", ["virtual", "esp32-devkitc", "esp32s3-devkitc", "esp32c3-devkitm"])
def test_shipped_boards_read_through_their_emulated_devices(board_name, run, tmp_path):
    # The simulator's mapping (fieldnode.sim.fleet) puts an emulated chip behind every sensor of
    # a board; the firmware then reads them all without an error after one period.
    from fieldnode.node.boards import load_board
    from fieldnode.sim.fleet import devices_for_board

    doc = load_board(board_name)
    devices = devices_for_board(doc)
    for device in devices:  # signals with exact answers: a known vibration, pulses sent by hand
        if device["type"] == "adxl345":
            device["init"] = {"amplitude": 2.0, "freq": 50.0}
        elif device["type"] == "pulse":
            device["init"] = {"rate_hz": 0.0}
    pulse_pins = [s["pin"] for s in doc["sensors"] if s["driver"] == "pulse"]
    (tmp_path / "sim.json").write_text(json.dumps({"devices": devices}))
    out = run(f"""
from fnode.sensors import build
board = json.loads({json.dumps(json.dumps(doc))})
hw, sensors = build(board)
for s in sensors:
    s.sample()                      # first period: triggers, FIFO filling, conversions
for pin in {pulse_pins}:
    machine.Pin(pin).sim_pulses(7)
time.sleep_ms(800)
out["errors"] = {{s.name: s.sample() for s in sensors}}
out["values"] = {{n: v for s in sensors for n, v in zip(s.names, s.values)}}  # MicroPython: no strict=
""")
    assert out["errors"] == {s["name"]: None for s in doc["sensors"]}, out
    for sensor in doc["sensors"]:
        for reading, (want, tolerance) in EMULATED_READINGS[sensor["driver"]](sensor).items():
            got = out["values"][f"{sensor['name']}{reading}"]
            assert close(got, want, tolerance), (sensor["name"], reading, got, want)
