# machine.PWM: nothing oscillates; the channel's settings are the state the host observes
# (outputs.json "pwm": {"25": {"freq": 25000, "duty_u16": 32768, "invert": false}}).
import simnode

_MAX_FREQ = 40000000


class PWM:
    def __init__(self, dest, *, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=False):
        from machine import Pin
        self.pin = dest if isinstance(dest, Pin) else Pin(dest)
        self.pin.init(Pin.OUT)
        self._freq = 5000
        self._duty = 32768
        self._invert = False
        self._active = True
        self.init(freq=freq, duty=duty, duty_u16=duty_u16, duty_ns=duty_ns, invert=invert)

    def __repr__(self):
        return "PWM(Pin(%d), freq=%d, duty_u16=%d)" % (self.pin.id, self._freq, self._duty)

    def init(self, *, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=None):
        if freq is not None:
            if not 0 < freq <= _MAX_FREQ:
                raise ValueError("frequency must be from 1Hz to 40MHz")
            self._freq = freq
        if duty is not None:
            self._duty = min(max(duty, 0), 1023) * 65535 // 1023
        if duty_u16 is not None:
            self._duty = min(max(duty_u16, 0), 65535)
        if duty_ns is not None:
            self._duty = min(int(duty_ns * self._freq * 65535 // 1000000000), 65535)
        if invert is not None:
            self._invert = bool(invert)
        self._active = True
        self._publish()

    def freq(self, value=None):
        if value is None:
            return self._freq
        self.init(freq=value)

    def duty(self, value=None):
        if value is None:
            return self._duty * 1023 // 65535
        self.init(duty=value)

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        self.init(duty_u16=value)

    def duty_ns(self, value=None):
        if value is None:
            return self._duty * 1000000000 // (65535 * self._freq)
        self.init(duty_ns=value)

    def deinit(self):
        self._active = False
        simnode.publish("pwm", self.pin.id, None)

    def _publish(self):
        simnode.publish("pwm", self.pin.id, {"freq": self._freq, "duty_u16": self._duty,
                                              "invert": self._invert})
