# A 24C02 serial EEPROM (256 bytes, 8-byte pages). Byte and page writes: the first byte is the
# word address, data wraps within its page as on the chip. A write cycle then takes WRITE_MS,
# during which the chip does not acknowledge its address (drivers poll for the ACK). Reads
# continue from the internal address counter, wrapping at the end of the array.
#   sim.json: {"name": "mem", "type": "at24c02", "sda": 21, "address": 80}
import time
import simdev

SIZE = 256
PAGE = 8
WRITE_MS = 5


class AT24C02(simdev.I2CDevice):
    def __init__(self, address=0x50, fill=0xFF):
        self.address = address
        self.mem = bytearray(bytes([fill]) * SIZE)
        self.addr = 0
        self.busy_until = None

    def _busy(self):
        if self.busy_until is None:
            return False
        if time.ticks_diff(self.busy_until, time.ticks_ms()) > 0:
            return True
        self.busy_until = None
        return False

    def write(self, data):
        if self._busy():
            raise simdev.Nack(0)
        if not data:
            return
        self.addr = data[0] % SIZE
        payload = data[1:]
        if not payload:
            return  # a "dummy write" that only sets the address before a read
        page = self.addr - self.addr % PAGE
        for b in payload:
            self.mem[page + self.addr % PAGE] = b
            self.addr = page + (self.addr + 1) % PAGE
        self.busy_until = time.ticks_add(time.ticks_ms(), WRITE_MS)

    def read(self, n):
        if self._busy():
            raise simdev.Nack(0)
        out = bytearray(n)
        for i in range(n):
            out[i] = self.mem[self.addr]
            self.addr = (self.addr + 1) % SIZE
        return bytes(out)
