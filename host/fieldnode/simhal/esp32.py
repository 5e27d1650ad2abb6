# esp32 for the virtual node: NVS kept in <node dir>/nvs.json, plus the small things around it.
#
# NVS errors are the ESP32 port's: a missing key (or one stored with another type) raises
# OSError(-4354, "ESP_ERR_NVS_NOT_FOUND"); a get_blob buffer too small for the value raises
# OSError(-4364, "ESP_ERR_NVS_INVALID_LENGTH"); with world.json "nvs_full" every set_* raises
# OSError(-4357, "ESP_ERR_NVS_NOT_ENOUGH_SPACE"); a key over 15 characters raises
# OSError(-4361, "ESP_ERR_NVS_KEY_TOO_LONG"); set_i32 of a value outside the i32 range raises
# OverflowError and of a float TypeError, as the port's mp_obj_get_int does. Sources and values:
# docs/virtual-node.md, "Where the simulation follows the ESP32 port".
#
# Durability has two modes, chosen by sim.json "nvs":
#   "commit" (default): set_*/erase_key change this boot's view; commit() replaces the file
#       atomically with every committed namespace, so a kill -9 at any moment leaves the state
#       of the last commit, and a commit of several keys is all-or-nothing.
#   "esp-idf": as ESP-IDF really behaves: every set_*/erase_key is written at once (each one
#       atomic on its own) and commit() does nothing (nvs_commit() is a no-op in ESP-IDF), so a
#       power cut between two set_* calls keeps the first and loses the second.
import simnode

_FILE = simnode.path("nvs.json")
_NOT_FOUND = -4354  # -ESP_ERR_NVS_NOT_FOUND (0x1102)
_INVALID_LENGTH = -4364  # -ESP_ERR_NVS_INVALID_LENGTH (0x110c)
_KEY_TOO_LONG = -4361  # -ESP_ERR_NVS_KEY_TOO_LONG (0x1109)
_NOT_ENOUGH_SPACE = -4357  # -ESP_ERR_NVS_NOT_ENOUGH_SPACE (0x1105)
_MAX_NAME = 15

_disk = None  # namespace -> {key: [type, value]} as last committed
_live = {}  # namespace -> {key: [type, value]} as this boot sees it


def _load():
    global _disk
    if _disk is None:
        _disk = simnode.read_json(_FILE, {})


def _write_through():
    return simnode.config().get("nvs") == "esp-idf"


def _err(code, name):
    return OSError(code, name)


