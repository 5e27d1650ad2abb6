# A generic I2C register file: the first byte of a write sets the register pointer, further bytes
# are stored from there, reads return bytes from the pointer on; the pointer auto-increments and
# wraps. Enough to stand in for many simple chips, and a worked example of a device module.
#   sim.json:   {"name": "gen", "type": "regfile", "sda": 21, "address": 32,
#                "init": {"size": 256, "regs": {"15": 51}, "readonly": [15]}}
#   world.json: {"devices": {"gen": {"regs": {"16": 7}}}}
import simdev


class REGFILE(simdev.I2CDevice):
    def __init__(self, address=0x20, size=256, regs=None, readonly=()):
        self.address = address
        self.regs = bytearray(size)
        self.ptr = 0
        self.readonly = set(readonly)
        if regs:
            self.set(regs=regs)

    def write(self, data):
        if not data:
            return
        self.ptr = data[0] % len(self.regs)
        for b in data[1:]:
            if self.ptr not in self.readonly:
                self.regs[self.ptr] = b
            self.ptr = (self.ptr + 1) % len(self.regs)

    def read(self, n):
        out = bytearray(n)
        for i in range(n):
            out[i] = self.regs[self.ptr]
            self.ptr = (self.ptr + 1) % len(self.regs)
        return bytes(out)

    def set(self, regs=None):
        # World side: register values as the chip's own logic would set them (keys: numbers
        # or numeric strings, since JSON keys are strings).
        for reg, value in (regs or {}).items():
            self.regs[int(reg)] = value
