# Emulated Analog Devices ADXL345 on I2C, at the register level: DEVID 0xE5, BW_RATE, POWER_CTL,
# DATA_FORMAT (range, full resolution), FIFO_CTL (bypass, FIFO, stream), FIFO_STATUS and the data
# registers DATAX0..DATAZ1 (a read of them pops one FIFO entry). While in measure mode the chip
# produces samples on its own clock (the host's ticks_us at the BW_RATE rate): a sine vibration
# of `amplitude` m/s2 (peak) at `freq` Hz along `axis` (0 x, 1 y, 2 z), plus `gravity` on z.
# Knobs (set(), so also world.json "devices"): amplitude, freq, axis, gravity, absent (NACK
# everything), devid.
import math
from simclock import host as time  # the chip's own clock; the node's ticks_us wraps every 18 min
from simdev import I2CDevice, Nack

DEVID = 0x00
BW_RATE = 0x2C
POWER_CTL = 0x2D
INT_SOURCE = 0x30
DATA_FORMAT = 0x31
DATAX0 = 0x32
FIFO_CTL = 0x38
FIFO_STATUS = 0x39
G = 9.80665


class ADXL345(I2CDevice):
    def __init__(self, address=0x53, amplitude=0.0, freq=50.0, axis=0, gravity=G):
        self.address = address
        self.amplitude = amplitude
        self.freq = freq
        self.axis = axis
        self.gravity = gravity
        self.absent = False
        self.regs = bytearray(64)
        self.regs[DEVID] = 0xE5
        self.regs[BW_RATE] = 0x0A  # 100 Hz after reset
        self.ptr = 0
        self.fifo = []
        self.latest = (0, 0, 0)
        self.t0 = None  # ticks_us when measuring started
        self.made = 0  # samples produced since then
        self.overruns = 0

    # -- bus side ---------------------------------------------------------------------------
    def write(self, data):
        if self.absent:
            raise Nack()
        if not data:
            return
        self.ptr = data[0] & 0x3F
        for b in data[1:]:
            self._write_reg(self.ptr, b)
            self.ptr = (self.ptr + 1) & 0x3F

    def read(self, n):
        if self.absent:
            raise Nack()
        self._run()
        start = self.ptr
        out = bytearray(n)
        sample = self.fifo[0] if self.fifo else self.latest
        for i in range(n):
            reg = (start + i) & 0x3F
            if DATAX0 <= reg < DATAX0 + 6:
                k = reg - DATAX0
                v = sample[k >> 1] & 0xFFFF
                out[i] = v & 0xFF if k & 1 == 0 else v >> 8
            elif reg == FIFO_STATUS:
                out[i] = len(self.fifo)
            elif reg == INT_SOURCE:
                out[i] = 0x80 if (self.fifo or self.made) else 0
            else:
                out[i] = self.regs[reg]
        if start <= DATAX0 + 5 and start + n > DATAX0 and self.fifo:
            self.latest = self.fifo.pop(0)  # the read drained one entry
        self.ptr = (start + n) & 0x3F
        return bytes(out)

    def _write_reg(self, reg, value):
        if reg in (DEVID, INT_SOURCE, FIFO_STATUS) or DATAX0 <= reg < DATAX0 + 6:
            return  # read-only
        self._run()
        was_measuring = self.regs[POWER_CTL] & 0x08
        self.regs[reg] = value
        if reg == POWER_CTL:
            if value & 0x08 and not was_measuring:
                self.t0 = time.ticks_us()
                self.made = 0
            elif not value & 0x08:
                self.t0 = None
        if reg == FIFO_CTL and value >> 6 == 0:
            self.fifo = []
        if reg == BW_RATE and self.t0 is not None:
            self.t0 = time.ticks_us()
            self.made = 0

    # -- the chip's own clock -------------------------------------------------------------------
    def rate_hz(self):
        return 3200 / (1 << (15 - (self.regs[BW_RATE] & 0x0F)))

    def _run(self):
        if self.t0 is None:
            return
        rate = self.rate_hz()
        due = int(time.ticks_diff(time.ticks_us(), self.t0) * rate / 1000000)
        if due - self.made > 64:  # only the newest samples can still be seen
            self.made = due - 64
        mode = self.regs[FIFO_CTL] >> 6
        while self.made < due:
            s = self._sample(self.made / rate)
            self.made += 1
            if mode == 0:
                self.latest = s
            elif len(self.fifo) < 32:
                self.fifo.append(s)
            elif mode == 2:  # stream: the oldest entry gives way
                self.fifo.pop(0)
                self.fifo.append(s)
                self.overruns += 1
            else:  # FIFO/trigger: full means full
                self.overruns += 1

    def _sample(self, t):
        acc = [0.0, 0.0, self.gravity]
        acc[self.axis] += self.amplitude * math.sin(2 * math.pi * self.freq * t)
        fmt = self.regs[DATA_FORMAT]
        g_range = 2 << (fmt & 0x03)
        if fmt & 0x08:  # full resolution: 256 LSB/g on every range
            per_g, limit = 256, 256 * g_range
        else:  # 10 bits across the range
            per_g, limit = 512 // g_range, 512
        out = []
        for a in acc:
            v = int(round(a / G * per_g))
            out.append(max(-limit, min(limit - 1, v)))
        return tuple(out)

    # -- simulation side --------------------------------------------------------------------
    def set(self, amplitude=None, freq=None, axis=None, gravity=None, absent=None, devid=None):
        if absent is not None:
            self.absent = bool(absent)
        if devid is not None:
            self.regs[DEVID] = devid
        if amplitude is not None:
            self.amplitude = float(amplitude)
        if freq is not None:
            self.freq = float(freq)
        if axis is not None:
            self.axis = int(axis)
        if gravity is not None:
            self.gravity = float(gravity)


def make(spec):
    # simdev factory: {"type": "adxl345", "sda": 8, "address": 83, "init": {"amplitude": 2.0}}
    return ADXL345(address=spec.get("address", 0x53), **(spec.get("init") or {}))
