# Emulated 4-20 mA transmitter into a shunt on an ADC pin: the simulation sets the loop current
# (or, with `range`, the measured value, mapped 4-20 mA onto it); the pin sees mA * shunt.
# A broken loop is ma below 3.8 (e.g. 0). In sim.json: {"type": "current_loop", "adc": 34,
# "init": {"shunt_ohm": 120, "ma": 12.0}}; world.json: {"devices": {"loop1": {"ma": 2.0}}}.
from simdev import AnalogSource


class CURRENT_LOOP(AnalogSource):
    def __init__(self, shunt_ohm=120.0, ma=4.0, range=None):
        self.shunt = shunt_ohm
        self.ma = ma
        self.range = range

    def volts(self):
        return self.ma * self.shunt / 1000

    def set(self, ma=None, value=None):
        if ma is not None:
            self.ma = float(ma)
        if value is not None and self.range:
            lo, hi = self.range
            self.ma = 4.0 + 16.0 * (float(value) - lo) / (hi - lo)
