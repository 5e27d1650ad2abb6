"""Board definitions (boards/*.json): loading and validation with errors that name the field.

A board is data: chip, pins, buses, and the sensors and actuators attached. Chip differences
(which GPIOs exist, which are input-only, which can do ADC while Wi-Fi runs) are data in
node/chips.py, not branches in code. The firmware reads the same JSON on the node; it trusts it
because the host validated it before it was flashed. What a sensor entry may hold, and the readings
it gives, is each driver's declaration (node/drivers/); this module checks the board around them.
"""
from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..infra.errors import FieldnodeError
from ..infra.paths import BOARDS_DIR
from .chips import CHIPS, Chip
from .drivers import DRIVERS, SensorDriver

SCHEMA = 1


ACTUATOR_DRIVERS = ("relay", "pwm")
# The node compares its stored tick stamps with these durations, and keeps every stamp at most
# 2**28 ms (3.1 days) old so that the ESP32's 2**30 ms tick wrap cannot turn it negative
# (firmware/lib/fnode/stamp.py): a longer duration could never be seen to pass.
MAX_HOLD_S = 72 * 3600  # min_on_s, min_off_s, failsafe_after_s
MAX_PERIOD_S = 24 * 3600  # period_s: the watchdog allows a sampler two periods and 5 s
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
    """Every reading the board's sensors send ("env.temp", "loop1"), as their drivers declare."""
    names: set[str] = set()
    for sensor in _entries(doc, "sensors"):
        driver = _driver_of(sensor) if isinstance(sensor, dict) else None
        if driver is not None:
            names.update(driver.reading_names(sensor))
    return names


def _driver_of(sensor: dict[str, Any]) -> SensorDriver | None:
    return DRIVERS.get(sensor["driver"]) if _named(sensor.get("driver"), DRIVERS) else None


def _named(value: Any, names: Collection[str]) -> bool:
    # A JSON list or object is never a name (and cannot be looked up: it does not hash).
    return isinstance(value, str) and value in names


def _entries(doc: dict[str, Any], section: str) -> list[Any]:
    # A list section as given; anything else is said once (_check_sections) and read as empty.
    entries = doc.get(section, [])
    return entries if isinstance(entries, list) else []


@dataclass(frozen=True)
class _Actuators:
    names: set[str]
    drivers: dict[str, str]  # of the actuators whose driver is known


class _Pins:
    """The board's GPIOs as they are claimed: each claim checked against the chip and the claims
    before it."""

    def __init__(self, chip_name: str, chip: Chip, problems: list[str]) -> None:
        self.chip_name = chip_name
        self.chip = chip
        self.problems = problems
        self.used: dict[int, str] = {}

    def claim(self, where: str, value: Any, *, output: bool = False, adc: bool = False) -> None:
        chip, problems, used = self.chip, self.problems, self.used
        if type(value) is not int or value not in chip.gpios:
            problems.append(f"{where}: GPIO {value!r} does not exist on {self.chip_name}")
            return
        if value in chip.reserved:
            problems.append(f"{where}: GPIO {value} is wired to the flash/PSRAM on {self.chip_name} modules")
        if output and value in chip.input_only:
            problems.append(f"{where}: GPIO {value} is input-only on {self.chip_name}")
        if adc and value not in chip.adc:
            problems.append(f"{where}: GPIO {value} has no ADC1 channel on {self.chip_name} "
                            f"(use one of {sorted(chip.adc)})")
        if value in used:
            problems.append(f"{where}: GPIO {value} is already used by {used[value]}")
        used[value] = where


