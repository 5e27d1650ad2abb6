"""The ADC's calibrated window, which both analog drivers (voltage, current_loop) must fit in.

The firmware reads at 11 dB, calibrated from 150 to 2450 mV at the pin on the ESP32 (MicroPython
docs/esp32/quickref.rst); outside it readings bend or stick, and the drivers report `range`. The
S3 and C3 are calibrated over wider windows: the ESP32's holds for all three.
"""
ADC_CAL_MV = (150, 2450)
