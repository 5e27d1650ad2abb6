"""The ADC's calibrated window, which both analog drivers (voltage, current_loop) must fit in.

The firmware reads at 11 dB, calibrated from 150 to 2450 mV at the pin on the ESP32 (MicroPython
docs/esp32/quickref.rst); outside it readings bend or stick, and the drivers report `range`. The
S3 and C3 are calibrated over wider windows: the ESP32's holds for all three.
"""
from .schema import Field, pair, span

ADC_CAL_MV = (150, 2450)

# The fields both analog drivers take: the reading's scale and its calibration.
RANGE = Field("range", "[low, high] with low < high", span)
CAL = Field("cal", "[gain, offset]", pair, default=[1.0, 0.0])
