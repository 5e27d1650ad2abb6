# Emulated Maxim DS18B20 on a 1-Wire bus, at the time-slot level: the bus (simhal `_onewire`)
# hands every device each reset, write slot and read slot, and ANDs what the devices answer on
# read slots (open drain: any device pulling low wins). The device runs the datasheet's state
# machine: ROM commands (READ/MATCH/SKIP/SEARCH ROM), then CONVERT T (read slots answer 0 until
# the conversion is done), READ/WRITE SCRATCHPAD, READ POWER SUPPLY.
# Knobs (set(), so also world.json "devices"): temp (°C, sampled by the next CONVERT T), corrupt
# (flip the scratchpad CRC), absent (no presence pulse, never drives the bus), conv_ms (conversion
# time, default from the resolution: 750 ms at 12 bits).
# In sim.json a probe sits on the 1-Wire bus of a pin: {"type": "ds18b20", "onewire": 4,
# "init": {"serial": 1, "temp": 21.0}} (or "rom": "28..." for a given id); several probes on one
# pin make a multi-drop bus.
import time

_CONVERT_MS = (94, 188, 375, 750)  # 9..12-bit resolution


def crc8(data):
    # The datasheet's CRC generator, one bit at a time: x^8 + x^5 + x^4 + 1, data LSB first.
    crc = 0
    for byte in data:
        for bit in range(8):
            feedback = (crc ^ (byte >> bit)) & 1
            crc >>= 1
            if feedback:
                crc ^= 0x8C  # taps of x^5 and x^4 land on bits 3 and 2, x^8 feeds bit 7
    return crc


def rom_id(serial, family=0x28):
    # 8 ROM bytes as they travel on the bus: family, 48-bit serial LSB first, CRC.
    rom = bytearray(8)
    rom[0] = family
    for i in range(6):
        rom[1 + i] = (serial >> (8 * i)) & 0xFF
    rom[7] = crc8(rom[:7])
    return bytes(rom)


