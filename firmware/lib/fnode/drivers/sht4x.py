# Sensirion SHT40/41/45: temperature and humidity over I2C.
# A measurement is a command, then ~8.3 ms of conversion (high repeatability), then a 6-byte
# answer: T word, CRC, RH word, CRC. read_into reads the answer to the previous call's command
# and sends the next one, so the loop never waits and a reading is one period old. Only when no
# command is pending (just attached, or the last one failed) does it send one and wait the
# conversion out: at most 10 ms, once.
import time
from micropython import const
from fnode.sensor import ReadError, bus_error

_CONVERT_MS = const(10)  # datasheet max 8.3 ms for 0xFD, plus margin
_CMD = b"\xfd"  # measure T and RH, high repeatability


def crc8(buf, start):
    # Sensirion CRC-8: polynomial 0x31 (x^8 + x^5 + x^4 + 1), init 0xFF, MSB first, over 2 bytes.
    crc = 0xFF
    for i in range(start, start + 2):
        crc ^= buf[i]
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class SHT4x:
    def __init__(self, i2c, address=0x44):
        self.i2c = i2c
        self.address = address
        self.buf = bytearray(6)
        self.sent = None  # ticks_ms of the pending measure command
        self._trigger()

    def _trigger(self):
        self.sent = None
        try:
            self.i2c.writeto(self.address, _CMD)
        except OSError as exc:
            raise bus_error(exc)
        self.sent = time.ticks_ms()

    def _next(self):
        # The next period's command. If it fails, sent stays None and the next call reports it.
        try:
            self._trigger()
        except ReadError:
            pass

    def read_into(self, out):
        # out[0..1] = temperature (°C), relative humidity (%RH)
        if self.sent is None:
            self._trigger()
        wait = _CONVERT_MS - time.ticks_diff(time.ticks_ms(), self.sent)
        if wait > 0:
            time.sleep_ms(wait)
        b = self.buf
        try:
            self.i2c.readfrom_into(self.address, b)
        except OSError as exc:
            self._next()
            raise bus_error(exc)
        self._next()
        if crc8(b, 0) != b[2] or crc8(b, 3) != b[5]:
            raise ReadError("crc")
        out[0] = -45 + 175 * (b[0] << 8 | b[1]) / 65535
        rh = -6 + 125 * (b[3] << 8 | b[4]) / 65535
        out[1] = 0.0 if rh < 0 else 100.0 if rh > 100 else rh  # the datasheet's crop to 0..100


def make(spec, hw):
    return SHT4x(hw.bus(spec["bus"]), spec.get("address", 0x44))


def readings(spec):
    return (("temp", "Cel"), ("hum", "%RH"))
