# Emulated devices: the interfaces a device offers to the simulated buses, and the registry that
# builds the devices listed in sim.json. A device type "foo" lives in its own module sim_foo.py
# on the path and is imported only when a node lists one, so adding a device never edits this file.
#
# A module sim_foo.py provides either make(spec) -> device, or a class FOO (the type in upper
# case) that is called as FOO(address=spec["address"], **spec["init"]) (address only for I2C).
# spec is the device's entry in sim.json:
#   {"name": "env", "type": "bme280", "sda": 21, "address": 118, "init": {"temp": 20.0}}
#   {"name": "meter", "type": "modbus", "uart": 2, "init": {...}}
#   {"name": "tank", "type": "...", "adc": 34}        an analog source on an ADC pin
#   {"name": "flow", "type": "...", "pulse": 35}      a pulse source on an input pin
# An I2C device hangs on the bus whose SDA is that pin (machine.I2C or SoftI2C alike); a UART
# device on that UART id. world.json "devices": {"env": {...}} is passed to device.set(**values)
# whenever the world changes; a device without set() ignores it.

ENODEV = 19  # what the ESP32 port raises for a NACK


class Nack(Exception):
    # Raised by a device's write() to not acknowledge. acked = data bytes taken before the NACK
    # (SoftI2C reports it; the hardware I2C driver only says the transfer failed).
    def __init__(self, acked=0):
        super().__init__(acked)
        self.acked = acked


class I2CDevice:
    # An I2C target. Register-pointer semantics live in the device: writeto_mem(a, reg, b"..")
    # arrives as write(bytes([reg]) + data), readfrom_mem(a, reg, n) as write(bytes([reg]))
    # then read(n). write(b"") is an address-only probe (scan). The address comes from the
    # device's spec in sim.json, else from its address attribute.
    def write(self, data):
        pass

    def read(self, n):
        return bytes(n)


class UARTDevice:
    # The far end of a UART: write() gets what the node transmits; read(n) returns up to n bytes
    # the device has sent so far (b"" if none). Timing (a Modbus reply after a turnaround delay)
    # is the device's business: it may hold bytes back until time.ticks_ms() says they arrived.
    def write(self, data):
        pass

    def read(self, n):
        return b""

    def any(self):
        return 0


class AnalogSource:
    # What an ADC pin sees, in volts.
    def volts(self):
        return 0.0


class PulseSource:
    # Pulses per second arriving on an input pin (each pulse: a rising then a falling edge).
    # Called at every 10 ms tick (simtick): keep it a plain read of the current rate.
    def rate_hz(self):
        return 0.0


_devices = None  # name -> device, built on first use
_world_version = -1
generation = 0  # bumped when the set of devices changes: buses rebuild their address maps


def _build():
    global _devices, generation
    import simnode
    generation += 1
    built = {}  # published when complete: a world update must not reach only half the devices
    for spec in simnode.config().get("devices", ()):
        dev = make(spec)
        dev.name = spec.get("name") or spec["type"]
        dev.spec = spec
        built[dev.name] = dev
    _devices = built


def make(spec):
    kind = spec["type"]
    mod = __import__("sim_" + kind)
    factory = getattr(mod, "make", None)
    if factory is not None:
        return factory(spec)
    cls = getattr(mod, kind.upper())
    kwargs = dict(spec.get("init") or {})
    if "address" in spec:
        kwargs["address"] = spec["address"]
    return cls(**kwargs)


def devices():
    # All devices, with the latest world values applied.
    global _world_version
    if _devices is None:
        _build()
    import simworld
    world = simworld.get()
    if simworld.version != _world_version:
        _world_version = simworld.version
        values = world.get("devices") or {}
        for name in values:
            dev = _devices.get(name)
            if dev is not None and hasattr(dev, "set"):
                try:
                    dev.set(**values[name])
                except (TypeError, ValueError) as exc:
                    # A mistake in world.json is the simulation's, not the node's: said once per
                    # change of the file, and the device keeps its values, where raising would
                    # fail every driver that touches the bus as a sensor failure.
                    print("sim: world.json devices." + name + ":", repr(exc))
    return _devices


def attach(name, dev, **where):
    # Adds a device at run time (a test inside the node): attach("eeprom", Dev(), sda=21).
    global generation
    if _devices is None:
        _build()
    generation += 1
    dev.name = name
    dev.spec = where
    _devices[name] = dev
    return dev


def on(key, value):
    # The devices whose spec says key == value: on("sda", 21), on("uart", 2), on("adc", 34).
    return [d for d in devices().values() if d.spec.get(key) == value]