# The node's timing settings (docs/firmware.md, "Timing settings"): key -> (default, low, high,
# what it bounds). Whole seconds, or milliseconds for a key ending in _ms. Tests shrink them to
# keep their meaning at a smaller scale.
TIMINGS: dict[str, tuple[int, int, int, str]] = {
    # fed once a second: a shorter timeout would reset a healthy node
    "watchdog_s": (30, 2, 3600, "the hardware watchdog's timeout"),
    "uplink_stall_s": (60, 2, 3600, "how long the uplink's loop may go quiet before the watchdog stops being fed"),
    "uplink_backoff_max_s": (30, 1, 3600, "longest pause between tries while the gateway does not answer"),
    # the Wi-Fi retries step 1, 2, 5, 10, 30 s: a larger bound would change nothing
    "wifi_backoff_max_s": (30, 1, 30, "longest pause between Wi-Fi connection attempts"),
    # docs/updates.md: a new application is kept only if the gateway acks a frame within this
    "update_trial_s": (120, 2, 3600, "how long a new application has to reach the gateway before it is rolled back"),
    # a limit compared with a tick stamp stays under 2**28 ms (fnode.stamp): 24 h is well below
    "failback_s": (300, 1, 86400, "how long a node stays on a fallback gateway before trying the preferred one again"),
    # RFC 7252 §4.8's ACK_TIMEOUT, in ms: below 100 a busy gateway's answer would count as lost
    "coap_ack_timeout_ms": (2000, 100, 60000, "CoAP's ACK_TIMEOUT: the wait for the gateway's answer before the "
                            "first retransmission, doubled at each one after"),
}
UPLINK_BEAT_S = 10  # a key-retry pause shows the watchdog signs of life this often (fnode.uplink _BEAT_MS)


def timing_problems(doc: dict[str, Any]) -> list[str]:
    """The timing settings: each in its range, and the uplink's longest quiet spell (a backoff, or
    a slice of a key-retry pause) shorter than the stall the watchdog allows it."""
    problems = []
    for key, (default, low, high, what) in TIMINGS.items():
        value = doc.get(key, default)
        if type(value) is not int or not low <= value <= high:
            unit = "milliseconds" if key.endswith("_ms") else "seconds"
            problems.append(f"{key}: a whole number of {unit} from {low} to {high} ({what})")
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
    pins = _Pins(doc["chip"], chip, problems)
    led = doc.get("status_led")
    if led is not None:
        pins.claim("status_led.pin", led.get("pin") if isinstance(led, dict) else None, output=True)
    _check_sections(doc, problems)
    buses = _check_buses(doc, pins, problems)
    sensors = _check_sensors(doc, buses, pins, problems)
    actuators = _check_actuators(doc, sensors, pins, problems)
    readings = reading_names(doc)
    _check_interlocks(doc, actuators, readings, problems)
    _check_rules(doc, actuators, readings, problems)
    _check_settings(doc, problems)
    if not problems and doc.get("frame_version", 2) == 2:
        _check_declaration(doc, problems)
    return problems


def _check_declaration(doc: dict[str, Any], problems: list[str]) -> None:
    """Frame format v2: the node sends its declaration in one frame, at most 512 bytes with CoAP."""
    from .declaring import NODE_FRAME_MAX, board_readings, declaration_frame_max
    size = declaration_frame_max(doc)
    if size > NODE_FRAME_MAX:
        problems.append(f"frame_version: 2 needs a declaration of the board's {len(board_readings(doc))} readings, "
                        f"up to {size} bytes, over the node's {NODE_FRAME_MAX}-byte frame: use frame_version 1, "
                        "or fewer readings or shorter sensor names")


def _check_sections(doc: dict[str, Any], problems: list[str]) -> None:
    for section in ("sensors", "actuators", "interlocks", "alerts", "rules"):
        if not isinstance(doc.get(section, []), list):
            problems.append(f"{section}: must be a list")


def _check_buses(doc: dict[str, Any], pins: _Pins, problems: list[str]) -> dict[str, Any]:
    """The board's buses by name (an empty dict if they are not an object), their pins claimed."""
    buses = doc.get("buses", {})
    if not isinstance(buses, dict):
        problems.append("buses: must be an object of named buses")
        return {}
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
            pins.claim(f"buses.{bus_name}.{key}", bus.get(key), output=key in ("scl", "sda", "tx", "de", "pin"))
    return buses


