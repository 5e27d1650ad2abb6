"""Maxim DS18B20 probes on a 1-Wire bus: one temperature each (firmware/lib/fnode/drivers/ds18b20.py)."""
from __future__ import annotations

from typing import Any

from .schema import Field, Reading, Sensor, SensorDriver, SimDevice, whole

_HEX = frozenset("0123456789abcdefABCDEF")


def _rom_ids(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(r, str) and len(r) == 16 and set(r) <= _HEX for r in value)


def _probes(sensor: Sensor) -> int:
    # How many probes the entry names: its roms, else count (1 when either is unusable: the
    # board check says why).
    roms = sensor.get("roms")
    if isinstance(roms, list) and roms:
        return len(roms)
    count = sensor.get("count", 1)
    return count if type(count) is int and count > 0 else 1


def readings(sensor: Sensor) -> tuple[Reading, ...]:
    n = _probes(sensor)
    if n == 1:
        return (("temp", "Cel"),)
    return tuple((f"temp{i}", "Cel") for i in range(1, n + 1))


def probes(sensor: Sensor, serial: int) -> list[dict[str, Any]]:
    # One emulated probe per reading, with the ROM ids the entry lists or distinct serials.
    roms = sensor.get("roms")
    if _rom_ids(roms) and roms:
        return [{"rom": rom, "temp": 40.0} for rom in roms]
    return [{"serial": serial + i, "temp": 40.0} for i in range(_probes(sensor))]


DRIVER = SensorDriver(
    name="ds18b20",
    bus="onewire",
    fields=(
        Field("roms", "a list of 16-hex-digit ROM ids, family code first", _rom_ids, default=[]),
        Field("count", "1 to 16 probes", whole(1, 16), default=1),
    ),
    readings=readings,
    sim=SimDevice("ds18b20", inits=probes, world={"temp": 40.0}),
    examples=({"name": "tank", "driver": "ds18b20", "bus": "ow0", "period_s": 10},
              {"name": "pipes", "driver": "ds18b20", "bus": "ow0", "count": 3, "period_s": 10},
              {"name": "cellar", "driver": "ds18b20", "bus": "ow0", "period_s": 10,
               "roms": ["28341200000000d0", "28351200000000e7"]}),
)
