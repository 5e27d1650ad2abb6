# _onewire for the virtual node: the ESP32 port's built-in 1-Wire time slots (reset, bit and
# byte slots, crc8), played against the emulated devices on the pin instead of timed on a wire.
# A device on a 1-Wire bus is listed in sim.json with "onewire": <pin> and offers
#   reset() -> bool        a reset pulse; True = it answers with a presence pulse
#   write_slot(bit)        a write time slot (bit 0 or 1)
#   read_slot() -> bit     a read time slot: 0 if it pulls the line low, 1 if it leaves it
# The bus is open drain: a read slot is the AND of every device's answer, a reset sees a presence
# pulse if any device gives one. Bytes go least significant bit first, as on the wire. The pin
# must be in open-drain mode, as on the board (a push-pull pin holds the line: nobody answers).
import simdev


def _bus(pin):
    if pin.mode() != pin.OPEN_DRAIN:
        return ()
    return simdev.on("onewire", pin.id)


def reset(pin):
    present = False
    for dev in _bus(pin):
        if dev.reset():
            present = True
    return present


def writebit(pin, value):
    bit = 1 if value else 0
    for dev in _bus(pin):
        dev.write_slot(bit)


def readbit(pin):
    bit = 1
    for dev in _bus(pin):
        bit &= dev.read_slot()
    return bit


def writebyte(pin, value):
    devs = _bus(pin)
    for i in range(8):
        bit = (value >> i) & 1
        for dev in devs:
            dev.write_slot(bit)


def readbyte(pin):
    devs = _bus(pin)
    value = 0
    for i in range(8):
        bit = 1
        for dev in devs:
            bit &= dev.read_slot()
        value |= bit << i
    return value


def crc8(data):
    crc = 0
    for byte in data:
        for i in range(8):
            mix = (crc ^ (byte >> i)) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
    return crc
