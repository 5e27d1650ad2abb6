# machine.ADC: the volts on a pin come from an analog source device attached to it in sim.json,
# else from world.json "adc", else 0 V. Conversion as an ideal 12-bit ESP32 SAR ADC whose full
# scale depends on the attenuation; read_uv() is the calibrated value, exact to one step.
import simdev
import simnode
import simworld

_FULL_SCALE = (1.1, 1.5, 2.2, 3.9)  # volts at code 4095 for ATTN_0DB, 2_5DB, 6DB, 11DB (TRM)
_VDD = 3.3  # a pin cannot see more than the supply


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
        fs = _FULL_SCALE[self._atten]
        return min(int(self.volts() / fs * 4095 + 0.5), 4095)

    def read(self):
        return self._raw12() >> (12 - self._bits)

    def read_u16(self):
        return (self._raw12() * 65535 + 2047) // 4095

    def read_uv(self):
        return int(self._raw12() * _FULL_SCALE[self._atten] * 1000000 / 4095 + 0.5)