class DS18B20:
    def __init__(self, serial=0x0000018F2A11, temp=21.0, rom=None, corrupt=False, absent=False,
                 conv_ms=None):
        # rom: 16 hex digits in bus order (family first, CRC last), as a board's "roms" lists them;
        # else the id is built from serial.
        if rom is not None:
            rom = bytes(int(rom[i:i + 2], 16) for i in range(0, 16, 2))
            if crc8(rom[:7]) != rom[7]:
                raise ValueError("ROM id with a bad CRC: " + "".join("%02x" % b for b in rom))
        self.rom = rom or rom_id(serial)
        self.temp = temp
        self.corrupt = corrupt
        self.absent = absent
        self.conv_ms = conv_ms  # None: from the resolution in the config register
        # Power-on scratchpad: 85 °C, TH 75, TL 70, 12-bit, reserved bytes.
        self.scratch = bytearray(b"\x50\x05\x4b\x46\x7f\xff\x0c\x10\x00")
        self.conversions = 0
        self._idle()
        self.done_at = None

    # -- bus side: one call per slot --------------------------------------------------------
    def reset(self):
        self._idle()
        self.state = "rom"
        return not self.absent

    def write_slot(self, bit):
        if self.absent:
            return
        st = self.state
        if st == "search":
            self._search_direction(bit)
        elif st == "match":
            self._match_bit(bit)
        elif st == "write":
            if self._shift_in(bit):
                self._scratchpad_byte(self.acc)
                self.acc = 0
        elif st in ("rom", "function") and self._shift_in(bit):
            cmd, self.acc = self.acc, 0
            (self._rom_command if st == "rom" else self._function)(cmd)

    def _shift_in(self, bit):
        # -> True when a whole byte (LSB first) is in self.acc
        self.acc |= bit << self.nbits
        self.nbits += 1
        if self.nbits < 8:
            return False
        self.nbits = 0
        return True

    def _search_direction(self, bit):
        # The master's third slot of a SEARCH ROM step: devices whose bit differs drop out.
        if self.step != 2:
            return
        if bit != self._rom_bit(self.index):
            self._idle()
            return
        self.step = 0
        self.index += 1
        if self.index == 64:
            self._idle()

    def _match_bit(self, bit):
        if bit != self._rom_bit(self.index):
            self._idle()
            return
        self.index += 1
        if self.index == 64:
            self.state = "function"

    def _scratchpad_byte(self, byte):
        # WRITE SCRATCHPAD: TH, TL, config; the config's unused bits read back as ones.
        self.wbuf.append(byte)
        if len(self.wbuf) == 3:
            self.scratch[2:5] = self.wbuf
            self.scratch[4] = (self.scratch[4] & 0x60) | 0x1F
            self._idle()

    def read_slot(self):
        # 1 = left the bus high, 0 = pulled it low.
        if self.absent:
            return 1
        st = self.state
        if st == "search":
            b = self._rom_bit(self.index)
            if self.step == 0:
                self.step = 1
                return b
            if self.step == 1:
                self.step = 2
                return b ^ 1
            return 1
        if st == "out":
            if self.index >= 8 * len(self.out):
                return 1
            b = (self.out[self.index >> 3] >> (self.index & 7)) & 1
            self.index += 1
            return b
        if st == "converting":
            self._update()
            return 0 if self.done_at is not None else 1
        if st == "power":
            return 1  # externally powered
        return 1

    # -- commands -----------------------------------------------------------------------------
    def _rom_command(self, cmd):
        self.index = 0
        if cmd == 0x33:  # READ ROM
            self._send(self.rom)
        elif cmd == 0x55:  # MATCH ROM
            self.state = "match"
        elif cmd == 0xCC:  # SKIP ROM
            self.state = "function"
        elif cmd == 0xF0:  # SEARCH ROM
            self.state = "search"
            self.step = 0
        else:  # ALARM SEARCH (no alarms here) or unknown: sit out until the next reset
            self._idle()

    def _function(self, cmd):
        self._update()
        if cmd == 0x44:  # CONVERT T
            self.conversions += 1
            ms = self.conv_ms
            if ms is None:
                ms = _CONVERT_MS[(self.scratch[4] >> 5) & 3]
            self.done_at = time.ticks_add(time.ticks_ms(), ms)
            self.sampled = self.temp  # what the sensor sees as the conversion starts
            self.state = "converting"
        elif cmd == 0xBE:  # READ SCRATCHPAD
            self.scratch[8] = crc8(self.scratch[:8]) ^ (0x01 if self.corrupt else 0)
            self._send(self.scratch)
        elif cmd == 0x4E:  # WRITE SCRATCHPAD: TH, TL, config
            self.state = "write"
            self.wbuf = bytearray()
        elif cmd == 0xB4:  # READ POWER SUPPLY
            self.state = "power"
        else:  # COPY/RECALL (no EEPROM kept) or unknown
            self._idle()

    def _send(self, data):
        self.out = bytes(data)
        self.index = 0
        self.state = "out"

    def _idle(self):
        self.state = "idle"
        self.acc = self.nbits = self.index = self.step = 0

    def _rom_bit(self, i):
        return (self.rom[i >> 3] >> (i & 7)) & 1

    def _update(self):
        # A finished conversion lands in the scratchpad (at the configured resolution).
        if self.done_at is not None and time.ticks_diff(time.ticks_ms(), self.done_at) >= 0:
            self.done_at = None
            res = (self.scratch[4] >> 5) & 3
            raw = int(round(self.sampled * 16)) & (0xFFFF << (3 - res))
            raw &= 0xFFFF
            self.scratch[0] = raw & 0xFF
            self.scratch[1] = raw >> 8

    # -- simulation side --------------------------------------------------------------------
    def set(self, temp=None, corrupt=None, absent=None, conv_ms=None):
        if temp is not None:
            self.temp = float(temp)
        if corrupt is not None:
            self.corrupt = bool(corrupt)
        if absent is not None:
            self.absent = bool(absent)
        if conv_ms is not None:
            self.conv_ms = conv_ms

    def rom_hex(self):
        return "".join("%02x" % b for b in self.rom)


def make(spec):
    return DS18B20(**(spec.get("init") or {}))
