# Modbus RTU master on a UART, through an RS-485 transceiver whose driver-enable pin is the bus's
# "de" (high while sending). Reads holding (0x03) or input (0x04) registers; registers that sit
# next to each other are fetched in one request. Each request waits for its answer by polling
# uart.any() with 1 ms sleeps, bounded by timeout_ms plus the answer's frame time: the loop is
# held for one round trip (~30-60 ms at 9600 baud), at most timeout_ms + frame time if the slave
# is silent. Frames are built into and parsed from preallocated buffers.
import struct
import time
from micropython import const
from fnode.sensor import ReadError

_MAX_REGS = const(125)  # per request (the protocol's limit)
_KINDS = {"holding": 3, "input": 4}
# type -> (registers, form: 0 unsigned, 1 signed two's complement, 2 IEEE float32)
_TYPES = {"u16": (1, 0), "s16": (1, 1), "u32": (2, 0), "s32": (2, 1), "f32": (2, 2)}


def crc16(buf, n):
    # Modbus CRC-16: polynomial 0xA001 (0x8005 reflected), init 0xFFFF; sent low byte first.
    crc = 0xFFFF
    for i in range(n):
        crc ^= buf[i]
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def plan(registers):
    # Requests as (function, start, count, ((reading index, word offset, type, scale), ...)):
    # consecutive registers of one kind share a request.
    items = []
    for i, r in enumerate(registers):
        typ, addr = r.get("type", "u16"), r.get("address")
        if r.get("kind", "holding") not in _KINDS or typ not in _TYPES or type(addr) is not int:
            raise ReadError("config")
        words = _TYPES[typ][0]
        if not 0 <= addr <= 0x10000 - words:
            raise ReadError("config")
        items.append((_KINDS[r.get("kind", "holding")], addr, words, i, typ, r.get("scale", 1)))
    items.sort()
    blocks = []
    for fc, addr, words, i, typ, scale in items:
        b = blocks[-1] if blocks else None
        if b and b[0] == fc and b[1] <= addr <= b[1] + b[2] and addr + words - b[1] <= _MAX_REGS:
            b[2] = max(b[2], addr + words - b[1])
            b[3].append((i, addr - b[1], typ, scale))
        else:
            blocks.append([fc, addr, words, [(i, 0, typ, scale)]])
    if not blocks:
        raise ReadError("config")
    return tuple((fc, start, n, tuple(its)) for fc, start, n, its in blocks)


class Modbus:
    def __init__(self, uart, de, unit_id, registers, baud=9600, timeout_ms=100):
        self.uart = uart
        self.de = de
        self.unit = unit_id
        self.blocks = plan(registers)
        self.timeout_ms = timeout_ms
        self.char_us = 11 * 1000000 // baud  # start + 8 data + parity/stop + stop
        self.gap_ms = max(2, (35 * self.char_us + 9999) // 10000)  # 3.5 character times
        self.req = bytearray(8)
        self.resp = bytearray(5 + 2 * max(b[2] for b in self.blocks))
        self.view = memoryview(self.resp)
        if de is not None:
            de.init(de.OUT)
            de.value(0)

    def _request(self, fc, start, count):
        # Sends one read request and returns the answer's length in self.resp.
        q = self.req
        q[0] = self.unit
        q[1] = fc
        q[2] = start >> 8
        q[3] = start & 0xFF
        q[4] = count >> 8
        q[5] = count & 0xFF
        crc = crc16(q, 6)
        q[6] = crc & 0xFF
        q[7] = crc >> 8
        uart, de, view = self.uart, self.de, self.view
        n = uart.any()
        while n:  # a late answer to an earlier request: not ours
            uart.read(n)
            n = uart.any()
        if de is not None:
            de.value(1)
        uart.write(q)
        uart.flush()  # returns once the last stop bit is out
        if de is not None:
            de.value(0)
        expect = 5 + 2 * count
        limit = self.timeout_ms + expect * self.char_us // 1000 + 1
        t0 = time.ticks_ms()
        got = 0
        while got < expect:
            n = uart.any()
            if n:
                got += uart.readinto(view[got:min(expect, got + n)])
                if got >= 2 and self.resp[1] == fc | 0x80:
                    expect = 5  # exception answer: unit, fc | 0x80, code, CRC
            elif time.ticks_diff(time.ticks_ms(), t0) > limit:
                raise ReadError("timeout")
            else:
                time.sleep_ms(1)
        return expect

    def read_into(self, out):
        r = self.resp
        first = True
        for fc, start, count, items in self.blocks:
            if not first:
                time.sleep_ms(self.gap_ms)  # the silence that ends a frame on the bus
            first = False
            n = self._request(fc, start, count)
            crc = crc16(r, n - 2)
            if r[n - 2] != crc & 0xFF or r[n - 1] != crc >> 8:
                raise ReadError("crc")
            if r[0] != self.unit:
                raise ReadError("bad-reply")
            if r[1] == fc | 0x80:
                raise ReadError("modbus-" + str(r[2]))
            if r[1] != fc or r[2] != 2 * count:
                raise ReadError("bad-reply")
            for i, offset, typ, scale in items:
                out[i] = _decode(r, 3 + 2 * offset, typ) * scale


def _decode(r, at, typ):
    words, form = _TYPES[typ]
    if form == 2:
        return struct.unpack_from(">f", r, at)[0]
    v = r[at] << 8 | r[at + 1]
    if words == 2:
        v = v << 16 | r[at + 2] << 8 | r[at + 3]  # high word first
    if form and v >= 1 << (16 * words - 1):
        v -= 1 << (16 * words)
    return v


def make(spec, hw):
    bus = hw.specs[spec["bus"]]
    de = bus.get("de")
    return Modbus(hw.bus(spec["bus"]), None if de is None else hw.pin(de),
                  spec["unit_id"], spec["registers"], bus.get("baud", 9600),
                  spec.get("timeout_ms", 100))


def readings(spec):
    return tuple((r["name"], r.get("unit", "")) for r in spec["registers"])
