# Maxim DS18B20 temperature probes on a 1-Wire bus, one or several per sensor entry.
# A conversion takes up to 750 ms at 12 bits: read_into never waits for it. Each call reads the
# scratchpads that the previous call's CONVERT T filled, then starts the next conversion, so a
# reading is one period old. The first call after attaching has nothing to read: "not-ready".
# Probes must be powered from VDD (no parasite power: that needs a strong pull-up during CONVERT).
import time
from micropython import const
from fnode.onewire import OneWire, crc8
from fnode.sensor import ReadError

_FAMILY = const(0x28)
_CONVERT_T = const(0x44)
_READ_SCRATCHPAD = const(0xBE)
_CONVERT_MS = const(750)
_MASKS = (0xFFF8, 0xFFFC, 0xFFFE, 0xFFFF)  # undefined low bits at 9, 10, 11, 12-bit resolution


class DS18B20:
    def __init__(self, ow, roms):
        self.ow = ow
        self.roms = roms
        self.buf = bytearray(9)
        # One probe: address it alone, so probes listed as separate sensors share a bus freely.
        self.convert_rom = roms[0] if len(roms) == 1 else None
        self.started = None  # ticks_ms of the pending CONVERT T
        self._convert()

    def _convert(self):
        self.started = None
        self.ow.select(self.convert_rom)
        self.ow.writebyte(_CONVERT_T)
        self.started = time.ticks_ms()

    def _temperature(self, rom):
        b = self.buf
        self.ow.select(rom)
        self.ow.writebyte(_READ_SCRATCHPAD)
        self.ow.readinto(b)
        if b[8] == 0xFF and b[0] == 0xFF and b[4] == 0xFF:
            raise ReadError("nack")  # nobody drove the bus: this probe is gone
        if crc8(b, 9):
            raise ReadError("crc")
        if b[4] & 0x9F != 0x1F or b[5] != 0xFF:
            raise ReadError("bus")  # CRC-valid but not a scratchpad (e.g. data line stuck low)
        raw = (b[0] | b[1] << 8) & _MASKS[(b[4] >> 5) & 3]
        if raw & 0x8000:
            raw -= 0x10000
        return raw / 16

    def _next(self):
        # The next period's conversion. If it fails, started stays None and the next call says so.
        try:
            self._convert()
        except ReadError:
            pass

    def read_into(self, out):
        if self.started is None:
            self._convert()
            raise ReadError("not-ready")
        if time.ticks_diff(time.ticks_ms(), self.started) < _CONVERT_MS:
            raise ReadError("not-ready")
        roms = self.roms
        try:
            for i in range(len(roms)):
                out[i] = self._temperature(roms[i])
        finally:
            self._next()


def _rom_ids(spec):
    roms = []
    for text in spec.get("roms", ()):
        try:
            rom = bytes(int(text[i:i + 2], 16) for i in range(0, 16, 2))
        except (TypeError, ValueError):
            raise ReadError("config")
        if len(text) != 16 or crc8(rom, 8):
            raise ReadError("config")
        roms.append(rom)
    return roms


def make(spec, hw):
    ow = OneWire(hw.bus(spec["bus"]))
    roms = _rom_ids(spec)
    if not roms:
        # No ids given: bind the probes found now, in ROM id order (stable across restarts).
        roms = sorted(r for r in ow.search() if r[0] == _FAMILY)
        count = spec.get("count", 1)
        if len(roms) < count:
            raise ReadError("nack")
        if len(roms) > count:
            raise ReadError("count")
    return DS18B20(ow, roms)


def readings(spec):
    n = len(spec["roms"]) if spec.get("roms") else spec.get("count", 1)
    if n == 1:
        return (("temp", "Cel"),)
    return tuple(("temp" + str(i + 1), "Cel") for i in range(n))
