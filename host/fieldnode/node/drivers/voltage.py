"""A voltage through a resistor divider on an ADC pin (firmware/lib/fnode/drivers/voltage.py)."""
from __future__ import annotations

from .analog import ADC_CAL_MV, CAL, RANGE
from .schema import Field, Reading, Sensor, SensorDriver, SimDevice, positive, text, whole


def readings(sensor: Sensor) -> tuple[Reading, ...]:
    return (("", str(sensor.get("unit", "V"))),)


def top_within_adc_window(sensor: Sensor) -> list[str]:
    """The top of the range, back through cal and the divider, must not be above the window."""
    divider, top = sensor["divider"], sensor["range"][1]
    gain, offset = sensor.get("cal", [1.0, 0.0])
    if gain <= 0:
        gain, offset = 1.0, 0.0  # a falling scale: the range's top is not the pin's highest
    hi_mv = ADC_CAL_MV[1]
    pin_mv = (top - offset) / gain / divider * 1000
    if pin_mv > hi_mv:
        return [f"divider: {divider:g} puts the range's top ({top:g}) at {pin_mv:.0f} mV on the pin, above the "
                f"ADC's calibrated {hi_mv} mV: use a divider of at least {pin_mv * divider / hi_mv:.2f}"]
    return []


DRIVER = SensorDriver(
    name="voltage",
    pin="adc",
    fields=(
        Field("divider", "a positive number (input volts per volt at the pin)", positive),
        RANGE,
        CAL,
        Field("samples", "1 to 64 ADC reads averaged", whole(1, 64), default=1),
        Field("unit", "text, e.g. \"V\"", text, default="V"),
    ),
    checks=(top_within_adc_window,),
    readings=readings,
    sim=SimDevice("voltage", inits=lambda sensor, serial: [{"divider": sensor["divider"], "volts": 5.0}],
                  world={"volts": 7.5}, pin_key="adc"),
    examples=({"name": "supply", "driver": "voltage", "pin": 34, "divider": 4.3, "range": [0, 10],
               "period_s": 5},
              {"name": "battery", "driver": "voltage", "pin": 35, "divider": 11, "range": [0, 24],
               "cal": [1.02, -0.1], "samples": 8, "unit": "Vdc", "period_s": 5}),
)
