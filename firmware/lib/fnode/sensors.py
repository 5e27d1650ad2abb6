# Sensors as the board definition declares them. Each driver module in fnode.drivers is imported
# only if the board uses it (a node pays RAM only for its own drivers) and offers
#   readings(spec) -> ((suffix, unit), ...)   what it measures ("" suffix: the sensor's own name)
#   make(spec, hw) -> driver                  may raise OSError / ReadError (chip missing)
#   driver.read_into(values)                  fills values[i] for readings[i]
# A sensor whose chip is missing or failing still reports every period, as error readings.
import time
from fnode import log
from fnode.sensor import ReadError, bus_error


class Hardware:
    # Builds HAL objects (machine.I2C, UART, ADC, Pin) once per bus/pin from the board data. Keeps
    # the buses' part of it only (a sensor attached later needs it), not the whole board.
    def __init__(self, board):
        self.specs = board.get("buses") or {}
        self.buses = {}

    def bus(self, name):
        b = self.buses.get(name)
        if b is None:
            import machine
            spec = self.specs[name]
            kind = spec["type"]
            if kind == "i2c":
                b = machine.I2C(spec.get("id", 0), scl=machine.Pin(spec["scl"]),
                                sda=machine.Pin(spec["sda"]), freq=spec.get("freq", 100000))
            elif kind == "uart":
                # Many Modbus devices default to 8E1: parity "even"/"odd" maps to 0/1.
                parity = spec.get("parity", "none")
                b = machine.UART(spec["id"], baudrate=spec.get("baud", 9600), tx=spec["tx"], rx=spec["rx"],
                                 bits=8, parity=None if parity == "none" else (0 if parity == "even" else 1),
                                 stop=spec.get("stop", 1))
            else:
                b = machine.Pin(spec["pin"])
            self.buses[name] = b
        return b

    def adc(self, pin):
        import machine
        adc = machine.ADC(machine.Pin(pin))
        adc.atten(machine.ADC.ATTN_11DB)
        return adc

    def pin(self, pin, mode=None):
        import machine
        return machine.Pin(pin, machine.Pin.IN if mode is None else mode)


class Sensor:
    def __init__(self, spec, hw):
        self.spec = spec
        self.hw = hw
        self.name = spec["name"]
        self.period_ms = int(spec["period_s"] * 1000)
        self.module = __import__("fnode.drivers." + spec["driver"], None, None, ("make",))
        self.driver = None
        self.error = None  # the last sample's error code, None after a good one
        self.fresh = False  # at least one good sample since boot
        readings = self.module.readings(spec)
        self.values = [0.0] * len(readings)
        # Full reading names, built once: "env.temp", or "loop1" for a single-reading sensor.
        self.names = tuple(self.name + "." + s if s else self.name for s, _ in readings)
        self.units = tuple(u for _, u in readings)
        self._attach()

    def _attach(self):
        try:
            self.driver = self.module.make(self.spec, self.hw)
            self.error = None
        except (OSError, ReadError) as exc:
            self.driver = None
            self.error = bus_error(exc).code
        except Exception as exc:
            self.driver = None
            self.error = self._driver_failed(exc)

    def sample(self):
        # -> None when values hold a fresh reading, else the error code for every reading.
        if self.driver is None:
            self._attach()
            if self.driver is None:
                return self.error
        try:
            self.driver.read_into(self.values)
            self.error = None
            self.fresh = True
        except (OSError, ReadError) as exc:
            self.error = bus_error(exc).code
        except Exception as exc:
            self.error = self._driver_failed(exc)
        return self.error

    def _driver_failed(self, exc):
        # A driver bug, or a device answering what the driver never expected: this sensor's
        # readings carry "driver" and the console says what raised; the other sensors, the uplink
        # and the watchdog's view of this sampler go on (a dead task would reset the node).
        log.error(self.name, "driver failed:", repr(exc))
        return "driver"


def find_reading(sensors, name):
    # (sensor, index) of a reading by its full name, e.g. "env.temp".
    for sensor in sensors:
        for i in range(len(sensor.names)):
            if sensor.names[i] == name:
                return sensor, i
    raise ValueError("board: no reading " + name)


def build(board):
    hw = Hardware(board)
    return hw, [Sensor(spec, hw) for spec in board.get("sensors", ())]


# Seconds from 1970 to the port's epoch: the ESP32 port up to v1.26 counts time() from 2000
# (gmtime(0) is 2000-01-01 there), the unix port and later ESP32 ports from 1970. Found once, not
# per frame: gmtime() builds a tuple.
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0


def unix_time():
    # Seconds since 1970 on every port.
    return time.time() + _EPOCH