def _check_sensors(doc: dict[str, Any], buses: dict[str, Any], pins: _Pins, problems: list[str]) -> set[str]:
    """The sensors' names; each sensor checked by what its driver declares (node/drivers/)."""
    names: set[str] = set()
    for i, sensor in enumerate(_entries(doc, "sensors")):
        if not isinstance(sensor, dict):
            problems.append(f"sensors[{i}]: must be an object")
            continue
        name = sensor.get("name")
        where = f"sensors[{i}] ({name})"
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
            problems.append(f"{where}.name: letters, digits, _ and - only")
        elif name in names:
            problems.append(f"{where}.name: used twice")
        names.add(str(name))
        period = sensor.get("period_s")
        if not isinstance(period, (int, float)) or not 0 < period <= MAX_PERIOD_S:
            problems.append(f"{where}.period_s: a positive number of seconds, at most {MAX_PERIOD_S} (24 h)")
        _check_sensor_driver(where, sensor, buses, pins, problems)
    return names


def _check_sensor_driver(where: str, sensor: dict[str, Any], buses: dict[str, Any], pins: _Pins,
                         problems: list[str]) -> None:
    """The entry against its driver's declaration, and its bus or pin against this board."""
    driver = _driver_of(sensor)
    if driver is None:
        problems.append(f"{where}.driver: {sensor.get('driver')!r} is not one of {', '.join(DRIVERS)}")
        return
    if driver.bus:
        bus = buses[sensor["bus"]] if _named(sensor.get("bus"), buses) else None
        if not isinstance(bus, dict):
            problems.append(f"{where}.bus: {sensor.get('bus')!r} is not a bus of this board")
        elif bus.get("type") != driver.bus:
            problems.append(f"{where}.bus: {driver.name} needs a {driver.bus} bus, "
                            f"{sensor['bus']} is {bus.get('type')}")
    if driver.pin:
        pins.claim(f"{where}.pin", sensor.get("pin"), adc=driver.pin == "adc")
    problems.extend(f"{where}.{p}" for p in driver.problems(sensor))


def _check_actuators(doc: dict[str, Any], sensors: set[str], pins: _Pins, problems: list[str]) -> _Actuators:
    """The actuators' names, and the drivers of those that name a known one."""
    actuators: set[str] = set()
    drivers: dict[str, str] = {}
    for i, act in enumerate(_entries(doc, "actuators")):
        name = act.get("name") if isinstance(act, dict) else None
        where = f"actuators[{i}] ({name})"
        if not isinstance(name, str) or not name or name in sensors | actuators:
            problems.append(f"{where}.name: required, and unique among sensors and actuators")
        actuators.add(str(name))
        if not isinstance(act, dict) or act.get("driver") not in ACTUATOR_DRIVERS:
            problems.append(f"{where}.driver: one of {', '.join(ACTUATOR_DRIVERS)}")
            continue
        drivers[str(name)] = act["driver"]
        pins.claim(f"{where}.pin", act.get("pin"), output=True)
        failsafe = act.get("failsafe")
        if act["driver"] == "relay" and type(failsafe) is not bool:
            problems.append(f"{where}.failsafe: true or false (the state to fall back to)")
        if act["driver"] == "pwm" and (not isinstance(failsafe, (int, float)) or not 0 <= failsafe <= 1):
            problems.append(f"{where}.failsafe: a duty from 0.0 to 1.0")
        for key in ("min_on_s", "min_off_s"):
            if key in act and (not isinstance(act[key], (int, float)) or not 0 <= act[key] <= MAX_HOLD_S):
                problems.append(f"{where}.{key}: seconds, from 0 to {MAX_HOLD_S} (72 h)")
    return _Actuators(actuators, drivers)


