# Actuators from the board definition: relays (GPIO) and PWM outputs, each with a failsafe state,
# minimum on/off times and the interlocks that may forbid or force a state. A node boots with
# every actuator in its failsafe state and returns to it when the gateway has been silent too long
# (app.Node.failsafe_guard owns failsafe_active). Safety beats timing: interlocks and the failsafe
# write directly, whatever the minimum on/off times say.
import machine
import time
from fnode.sensors import find_reading
from fnode.stamp import age


class Actuator:
    def __init__(self, spec):
        self.name = spec["name"]
        self.pwm_out = spec["driver"] == "pwm"
        self.failsafe = spec["failsafe"]
        self.min_on_ms = int(spec.get("min_on_s", 0) * 1000)
        self.min_off_ms = int(spec.get("min_off_s", 0) * 1000)
        pin = machine.Pin(spec["pin"], machine.Pin.OUT)
        if self.pwm_out:
            self.out = machine.PWM(pin, freq=spec.get("freq", 1000), duty_u16=0)
        else:
            self.out = pin
        self.state = None
        self.orders = 0  # remote commands and failsafes applied here: a rule's deferred action yields to them
        # Booting into the failsafe state counts as a change: after a reset the node cannot know how
        # long the load has been off (or on), so minimum on/off times run from boot and a reboot
        # loop cannot short-cycle a compressor.
        self.write(self.failsafe)

    def write(self, value):
        if self.pwm_out:
            self.out.duty_u16(int(value * 65535))
        else:
            self.out.value(1 if value else 0)
        if value != self.state:
            self.state = value
            self.changed = time.ticks_ms()

    def check(self, value, now):
        # Why value may not be applied now, or None.
        if self.pwm_out:
            if type(value) not in (int, float) or type(value) is bool or not 0 <= value <= 1:
                return "bad-value"
            return None
        if type(value) is not bool:
            return "bad-value"
        if value == self.state:
            return None
        held = time.ticks_diff(now, self.changed)
        if value and held < self.min_off_ms:
            return "min-off-time"
        if not value and held < self.min_on_ms:
            return "min-on-time"
        return None

    def active(self):
        return bool(self.state)


class Interlock:
    def __init__(self, spec, actuator, sensor, index):
        self.actuator = actuator
        self.sensor = sensor
        self.index = index
        self.above = spec.get("above")
        self.below = spec.get("below")
        self.force = spec.get("force", actuator.failsafe)

    def tripped(self):
        # A reading that failed counts as tripped: no reading, no permission.
        if self.sensor.error is not None or not self.sensor.fresh:
            return True
        v = self.sensor.values[self.index]
        return (self.above is not None and v > self.above) or (self.below is not None and v < self.below)

    def forbids(self, value):
        # An interlock forbids any state other than its forced one while tripped.
        return value != self.force and self.tripped()


class Actuators:
    def __init__(self, board, sensors):
        self.items = [Actuator(spec) for spec in board.get("actuators", ())]
        self.interlocks = []
        for spec in board.get("interlocks", ()):
            sensor, index = find_reading(sensors, spec["reading"])
            self.interlocks.append(Interlock(spec, self.find(spec["actuator"]), sensor, index))
        self.failsafe_active = False

    def find(self, name):
        for a in self.items:
            if a.name == name:
                return a
        return None

    def command(self, items, now, local=False):
        # All or nothing: every (name, value) is checked before any output changes.
        # -> None when applied, else the reason it was refused. local: a rule of this node, not a
        # remote order; neither ends the failsafe state (only the gateway answering again does).
        for name, value in items:
            act = self.find(name)
            if act is None:
                return "unknown-actuator"
            reason = act.check(value, now)
            if reason is not None:
                return reason
            for lock in self.interlocks:
                if lock.actuator is act and lock.forbids(value):
                    return "interlock"
        for name, value in items:
            act = self.find(name)
            act.write(value)
            if not local:
                act.orders += 1
        return None

    def enforce_interlock(self):
        # Forces one actuator whose interlock tripped to the interlock's state. -> its name (for
        # an event frame), or None when none needed it: call until None. Checked after every
        # sample, so it allocates nothing when there is nothing to force.
        for lock in self.interlocks:
            if lock.tripped() and lock.actuator.state != lock.force:
                lock.actuator.write(lock.force)
                return lock.actuator.name
        return None

    def age(self, now):
        # Keeps every change stamp readable across the tick wrap (fnode.stamp).
        for a in self.items:
            a.changed = age(a.changed, now)

    def go_failsafe(self):
        for a in self.items:
            a.write(a.failsafe)
            a.orders += 1
        self.failsafe_active = True
