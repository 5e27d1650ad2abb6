# Bosch BME280: temperature, humidity, pressure over I2C.
# Compensation is the datasheet's integer version (BST-BME280-DS002 §4.2.3): exact on the
# ESP32's single-precision floats, and the same result on every port.
from micropython import const
from fnode.sensor import ReadError, bus_error

_CHIP_ID = const(0xD0)
_CALIB_TP = const(0x88)  # 26 bytes: T1..T3, P1..P9, -, H1
_CALIB_H = const(0xE1)  # 7 bytes: H2..H6
_CTRL_HUM = const(0xF2)
_CTRL_MEAS = const(0xF4)
_CONFIG = const(0xF5)
_DATA = const(0xF7)  # 8 bytes: press[3], temp[3], hum[2]
_ID = const(0x60)
_SKIPPED_T = const(0x80000)  # what the chip reports before its first conversion

READINGS = (("temp", "Cel"), ("hum", "%RH"), ("press", "Pa"))


def _s16(v):
    return v - 0x10000 if v & 0x8000 else v


def _u16(b, i):
    return b[i] | b[i + 1] << 8


def _tdiv(a, b):
    # C integer division truncates toward zero; Python's // floors.
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class BME280:
    def __init__(self, i2c, address=0x76):
        self.i2c = i2c
        self.address = address
        self.buf = bytearray(8)
        try:
            if i2c.readfrom_mem(address, _CHIP_ID, 1)[0] != _ID:
                raise ReadError("chip-id")
            tp = i2c.readfrom_mem(address, _CALIB_TP, 26)
            h = i2c.readfrom_mem(address, _CALIB_H, 7)
            self._start()
        except OSError as exc:
            raise bus_error(exc)
        self.t1 = _u16(tp, 0)
        self.t2 = _s16(_u16(tp, 2))
        self.t3 = _s16(_u16(tp, 4))
        self.p1 = _u16(tp, 6)
        self.p = [_s16(_u16(tp, 8 + 2 * i)) for i in range(8)]  # P2..P9
        self.h1 = tp[25]
        self.h2 = _s16(_u16(h, 0))
        self.h3 = h[2]
        h4 = h[3] << 4 | (h[4] & 0x0F)
        self.h4 = h4 - 0x1000 if h4 & 0x800 else h4
        h5 = h[5] << 4 | h[4] >> 4
        self.h5 = h5 - 0x1000 if h5 & 0x800 else h5
        self.h6 = h[6] - 0x100 if h[6] & 0x80 else h[6]

    def _start(self):
        # Normal mode, x1 oversampling on all three, 1 s standby: the data registers always
        # hold a recent conversion, so a read never waits (no blocking in an asyncio task).
        i2c, address = self.i2c, self.address
        i2c.writeto_mem(address, _CTRL_HUM, b"\x01")
        i2c.writeto_mem(address, _CONFIG, b"\xa0")
        i2c.writeto_mem(address, _CTRL_MEAS, b"\x27")

    def read_into(self, out):
        # out[0..2] = temperature (°C), humidity (%RH), pressure (Pa)
        b = self.buf
        try:
            self.i2c.readfrom_mem_into(self.address, _DATA, b)
        except OSError as exc:
            raise bus_error(exc)
        adc_p = b[0] << 12 | b[1] << 4 | b[2] >> 4
        adc_t = b[3] << 12 | b[4] << 4 | b[5] >> 4
        adc_h = b[6] << 8 | b[7]
        if adc_t == _SKIPPED_T:
            # No conversion yet, or the chip reset on its own (a brown-out on its supply) and
            # sleeps: start it again, or it would stay "not-ready" until the node restarts.
            try:
                self._start()
            except OSError as exc:
                raise bus_error(exc)
            raise ReadError("not-ready")
        t_fine = self._t_fine(adc_t)
        out[0] = ((t_fine * 5 + 128) >> 8) / 100
        out[1] = self._humidity(adc_h, t_fine) / 1024
        out[2] = self._pressure(adc_p, t_fine) / 256

    def _t_fine(self, adc_t):
        t1 = self.t1
        var1 = (((adc_t >> 3) - (t1 << 1)) * self.t2) >> 11
        d = (adc_t >> 4) - t1
        var2 = (((d * d) >> 12) * self.t3) >> 14
        return var1 + var2

    def _pressure(self, adc_p, t_fine):
        p2, p3, p4, p5, p6, p7, p8, p9 = self.p
        var1 = t_fine - 128000
        var2 = var1 * var1 * p6
        var2 += (var1 * p5) << 17
        var2 += p4 << 35
        var1 = ((var1 * var1 * p3) >> 8) + ((var1 * p2) << 12)
        var1 = (((1 << 47) + var1) * self.p1) >> 33
        if var1 == 0:
            raise ReadError("range")
        p = 1048576 - adc_p
        p = _tdiv(((p << 31) - var2) * 3125, var1)
        var1 = (p9 * (p >> 13) * (p >> 13)) >> 25
        var2 = (p8 * p) >> 19
        return ((p + var1 + var2) >> 8) + (p7 << 4)

    def _humidity(self, adc_h, t_fine):
        v = t_fine - 76800
        v = (((((adc_h << 14) - (self.h4 << 20) - (self.h5 * v)) + 16384) >> 15)
             * (((((((v * self.h6) >> 10) * (((v * self.h3) >> 11) + 32768)) >> 10) + 2097152)
                 * self.h2 + 8192) >> 14))
        v -= ((((v >> 15) * (v >> 15)) >> 7) * self.h1) >> 4
        if v < 0:
            v = 0
        if v > 419430400:
            v = 419430400
        return v >> 12


def make(spec, hw):
    return BME280(hw.bus(spec["bus"]), spec.get("address", 0x76))



def readings(spec):
    return READINGS
