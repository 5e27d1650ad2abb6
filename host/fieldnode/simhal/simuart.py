# machine.UART: what the node transmits goes to the UART device attached to that UART id in
# sim.json ({"type": "modbus", "uart": 2, ...}); what the device sends back is read here. With no
# device the line is open: writes vanish, reads time out. Not pollable (select/asyncio streams):
# the unix port has no io.IOBase, so a driver waits with asyncio.sleep_ms() and checks any().
import time
import simdev


class UART:
    INV_TX = 1
    INV_RX = 2
    INV_RTS = 4
    INV_CTS = 8
    RTS = 1
    CTS = 2

    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, **kwargs):
        if id not in (0, 1, 2):
            raise ValueError("UART(%d) does not exist" % id)
        self.id = id
        self._rx = b""
        self._dev = None
        self._gen = -1
        self.baudrate = 115200
        self.timeout = 0
        self.timeout_char = 0
        self.init(baudrate, bits, parity, stop, **kwargs)

    def init(self, baudrate=None, bits=8, parity=None, stop=1, *, tx=None, rx=None, rts=None,
             cts=None, txbuf=None, rxbuf=None, timeout=None, timeout_char=None, invert=None,
             flow=None):
        if baudrate is not None:
            self.baudrate = baudrate
        self.bits, self.parity, self.stop = bits, parity, stop
        self.tx, self.rx = tx, rx
        if timeout is not None:
            self.timeout = timeout
        if timeout_char is not None:
            self.timeout_char = timeout_char

    def deinit(self):
        self._rx = b""

    def __repr__(self):
        return "UART(%d, baudrate=%d, bits=%d, parity=%s, stop=%d, timeout=%d)" % (
            self.id, self.baudrate, self.bits, self.parity, self.stop, self.timeout)

    def _device(self):
        simdev.devices()  # applies world changes
        if self._gen != simdev.generation:
            self._gen = simdev.generation
            found = simdev.on("uart", self.id)
            self._dev = found[0] if found else None
        return self._dev

    def _pull(self):
        dev = self._device()
        if dev is not None:
            data = dev.read(256)
            if data:
                self._rx += bytes(data)
        return len(self._rx)

    def _wait(self, n):
        # Until n bytes are buffered or the timeout passes; -> bytes buffered.
        have = self._pull()
        if have >= n or self.timeout <= 0:
            return have
        start = time.ticks_ms()
        while have < n and time.ticks_diff(time.ticks_ms(), start) < self.timeout:
            time.sleep_ms(1)
            have = self._pull()
        return have

    def any(self):
        return self._pull()

    def read(self, nbytes=None):
        have = self._wait(1 if nbytes is None else nbytes)
        if not have:
            return None
        n = have if nbytes is None else min(nbytes, have)
        data, self._rx = self._rx[:n], self._rx[n:]
        return data

    def readinto(self, buf, nbytes=None):
        data = self.read(len(buf) if nbytes is None else nbytes)
        if data is None:
            return None
        buf[:len(data)] = data
        return len(data)

    def readline(self):
        start = time.ticks_ms()
        while True:
            self._pull()
            i = self._rx.find(b"\n")
            if i >= 0:
                line, self._rx = self._rx[:i + 1], self._rx[i + 1:]
                return line
            if time.ticks_diff(time.ticks_ms(), start) >= self.timeout:
                break
            time.sleep_ms(1)
        return self.read() if self._rx else None

    def write(self, buf):
        dev = self._device()
        if dev is not None:
            dev.write(bytes(buf))
        return len(buf)

    def flush(self):
        pass

    def txdone(self):
        return True

    def sendbreak(self):
        pass
