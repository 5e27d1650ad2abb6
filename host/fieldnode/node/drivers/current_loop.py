"""A 4-20 mA loop read across a shunt on an ADC pin (firmware/lib/fnode/drivers/current_loop.py)."""
from __future__ import annotations

import math

from .analog import ADC_CAL_MV, CAL, RANGE
from .schema import Field, Reading, Sensor, SensorDriver, SimDevice, positive, text

LOOP_MA = (3.8, 20.0)  # what a 4-20 mA loop must show: a broken loop (NAMUR NE 43) up to full scale


def readings(sensor: Sensor) -> tuple[Reading, ...]:
    return (("", str(sensor.get("unit", ""))),)


def shunt_within_adc_window(sensor: Sensor) -> list[str]:
    """3.8-20 mA across the shunt must land inside the ADC's calibrated window."""
    lo_mv, hi_mv = ADC_CAL_MV
    shunt = sensor["shunt_ohm"]
    low, high = (ma * shunt for ma in LOOP_MA)
    if low < lo_mv or high > hi_mv:
        return [f"shunt_ohm: {shunt:g} ohm puts {LOOP_MA[0]:g}-{LOOP_MA[1]:g} mA at {low:.0f}-{high:.0f} mV, "
                f"outside the ADC's calibrated {lo_mv}-{hi_mv} mV: use {math.ceil(lo_mv / LOOP_MA[0])} to "
                f"{math.floor(hi_mv / LOOP_MA[1])} ohm (e.g. 100 or 120)"]
    return []


def transmitter(sensor: Sensor, serial: int) -> list[dict]:
    return [{"shunt_ohm": sensor["shunt_ohm"], "ma": 12.0, "range": sensor["range"]}]


DRIVER = SensorDriver(
    name="current_loop",
    pin="adc",
    fields=(
        Field("shunt_ohm", "a positive number of ohms", positive),
        RANGE,
        CAL,
        Field("unit", "text, e.g. \"bar\"", text, default=""),
    ),
    checks=(shunt_within_adc_window,),
    readings=readings,
    sim=SimDevice("current_loop", inits=transmitter, world={"ma": 12.0}, pin_key="adc"),
    examples=({"name": "loop1", "driver": "current_loop", "pin": 34, "shunt_ohm": 120, "range": [0, 10],
               "unit": "bar", "period_s": 2},),
)
