# What every driver shares: the error a failed reading carries to the frame, and the window in
# which the ADC can be trusted.
from micropython import const

# The ESP32's ADC at 11 dB (what fnode.sensors.Hardware.adc sets) is calibrated from 150 to 2450 mV
# at the pin only (MicroPython docs/esp32/quickref.rst); below it reads a fixed offset, above it
# bends and saturates near 3.1 V. The ESP32-S3 and -C3 are calibrated over wider windows: this one
# is right for all three.
ADC_LOW_UV = const(150000)
ADC_HIGH_UV = const(2450000)


class ReadError(Exception):
    # code is what the frame's "err" field says: nack, crc, timeout, range, broken-loop, ...
    def __init__(self, code):
        super().__init__(code)
        self.code = code


def bus_error(exc):
    # An OSError from the HAL as a ReadError: ENODEV (19) is an I2C NACK, ETIMEDOUT (116/110) a timeout.
    if isinstance(exc, ReadError):
        return exc
    errno = exc.args[0] if exc.args else 0
    if errno == 19:
        return ReadError("nack")
    if errno in (110, 116):
        return ReadError("timeout")
    return ReadError("bus")
