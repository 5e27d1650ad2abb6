# Emulated pulse source on an input pin (a flow meter's reed or open-collector output): pulses per
# second, or with `per_pulse` the flow in the sensor's unit per second. In sim.json:
# {"type": "pulse", "pulse": 35, "init": {"rate_hz": 10}}; world.json:
# {"devices": {"flow": {"rate_hz": 25}}}. The HAL asks rate_hz() at every 10 ms tick (simtick, in
# the main thread) and delivers the edges to the pin's IRQ handler.
from simdev import PulseSource


class PULSE(PulseSource):
    def __init__(self, rate_hz=0.0, per_pulse=None):
        self.rate = rate_hz
        self.per_pulse = per_pulse

    def rate_hz(self):
        return self.rate

    def set(self, rate_hz=None, flow=None):
        if rate_hz is not None:
            self.rate = float(rate_hz)
        if flow is not None and self.per_pulse:
            self.rate = float(flow) / self.per_pulse
