# Frames the gateway has not acknowledged yet: a few in RAM, the rest in flash, oldest first.
#
# RAM first. A frame waits in RAM while the uplink sends it; answered within `after_ms` (the
# usual case with the link up) it never touches flash. A frame that waited longer, or that
# no longer fits the RAM slots, is appended to flash. The console line of a frame is printed
# (on_out) when it leaves RAM: in flash, answered, or dropped and counted. So every frame on the
# console survives a power cut or reached the gateway; a power cut loses only frames made in the
# last after_ms that the gateway had not answered, which were never printed (docs/firmware.md).
#
# Flash: segment files in a ring, "spool/<seq:08x>", each up to SEGMENT_BYTES of records:
#   u16 LE body length (bit 15: delta), u16 LE low half of the frame's CRC32, body
# A raw body is the frame. A delta body is the frame's length (u16 LE), then runs of (skip u8,
# count u8, count bytes) that turn the last frame of the same length in that segment into this
# one: frames of one sensor have one layout, so only the counter, time, values and MAC differ
# (a 145-byte frame takes ~40 bytes). Appending to a littlefs file commits atomically at the
# flush, so after a power cut a segment ends at a whole record; a record that does not decode
# or whose CRC does not match ends its segment's readable part (said on the console).
# A segment is removed when every frame in it is answered or dropped; the empty spool has no
# file. After a reset the writer starts a new segment and the reader starts at the oldest one:
# frames answered since the last drop record are sent again (the gateway answers 2.03).
#
# Bounded by `capacity` frames and `budget` bytes: when full, the oldest frame is dropped and
# counted; the count survives reboots (NVS "lost") until reported in a queue.loss event frame.
import os
import struct
import sys
import time
from binascii import crc32
from micropython import const
from fnode import log
from fnode.cose import counter_of

# Four 4 KB blocks less the block pointers littlefs keeps in blocks 1-3 of a file (its CTZ
# skip-list: 1, 2 and 1 words): a full segment takes exactly four blocks.
SEGMENT_BYTES = const(16368)
_RAM_FRAMES = const(16)
_AFTER_MS = const(1000)
_DELTA = const(0x8000)
_RESERVE = const(65536)  # free filesystem left to everything else when the budget is derived


def _name(seq):
    return "%08x" % seq


def _crc(frame):
    return crc32(frame) & 0xFFFF


def encode(ref, frame, out):
    # -> length of the record body written into out: a delta against ref, or the raw frame
    # when there is no ref (or the delta would not be smaller).
    n = len(frame)
    if ref is not None:
        struct.pack_into("<H", out, 0, n)
        w = 2
        i = 0
        last = 0  # end of the previous run
        while i < n and w < n:
            if frame[i] == ref[i]:
                i += 1
                continue
            j = i + 1
            # a run ends at three equal bytes: a shorter gap costs less inside the run
            while j < n and j - i < 255 and not (frame[j] == ref[j] and (j + 1 >= n or frame[j + 1] == ref[j + 1])
                                                  and (j + 2 >= n or frame[j + 2] == ref[j + 2])):
                j += 1
            skip = i - last
            while skip > 255:
                out[w] = 255
                out[w + 1] = 0
                w += 2
                skip -= 255
            out[w] = skip
            out[w + 1] = j - i
            out[w + 2:w + 2 + j - i] = frame[i:j]
            w += 2 + j - i
            last = i = j
        if w < n:
            return w | _DELTA
    out[:n] = frame
    return n


def decode(refs, body, delta):
    # -> the frame, or None if the body does not fit its reference
    if not delta:
        return bytes(body)
    n = struct.unpack_from("<H", body)[0]
    ref = refs.get(n)
    if ref is None:
        return None
    out = bytearray(ref)
    i = 2
    pos = 0
    end = len(body)
    while i + 2 <= end:
        pos += body[i]
        k = body[i + 1]
        if pos + k > n or i + 2 + k > end:
            return None
        out[pos:pos + k] = body[i + 2:i + 2 + k]
        pos += k
        i += 2 + k
    return bytes(out)


def read_record(f, refs):
    # -> (frame, record size) of the record at f's position, or None at the end of the segment,
    # at a record cut short, or at one that is damaged (said: it ends its segment's readable part).
    # Flash the filesystem itself cannot read (littlefs's EIO or ECORRUPT, as after a power cut
    # on worn flash) ends the segment the same way: the rest of the spool is still sent.
    try:
        head = f.read(4)
        if len(head) < 4:
            return None
        n, crc = struct.unpack("<HH", head)
        body = f.read(n & 0x7FFF)
    except OSError as exc:
        log.warn("spool: unreadable flash ends its segment:", exc)
        return None
    if len(body) < n & 0x7FFF:
        return None  # cut short: only on a filesystem that does not commit appends atomically
    frame = decode(refs, body, n & _DELTA)
    if frame is None or _crc(frame) != crc:
        log.warn("spool: damaged record ends its segment")
        return None
    refs[len(frame)] = frame
    return frame, 4 + (n & 0x7FFF)


