# machine.I2C and machine.SoftI2C: transactions go to the emulated devices attached (in sim.json)
# to the pin used as SDA. Errors are the ESP32 port's: no ACK -> OSError(ENODEV).
import time

import simdev
import simworld

_DEFAULT_PINS = {0: (18, 19), 1: (25, 26)}  # ESP32 I2C(id) without pins: (scl, sda)


def _pin_no(p):
    return p if isinstance(p, int) else p.id


class SoftI2C:
    _hard = False

    def __init__(self, scl, sda, *, freq=400000, timeout=50000):
        self.scl = _pin_no(scl)
        self.sda = _pin_no(sda)
        self.freq = freq
        self._gen = -1
        self._map = None

    def init(self, scl=None, sda=None, *, freq=None, timeout=None):
        if scl is not None:
            self.scl = _pin_no(scl)
        if sda is not None:
            self.sda = _pin_no(sda)
            self._gen = -1
        if freq is not None:
            self.freq = freq

    def __repr__(self):
        return "%s(scl=%d, sda=%d, freq=%d)" % (type(self).__name__, self.scl, self.sda, self.freq)

    # -- bus -------------------------------------------------------------------------------------
    def _dev(self, addr):
        simdev.devices()  # applies world changes to the devices
        # A slave stretching the clock for ever: the transaction never ends (the failure the
        # watchdog exists for). Checked here, so every transfer on the bus blocks while it lasts.
        while simworld.get().get("i2c_stall") == self.sda:
            time.sleep_ms(50)
        if self._gen != simdev.generation:
            self._gen = simdev.generation
            self._map = {}
            for d in simdev.on("sda", self.sda):
                a = d.spec.get("address")
                self._map[getattr(d, "address", None) if a is None else a] = d
        dev = self._map.get(addr)
        if dev is None:
            raise OSError(simdev.ENODEV)
        return dev

    def _write(self, addr, data):
        # -> number of data bytes acknowledged
        dev = self._dev(addr)
        try:
            dev.write(bytes(data))
        except simdev.Nack as nack:
            if self._hard or not data:
                raise OSError(simdev.ENODEV)
            return nack.acked
        return len(data)

    def _read(self, addr, n):
        dev = self._dev(addr)
        try:
            data = dev.read(n)
        except simdev.Nack:
            raise OSError(simdev.ENODEV)
        if len(data) != n:
            data = (bytes(data) + bytes(n))[:n]
        return data

    def scan(self):
        found = []
        for addr in range(0x08, 0x78):
            try:
                self._write(addr, b"")
                found.append(addr)
            except OSError:
                pass
        return found

    def writeto(self, addr, buf, stop=True):
        return self._write(addr, buf)

    def writevto(self, addr, vector, stop=True):
        return self._write(addr, b"".join(bytes(b) for b in vector))

    def readfrom(self, addr, nbytes, stop=True):
        return self._read(addr, nbytes)

    def readfrom_into(self, addr, buf, stop=True):
        buf[:] = self._read(addr, len(buf))

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self._write(addr, _mem(memaddr, addrsize) + bytes(buf))

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        self._write(addr, _mem(memaddr, addrsize))
        return self._read(addr, nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        self._write(addr, _mem(memaddr, addrsize))
        buf[:] = self._read(addr, len(buf))


class I2C(SoftI2C):
    _hard = True

    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in _DEFAULT_PINS:
            raise ValueError("I2C(%d) doesn't exist" % id)
        dscl, dsda = _DEFAULT_PINS[id]
        super().__init__(dscl if scl is None else scl, dsda if sda is None else sda, freq=freq)
        self.id = id

    def __repr__(self):
        return "I2C(%d, scl=%d, sda=%d, freq=%d)" % (self.id, self.scl, self.sda, self.freq)


def _mem(memaddr, addrsize):
    n = addrsize // 8
    return bytes((memaddr >> (8 * (n - 1 - i))) & 0xFF for i in range(n))
