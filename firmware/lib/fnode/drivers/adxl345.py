# Analog Devices ADXL345 accelerometer over I2C, as a vibration sensor: RMS and peak of the AC
# part of the acceleration (mean removed per axis, then the vector magnitude), and crest factor.
# The chip samples on its own clock into its 32-entry FIFO in stream mode (always the newest 32
# samples). read_into drains what the FIFO holds, appends it to a ring of the last `window`
# samples and computes over that ring: no waiting, at most 32 short I2C reads per call. A window
# longer than 32 samples therefore spans several periods (segments of up to 32 consecutive
# samples each) - right for the slow trends of condition monitoring; for one contiguous window,
# keep window <= 32 or lower rate_hz so that 32 samples cover the time you need.
import math
from array import array
from micropython import const
from fnode.sensor import ReadError, bus_error

_DEVID = const(0x00)
_BW_RATE = const(0x2C)
_POWER_CTL = const(0x2D)
_DATA_FORMAT = const(0x31)
_DATAX0 = const(0x32)  # X0 X1 Y0 Y1 Z0 Z1, little-endian; a 6-byte read pops one FIFO entry
_FIFO_CTL = const(0x38)
_FIFO_STATUS = const(0x39)
_ID = const(0xE5)
_MEASURE = const(0x08)
_FULL_RES = const(0x08)
_STREAM = const(0x80)
_G = 9.80665
_MS2_PER_LSB = _G / 256  # full resolution: 256 LSB/g (3.9 mg/LSB) on every range
_RANGES = (2, 4, 8, 16)


def rate_code(rate_hz):
    # BW_RATE code: 0x0F = 3200 Hz, each step down halves the rate (0x06 = 6.25 Hz).
    for code in range(15, 5, -1):
        if 3200 / (1 << (15 - code)) == rate_hz:
            return code
    raise ReadError("config")


class ADXL345:
    def __init__(self, i2c, address=0x53, rate_hz=100, range_g=16, window=32):
        if range_g not in _RANGES or window < 2:
            raise ReadError("config")
        self.i2c = i2c
        self.address = address
        self.window = window
        self.ring = array("h", bytes(6 * window))  # x, y, z per sample
        self.pos = 0  # next slot in the ring
        self.count = 0  # samples in the ring (up to window)
        self.buf = bytearray(6)
        self.one = bytearray(1)
        regs = (
            (_POWER_CTL, 0),  # standby while configuring
            (_BW_RATE, rate_code(rate_hz)),
            (_DATA_FORMAT, _FULL_RES | _RANGES.index(range_g)),
            (_FIFO_CTL, 0),  # bypass empties the FIFO: what it held is not this driver's samples
            (_FIFO_CTL, _STREAM | 31),
            (_POWER_CTL, _MEASURE),
        )
        try:
            if i2c.readfrom_mem(address, _DEVID, 1)[0] != _ID:
                raise ReadError("chip-id")
            for reg, value in regs:
                self.one[0] = value
                i2c.writeto_mem(address, reg, self.one)
        except OSError as exc:
            raise bus_error(exc)

    def _drain(self):
        i2c, a, b, ring = self.i2c, self.address, self.buf, self.ring
        try:
            i2c.readfrom_mem_into(a, _FIFO_STATUS, self.one)
            n = self.one[0] & 0x3F
            for _ in range(n):
                i2c.readfrom_mem_into(a, _DATAX0, b)
                j = 3 * self.pos
                for k in range(3):
                    v = b[2 * k] | b[2 * k + 1] << 8
                    ring[j + k] = v - 0x10000 if v & 0x8000 else v
                self.pos = (self.pos + 1) % self.window
        except OSError as exc:
            raise bus_error(exc)
        self.count = min(self.count + n, self.window)

    def read_into(self, out):
        # out[0..2] = RMS (m/s2), peak (m/s2), crest factor (peak / RMS)
        self._drain()
        n = self.count
        if n < 2:
            raise ReadError("not-ready")
        ring = self.ring
        end = 3 * n
        # Integer passes (no float allocation per sample): the means rounded down, then
        # deviations from them; the exact mean's correction is applied once at the end.
        sx = sy = sz = 0
        for i in range(0, end, 3):
            sx += ring[i]
            sy += ring[i + 1]
            sz += ring[i + 2]
        mx, my, mz = sx // n, sy // n, sz // n
        dsx = dsy = dsz = sq = top = at = 0
        for i in range(0, end, 3):
            dx = ring[i] - mx
            dy = ring[i + 1] - my
            dz = ring[i + 2] - mz
            dsx += dx
            dsy += dy
            dsz += dz
            m2 = dx * dx + dy * dy + dz * dz
            sq += m2
            if m2 > top:
                top = m2
                at = i
        fx, fy, fz = dsx / n, dsy / n, dsz / n  # exact mean minus the rounded one
        var = (sq - (dsx * fx + dsy * fy + dsz * fz)) / n
        rms = math.sqrt(var if var > 0 else 0) * _MS2_PER_LSB
        px = ring[at] - mx - fx
        py = ring[at + 1] - my - fy
        pz = ring[at + 2] - mz - fz
        peak = math.sqrt(px * px + py * py + pz * pz) * _MS2_PER_LSB
        out[0] = rms
        out[1] = peak
        out[2] = peak / rms if rms > 0 else 0.0


def make(spec, hw):
    return ADXL345(hw.bus(spec["bus"]), spec.get("address", 0x53), spec.get("rate_hz", 100),
                   spec.get("range_g", 16), spec.get("window", 32))


def readings(spec):
    return (("rms", "m/s2"), ("peak", "m/s2"), ("crest", "/"))
