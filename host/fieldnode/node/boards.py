"""Board definitions (boards/*.json): loading and validation with errors that name the field.

A board is data: chip, pins, buses, and the sensors and actuators attached. Chip differences
(which GPIOs exist, which are input-only, which can do ADC while Wi-Fi runs) are tables here, not
branches in code. The firmware reads the same JSON on the node; it trusts it because the host
validated it before it was flashed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..infra.errors import FieldnodeError
from ..infra.paths import BOARDS_DIR

SCHEMA = 1


@dataclass(frozen=True)
class ChipPins:
    gpios: frozenset[int]
    input_only: frozenset[int]
    reserved: frozenset[int]  # wired to the SPI flash/PSRAM on the common modules
    adc: frozenset[int]  # ADC1 only: ADC2 cannot be read while Wi-Fi is on


CHIPS: dict[str, ChipPins] = {
    "esp32": ChipPins(
        gpios=frozenset(list(range(0, 34)) + [34, 35, 36, 39]) - {20, 24, 28, 29, 30, 31},
        input_only=frozenset({34, 35, 36, 39}),
        reserved=frozenset(range(6, 12)),
        adc=frozenset({32, 33, 34, 35, 36, 39}),
    ),
    "esp32s3": ChipPins(
        gpios=frozenset(list(range(0, 22)) + list(range(26, 49))),
        input_only=frozenset(),
        reserved=frozenset(range(26, 33)),
        adc=frozenset(range(1, 11)),
    ),
    "esp32c3": ChipPins(
        gpios=frozenset(range(0, 22)),
        input_only=frozenset(),
        reserved=frozenset(range(12, 18)),
        adc=frozenset(range(0, 5)),
    ),
}

# What each driver needs from the board file, and the readings it produces ("" = the sensor's
# own name, so a 4-20 mA loop called loop1 gives the reading loop1).
SENSOR_DRIVERS: dict[str, dict[str, Any]] = {
    "bme280": {"bus": "i2c", "addresses": (0x76, 0x77), "readings": ("temp", "hum", "press")},
    "sht4x": {"bus": "i2c", "addresses": (0x44, 0x45, 0x46), "readings": ("temp", "hum")},
    "adxl345": {"bus": "i2c", "addresses": (0x53, 0x1D), "readings": ("rms", "peak", "crest")},
    "ds18b20": {"bus": "onewire", "readings": ("temp",)},
    "modbus": {"bus": "uart", "required": ("unit_id", "registers"), "readings": ()},
    "current_loop": {"pin": "adc", "required": ("shunt_ohm", "range"), "readings": ("",)},
    "voltage": {"pin": "adc", "required": ("divider", "range"), "readings": ("",)},
    "pulse": {"pin": "input", "required": ("per_pulse",), "readings": ("count", "rate")},
}
ACTUATOR_DRIVERS = ("relay", "pwm")
# The node compares its stored tick stamps with these durations, and keeps every stamp at most
# 2**28 ms (3.1 days) old so that the ESP32's 2**30 ms tick wrap cannot turn it negative
# (firmware/lib/fnode/stamp.py): a longer duration could never be seen to pass.
MAX_HOLD_S = 72 * 3600  # min_on_s, min_off_s, failsafe_after_s
MAX_PERIOD_S = 24 * 3600  # period_s: the watchdog allows a sampler two periods and 5 s
# The ADC (at 11 dB, as the firmware sets it) is calibrated from 150 to 2450 mV at the pin on the
# ESP32 (MicroPython docs/esp32/quickref.rst); outside it readings bend or stick, and the drivers
# report `range`. The S3 and C3 are calibrated over wider windows: the ESP32's holds for all three.
ADC_CAL_MV = (150, 2450)
LOOP_MA = (3.8, 20.0)  # what a 4-20 mA loop must show: a broken loop (NAMUR NE 43) up to full scale
BUS_PINS = {"i2c": ("scl", "sda"), "onewire": ("pin",), "uart": ("tx", "rx", "de")}


class BoardError(FieldnodeError):
    pass


def board_path(name_or_path: str | Path) -> Path:
    """A board by name (boards/<name>.json) or by path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" or candidate.exists():
        return candidate
    path = BOARDS_DIR / f"{name_or_path}.json"
    if not path.exists():
        raise BoardError(f"unknown board {name_or_path!r}: known boards are {', '.join(board_names())} "
                         f"(or give a path to a .json board file)")
    return path


def board_names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.json"))


