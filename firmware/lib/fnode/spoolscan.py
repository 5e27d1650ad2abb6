# The spool's flash read once at start (fnode.spool.Spool imports this module for it and forgets
# it after it: a running node never needs this code again), and read by tools and tests on a
# node that is off (contents). The ring's format is in fnode.spool.
import os
import struct
from binascii import crc32
from fnode import log
from fnode.cose import counter_of
from fnode.spool import _marks, _name, read_record


def records(f):
    # The frames of one segment file, in order.
    refs = {}
    while True:
        got = read_record(f, refs)
        if got is None:
            return
        yield got[0]


def _seq(name):
    if len(name) == 8:
        try:
            return int(name, 16)
        except ValueError:
            pass
    return None


def segments(path):
    # Segment numbers, oldest first; anything else in the directory (a temporary file of older
    # firmware, junk) is thrown away, and said.
    out = []
    for name in os.listdir(path):
        seq = _seq(name)
        if seq is None:
            try:
                os.remove(path + "/" + name)
            except OSError:
                pass
            log.warn("spool: discarded", name)
        else:
            out.append(seq)
    out.sort()
    return out


def _old_frame(path):
    # The frame in a file of the one-file-per-frame spool of earlier firmware (u16 length, u32
    # CRC32, frame), or None: such files are taken into the ring at start, not lost to an update.
    try:
        with open(path, "rb") as f:
            data = f.read(1100)
    except OSError:
        return None
    if len(data) > 6:
        n, crc = struct.unpack_from("<HI", data)
        if n == len(data) - 6 and crc32(data[6:]) == crc:
            return data[6:]
    return None


def scan(spool):
    # Sets the spool's segments (oldest first), the bytes and wanted frames in them and the
    # writer's next segment (after a reset: a new one). -> [(seq, frame)] of an earlier
    # firmware's spool, in counter order, for adopt() once the spool can append.
    names = segments(spool.path)
    old = []
    for seq in names:
        frame = _old_frame(spool._file(seq))
        if frame is not None:
            old.append((seq, frame))
    spool.segs = [seq for seq in names if seq not in [o[0] for o in old]]
    spool.used = 0
    spool.nflash = 0
    for seq in spool.segs:
        # A segment the filesystem cannot open is counted as empty: the reader finds it so too,
        # and removes it, rather than the node failing at every boot on it.
        try:
            spool.used += os.stat(spool._file(seq))[6]
            with open(spool._file(seq), "rb") as f:
                for frame in records(f):
                    if spool._wanted(counter_of(frame)):
                        spool.nflash += 1
        except OSError as exc:
            log.warn("spool: segment", _name(seq), "unreadable:", exc)
    spool.wseq = names[-1] + 1 if names else 0
    return old


def adopt(spool, old):
    # The old spool's frames into the ring before their files go: a power cut loses none.
    for _seq, frame in old:
        spool._append(frame)
    for seq, _frame in old:
        os.remove(spool._file(seq))
    if old:
        log.info("spool: took", len(old), "frames of the old spool")


def contents(path="spool", nvs=None):
    # -> [(counter, frame)] waiting in flash, oldest first, as a Spool made now would send them.
    # Reads only (tools and tests call it on a node that is off).
    skip_below, keep = _marks(nvs)
    out = []
    try:
        names = sorted(q for q in (_seq(n) for n in os.listdir(path)) if q is not None)
    except OSError:
        return out
    for seq in names:
        try:
            with open(path + "/" + _name(seq), "rb") as f:
                for frame in records(f):
                    c = counter_of(frame)
                    if c >= skip_below or c == keep:
                        out.append((c, frame))
        except OSError:
            pass  # removed while this read (the node runs)
    return out