def contents(path="spool", nvs=None):
    # -> [(counter, frame)] waiting in flash, oldest first (fnode.spoolscan; tools and tests).
    from fnode.spoolscan import contents
    return contents(path, nvs)


def _forget(name):
    # A module imported for one job: out of sys.modules and its package, so it is collected.
    sys.modules.pop(name, None)
    package, _, attr = name.rpartition(".")
    package = sys.modules.get(package)
    if package is not None and hasattr(package, attr):
        delattr(package, attr)


def _marks(nvs):
    # (counter below which flash frames were answered or dropped, the frame in doubt kept then)
    return _i32(nvs, "sptr", 0), _i32(nvs, "sdbt", -1)


def _i32(nvs, key, default):
    if nvs is None:
        return default
    try:
        return nvs.get_i32(key)
    except OSError:
        return default


class Spool:
    def __init__(self, path="spool", capacity=65536, nvs=None, budget=None, after_ms=_AFTER_MS,
                 ram_frames=_RAM_FRAMES, segment_bytes=SEGMENT_BYTES):
        self.path = path
        self.capacity = capacity
        self.nvs = nvs
        self.after_ms = after_ms
        self.ram_frames = min(ram_frames, max(1, capacity - 1))
        self.segment_bytes = segment_bytes
        self.on_out = None  # called with each frame as it leaves RAM (the console line)
        try:
            os.mkdir(path)
        except OSError:
            pass
        self.ram = []  # [(counter, frame, ticks_ms made)], newer than everything in flash
        self.buf = bytearray(4 + 1024 + 260)  # a record: header, body (a delta may run past a frame)
        self.lost = self._load_lost()
        self._skip_below, self._keep = _marks(nvs)
        # Flash: segment numbers oldest first, bytes and frames in them, the writer's next segment;
        # read once at start by fnode.spoolscan, imported for it and forgotten after it (a
        # running node never needs that code again: docs/firmware.md, "Memory budget").
        self.wfile = None
        self.wrefs = {}
        self.woff = 0
        self.held = None  # the frame in doubt when the spool overflowed (see _drop_oldest)
        import fnode.spoolscan as scan
        try:
            old = scan.scan(self)
            self._rewind()
            if budget is None:
                budget = self.used + self._free() - _RESERVE
            self.budget = max(budget, 2 * segment_bytes)
            scan.adopt(self, old)
        finally:
            _forget("fnode.spoolscan")
        # Counter of the frame last sent and not answered (set by the uplink): the gateway may
        # have stored it and only its answer was lost, so it is never the one dropped as lost.
        # After a reset that is the oldest frame: it may have been on its way at the power cut.
        head = self.peek()
        self.doubt = head[0] if head is not None else None

    def _wanted(self, counter):
        return counter >= self._skip_below or counter == self._keep

    def _free(self):
        try:
            st = os.statvfs(self.path)
            return st[0] * st[4]
        except (OSError, AttributeError):
            return 1 << 20

    def __len__(self):
        return len(self.ram) + self.nflash + (self.held is not None)

    def _file(self, seq):
        return self.path + "/" + _name(seq)

    def _load_lost(self):
        return _i32(self.nvs, "lost", 0)

    def _store_lost(self):
        if self.nvs is not None:
            self.nvs.set_i32("lost", self.lost)
            self.nvs.commit()

    # -- the reader ----------------------------------------------------------------------------
    def _rewind(self):
        self.rseq = self.segs[0] if self.segs else None
        self.roff = 0
        self.rrefs = {}
        self._head = None  # (counter, frame, offset after it) of the oldest frame in flash

    def _flash_head(self):
        # -> (counter, frame) of the oldest frame in flash still wanted, or None
        while self.nflash and self._head is None:
            if self.rseq is None:
                self.nflash = 0  # counted frames that cannot be read back: nothing to send
                return None
            got = self._read_one()
            if got is None:
                self._next_segment()
                continue
            counter, frame, off = got
            if self._wanted(counter):
                self._head = got
            else:
                self.roff = off
        return self._head

    def _read_one(self):
        # -> (counter, frame, offset after it) of the record at the reader's position, or None
        try:
            with open(self._file(self.rseq), "rb") as f:
                f.seek(self.roff)
                got = read_record(f, self.rrefs)
        except OSError:
            return None
        if got is None:
            return None
        return counter_of(got[0]), got[0], self.roff + got[1]

    def _next_segment(self):
        # The reader is past the end of its segment: remove it unless the writer still adds to it.
        if self.rseq == self.wseq and self.wfile is not None:
            if self.nflash:
                self.nflash = 0  # counted frames that could not be read: the writer's data is gone
            return
        self._remove_segment(self.rseq)
        self._rewind()

    def _remove_segment(self, seq):
        try:
            self.used -= os.stat(self._file(seq))[6]
            os.remove(self._file(seq))
        except OSError:
            pass
        if seq in self.segs:
            self.segs.remove(seq)

    def _consume_flash(self):
        # The oldest frame in flash is answered or dropped: move the reader past it.
        self.roff = self._head[2]
        self._head = None
        self.nflash -= 1
        if self.nflash == 0:
            # Nothing left in flash: every segment goes, so an idle spool has no file.
            self._close_writer()
            for seq in list(self.segs):
                self._remove_segment(seq)
            self.wseq += 1
            self._rewind()

    # -- the writer ----------------------------------------------------------------------------
    def _close_writer(self):
        if self.wfile is not None:
            self.wfile.close()
            self.wfile = None

    def _append(self, frame):
        n = encode(self.wrefs.get(len(frame)), frame, memoryview(self.buf)[4:])
        size = 4 + (n & 0x7FFF)
        if self.wfile is not None and self.woff + size > self.segment_bytes:
            self._close_writer()
            self.wseq += 1
        while self.used + size > self.budget and self._free_oldest_segment():
            pass
        if self.wfile is None:
            self.wrefs = {}
            n = encode(None, frame, memoryview(self.buf)[4:])
            size = 4 + n
            self.wfile = open(self._file(self.wseq), "ab")
            self.woff = 0
            self.segs.append(self.wseq)
            if self.rseq is None:
                self.rseq = self.wseq
        struct.pack_into("<HH", self.buf, 0, n, _crc(frame))
        self.wfile.write(memoryview(self.buf)[:size])
        self.wfile.flush()  # littlefs: lfs_file_sync, the record is committed
        self.woff += size
        self.used += size
        self.wrefs[len(frame)] = bytes(frame)
        self.nflash += 1

    def _free_oldest_segment(self):
        # Over the byte budget: the oldest segment goes with the frames still in it (lost, the
        # frame in doubt too). -> False when only the writer's segment is left.
        if len(self.segs) < 2 or self.rseq is None:
            return False
        while self.segs and self.rseq == self.segs[0] and self._flash_head() is not None:
            self._consume_flash()
            self.lost += 1
        if self.segs and self.rseq != self.segs[0]:
            self._remove_segment(self.segs[0])
        self._mark()
        return True

    def _write(self, entry):
        frame = entry[1]
        try:
            self._append(frame)
        except OSError:
            # Flash full (ENOSPC) or a write error: make room by dropping the oldest segment,
            # once; if that does not help the frame is lost, counted and reported like any other.
            self._close_writer()
            self.wseq += 1
            if not self._free_oldest_segment():
                self.lost += 1
                self._store_lost()
                return
            try:
                self._append(frame)
            except OSError:
                self._close_writer()
                self.wseq += 1
                self.lost += 1
                self._store_lost()

    # -- the queue -----------------------------------------------------------------------------
    def put(self, counter, frame):
        if self.ram and counter <= self.ram[-1][0]:
            return  # already queued (a retry of the same frame)
        self.ram.append((counter, bytes(frame), time.ticks_ms()))  # the caller's buffer is reused
        while len(self.ram) > self.ram_frames:
            self._spill()
        while len(self) > self.capacity:
            self._drop_oldest()

    def _spill(self):
        entry = self.ram.pop(0)
        self._write(entry)
        self._out(entry[1])

    def settle(self, now):
        # Frames that waited after_ms in RAM without an answer go to flash.
        ram = self.ram
        while ram and time.ticks_diff(now, ram[0][2]) >= self.after_ms:
            self._spill()

    def _out(self, frame):
        if self.on_out is not None:
            self.on_out(frame)

    def peek(self):
        # (counter, frame) of the oldest frame, or None
        if self.held is not None:
            return self.held
        head = self._flash_head()
        if head is not None:
            return head[0], head[1]
        if self.ram:
            return self.ram[0][0], self.ram[0][1]
        return None

    def drop(self, counter):
        # The gateway answered for this frame (the oldest).
        if self.held is not None and self.held[0] == counter:
            self.held = None
            return
        head = self._flash_head()
        if head is not None and head[0] == counter:
            self._consume_flash()
        elif self.ram and self.ram[0][0] == counter:
            self._out(self.ram.pop(0)[1])

    def _drop_oldest(self):
        # The oldest frame goes, except the one in doubt: that one goes out again first (and is
        # answered 2.03 if the gateway has it), so `lost` counts only frames never delivered.
        head = self._flash_head()
        if head is not None and head[0] == self.doubt and self.held is None and len(self) > 1:
            self.held = (head[0], head[1])  # out of the reader's way, sent first
            self._consume_flash()
            head = self._flash_head()
        if head is not None:
            self._consume_flash()
        elif self.ram:
            i = 1 if len(self.ram) > 1 and self.ram[0][0] == self.doubt else 0
            self._out(self.ram.pop(i)[1])
        self.lost += 1
        self._mark()

    def _mark(self):
        # After a drop as lost: where a reset's reader starts, so no dropped frame comes back.
        if self.nvs is None:
            return
        head = self._flash_head()
        below = head[0] if head is not None else 0
        keep = self.held[0] if self.held is not None else -1
        self._skip_below = below
        self.nvs.set_i32("sptr", below)
        if keep != self._keep:
            self._keep = keep
            self.nvs.set_i32("sdbt", keep)
        self._store_lost()

    def loss_reported(self, count):
        self.lost -= count
        if self.lost < 0:
            self.lost = 0
        self._store_lost()
