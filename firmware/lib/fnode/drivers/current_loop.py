# 4-20 mA current loop read as the voltage across a shunt on an ADC pin.
# Below 3.8 mA the loop is broken (NAMUR NE 43), not reading zero; above 20.5 mA it is over range.
from fnode.sensor import ReadError

BROKEN_MA = 3.8
OVER_MA = 20.5


class CurrentLoop:
    def __init__(self, adc, shunt_ohm, lo, hi, gain=1.0, offset_ma=0.0):
        self.adc = adc
        self.shunt = shunt_ohm
        self.lo = lo
        self.span = hi - lo
        self.gain = gain  # per-channel calibration: measured = gain * raw + offset
        self.offset = offset_ma

    def milliamps(self):
        return self.adc.read_uv() / self.shunt / 1000 * self.gain + self.offset

    def read_into(self, out):
        ma = self.milliamps()
        if ma < BROKEN_MA:
            raise ReadError("broken-loop")
        if ma > OVER_MA:
            raise ReadError("range")
        if ma < 4.0:
            ma = 4.0
        if ma > 20.0:
            ma = 20.0
        out[0] = self.lo + (ma - 4.0) / 16.0 * self.span


def make(spec, hw):
    lo, hi = spec["range"]
    gain, offset = spec.get("cal", (1.0, 0.0))
    return CurrentLoop(hw.adc(spec["pin"]), spec["shunt_ohm"], lo, hi, gain, offset)


def readings(spec):
    return (("", spec.get("unit", "")),)
