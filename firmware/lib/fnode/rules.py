# Edge rules from the board data, evaluated right after each sample so that they work when the
# network does not:
#   "alerts": [{"reading": "env.temp", "above": 50, "hysteresis": 2}]
#       -> event frame "env.temp.high" at once when crossed, "env.temp.clear" when back below
#          50 - 2 ("below" limits give ".low"). Hysteresis stops a noisy value from flapping.
#   "rules":  [{"reading": "env.temp", "above": 30, "hysteresis": 1, "set": "fan", "value": 1.0,
#               "else": 0.2}]
#       -> local automation: set the actuator when the condition starts, the "else" value when it
#          ends; interlocks and minimum on/off times still apply (through Actuators.command).
from fnode.sensors import find_reading


class Threshold:
    def __init__(self, spec):
        self.above = spec.get("above")
        self.below = spec.get("below")
        self.hyst = spec.get("hysteresis", 0)
        self.active = False

    def update(self, v):
        # -> True when the condition starts, False when it ends, None when nothing changed.
        if not self.active:
            if (self.above is not None and v > self.above) or (self.below is not None and v < self.below):
                self.active = True
                return True
        else:
            back = True
            if self.above is not None and v > self.above - self.hyst:
                back = False
            if self.below is not None and v < self.below + self.hyst:
                back = False
            if back:
                self.active = False
                return False
        return None


class Rules:
    def __init__(self, board, sensors, actuators):
        self.alerts = []  # (sensor, index, name, Threshold)
        self.rules = []  # (sensor, index, Threshold, actuator name, value, else value)
        self.actuators = actuators
        for spec in board.get("alerts", ()):
            sensor, index = find_reading(sensors, spec["reading"])
            self.alerts.append((sensor, index, spec["reading"], Threshold(spec)))
        for spec in board.get("rules", ()):
            sensor, index = find_reading(sensors, spec["reading"])
            self.rules.append((sensor, index, Threshold(spec), spec["set"], spec["value"], spec.get("else")))

    def after_sample(self, sensor, now, emit):
        # emit(event_name, reading_name, unit, value) sends an event frame now.
        if sensor.error is not None:
            return
        for s, i, name, th in self.alerts:
            if s is sensor:
                change = th.update(sensor.values[i])
                if change is not None:
                    suffix = ".clear" if not change else (".high" if th.above is not None and
                                                          sensor.values[i] > th.above else ".low")
                    emit(name + suffix, name, sensor.units[i], sensor.values[i])
        if self.actuators is None:
            return
        for s, i, th, act, value, other in self.rules:
            if s is sensor:
                change = th.update(sensor.values[i])
                if change is True:
                    self.actuators.command(((act, value),), now)
                elif change is False and other is not None:
                    self.actuators.command(((act, other),), now)
