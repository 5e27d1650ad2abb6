# The firmware tier of an update (docs/updates.md): MicroPython itself, written through
# esp32.Partition into the OTA slot that is not running, a 4 KB flash sector at a time, then
# set_boot() and a reset. The ESP-IDF bootloader boots the new image pending verification; the
# boot code (fnboot) confirms it with mark_app_valid_cancel_rollback() once the gateway acks a
# frame, and otherwise resets it before update_trial_s, and the bootloader goes back by itself.
# /fw.json: {"ver", "label", "trial", "pver", "plabel", "last"} (fnboot reads it too); the
# progress of a download: /ota.fwp {"man": SHA-256 of its manifest, "have": bytes written}.
# Imported only for a firmware update.
import esp32
import json
import machine
import os
import sys
from binascii import hexlify
from hashlib import sha256
from fnode import log

FW_STATE = "/fw.json"
PROGRESS = "/ota.fwp"
_SECTOR = 4096
# The progress is recorded every 8 sectors (32 KB): a resume fetches at most that again, and the
# filesystem is not written for every sector of a 1.5 MB image.
_PROGRESS_EVERY = 8


def _write_json(path, obj):
    with open(path + ".new", "w") as f:
        f.write(json.dumps(obj))
    os.rename(path + ".new", path)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def running_label():
    return esp32.Partition(esp32.Partition.RUNNING).info()[4]


def running_version():
    st = _read_json(FW_STATE)
    if st and st.get("label") == running_label():
        return st["ver"]
    return ".".join(str(v) for v in sys.implementation.version[:3])


class PartitionSink:
    def __init__(self, manifest):
        self.man = hexlify(sha256(manifest).digest()).decode()
        self.part = None
        self.buf = None
        self.fill = 0
        self.sector = 0
        self.size = 0

    def _partition(self):
        if self.part is None:
            self.part = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
        return self.part

    def room(self):
        try:
            return self._partition().info()[3]
        except OSError:  # no OTA partitions in this build: no room at all
            return 0

    def running_version(self):
        return running_version()

    def resume(self, bs, size):
        p = _read_json(PROGRESS)
        have = p["have"] if p and p.get("man") == self.man and p.get("have", 0) <= size else 0
        self.size = size
        self.sector = have // _SECTOR
        return self.sector * _SECTOR

    def prefix(self, h):
        buf = bytearray(_SECTOR)
        for s in range(self.sector):
            self.part.readblocks(s, buf)
            h.update(buf)

    def open(self):
        self._partition()
        self.buf = bytearray(_SECTOR)  # the one sector buffer: the heap it costs during the update
        self.fill = 0

    def write(self, data):
        n = len(data)
        self.buf[self.fill:self.fill + n] = data
        self.fill += n
        if self.fill == _SECTOR or self.sector * _SECTOR + self.fill == self.size:
            self._flush()  # a whole sector, or the image's last one

    def _flush(self):
        for i in range(self.fill, _SECTOR):
            self.buf[i] = 0xFF  # the rest of the last sector reads as erased flash
        self.part.writeblocks(self.sector, self.buf)  # erases the sector first
        self.sector += 1
        self.fill = 0
        if self.sector % _PROGRESS_EVERY == 0 or self.sector * _SECTOR >= self.size:
            _write_json(PROGRESS, {"man": self.man, "have": min(self.sector * _SECTOR, self.size)})

    def close(self):
        self.buf = None  # a sector not yet whole is fetched again when the download resumes

    def discard(self):
        try:
            os.remove(PROGRESS)
        except OSError:
            pass

    def install(self, ver):
        label = self.part.info()[4]
        old = _read_json(FW_STATE) or {}
        _write_json(FW_STATE, {"ver": ver, "label": label, "trial": 1, "pver": running_version(),
                               "plabel": running_label(), "last": old.get("last")})
        self.part.set_boot()
        self.discard()
        log.info("update: firmware", ver, "in", label, "- restarting pending verification")
        machine.reset()
