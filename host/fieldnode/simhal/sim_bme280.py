# Emulated Bosch BME280 on I2C, at the register level: chip id, calibration NVM, ctrl registers,
# and data registers holding the raw ADC words that the chip would produce for the temperature,
# humidity and pressure the simulation asks for. The raw words are found by inverting the
# datasheet's floating-point compensation (§8.1), which is independent of the integer version
# the firmware driver uses: the test checks one reading of the datasheet against the other.
import struct

from simdev import Nack

# Calibration as stored in a real part's NVM (the datasheet's worked example for T and P).
_T = (27504, 26435, -1000)
_P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
_H = (75, 362, 0, 313, 50, 30)


class BME280:
    def __init__(self, address=0x76, temp=21.0, hum=45.0, press=101325.0):
        self.address = address
        self.regs = bytearray(256)
        self.ptr = 0
        self.regs[0xD0] = 0x60
        struct.pack_into("<HhhHhhhhhhhh", self.regs, 0x88, *(_T + _P))
        self.regs[0xA1] = _H[0]
        h2, h3, h4, h5, h6 = _H[1:]
        struct.pack_into("<hB", self.regs, 0xE1, h2, h3)
        self.regs[0xE4] = (h4 >> 4) & 0xFF
        self.regs[0xE5] = (h4 & 0x0F) | ((h5 & 0x0F) << 4)
        self.regs[0xE6] = (h5 >> 4) & 0xFF
        self.regs[0xE7] = h6 & 0xFF
        self.temp, self.hum, self.press = temp, hum, press
        self.absent = False  # fault knob: NACK every transfer (unplugged, dead chip, wrong address)
        self._load_skipped()

    # -- bus side ---------------------------------------------------------------------------
    def write(self, data):
        if self.absent:
            raise Nack()
        if not data:
            return
        self.ptr = data[0]
        for b in data[1:]:
            self._write_reg(self.ptr, b)
            self.ptr = (self.ptr + 1) & 0xFF

    def read(self, n):
        if self.absent:
            raise Nack()
        out = bytes(self.regs[(self.ptr + i) & 0xFF] for i in range(n))
        self.ptr = (self.ptr + n) & 0xFF
        return out

    def _write_reg(self, reg, value):
        if reg == 0xE0:
            if value == 0xB6:  # soft reset: back to sleep mode, data registers "skipped"
                self.regs[0xF2] = self.regs[0xF4] = self.regs[0xF5] = 0
                self._load_skipped()
            return
        if reg in (0xF2, 0xF4, 0xF5):
            self.regs[reg] = value
            if reg == 0xF4 and value & 0x03:
                self._convert()

    # -- simulation side --------------------------------------------------------------------
    def set(self, temp=None, hum=None, press=None, absent=None):
        if absent is not None:
            self.absent = bool(absent)
        if temp is not None:
            self.temp = float(temp)
        if hum is not None:
            self.hum = float(hum)
        if press is not None:
            self.press = float(press)
        if self.regs[0xF4] & 0x03:
            self._convert()

    def _load_skipped(self):
        self.regs[0xF7:0xFF] = b"\x80\x00\x00\x80\x00\x00\x80\x00"

    def _convert(self):
        adc_t = _bisect(lambda a: _temp(a)[0], self.temp, 0, 0xFFFFF)
        t_fine = _temp(adc_t)[1]
        adc_p = _bisect(lambda a: -_press(a, t_fine), -self.press, 0, 0xFFFFF)
        adc_h = _bisect(lambda a: _hum(a, t_fine), self.hum, 0, 0xFFFF)
        r = self.regs
        r[0xF7], r[0xF8], r[0xF9] = adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4
        r[0xFA], r[0xFB], r[0xFC] = adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4
        r[0xFD], r[0xFE] = adc_h >> 8, adc_h & 0xFF


def _bisect(f, target, lo, hi):
    # f increases with its argument; the raw word whose value is nearest the target.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return lo if abs(f(lo) - target) <= abs(f(hi) - target) else hi


def _temp(adc_t):
    t1, t2, t3 = _T
    var1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
    var2 = ((adc_t / 131072.0 - t1 / 8192.0) * (adc_t / 131072.0 - t1 / 8192.0)) * t3
    t_fine = var1 + var2
    return t_fine / 5120.0, t_fine


def _press(adc_p, t_fine):
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = _P
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * p6 / 32768.0
    var2 = var2 + var1 * p5 * 2.0
    var2 = var2 / 4.0 + p4 * 65536.0
    var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * p1
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = p9 * p * p / 2147483648.0
    var2 = p * p8 / 32768.0
    return p + (var1 + var2 + p7) / 16.0


def _hum(adc_h, t_fine):
    h1, h2, h3, h4, h5, h6 = _H
    v = t_fine - 76800.0
    v = (adc_h - (h4 * 64.0 + h5 / 16384.0 * v)) * (
        h2 / 65536.0 * (1.0 + h6 / 67108864.0 * v * (1.0 + h3 / 67108864.0 * v)))
    v = v * (1.0 - h1 * v / 524288.0)
    return v
