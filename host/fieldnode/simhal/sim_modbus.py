# Emulated Modbus RTU slave behind an RS-485 transceiver, at the frame level: it hears what the
# node's UART sends, checks address and CRC-16 like a real slave (a frame for another unit or
# with a bad CRC gets no answer), and answers read holding (0x03) / read input (0x04) registers,
# or an exception: 01 unknown function, 02 a register it does not have, 03 a bad count.
# Knobs: holding / input ({address: 16-bit value}), set_float/set_u32 for two-register values,
# silent (never answers), corrupt (flip a bit of the answer's CRC), delay_ms (turnaround time).
# The answer arrives delay_ms after the request plus its own frame time at `baud`. With `de` (the
# node's driver-enable pin) the transceiver is modelled too: a request sent while DE is low never
# reaches the bus, and an answer that arrives while DE is still high is lost (RE is DE inverted).
# In sim.json: {"type": "modbus", "uart": 2, "de": 5, "init": {"unit_id": 1, "input": {"0": 1234}}}
import time
from simdev import UARTDevice


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


class ModbusSlave(UARTDevice):
    def __init__(self, unit_id=1, holding=None, input=None, baud=9600, de=None, delay_ms=5,
                 silent=False, corrupt=False):
        self.unit_id = unit_id
        self.holding = _table(holding)
        self.input = _table(input)
        self.silent = silent
        self.corrupt = corrupt
        self.delay_ms = delay_ms
        self.char_ms = 11000 / baud
        self.de = de
        self.requests = 0  # frames addressed to this unit with a good CRC (for tests)
        self.heard = b""  # bytes of a request still incomplete
        self.pending = b""  # the answer on its way
        self.arrives = 0  # ticks_ms when all of it has arrived

    # -- bus side: simdev.UARTDevice --------------------------------------------------------
    def write(self, data):
        if self.de is not None and not self._de():
            return  # the transceiver is not driving: nobody hears it
        self.heard += bytes(data)
        while self.heard:
            n = _frame_len(self.heard)
            if n is None or len(self.heard) < n:
                return
            frame, self.heard = self.heard[:n], self.heard[n:]
            answer = self.receive(frame)
            if answer:
                self.pending = answer
                self.arrives = time.ticks_add(time.ticks_ms(),
                                              int(self.delay_ms + len(answer) * self.char_ms + 0.5))

    def any(self):
        if not self.pending or time.ticks_diff(time.ticks_ms(), self.arrives) < 0:
            return 0
        if self.de is not None and self._de():
            self.pending = b""  # the node's receiver was off while the answer went by
            return 0
        return len(self.pending)

    def read(self, n):
        if not self.any():
            return b""
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def _de(self):
        import machine
        return machine.Pin(self.de).value()

    def receive(self, data):
        # Bytes the master put on the bus; returns the answer frame, or None for no answer.
        # The master writes one whole frame per write (an RTU frame ends with 3.5 characters of
        # silence, which a write boundary stands for here).
        frame = bytes(data)
        if len(frame) < 4:
            return None
        crc = crc16(frame[:-2])
        if frame[-2] != crc & 0xFF or frame[-1] != crc >> 8:
            return None
        if frame[0] != self.unit_id:
            return None
        self.requests += 1
        if self.silent:
            return None
        return self._seal(self._answer(frame[1], frame[2:-2]))

    def _answer(self, fc, body):
        if fc not in (3, 4):
            return bytes((self.unit_id, fc | 0x80, 1))
        if len(body) != 4:
            return bytes((self.unit_id, fc | 0x80, 3))
        start = body[0] << 8 | body[1]
        count = body[2] << 8 | body[3]
        if not 1 <= count <= 125:
            return bytes((self.unit_id, fc | 0x80, 3))
        table = self.holding if fc == 3 else self.input
        out = bytearray((self.unit_id, fc, 2 * count))
        for a in range(start, start + count):
            if a not in table:
                return bytes((self.unit_id, fc | 0x80, 2))
            v = table[a] & 0xFFFF
            out.append(v >> 8)
            out.append(v & 0xFF)
        return bytes(out)

    def _seal(self, pdu):
        crc = crc16(pdu)
        if self.corrupt:
            crc ^= 0x0100
        return pdu + bytes((crc & 0xFF, crc >> 8))

    # -- simulation side --------------------------------------------------------------------
    def set(self, holding=None, input=None, silent=None, corrupt=None, delay_ms=None):
        # world.json: {"devices": {"meter": {"input": {"0": 2300}, "silent": false}}}
        if holding is not None:
            self.holding.update(_table(holding))
        if input is not None:
            self.input.update(_table(input))
        if silent is not None:
            self.silent = bool(silent)
        if corrupt is not None:
            self.corrupt = bool(corrupt)
        if delay_ms is not None:
            self.delay_ms = delay_ms

    def set_u32(self, kind, address, value):
        table = self.holding if kind == "holding" else self.input
        value &= 0xFFFFFFFF
        table[address] = value >> 16
        table[address + 1] = value & 0xFFFF

    def set_float(self, kind, address, value):
        import struct
        self.set_u32(kind, address, struct.unpack(">I", struct.pack(">f", value))[0])


def _table(values):
    # {address: word}; JSON object keys arrive as strings.
    return {int(k): int(v) & 0xFFFF for k, v in (values or {}).items()}


def _frame_len(buf):
    # Length of the request frame at the start of buf, once it is known (RTU has no length
    # field: a slave knows it from the function code).
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc <= 6:
        return 8
    if fc in (15, 16):
        return 9 + buf[6] if len(buf) >= 7 else None
    return len(buf)  # unknown function: what came in one piece


def make(spec):
    init = dict(spec.get("init") or {})
    if "de" in spec:
        init["de"] = spec["de"]
    return ModbusSlave(**init)
