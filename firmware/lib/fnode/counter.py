# The frame counter: never repeats, never goes backwards, and does not write flash per frame.
# NVS holds a high-water mark `ctr`; the node may use counters up to it. Before crossing it, it
# raises the mark by _BLOCK and commits. After a power cut the node restarts from the stored mark,
# skipping at most _BLOCK-1 unused values: a counter can be lost, never reused.
from micropython import const

_BLOCK = const(1024)
_MAX = const(0x7FFFFFFF)  # NVS i32; 2**31 frames is ~680 years at 1 frame/10 s


class Counter:
    def __init__(self, nvs, key="ctr", block=_BLOCK):
        self.nvs = nvs
        self.key = key
        self.block = block
        try:
            mark = nvs.get_i32(key)
        except OSError:
            mark = 0
        self.next = mark + 1
        self.limit = mark  # nothing reserved yet in this boot
        self.reservations = 0

    def take(self):
        n = self.next
        if n > self.limit:
            self._reserve(n)
        self.next = n + 1
        return n

    def _reserve(self, n):
        limit = n + self.block - 1
        if limit > _MAX:
            raise OverflowError("frame counter exhausted: rotate the key and reset the counter")
        self.nvs.set_i32(self.key, limit)
        self.nvs.commit()  # the reservation must be durable before any counter in it is used
        self.limit = limit
        self.reservations += 1
