# Frames the gateway has not acknowledged yet, kept in flash so they survive a reboot.
# One file per frame, named by its frame counter in fixed-width hex, so name order is send order.
# A frame is written to a temporary file and renamed into place: rename is atomic on littlefs and
# on POSIX, so after a power cut a frame is either wholly in the spool or not at all. Each file
# also carries a CRC32, so a file damaged some other way is dropped at read time, not sent.
# Bounded: when full, the oldest frame is dropped and counted; the count survives reboots (NVS)
# until the node has reported it in a queue.loss event frame.
import os
import struct
from binascii import crc32
from fnode import log

_TMP = "tmp"


def _hex8(n):
    return "%08x" % n


class Spool:
    def __init__(self, path="spool", capacity=256, nvs=None):
        self.path = path
        self.capacity = capacity
        self.nvs = nvs
        try:
            os.mkdir(path)
        except OSError:
            pass
        names = []
        for name in os.listdir(path):
            if len(name) == 8:
                try:
                    names.append(int(name, 16))
                    continue
                except ValueError:
                    pass
            # A temp file from a write cut short by a reset (its frame was never in the spool),
            # or junk: thrown away, and said, so a reader of the console knows why.
            self._remove(name)
            log.warn("spool: discarded", name)
        names.sort()
        self.counters = names
        self.lost = self._load_lost()
        # Counter of the frame last sent and not answered (set by the uplink): the gateway may
        # have stored it and only its answer was lost, so it is never the one dropped as lost.
        # After a reset that is the oldest frame: it may have been on its way at the power cut.
        self.doubt = names[0] if names else None
        # (counter, frame) of the oldest frame as last written or read: the uplink sends it,
        # and retries it, without reading it back from flash each time.
        self._head = None

    def __len__(self):
        return len(self.counters)

    def _file(self, name):
        return self.path + "/" + name

    def _remove(self, name):
        try:
            os.remove(self._file(name))
        except OSError:
            pass

    def _load_lost(self):
        if self.nvs is None:
            return 0
        try:
            return self.nvs.get_i32("lost")
        except OSError:
            return 0

    def _store_lost(self):
        if self.nvs is not None:
            self.nvs.set_i32("lost", self.lost)
            self.nvs.commit()

    def put(self, counter, frame):
        if self.counters and counter <= self.counters[-1]:
            return  # already spooled (a retry of the same frame)
        while len(self.counters) >= self.capacity:
            self._drop_oldest()
            self._store_lost()
        try:
            self._write(counter, frame)
        except OSError:
            # Flash full (ENOSPC) or a write error: make room by dropping the oldest, once;
            # if that does not help the frame is lost, counted, and reported like any other.
            if self.counters:
                self._drop_oldest()
            try:
                self._write(counter, frame)
            except OSError:
                self._remove(_TMP)
                self.lost += 1
                self._store_lost()
                return
            self._store_lost()
        self.counters.append(counter)
        if len(self.counters) == 1:
            self._head = (counter, bytes(frame))  # the caller's buffer is reused for the next frame

    def _drop_oldest(self):
        # The oldest frame goes, except the one in doubt: that one goes out again first (and is
        # answered 2.03 if the gateway has it), so `lost` counts only frames never delivered.
        i = 1 if len(self.counters) > 1 and self.counters[0] == self.doubt else 0
        self._remove(_hex8(self.counters.pop(i)))
        self.lost += 1

    def _write(self, counter, frame):
        tmp = self._file(_TMP)
        with open(tmp, "wb") as f:
            f.write(struct.pack("<HI", len(frame), crc32(frame)))
            f.write(frame)
        os.rename(tmp, self._file(_hex8(counter)))

    def peek(self):
        # (counter, frame) of the oldest intact frame, or None. Damaged files are dropped.
        head = self._head
        if head is not None and self.counters and self.counters[0] == head[0]:
            return head  # counters never repeat: the same counter is the same frame
        while self.counters:
            counter = self.counters[0]
            try:
                with open(self._file(_hex8(counter)), "rb") as f:
                    head = f.read(6)
                    n, crc = struct.unpack("<HI", head)
                    frame = f.read(n)
                if len(frame) == n and crc32(frame) == crc:
                    self._head = (counter, frame)
                    return self._head
            except (OSError, ValueError):
                pass
            log.warn("spool: dropped damaged frame", counter)
            self.drop(counter)
        return None

    def drop(self, counter):
        if self.counters and self.counters[0] == counter:
            self.counters.pop(0)
        elif counter in self.counters:
            self.counters.remove(counter)
        self._remove(_hex8(counter))

    def loss_reported(self, count):
        self.lost -= count
        if self.lost < 0:
            self.lost = 0
        self._store_lost()
