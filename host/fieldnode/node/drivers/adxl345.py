"""Analog Devices ADXL345 on I2C as a vibration sensor: RMS, peak and crest factor
(firmware/lib/fnode/drivers/adxl345.py)."""
from .schema import Field, SensorDriver, SimDevice, fixed, one_of, whole

RATES_HZ = tuple(3200 / 2 ** n for n in range(10))  # the chip's BW_RATE steps: 3200 .. 6.25 Hz

DRIVER = SensorDriver(
    name="adxl345",
    bus="i2c",
    addresses=(0x53, 0x1D),
    fields=(
        Field("rate_hz", f"one of {', '.join(f'{r:g}' for r in RATES_HZ)}", one_of(*RATES_HZ), default=100),
        Field("range_g", "2, 4, 8 or 16", one_of(2, 4, 8, 16), default=16),
        Field("window", "4 to 1024 samples", whole(4, 1024), default=32),
    ),
    readings=fixed(("rms", "m/s2"), ("peak", "m/s2"), ("crest", "/")),
    sim=SimDevice("adxl345", world={"amplitude": 2.0, "freq": 50.0}),
    examples=({"name": "pump", "driver": "adxl345", "bus": "i2c0", "address": 0x53, "period_s": 1},
              {"name": "fan", "driver": "adxl345", "bus": "i2c0", "address": 0x1D, "rate_hz": 400,
               "range_g": 4, "window": 64, "period_s": 1}),
)
