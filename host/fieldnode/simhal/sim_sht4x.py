# Emulated Sensirion SHT4x on I2C, at the command level: a one-byte command starts a measurement,
# the answer (T word, CRC, RH word, CRC) can be read once the conversion time has passed; a read
# with no answer ready is NACKed, as the chip does. Raw words are the datasheet's conversion
# (T = -45 + 175 * S / 65535, RH = -6 + 125 * S / 65535) inverted for the values the simulation
# sets. Knobs: temp, hum, corrupt (flip a CRC bit in every answer: True or "temp" the first
# word's, "hum" the second's), absent (NACK everything), conv_ms (the conversion time a read must
# wait for). All of them can come from world.json ("devices": {"room": {"absent": true}}).
import time
from simdev import I2CDevice, Nack

MEASURE = {0xFD: 9, 0xF6: 5, 0xE0: 2}  # command -> conversion time (ms, datasheet max rounded up)
SOFT_RESET = 0x94
READ_SERIAL = 0x89


def crc8(data):
    # CRC-8 as the datasheet states it: polynomial x^8 + x^5 + x^4 + 1, init 0xFF, MSB first.
    crc = 0xFF
    for byte in data:
        for bit in range(7, -1, -1):
            top = ((crc >> 7) ^ (byte >> bit)) & 1
            crc = (crc << 1) & 0xFF
            if top:
                crc ^= 0x31
    return crc


class SHT4x(I2CDevice):
    def __init__(self, address=0x44, temp=22.0, hum=50.0, serial=0x0A1B2C3D):
        self.address = address
        self.temp = temp
        self.hum = hum
        self.serial = serial
        self.corrupt = False
        self.absent = False
        self.conv_ms = None  # None: the command's datasheet time
        self.answer = None
        self.ready_at = 0
        self.commands = 0  # measure commands received (for tests)

    # -- bus side ---------------------------------------------------------------------------
    def write(self, data):
        if self.absent:
            raise Nack()
        if not data:
            return
        cmd = data[0]
        if cmd in MEASURE:
            self.commands += 1
            st = _word((self.temp + 45) / 175)
            srh = _word((self.hum + 6) / 125)
            self._answer(st, srh, MEASURE[cmd] if self.conv_ms is None else self.conv_ms)
        elif cmd == READ_SERIAL:
            self._answer(self.serial >> 16, self.serial & 0xFFFF, 1)
        elif cmd == SOFT_RESET:
            self.answer = None

    def read(self, n):
        if self.absent or self.answer is None or time.ticks_diff(time.ticks_ms(), self.ready_at) < 0:
            raise Nack()  # NACK on the read header: nothing to give
        out = self.answer[:n]
        self.answer = None
        return out + b"\xff" * (n - len(out))

    def _answer(self, w1, w2, ms):
        a = bytearray(6)
        a[0], a[1] = w1 >> 8, w1 & 0xFF
        a[3], a[4] = w2 >> 8, w2 & 0xFF
        a[2] = crc8(a[0:2])
        a[5] = crc8(a[3:5])
        if self.corrupt:  # True or "temp": the first word's CRC; "hum": the second's
            a[5 if self.corrupt == "hum" else 2] ^= 0x01
        self.answer = bytes(a)
        self.ready_at = time.ticks_add(time.ticks_ms(), ms)

    # -- simulation side --------------------------------------------------------------------
    def set(self, temp=None, hum=None, corrupt=None, absent=None, conv_ms=None):
        if temp is not None:
            self.temp = float(temp)
        if hum is not None:
            self.hum = float(hum)
        if corrupt is not None:
            self.corrupt = corrupt
        if absent is not None:
            self.absent = bool(absent)
        if conv_ms is not None:
            self.conv_ms = conv_ms


def make(spec):
    # simdev factory: {"type": "sht4x", "sda": 21, "address": 68, "init": {"temp": 20.0}}
    return SHT4x(address=spec.get("address", 0x44), **(spec.get("init") or {}))


def _word(fraction):
    v = int(fraction * 65535 + 0.5)
    return 0 if v < 0 else 0xFFFF if v > 0xFFFF else v
