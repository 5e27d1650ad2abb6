# The node's memory as it reports it (docs/firmware.md, "Memory"): free heap, the lowest free heap
# seen since boot, the largest free block. Read in the boot frame and in the periodic health
# frame; a low-memory threshold (board "low_heap_bytes") raises a heap.low event.
#
# Free heap is gc.mem_free() after a collection. On the ESP32 port (v1.21 on) that includes the
# largest block the GC heap could still add from the ESP-IDF heap (py/modgc.c, "max_new_split"):
# it is what Python code can still allocate, not only what the heap holds now.
# The lowest free heap is also read between health frames, without a collection (cheap: one pass
# over the allocation table), so it counts garbage not yet collected and errs on the low side by
# at most gc.threshold() (boot.py sets 4 KB).
# The largest free block has no Python API on 1.24-1.26 (micropython.mem_info() prints it, returns
# nothing). On the ESP32 port it is taken from esp32.idf_heap_info(): the largest free block of the
# ESP-IDF heap, which an allocation that does not fit the GC heap gets as a new heap area
# (py/gc.c gc_try_add_heap) - a lower bound, as ESPHome's debug component reports the same
# ESP-IDF figure. Probing by allocation would grow the heap there, so it is not done.
import gc
import esp32
from micropython import const

_LOW_HEAP_BYTES = const(16384)  # default board "low_heap_bytes"
UNIT = "B"  # bytes (SenML unit registry, RFC 8798)


def largest_block():
    # The largest free block of the ESP-IDF data heap (see above); 0 when it reports none.
    best = 0
    for region in esp32.idf_heap_info(esp32.HEAP_DATA):
        if region[2] > best:
            best = region[2]
    return best


class Heap:
    def __init__(self, threshold=None):
        self.threshold = _LOW_HEAP_BYTES if threshold is None else threshold
        self.free = 0
        self.low = 0
        self.block = 0
        self.alarm = False  # below the threshold, reported, not yet recovered
        self.measure()

    def measure(self):
        # Full reading, after a collection: for the boot and health frames.
        gc.collect()
        self.free = gc.mem_free()
        self.block = largest_block()
        if self.low == 0 or self.free < self.low:
            self.low = self.free
        return self.free

    def check(self):
        # Cheap reading between health frames: keeps the lowest free heap. -> True when the free
        # heap, confirmed after a collection, has just fallen below the threshold (report it once;
        # it re-arms when the heap is back above the threshold).
        free = gc.mem_free()
        if free < self.low:
            self.low = free
        if free >= self.threshold:
            if self.alarm and self.measure() >= self.threshold:
                self.alarm = False
            return False
        if self.alarm or self.measure() >= self.threshold:
            return False
        self.alarm = True
        return True

    def add_records(self, b):
        # The three readings, into a frame being built (fnode.frame.FrameBuilder).
        b.add("heap.free", UNIT, self.free)
        b.add("heap.low", UNIT, self.low)
        b.add("heap.block", UNIT, self.block)
