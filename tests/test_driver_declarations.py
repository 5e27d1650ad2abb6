"""Each sensor driver's host declaration (host/fieldnode/node/drivers/) against its firmware driver
and its emulated chip: the readings the firmware sends are the names the host declares (which the
board check lets interlocks, alerts and rules use), and the board schema names every bad field.

The firmware drivers run unchanged on the real MicroPython unix port, through the simulated HAL,
against the emulated chips the simulator puts behind each declared example entry.
"""
from __future__ import annotations

import json

import pytest

from conftest import FIRMWARE_LIB, REPO
from fieldnode.node.boards import validate_board
from fieldnode.node.drivers import DRIVERS
from fieldnode.sim.fleet import devices_for_board

SIMHAL = REPO / "host" / "fieldnode" / "simhal"
FIRMWARE_DRIVERS = FIRMWARE_LIB / "fnode" / "drivers"
# One bus of each kind, on ESP32 pins the examples' own pins do not use.
BUSES = {"i2c0": {"type": "i2c", "id": 0, "scl": 22, "sda": 21, "freq": 400000},
         "ow0": {"type": "onewire", "pin": 4},
         "rs485": {"type": "uart", "id": 2, "tx": 17, "rx": 16, "de": 5, "baud": 9600}}
EXAMPLES = [pytest.param(driver, example, id=f"{driver.name}-{example['name']}")
            for driver in DRIVERS.values() for example in driver.examples]


def board_with(sensor: dict) -> dict:
    return {"schema": 1, "name": "t", "chip": "esp32", "buses": BUSES, "sensors": [sensor]}


def test_every_firmware_driver_has_one_declaration_and_an_emulated_chip():
    firmware = {p.stem for p in FIRMWARE_DRIVERS.glob("*.py")} - {"__init__"}
    assert firmware == set(DRIVERS)
    for driver in DRIVERS.values():
        assert (SIMHAL / f"sim_{driver.sim.type}.py").is_file(), driver.name
        assert driver.examples, f"{driver.name} declares no example entry"


@pytest.mark.parametrize("driver,example", EXAMPLES)
def test_the_firmware_driver_sends_exactly_the_readings_its_declaration_names(driver, example, micropython,
                                                                             tmp_path):
    board = board_with(example)
    assert validate_board(board) == []
    devices = devices_for_board(board)
    (tmp_path / "sim.json").write_text(json.dumps({"devices": devices}))
    world = {spec["name"]: dict(driver.sim.world) for spec in devices}
    out = micropython.eval_json(f"""
import json, time, simdev
from fnode.sensors import build
board = json.loads({json.dumps(json.dumps(board))})
hw, sensors = build(board)
s = sensors[0]

def attempt():
    # Every slot emptied first: a good sample must fill each one, and no more (an index past
    # the declared readings raises, and the sample says "driver").
    for i in range(len(s.values)):
        s.values[i] = None
    return s.sample()

deadline = time.ticks_add(time.ticks_ms(), 5000)
error = attempt()
while error is not None and time.ticks_diff(deadline, time.ticks_ms()) > 0:
    time.sleep_ms(50)               # conversions, a FIFO filling, a pulse period
    error = attempt()
for name, values in json.loads({json.dumps(json.dumps(world))}).items():
    simdev.devices()[name].set(**values)   # what `fieldnode sim` drifts: keywords of set()
print(json.dumps({{"error": error, "names": s.names, "units": s.units, "values": s.values}}))
""", path=[SIMHAL], env={"FIELDNODE_SIM_NODE": str(tmp_path)}, timeout=60)
    assert out["error"] is None, out
    assert out["names"] == list(driver.reading_names(example))
    assert out["units"] == [unit for _, unit in driver.readings(example)]
    assert all(isinstance(v, (int, float)) for v in out["values"]), out["values"]


@pytest.mark.parametrize("driver", DRIVERS.values(), ids=list(DRIVERS))
def test_every_field_of_an_entry_refuses_a_wrong_value_by_name(driver):
    # JSON that is wrong for any field, and a list cannot even be looked up (it does not hash):
    # each must come back as a problem naming the field, never as a traceback.
    example = driver.examples[0]
    for field in driver.field_names:
        for wrong in ({"wrong": True}, ["wrong"]):
            where = f"sensors[0] ({wrong if field == 'name' else example['name']})"
            problems = validate_board(board_with({**example, field: wrong}))
            assert any(p.startswith((f"{where}.{field}: ", f"{where}.{field}[")) for p in problems), (field, problems)
    where = f"sensors[0] ({example['name']})"
    for field in [f.name for f in driver.fields if f.required]:
        entry = {k: v for k, v in example.items() if k != field}
        assert f"{where}.{field}: required for {driver.name}" in validate_board(board_with(entry))
    problems = validate_board(board_with({**example, "perod_s": 5}))
    assert any(p.startswith(f"{where}.perod_s: not a field of {driver.name} (its fields: ") and "period_s" in p
               for p in problems), problems


def test_modbus_register_entries_are_checked_one_by_one():
    meter = DRIVERS["modbus"].examples[0]
    registers = [5, {"name": "a", "address": 70000}, {"name": "a", "address": 1, "kind": "coil"},
                 {"name": "b", "address": 2, "type": "u64", "scale": "x"}]
    problems = validate_board(board_with({**meter, "registers": registers}))
    where = "sensors[0] (meter).registers"
    assert {f"{where}[0].name: required text", f"{where}[1].address: 0 to 65535",
            f"{where}[2].name: used twice (each register is a reading of its own)",
            f"{where}[2].kind: holding or input", f"{where}[3].type: one of u16, s16, u32, s32, f32",
            f"{where}[3].scale: a number (the raw value is multiplied by it)"} <= set(problems), problems
