# Emulated voltage source behind a resistor divider on an ADC pin: the simulation sets the volts at
# the input (e.g. a 0-10 V transmitter), the pin sees volts / divider (the ADC clips at its own
# full scale, as the real one does). In sim.json: {"type": "voltage", "adc": 4,
# "init": {"divider": 3.0, "volts": 7.5}}; world.json: {"devices": {"supply": {"volts": 9.0}}}.
from simdev import AnalogSource


class VOLTAGE(AnalogSource):
    def __init__(self, divider=1.0, volts=0.0):
        self.divider = divider
        self.input = volts

    def volts(self):
        return self.input / self.divider

    def set(self, volts=None, divider=None):
        if volts is not None:
            self.input = float(volts)
        if divider is not None:
            self.divider = float(divider)
