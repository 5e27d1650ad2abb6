"""What a sensor driver's host declaration holds, and the value checks its fields are built from.

A declaration is data, as an ESPHome component's schema is: the fields a board entry may give
(with the fix an error message states), the readings the firmware driver produces from the entry,
and the emulated chip the simulator puts behind it. The board check (node/boards.py), the reading
names an interlock may use, and the simulator's wiring (sim/fleet.py) all loop over these.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Sensor = Mapping[str, Any]  # one entry of a board's "sensors" list
Reading = tuple[str, str]  # (suffix, unit); suffix "" = the sensor's own name
REQUIRED = object()  # a Field's default when the board entry must give the field

# Every sensor entry has these, whatever its driver (checked by node/boards.py).
COMMON_FIELDS = ("name", "driver", "period_s")
BUS_FIELDS = ("bus",)
PIN_FIELDS = ("pin",)


@dataclass(frozen=True)
class Field:
    """One key of a board entry: what it must be (said as the fix) and what the firmware assumes
    when it is absent."""
    name: str
    fix: str  # the error message after "<field>: ", e.g. "1 to 247"
    ok: Callable[[Any], bool]
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class SimDevice:
    """The emulated chip behind a sensor in the simulator: host/fieldnode/simhal/sim_<type>.py.
    Named, never imported: simdev loads it inside MicroPython on the unix port."""
    type: str
    # (sensor, serial) -> the keyword arguments of one emulated chip each; serial is the board's
    # next free device number, for chips that must differ on a shared bus (1-Wire ROM ids).
    inits: Callable[[Sensor, int], list[dict[str, Any]]] = lambda sensor, serial: [{}]
    # Values `fieldnode sim` moves around (keywords of the device's set()), with their centres.
    world: Mapping[str, float] = field(default_factory=dict)
    # sim.json key that puts the device on the sensor's own pin ("adc", "pulse"); a device on a
    # bus is placed by the bus (I2C address, 1-Wire pin, UART id).
    pin_key: str | None = None


@dataclass(frozen=True)
class SensorDriver:
    """One sensor driver as the host knows it; firmware/lib/fnode/drivers/<name>.py is the code."""
    name: str
    readings: Callable[[Sensor], tuple[Reading, ...]]  # as the firmware driver's readings(spec)
    sim: SimDevice
    examples: tuple[dict[str, Any], ...]  # entries that must validate (docs, tests)
    bus: str | None = None  # the kind of bus it hangs on: "i2c", "onewire" or "uart"
    addresses: tuple[int, ...] = ()  # I2C: the addresses the chip can answer on
    pin: str | None = None  # or a pin of its own: "adc" (an ADC1 channel) or "input"
    fields: tuple[Field, ...] = ()
    # Checks across fields (an ADC input's scale against the ADC's window), run once every
    # field on its own is fine: (sensor) -> problems, each "<field>: <fix>".
    checks: tuple[Callable[[Sensor], list[str]], ...] = ()

    @property
    def field_names(self) -> tuple[str, ...]:
        attach = BUS_FIELDS if self.bus else PIN_FIELDS if self.pin else ()
        addr = ("address",) if self.addresses else ()
        return COMMON_FIELDS + attach + addr + tuple(f.name for f in self.fields)

    def problems(self, sensor: Sensor) -> list[str]:
        """What is wrong with the entry's own fields, each as "<field>: <fix>". The bus and pin
        are the board's business (node/boards.py checks them against its buses and GPIOs)."""
        known = self.field_names
        problems = [f"{key}: not a field of {self.name} (its fields: {', '.join(known)})"
                    for key in sensor if key not in known]
        if self.addresses and sensor.get("address") not in self.addresses:
            choices = ", ".join(f"{a} (0x{a:02x})" for a in self.addresses)
            problems.append(f"address: {sensor.get('address')!r} is not a {self.name} address; use {choices}")
        for f in self.fields:
            if f.name not in sensor:
                if f.required:
                    problems.append(f"{f.name}: required for {self.name}")
            elif not f.ok(sensor[f.name]):
                problems.append(f"{f.name}: {f.fix}")
        if not problems:
            for check in self.checks:
                problems.extend(check(sensor))
        return problems

    def reading_names(self, sensor: Sensor) -> tuple[str, ...]:
        """Full reading names, as the node sends them: "env.temp", or "loop1" for suffix ""."""
        name = str(sensor.get("name"))
        return tuple(f"{name}.{suffix}" if suffix else name for suffix, _ in self.readings(sensor))


def fixed(*readings: Reading) -> Callable[[Sensor], tuple[Reading, ...]]:
    """Readings that do not depend on the board entry."""
    return lambda sensor: readings


# -- value checks a Field is built from ---------------------------------------------------------
def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive(value: Any) -> bool:
    return number(value) and value > 0


def text(value: Any) -> bool:
    return isinstance(value, str)


def whole(low: int, high: int) -> Callable[[Any], bool]:
    return lambda value: type(value) is int and low <= value <= high


def one_of(*choices: Any) -> Callable[[Any], bool]:
    # bool is an int to Python (True == 1): a JSON true is not a choice of a number.
    return lambda value: not isinstance(value, bool) and value in choices


def pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(number(x) for x in value)


def span(value: Any) -> bool:
    return pair(value) and value[0] < value[1]