def load_board(name_or_path: str | Path) -> dict[str, Any]:
    """The validated board definition; BoardError lists every problem found."""
    path = board_path(name_or_path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BoardError(f"{path}: no such board file") from None
    except json.JSONDecodeError as exc:
        raise BoardError(f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    problems = validate_board(doc)
    if problems:
        raise BoardError(f"{path}: invalid board definition:\n  - " + "\n  - ".join(problems))
    return doc


def reading_names(doc: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for sensor in doc.get("sensors", []):
        spec = SENSOR_DRIVERS.get(sensor.get("driver"), {})
        produced = spec.get("readings", ())
        if sensor.get("driver") == "modbus":
            produced = tuple(r.get("name", "") for r in sensor.get("registers", []))
        elif sensor.get("driver") == "ds18b20":
            probes = len(sensor["roms"]) if sensor.get("roms") else sensor.get("count", 1)
            if isinstance(probes, int) and probes > 1:
                produced = tuple(f"temp{i}" for i in range(1, probes + 1))
        names.update(f"{sensor.get('name')}.{r}" if r else str(sensor.get("name")) for r in produced)
    return names


ADXL345_RATES = tuple(3200 / 2 ** n for n in range(10))  # 3200 .. 6.25 Hz
MODBUS_KINDS = ("holding", "input")
MODBUS_TYPES = ("u16", "s16", "u32", "s32", "f32")


def _driver_fields(sensor: dict[str, Any]) -> list[str]:
    """Problems with a driver's optional fields (what each takes: docs/sensors.md)."""
    problems: list[str] = []
    driver = sensor.get("driver")
    if driver == "ds18b20":
        roms = sensor.get("roms")
        if roms is not None and (not isinstance(roms, list) or not all(
                isinstance(r, str) and len(r) == 16 and all(c in "0123456789abcdefABCDEF" for c in r) for r in roms)):
            problems.append("roms: a list of 16-hex-digit ROM ids, family code first")
        count = sensor.get("count", 1)
        if type(count) is not int or not 1 <= count <= 16:
            problems.append("count: 1 to 16 probes")
    elif driver == "adxl345":
        if sensor.get("rate_hz", 100) not in ADXL345_RATES:
            problems.append(f"rate_hz: one of {', '.join(f'{r:g}' for r in ADXL345_RATES)}")
        if sensor.get("range_g", 16) not in (2, 4, 8, 16):
            problems.append("range_g: 2, 4, 8 or 16")
        window = sensor.get("window", 32)
        if type(window) is not int or not 4 <= window <= 1024:
            problems.append("window: 4 to 1024 samples")
    elif driver in ("voltage", "current_loop"):
        cal = sensor.get("cal", [1.0, 0.0])
        if not (isinstance(cal, list) and len(cal) == 2 and all(isinstance(x, (int, float)) for x in cal)):
            problems.append("cal: [gain, offset]")
        rng = sensor.get("range")
        if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(x, (int, float)) for x in rng)
                and rng[0] < rng[1]):
            problems.append("range: [low, high] with low < high")
        else:
            problems.extend(_adc_window(sensor))
    elif driver == "pulse":
        if sensor.get("pull") not in (None, "up", "down"):
            problems.append("pull: \"up\", \"down\" or absent")
    elif driver == "modbus":
        unit_id = sensor.get("unit_id")
        if type(unit_id) is not int or not 1 <= unit_id <= 247:
            problems.append("unit_id: 1 to 247")
        regs = sensor.get("registers")
        if not isinstance(regs, list) or not regs:
            problems.append("registers: a non-empty list")
            regs = []
        for i, reg in enumerate(regs):
            if not isinstance(reg, dict) or not isinstance(reg.get("name"), str):
                problems.append(f"registers[{i}].name: required text")
                continue
            if type(reg.get("address")) is not int or not 0 <= reg["address"] <= 0xFFFF:
                problems.append(f"registers[{i}].address: 0 to 65535")
            if reg.get("kind", "holding") not in MODBUS_KINDS:
                problems.append(f"registers[{i}].kind: holding or input")
            if reg.get("type", "u16") not in MODBUS_TYPES:
                problems.append(f"registers[{i}].type: one of {', '.join(MODBUS_TYPES)}")
    return problems


def _adc_window(sensor: dict[str, Any]) -> list[str]:
    """Problems with an analog input whose full scale falls outside the ADC's calibrated window."""
    lo_mv, hi_mv = ADC_CAL_MV
    if sensor.get("driver") == "current_loop":
        shunt = sensor.get("shunt_ohm")
        if shunt is None:
            return []  # said as required
        if not isinstance(shunt, (int, float)) or shunt <= 0:
            return ["shunt_ohm: a positive number of ohms"]
        low, high = (ma * shunt for ma in LOOP_MA)
        if low < lo_mv or high > hi_mv:
            return [f"shunt_ohm: {shunt:g} ohm puts {LOOP_MA[0]:g}-{LOOP_MA[1]:g} mA at {low:.0f}-{high:.0f} mV, "
                    f"outside the ADC's calibrated {lo_mv}-{hi_mv} mV: use {math.ceil(lo_mv / LOOP_MA[0])} to "
                    f"{math.floor(hi_mv / LOOP_MA[1])} ohm (e.g. 100 or 120)"]
        return []
    divider = sensor.get("divider")
    if divider is None:
        return []  # said as required
    if not isinstance(divider, (int, float)) or divider <= 0:
        return ["divider: a positive number (input volts per volt at the pin)"]
    cal = sensor.get("cal")
    gain, offset = cal if isinstance(cal, list) and len(cal) == 2 and all(
        isinstance(x, (int, float)) for x in cal) and cal[0] > 0 else (1.0, 0.0)
    top = sensor["range"][1]
    pin_mv = (top - offset) / gain / divider * 1000
    if pin_mv > hi_mv:
        return [f"divider: {divider:g} puts the range's top ({top:g}) at {pin_mv:.0f} mV on the pin, above the "
                f"ADC's calibrated {hi_mv} mV: use a divider of at least {pin_mv * divider / hi_mv:.2f}"]
    return []


# The node's timing settings (docs/firmware.md, "Timing settings"): key -> (default, low, high,
# what it bounds). Whole seconds. Tests shrink them to keep their meaning at a smaller scale.
TIMINGS: dict[str, tuple[int, int, int, str]] = {
    # fed once a second: a shorter timeout would reset a healthy node
    "watchdog_s": (30, 2, 3600, "the hardware watchdog's timeout"),
    "uplink_stall_s": (60, 2, 3600, "how long the uplink's loop may go quiet before the watchdog stops being fed"),
    "uplink_backoff_max_s": (30, 1, 3600, "longest pause between tries while the gateway does not answer"),
    # the Wi-Fi retries step 1, 2, 5, 10, 30 s: a larger bound would change nothing
    "wifi_backoff_max_s": (30, 1, 30, "longest pause between Wi-Fi connection attempts"),
}
UPLINK_BEAT_S = 10  # a key-retry pause shows the watchdog signs of life this often (fnode.uplink _BEAT_MS)


def timing_problems(doc: dict[str, Any]) -> list[str]:
    """The timing settings: each in its range, and the uplink's longest quiet spell (a backoff, or
    a slice of a key-retry pause) shorter than the stall the watchdog allows it."""
    problems = []
    for key, (default, low, high, what) in TIMINGS.items():
        value = doc.get(key, default)
        if type(value) is not int or not low <= value <= high:
            problems.append(f"{key}: a whole number of seconds from {low} to {high} ({what})")
    if problems:
        return problems
    stall = doc.get("uplink_stall_s", TIMINGS["uplink_stall_s"][0])
    backoff = doc.get("uplink_backoff_max_s", TIMINGS["uplink_backoff_max_s"][0])
    key_retry = doc.get("key_retry_max_s", 30)
    quiet = max(backoff, min(key_retry, UPLINK_BEAT_S) if type(key_retry) is int else UPLINK_BEAT_S)
    if stall <= quiet:
        problems.append(f"uplink_stall_s: {stall} s must be more than the uplink's longest quiet spell, {quiet} s "
                        f"(uplink_backoff_max_s, or key_retry_max_s up to {UPLINK_BEAT_S} s), or the watchdog "
                        f"resets a node that is only waiting")
    return problems


def validate_board(doc: Any) -> list[str]:
    if not isinstance(doc, dict):
        return ["the file must hold a JSON object"]
    problems: list[str] = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema: must be {SCHEMA}")
    if not isinstance(doc.get("name"), str) or not doc.get("name"):
        problems.append("name: required text")
    chip = CHIPS.get(doc.get("chip"))
    if chip is None:
        problems.append(f"chip: {doc.get('chip')!r} is not one of {', '.join(sorted(CHIPS))}")
        return problems
    used: dict[int, str] = {}

    def pin(where: str, value: Any, *, output: bool = False, adc: bool = False) -> None:
        if type(value) is not int or value not in chip.gpios:
            problems.append(f"{where}: GPIO {value!r} does not exist on {doc['chip']}")
            return
        if value in chip.reserved:
            problems.append(f"{where}: GPIO {value} is wired to the flash/PSRAM on {doc['chip']} modules")
        if output and value in chip.input_only:
            problems.append(f"{where}: GPIO {value} is input-only on {doc['chip']}")
        if adc and value not in chip.adc:
            problems.append(f"{where}: GPIO {value} has no ADC1 channel on {doc['chip']} "
                            f"(use one of {sorted(chip.adc)})")
        if value in used:
            problems.append(f"{where}: GPIO {value} is already used by {used[value]}")
        used[value] = where

    led = doc.get("status_led")
    if led is not None:
        pin("status_led.pin", led.get("pin") if isinstance(led, dict) else None, output=True)

    buses = doc.get("buses", {})
    if not isinstance(buses, dict):
        problems.append("buses: must be an object of named buses")
        buses = {}
    for bus_name, bus in buses.items():
        kind = bus.get("type") if isinstance(bus, dict) else None
        if kind not in BUS_PINS:
            problems.append(f"buses.{bus_name}.type: {kind!r} is not one of {', '.join(BUS_PINS)}")
            continue
        if kind == "uart":
            if bus.get("parity", "none") not in ("none", "even", "odd"):
                problems.append(f"buses.{bus_name}.parity: none, even or odd")
            if bus.get("stop", 1) not in (1, 2):
                problems.append(f"buses.{bus_name}.stop: 1 or 2")
        for key in BUS_PINS[kind]:
            if key == "de" and key not in bus:
                continue
            pin(f"buses.{bus_name}.{key}", bus.get(key), output=key in ("scl", "sda", "tx", "de", "pin"))

    names: set[str] = set()
    for i, sensor in enumerate(doc.get("sensors", [])):
        where = f"sensors[{i}]"
        if not isinstance(sensor, dict):
            problems.append(f"{where}: must be an object")
            continue
        name = sensor.get("name")
        where = f"sensors[{i}] ({name})"
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
            problems.append(f"{where}.name: letters, digits, _ and - only")
        elif name in names:
            problems.append(f"{where}.name: used twice")
        names.add(str(name))
        spec = SENSOR_DRIVERS.get(sensor.get("driver"))
        if spec is None:
            problems.append(f"{where}.driver: {sensor.get('driver')!r} is not one of {', '.join(SENSOR_DRIVERS)}")
            continue
        if "bus" in spec:
            bus = buses.get(sensor.get("bus"))
            if bus is None:
                problems.append(f"{where}.bus: {sensor.get('bus')!r} is not a bus of this board")
            elif bus.get("type") != spec["bus"]:
                problems.append(f"{where}.bus: {sensor['driver']} needs a {spec['bus']} bus, "
                                f"{sensor['bus']} is {bus.get('type')}")
        if "addresses" in spec and sensor.get("address") not in spec["addresses"]:
            choices = ", ".join(f"{a} (0x{a:02x})" for a in spec["addresses"])
            problems.append(f"{where}.address: {sensor.get('address')!r} is not a {sensor['driver']} "
                            f"address; use {choices}")
        if "pin" in spec:
            pin(f"{where}.pin", sensor.get("pin"), adc=spec["pin"] == "adc")
        for key in spec.get("required", ()):
            if key not in sensor:
                problems.append(f"{where}.{key}: required for {sensor['driver']}")
        problems.extend(f"{where}.{p}" for p in _driver_fields(sensor))
        period = sensor.get("period_s")
        if not isinstance(period, (int, float)) or not 0 < period <= MAX_PERIOD_S:
            problems.append(f"{where}.period_s: a positive number of seconds, at most {MAX_PERIOD_S} (24 h)")

    actuators: set[str] = set()
    drivers: dict[str, str] = {}
    for i, act in enumerate(doc.get("actuators", [])):
        name = act.get("name") if isinstance(act, dict) else None
        where = f"actuators[{i}] ({name})"
        if not isinstance(name, str) or not name or name in names | actuators:
            problems.append(f"{where}.name: required, and unique among sensors and actuators")
        actuators.add(str(name))
        if not isinstance(act, dict) or act.get("driver") not in ACTUATOR_DRIVERS:
            problems.append(f"{where}.driver: one of {', '.join(ACTUATOR_DRIVERS)}")
            continue
        drivers[str(name)] = act["driver"]
        pin(f"{where}.pin", act.get("pin"), output=True)
        failsafe = act.get("failsafe")
        if act["driver"] == "relay" and type(failsafe) is not bool:
            problems.append(f"{where}.failsafe: true or false (the state to fall back to)")
        if act["driver"] == "pwm" and (not isinstance(failsafe, (int, float)) or not 0 <= failsafe <= 1):
            problems.append(f"{where}.failsafe: a duty from 0.0 to 1.0")
        for key in ("min_on_s", "min_off_s"):
            if key in act and (not isinstance(act[key], (int, float)) or not 0 <= act[key] <= MAX_HOLD_S):
                problems.append(f"{where}.{key}: seconds, from 0 to {MAX_HOLD_S} (72 h)")

    readings = reading_names(doc)
    for i, rule in enumerate(doc.get("interlocks", [])):
        where = f"interlocks[{i}]"
        if rule.get("actuator") not in actuators:
            problems.append(f"{where}.actuator: {rule.get('actuator')!r} is not an actuator of this board")
        if rule.get("reading") not in readings:
            problems.append(f"{where}.reading: {rule.get('reading')!r} is not a reading of this board "
                            f"(readings: {', '.join(sorted(readings))})")
        if not any(isinstance(rule.get(k), (int, float)) for k in ("above", "below")):
            problems.append(f"{where}: needs a numeric 'above' or 'below' limit")
    for section in ("alerts", "rules"):
        for i, rule in enumerate(doc.get(section, [])):
            where = f"{section}[{i}]"
            if not isinstance(rule, dict):
                problems.append(f"{where}: must be an object")
                continue
            if rule.get("reading") not in readings:
                problems.append(f"{where}.reading: {rule.get('reading')!r} is not a reading of this board")
            if not any(isinstance(rule.get(k), (int, float)) for k in ("above", "below")):
                problems.append(f"{where}: needs a numeric 'above' or 'below' limit")
            if not isinstance(rule.get("hysteresis", 0), (int, float)) or rule.get("hysteresis", 0) < 0:
                problems.append(f"{where}.hysteresis: a number, 0 or more")
            if section == "rules" and rule.get("set") not in actuators:
                problems.append(f"{where}.set: {rule.get('set')!r} is not an actuator of this board")
            elif section == "rules" and rule.get("set") in drivers:
                # The node refuses a value of the wrong kind for ever (bad-value): catch it here.
                relay = drivers[rule["set"]] == "relay"
                for key in ("value", "else"):
                    if key == "else" and key not in rule:
                        continue
                    v = rule.get(key)
                    ok = type(v) is bool if relay else (type(v) in (int, float) and 0 <= v <= 1)
                    if not ok:
                        problems.append(f"{where}.{key}: " + ("true or false for relay " if relay else
                                        "a duty from 0.0 to 1.0 for PWM output ") + repr(rule["set"]))
    limit = doc.get("failsafe_after_s", 300)
    if not isinstance(limit, (int, float)) or not 0 < limit <= MAX_HOLD_S:
        problems.append(f"failsafe_after_s: a positive number of seconds, at most {MAX_HOLD_S} (72 h)")
    spool = doc.get("spool_frames", 65536)
    if type(spool) is not int or not 1 <= spool <= 1_000_000:
        problems.append("spool_frames: a whole number of frames from 1 to 1000000 (frames kept while "
                        "the gateway cannot be reached)")
    for key, low, high, what in (("spool_kb", 32, 1 << 20, "kilobytes of flash the spool may use"),
                                 ("spool_after_ms", 0, 600_000, "milliseconds a frame waits in RAM for "
                                  "its answer before it goes to flash"),
                                 ("key_retry_max_s", 1, 3600, "longest pause, in seconds, between tries "
                                  "while the gateway answers unknown-kid")):
        value = doc.get(key, low)
        if type(value) is not int or not low <= value <= high:
            problems.append(f"{key}: a whole number from {low} to {high} ({what})")
    health = doc.get("health_s", 300)
    if not isinstance(health, (int, float)) or isinstance(health, bool) or health <= 0:
        problems.append("health_s: a positive number of seconds (how often the node sends its heap readings)")
    low = doc.get("low_heap_bytes", 16384)
    if type(low) is not int or low < 0:
        problems.append("low_heap_bytes: a whole number of bytes, 0 or more (free heap below it raises heap.low)")
    return problems + timing_problems(doc)
