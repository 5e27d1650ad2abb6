"""A pulse counter on a pin interrupt: total and rate (firmware/lib/fnode/drivers/pulse.py)."""
from __future__ import annotations

from .schema import Field, Reading, Sensor, SensorDriver, SimDevice, one_of, positive, text


def readings(sensor: Sensor) -> tuple[Reading, ...]:
    unit = sensor.get("unit")
    return (("count", unit or "count"), ("rate", f"{unit}/s" if unit else "1/s"))


DRIVER = SensorDriver(
    name="pulse",
    pin="input",
    fields=(
        Field("per_pulse", "a positive number (what one pulse is worth, in unit)", positive),
        Field("pull", "\"up\", \"down\" or absent", one_of(None, "up", "down"), default=None),
        Field("unit", "text, e.g. \"m3\"", text, default=None),
    ),
    readings=readings,
    sim=SimDevice("pulse", inits=lambda sensor, serial: [{"rate_hz": 5.0}], world={"rate_hz": 5.0},
                  pin_key="pulse"),
    examples=({"name": "flow", "driver": "pulse", "pin": 27, "per_pulse": 0.001, "unit": "m3", "period_s": 1},
              {"name": "door", "driver": "pulse", "pin": 26, "per_pulse": 1, "pull": "up", "period_s": 1}),
)
