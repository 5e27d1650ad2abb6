"""Modbus RTU registers over a UART and an RS-485 transceiver: one reading per register
(firmware/lib/fnode/drivers/modbus.py)."""
from __future__ import annotations

from typing import Any

from .schema import Field, Reading, Sensor, SensorDriver, SimDevice, number, whole

KINDS = ("holding", "input")
TYPES = ("u16", "s16", "u32", "s32", "f32")


def _registers(sensor: Sensor) -> list[Any]:
    regs = sensor.get("registers")
    return regs if isinstance(regs, list) else []


def readings(sensor: Sensor) -> tuple[Reading, ...]:
    return tuple((r["name"], str(r.get("unit", ""))) for r in _registers(sensor)
                 if isinstance(r, dict) and isinstance(r.get("name"), str))


def _register_problems(i: int, reg: Any, names: set[str]) -> list[str]:
    if not isinstance(reg, dict) or not isinstance(reg.get("name"), str):
        return [f"registers[{i}].name: required text"]
    problems = []
    if reg["name"] in names:
        problems.append(f"registers[{i}].name: used twice (each register is a reading of its own)")
    names.add(reg["name"])
    if type(reg.get("address")) is not int or not 0 <= reg["address"] <= 0xFFFF:
        problems.append(f"registers[{i}].address: 0 to 65535")
    if reg.get("kind", "holding") not in KINDS:
        problems.append(f"registers[{i}].kind: holding or input")
    if reg.get("type", "u16") not in TYPES:
        problems.append(f"registers[{i}].type: one of {', '.join(TYPES)}")
    if not number(reg.get("scale", 1)):
        problems.append(f"registers[{i}].scale: a number (the raw value is multiplied by it)")
    return problems


def registers_readable(sensor: Sensor) -> list[str]:
    """Each register entry names a reading and a register the driver can read."""
    names: set[str] = set()
    return [p for i, reg in enumerate(_registers(sensor)) for p in _register_problems(i, reg, names)]


# 1000 as each type puts it in its registers, high word first.
_THOUSAND = {"u16": (1000,), "s16": (1000,), "u32": (0, 1000), "s32": (0, 1000), "f32": (0x447A, 0)}


def slave(sensor: Sensor, serial: int) -> list[dict[str, Any]]:
    # A slave on which every register the entry reads holds 1000, in either kind's table.
    words = {str(r["address"] + i): w for r in _registers(sensor)
             for i, w in enumerate(_THOUSAND[r.get("type", "u16")])}
    return [{"unit_id": sensor["unit_id"], "input": words, "holding": dict(words)}]


DRIVER = SensorDriver(
    name="modbus",
    bus="uart",
    fields=(
        Field("unit_id", "1 to 247", whole(1, 247)),
        Field("registers", "a non-empty list", lambda v: isinstance(v, list) and bool(v)),
        Field("timeout_ms", "1 to 5000 ms to wait for an answer", whole(1, 5000), default=100),
    ),
    checks=(registers_readable,),
    readings=readings,
    sim=SimDevice("modbus", inits=slave),
    examples=({"name": "meter", "driver": "modbus", "bus": "rs485", "unit_id": 1, "period_s": 5,
               "registers": [{"name": "volts", "address": 0, "kind": "input", "scale": 0.1, "unit": "V"},
                             {"name": "amps", "address": 1, "kind": "input", "type": "s16", "unit": "A"},
                             {"name": "kwh", "address": 16, "type": "u32", "unit": "kWh"},
                             {"name": "pf", "address": 20, "type": "f32"}]},),
)
