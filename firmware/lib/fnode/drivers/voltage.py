# A voltage (e.g. a 0-10 V transmitter) through a resistor divider on an ADC pin.
#   volts = gain * (adc volts * divider) + offset          (spec "cal": [gain, offset])
# A reading outside "range" by more than 2 % of the span is an error ("range"), not a number:
# a wire off, a wrong divider or a transmitter fault. Inside that margin it is clamped, so noise
# around 0 V does not raise. A pin voltage outside the ADC's calibrated window is "range" too:
# above it the ADC bends and reads low (the divider is too small for the input), below it every
# input reads the same offset. So the lowest input read is 150 mV x divider.
from fnode.sensor import ADC_HIGH_UV, ADC_LOW_UV, ReadError

_MARGIN = 0.02


class Voltage:
    def __init__(self, adc, divider, lo, hi, gain=1.0, offset=0.0, samples=1):
        self.adc = adc
        self.scale = divider * gain / 1000000  # µV at the pin -> volts at the input
        self.offset = offset
        self.lo = lo
        self.hi = hi
        self.margin = (hi - lo) * _MARGIN
        self.samples = samples

    def read_into(self, out):
        adc = self.adc
        uv = 0
        for _ in range(self.samples):  # averaging: the ESP32 ADC is noisy
            uv += adc.read_uv()
        uv /= self.samples
        if uv > ADC_HIGH_UV or uv < ADC_LOW_UV:
            raise ReadError("range")
        v = uv * self.scale + self.offset
        if v < self.lo - self.margin or v > self.hi + self.margin:
            raise ReadError("range")
        out[0] = self.lo if v < self.lo else self.hi if v > self.hi else v


def make(spec, hw):
    lo, hi = spec["range"]
    gain, offset = spec.get("cal", (1.0, 0.0))
    return Voltage(hw.adc(spec["pin"]), spec["divider"], lo, hi, gain, offset, spec.get("samples", 1))


def readings(spec):
    return (("", spec.get("unit", "V")),)
