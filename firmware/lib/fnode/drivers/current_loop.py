# 4-20 mA current loop read as the voltage across a shunt on an ADC pin.
# Below 3.8 mA the loop is broken (NAMUR NE 43), not reading zero; above 20.5 mA it is over range.
# A pin voltage outside the ADC's calibrated window is not a current the node can know: above it
# "range" (the ADC bends and reads low: a shunt above 120 ohm puts 20 mA there), below it a broken
# loop when the window's floor is below 3.8 mA for this shunt (it is for 40-120 ohm), else "range".
from fnode.sensor import ADC_HIGH_UV, ADC_LOW_UV, ReadError

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
        self.floor = "broken-loop" if self.to_ma(ADC_LOW_UV) < BROKEN_MA else "range"

    def to_ma(self, uv):
        return uv / self.shunt / 1000 * self.gain + self.offset

    def read_into(self, out):
        uv = self.adc.read_uv()
        if uv > ADC_HIGH_UV:
            raise ReadError("range")
        if uv < ADC_LOW_UV:
            raise ReadError(self.floor)
        ma = self.to_ma(uv)
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
