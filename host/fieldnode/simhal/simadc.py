# machine.ADC: the volts on a pin come from an analog source device attached to it in sim.json,
# else from world.json "adc", else 0 V. Conversion as the ESP32's SAR ADC, which is linear and
# calibrated only inside a window per attenuation (docs/esp32/quickref.rst, v1.24-v1.26: 11 dB
# 150-2450 mV); outside it the board is wrong in the ways the port's documentation says, and so
# is this model:
# - at or below about 100 mV (50 mV at 0/2.5 dB) the code is 0, and read_uv() of an input tied to
#   ground reads above 0 (the calibration's offset);
# - above the window the code bends (its slope falls linearly to 0) and saturates at 4095 at
#   `sat`, so read_uv() reads low there, by up to a few hundred mV, and never more than
#   (hi + sat) / 2.
# read_uv() is the calibrated (linear) inverse of the code, in whole millivolts as on the port;
# inside the window it is right to about 1 mV.
import simdev
import simnode
import simworld

# mV per attenuation (ATTN_0DB, 2_5DB, 6DB, 11DB): code-0 edge, calibrated window lo-hi, saturation
_CURVES = ((50, 100, 950, 1100), (50, 100, 1250, 1450), (100, 150, 1750, 2100), (100, 150, 2450, 3100))
_VDD = 3.3  # a pin cannot see more than the supply


def _slope(curve):
    dead, _, hi, sat = curve
    return 4095 / (hi - dead + (sat - hi) / 2)  # codes per mV, chosen so the bend ends at 4095


def code_of(mv, atten):
    # The 12-bit code the converter gives for mv at the pin.
    curve = _CURVES[atten]
    dead, _, hi, sat = curve
    k = _slope(curve)
    if mv <= dead:
        return 0
    if mv <= hi:
        return min(int((mv - dead) * k + 0.5), 4095)
    if mv >= sat:
        return 4095
    x = mv - hi
    return min(int((hi - dead) * k + k * x - k * x * x / (2 * (sat - hi)) + 0.5), 4095)


def uv_of(code, atten):
    # What the calibration makes of a code: the linear law, in whole millivolts.
    curve = _CURVES[atten]
    return int(curve[0] + code / _slope(curve) + 0.5) * 1000


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12

    def __init__(self, pin, *, atten=None):
        self.pin = pin if isinstance(pin, int) else pin.id
        pins = simnode.chip_pins()
        if pins and self.pin not in pins.get("adc", ()):
            raise ValueError("invalid pin")
        self._atten = ADC.ATTN_0DB if atten is None else atten
        self._bits = 12

    def __repr__(self):
        return "ADC(Pin(%d), atten=%d)" % (self.pin, self._atten)

    def init(self, *, atten=None):
        if atten is not None:
            self._atten = atten

    def atten(self, atten):
        self._atten = atten

    def width(self, bits):
        self._bits = bits

    def block(self):
        return None

    def volts(self):
        # Simulation side: what the pin sees before conversion.
        found = simdev.on("adc", self.pin)
        if found:
            v = found[0].volts()
        else:
            v = simworld.section("adc").get(str(self.pin), 0.0)
        return min(max(float(v), 0.0), _VDD)

    def _raw12(self):
        return code_of(self.volts() * 1000, self._atten)

    def read(self):
        return self._raw12() >> (12 - self._bits)

    def read_u16(self):
        return (self._raw12() * 65535 + 2047) // 4095

    def read_uv(self):
        return uv_of(self._raw12(), self._atten)
