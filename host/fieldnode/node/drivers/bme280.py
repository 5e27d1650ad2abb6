"""Bosch BME280 on I2C: temperature, humidity, pressure (firmware/lib/fnode/drivers/bme280.py)."""
from .schema import SensorDriver, SimDevice, fixed

DRIVER = SensorDriver(
    name="bme280",
    bus="i2c",
    addresses=(0x76, 0x77),
    readings=fixed(("temp", "Cel"), ("hum", "%RH"), ("press", "Pa")),
    sim=SimDevice("bme280", world={"temp": 22.0, "hum": 45.0, "press": 101325.0}),
    examples=({"name": "env", "driver": "bme280", "bus": "i2c0", "address": 0x76, "period_s": 2},),
)
