"""Sensirion SHT40/41/45 on I2C: temperature and humidity (firmware/lib/fnode/drivers/sht4x.py)."""
from .schema import SensorDriver, SimDevice, fixed

DRIVER = SensorDriver(
    name="sht4x",
    bus="i2c",
    addresses=(0x44, 0x45, 0x46),  # SHT4x-A, -B, -C
    readings=fixed(("temp", "Cel"), ("hum", "%RH")),
    sim=SimDevice("sht4x", world={"temp": 21.0, "hum": 50.0}),
    examples=({"name": "room", "driver": "sht4x", "bus": "i2c0", "address": 0x44, "period_s": 5},),
)