def _check_interlocks(doc: dict[str, Any], actuators: _Actuators, readings: set[str],
                      problems: list[str]) -> None:
    for i, rule in enumerate(_entries(doc, "interlocks")):
        where = f"interlocks[{i}]"
        if not isinstance(rule, dict):
            problems.append(f"{where}: must be an object")
            continue
        if not _named(rule.get("actuator"), actuators.names):
            problems.append(f"{where}.actuator: {rule.get('actuator')!r} is not an actuator of this board")
        if not _named(rule.get("reading"), readings):
            problems.append(f"{where}.reading: {rule.get('reading')!r} is not a reading of this board "
                            f"(readings: {', '.join(sorted(readings))})")
        if not any(isinstance(rule.get(k), (int, float)) for k in ("above", "below")):
            problems.append(f"{where}: needs a numeric 'above' or 'below' limit")


def _check_rules(doc: dict[str, Any], actuators: _Actuators, readings: set[str], problems: list[str]) -> None:
    for section in ("alerts", "rules"):
        for i, rule in enumerate(_entries(doc, section)):
            where = f"{section}[{i}]"
            if not isinstance(rule, dict):
                problems.append(f"{where}: must be an object")
                continue
            if not _named(rule.get("reading"), readings):
                problems.append(f"{where}.reading: {rule.get('reading')!r} is not a reading of this board")
            if not any(isinstance(rule.get(k), (int, float)) for k in ("above", "below")):
                problems.append(f"{where}: needs a numeric 'above' or 'below' limit")
            if not isinstance(rule.get("hysteresis", 0), (int, float)) or rule.get("hysteresis", 0) < 0:
                problems.append(f"{where}.hysteresis: a number, 0 or more")
            if section == "rules":
                _check_rule_output(where, rule, actuators, problems)


def _check_rule_output(where: str, rule: dict[str, Any], actuators: _Actuators, problems: list[str]) -> None:
    if not _named(rule.get("set"), actuators.names):
        problems.append(f"{where}.set: {rule.get('set')!r} is not an actuator of this board")
        return
    if rule["set"] not in actuators.drivers:
        return  # its driver is unknown: said at the actuator
    # The node refuses a value of the wrong kind for ever (bad-value): catch it here.
    relay = actuators.drivers[rule["set"]] == "relay"
    for key in ("value", "else"):
        if key == "else" and key not in rule:
            continue
        v = rule.get(key)
        ok = type(v) is bool if relay else (type(v) in (int, float) and 0 <= v <= 1)
        if not ok:
            problems.append(f"{where}.{key}: " + ("true or false for relay " if relay else
                            "a duty from 0.0 to 1.0 for PWM output ") + repr(rule["set"]))


def _check_settings(doc: dict[str, Any], problems: list[str]) -> None:
    """The node-wide settings (top-level keys)."""
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
                                  "while the gateway answers unknown-kid"),
                                 ("failover_after", 1, 100, "transmissions in a row the gateway leaves "
                                  "unanswered before the node moves to its next gateway")):
        value = doc.get(key, low)
        if type(value) is not int or not low <= value <= high:
            problems.append(f"{key}: a whole number from {low} to {high} ({what})")
    health = doc.get("health_s", 300)
    if not isinstance(health, (int, float)) or isinstance(health, bool) or health <= 0:
        problems.append("health_s: a positive number of seconds (how often the node sends its heap readings)")
    if doc.get("frame_version", 2) not in (1, 2) or type(doc.get("frame_version", 2)) is not int:
        problems.append("frame_version: 1 or 2 (the frame format the node sends; docs/frame-format.md)")
    low = doc.get("low_heap_bytes", 16384)
    if type(low) is not int or low < 0:
        problems.append("low_heap_bytes: a whole number of bytes, 0 or more (free heap below it raises heap.low)")
    problems.extend(timing_problems(doc))
