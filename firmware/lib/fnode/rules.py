# Edge rules from the board data, evaluated right after each sample so that they work when the
# network does not:
#   "alerts": [{"reading": "env.temp", "above": 50, "hysteresis": 2}]
#       -> event frame "env.temp.high" at once when crossed, "env.temp.clear" when back below
#          50 - 2 ("below" limits give ".low"). Hysteresis stops a noisy value from flapping.
#   "rules":  [{"reading": "env.temp", "above": 30, "hysteresis": 1, "set": "fan", "value": 1.0,
#               "else": 0.2}]
#       -> local automation: the first good sample sets the actuator to "value" or "else" (after
#          boot it sits in its failsafe state), then each crossing does; interlocks and minimum
#          on/off times still apply (through Actuators.command). An action they defer is tried
#          again after every sample of that reading until it is applied, the condition changes
#          again, or a remote command or the failsafe sets that actuator (which then stands until
#          the next crossing). Rules need no network and keep acting while the node is in failsafe.
from fnode import log
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


class Rule:
    def __init__(self, spec, sensor, index, actuator):
        self.sensor = sensor
        self.index = index
        self.th = Threshold(spec)
        self.actuator = actuator
        self.value = spec["value"]
        self.other = spec.get("else")
        self.started = False
        self.want = None  # the value still to apply (deferred by a minimum time or an interlock)
        self.orders = 0  # actuator.orders when want was set


class Rules:
    def __init__(self, board, sensors, actuators):
        self.alerts = []  # (sensor, index, name, Threshold)
        self.rules = []
        self.actuators = actuators
        for spec in board.get("alerts", ()):
            sensor, index = find_reading(sensors, spec["reading"])
            self.alerts.append((sensor, index, spec["reading"], Threshold(spec)))
        for spec in board.get("rules", ()):
            sensor, index = find_reading(sensors, spec["reading"])
            self.rules.append(Rule(spec, sensor, index, actuators.find(spec["set"])))

    def after_sample(self, sensor, now, out):
        # out.emit_event(event_name, reading_name, unit, value) sends an event frame now. An object
        # with the method, not a callable: passing a bound method would allocate it every sample.
        if sensor.error is not None:
            return
        for s, i, name, th in self.alerts:
            if s is sensor:
                change = th.update(sensor.values[i])
                if change is not None:
                    suffix = ".clear" if not change else (".high" if th.above is not None and
                                                          sensor.values[i] > th.above else ".low")
                    out.emit_event(name + suffix, name, sensor.units[i], sensor.values[i])
        for r in self.rules:
            if r.sensor is sensor:
                change = r.th.update(sensor.values[r.index])
                if change is None and not r.started:
                    change = r.th.active
                r.started = True
                if change is not None:
                    r.want = r.value if change else r.other
                    r.orders = r.actuator.orders
                    reason = self._apply(r, now) if r.want is not None else None
                    if reason is not None:  # said once; retried quietly after every sample
                        log.warn("rule:", r.actuator.name, "=", r.want, "waits:", reason)
                elif r.want is not None:
                    self._apply(r, now)

    def _apply(self, r, now):
        # -> None when done with r.want, else the reason it must wait.
        if r.actuator.orders != r.orders:  # a command or the failsafe set this actuator since the crossing
            r.want = None
            return None
        reason = self.actuators.command(((r.actuator.name, r.want),), now, True)
        if reason is None:
            r.want = None
        return reason
