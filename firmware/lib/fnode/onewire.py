# 1-Wire bus master: ROM commands, the search ROM algorithm and the Maxim CRC-8, once for every
# 1-Wire driver. The time slots come from the port's `_onewire` module (reset, bit and byte slots,
# timed in C with interrupts off on the ESP32); on the unix port the simulated HAL provides a
# `_onewire` twin that plays the same slots against emulated devices. Nothing here is timed in
# Python: a bit-banged slot from bytecode cannot hold 1-Wire's microsecond windows.
import _onewire as _ow
from micropython import const
from fnode.sensor import ReadError

_SEARCH_ROM = const(0xF0)
_MATCH_ROM = const(0x55)
_SKIP_ROM = const(0xCC)


def crc8(data, n):
    # Dallas/Maxim CRC-8 (x^8 + x^5 + x^4 + 1, LSB first = 0x8C reflected, init 0) of data[:n].
    # Over n bytes followed by their CRC the result is 0.
    crc = 0
    for i in range(n):
        b = data[i]
        for _ in range(8):
            if (crc ^ b) & 1:
                crc = (crc >> 1) ^ 0x8C
            else:
                crc >>= 1
            b >>= 1
    return crc


class OneWire:
    def __init__(self, pin):
        pin.init(pin.OPEN_DRAIN, pin.PULL_UP)  # idle high through the pull-up; slots pull low
        self.pin = pin

    def reset(self):
        # True when at least one device answered with a presence pulse.
        return _ow.reset(self.pin)

    def readbit(self):
        return _ow.readbit(self.pin)

    def writebyte(self, value):
        _ow.writebyte(self.pin, value)

    def write(self, buf):
        pin = self.pin
        for b in buf:
            _ow.writebyte(pin, b)

    def readinto(self, buf):
        pin = self.pin
        for i in range(len(buf)):
            buf[i] = _ow.readbyte(pin)

    def select(self, rom):
        # Reset, then address one device (MATCH ROM) or, with rom None, every device (SKIP ROM).
        if not _ow.reset(self.pin):
            raise ReadError("nack")
        if rom is None:
            _ow.writebyte(self.pin, _SKIP_ROM)
        else:
            _ow.writebyte(self.pin, _MATCH_ROM)
            self.write(rom)

    def search(self):
        # Every device's 8-byte ROM id (Maxim AN187 search: each pass follows the bus's answers
        # and, at the deepest unexplored bit where devices disagree, takes the 1 branch).
        # Allocates: call it when attaching, not per reading.
        pin = self.pin
        found = []
        rom = bytearray(8)
        last_fork = -1  # bit index where the previous pass took the 0 branch of a fork
        while True:
            if not _ow.reset(pin):
                return found
            _ow.writebyte(pin, _SEARCH_ROM)
            fork = -1
            for i in range(64):
                bit = _ow.readbit(pin)
                comp = _ow.readbit(pin)
                if bit and comp:  # nobody answered this bit: the bus changed under the search
                    raise ReadError("bus")
                if bit == comp:  # devices differ here
                    if i < last_fork:
                        bit = (rom[i >> 3] >> (i & 7)) & 1
                    else:
                        bit = 1 if i == last_fork else 0
                    if not bit:
                        fork = i
                if bit:
                    rom[i >> 3] |= 1 << (i & 7)
                else:
                    rom[i >> 3] &= ~(1 << (i & 7))
                _ow.writebit(pin, bit)
            if crc8(rom, 8):
                raise ReadError("crc")
            found.append(bytes(rom))
            last_fork = fork
            if fork < 0:
                return found