class NVS:
    def __init__(self, namespace):
        if len(namespace) > _MAX_NAME:
            raise _err(_KEY_TOO_LONG, "ESP_ERR_NVS_KEY_TOO_LONG")
        _load()
        self.ns = namespace
        if namespace not in _live:
            _live[namespace] = dict(_disk.get(namespace, {}))
        self._items = _live[namespace]

    def __repr__(self):
        return "<NVS namespace>"

    def _set(self, key, item):
        if len(key) > _MAX_NAME:
            raise _err(_KEY_TOO_LONG, "ESP_ERR_NVS_KEY_TOO_LONG")
        import simworld
        if simworld.get().get("nvs_full"):  # no free entry: NVS writes a new entry for every set
            raise _err(_NOT_ENOUGH_SPACE, "ESP_ERR_NVS_NOT_ENOUGH_SPACE")
        self._items[key] = item
        if _write_through():
            self._persist()

    def _get(self, key, kind):
        item = self._items.get(key)
        if item is None or item[0] != kind:
            raise _err(_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        return item[1]

    def set_i32(self, key, value):
        if not isinstance(value, int):  # mp_obj_get_int takes no float or str
            raise TypeError("can't convert %s to int" % type(value).__name__)
        if not -0x80000000 <= value <= 0x7FFFFFFF:
            raise OverflowError("overflow converting long int to machine word")
        self._set(key, ["i32", value])

    def get_i32(self, key):
        return self._get(key, "i32")

    def set_blob(self, key, value):
        import binascii
        self._set(key, ["blob", binascii.hexlify(bytes(value)).decode()])

    def get_blob(self, key, buffer):
        import binascii
        data = binascii.unhexlify(self._get(key, "blob"))
        if len(data) > len(buffer):
            raise _err(_INVALID_LENGTH, "ESP_ERR_NVS_INVALID_LENGTH")
        buffer[:len(data)] = data
        return len(data)

    def erase_key(self, key):
        if key not in self._items:
            raise _err(_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        del self._items[key]
        if _write_through():
            self._persist()

    def commit(self):
        if not _write_through():
            self._persist()

    def _persist(self):
        simnode.writing()
        _disk[self.ns] = dict(self._items)
        simnode.write_json(_FILE, _disk)


# -- the rest of the module, as far as a node uses it -----------------------------------------
HEAP_DATA = 4
HEAP_EXEC = 1
WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True


def mcu_temperature():
    import simworld
    return simworld.value("mcu_temp", 40.0)


def raw_temperature():
    # The original ESP32's sensor: degrees Fahrenheit, uncalibrated.
    return int(mcu_temperature() * 9 / 5 + 32)


def idf_heap_info(capabilities):
    # [(total, free, largest free block, minimum free)] of the one region a virtual node has: the
    # unix port's GC heap (-X heapsize), which never grows, standing in for the ESP-IDF heap that
    # the ESP32 port's GC heap grows into. The largest free block is found by allocating: safe
    # here, as the heap cannot grow and the HAL's timer thread only schedules (on a board a probe
    # would grow the heap, and ESP-IDF's tasks allocate beside it).
    import gc
    free = gc.mem_free()
    return [(free + gc.mem_alloc(), free, _largest_free(free), free)]


def _largest_free(hi):
    # Binary search for the largest bytearray that can be allocated, to 64 bytes. A failed
    # allocation collects first, so the garbage of earlier tries does not count against later ones.
    lo = 0
    while hi - lo > 64:
        mid = (lo + hi) // 2
        try:
            bytearray(mid)
            lo = mid
        except MemoryError:
            hi = mid
    import gc
    gc.collect()  # leave none of the tries behind: the firmware reads the free heap next
    return lo


def wake_on_ext0(pin, level):
    pass


def wake_on_ext1(pins, level):
    pass


def wake_on_touch(wake):
    pass


def gpio_deep_sleep_hold(enable):
    pass


class Partition:
    # The layout of MicroPython's generic 4 MB ESP32 build (no OTA slots, partitions that hold no
    # data), or with sim.json "partitions": "ota" its OTA build: two app slots with data, and the
    # bootloader's rollback states (simota.py).
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1
    _GENERIC = (
        (1, 2, 0x9000, 0x6000, "nvs"),
        (1, 1, 0xF000, 0x1000, "phy_init"),
        (0, 0, 0x10000, 0x1F0000, "factory"),
        (1, 129, 0x200000, 0x200000, "vfs"),
    )

    @staticmethod
    def _table():
        import simota
        return simota.TABLE if simota.enabled() else Partition._GENERIC

    def __init__(self, id, block_size=4096, _row=None):
        # As ports/esp32/esp32_partition.c: BOOT or RUNNING, another integer is ValueError, a
        # label is looked up among the app partitions only and a missing one is OSError(ENOENT).
        if _row is None:
            if id in (Partition.BOOT, Partition.RUNNING):
                id = _current(id)
            elif isinstance(id, int):
                raise ValueError()
            for row in Partition._table():
                if row[0] == Partition.TYPE_APP and row[4] == id:
                    _row = row
                    break
            else:
                raise OSError(2)  # ENOENT
        self._row = _row
        self.block_size = block_size

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        return [Partition(r[4], block_size, r) for r in Partition._table()
                if r[0] == type and (subtype == 0xFF or r[1] == subtype)
                and (label is None or r[4] == label)]

    def info(self):
        t, st, addr, size, label = self._row
        return (t, st, addr, size, label, False)

    def _ota(self):
        import simota
        if not simota.enabled():
            raise OSError(2)  # ENOENT: the generic build has no OTA slots
        return simota

    def get_next_update(self):
        ota = self._ota()
        return Partition(ota.other(ota.load()["running"]), self.block_size)

    def set_boot(self):
        self._ota().set_boot(self._row[4])

    def readblocks(self, block, buf, offset=0):
        self._ota().read(self._row[2] + block * self.block_size + offset, buf)

    def writeblocks(self, block, buf, offset=None):
        # Without an offset the blocks are erased first (esp_partition_erase_range), as the port does.
        ota = self._ota()
        at = self._row[2] + block * self.block_size
        if offset is None:
            span = (len(buf) + self.block_size - 1) // self.block_size * self.block_size
            if span != len(buf):  # whole blocks are overwritten by the data itself
                ota.erase(at, span)
            offset = 0
        ota.write(at + offset, bytes(buf))

    def ioctl(self, op, arg):
        if op == 4:
            return self._row[3] // self.block_size
        if op == 5:
            return self.block_size
        if op == 6:
            self._ota().erase(self._row[2] + arg * self.block_size, self.block_size)
        return 0

    @staticmethod
    def mark_app_valid_cancel_rollback():
        import simota
        if simota.enabled():
            simota.mark_valid()

    @staticmethod
    def mark_app_invalid_rollback_and_reboot():
        import simota
        if not simota.enabled():
            raise OSError(-0x1504, "ESP_ERR_OTA_ROLLBACK_FAILED")
        simota.mark_invalid_and_reboot()

    def __repr__(self):
        t, st, addr, size, label = self._row
        return f"<Partition type={t}, subtype={st}, address={addr}, size={size}, label={label}, encrypted=0>"


def _current(which):
    import simota
    if not simota.enabled():
        return "factory"
    d = simota.load()
    return d["running"] if which == Partition.RUNNING else d["boot"]
