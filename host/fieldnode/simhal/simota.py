# The ESP32's OTA app partitions and the bootloader's rollback states, for a virtual node whose
# sim.json says "partitions": "ota" (VirtualNode(partitions="ota")). Followed: ESP-IDF v5
# app_update/esp_ota_ops.c and bootloader_support (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE, which
# MicroPython's OTA builds set in boards/sdkconfig.ota), through MicroPython's esp32.Partition
# (ports/esp32/esp32_partition.c).
#
# The table is MicroPython's partitions-4MiB-ota.csv. The app partitions' bytes live in
# <node dir>/ota.bin (sparse; unwritten flash reads 0xFF), the otadata in <node dir>/otadata.json:
#   {"boot": label the bootloader tries, "running": label running now,
#    "states": {label: esp_ota_img_states_t}, "shipped": label holding the image flashed by USB}
# States: NEW after set_boot(); the bootloader turns NEW into PENDING_VERIFY and boots it; a
# PENDING_VERIFY it finds again (the image never called mark_app_valid_cancel_rollback) becomes
# ABORTED and the bootloader boots the other slot: the rollback needs no code in the new image.
import simnode

NEW = 0
PENDING_VERIFY = 1
VALID = 2
INVALID = 3
ABORTED = 4
UNDEFINED = 0xFFFFFFFF
TABLE = (
    (1, 2, 0x9000, 0x4000, "nvs"),
    (1, 0, 0xD000, 0x2000, "otadata"),
    (1, 1, 0xF000, 0x1000, "phy_init"),
    (0, 0x10, 0x10000, 0x180000, "ota_0"),
    (0, 0x11, 0x190000, 0x180000, "ota_1"),
    (1, 0x81, 0x310000, 0xF0000, "vfs"),
)
APPS = ("ota_0", "ota_1")
IMAGE_MAGIC = 0xE9  # esp_image_header_t.magic
_OTADATA = simnode.path("otadata.json")
_FLASH = simnode.path("ota.bin")
_ERR_VALIDATE_FAILED = -0x1503  # ESP_ERR_OTA_VALIDATE_FAILED
_ERR_ROLLBACK_FAILED = -0x1504  # ESP_ERR_OTA_ROLLBACK_FAILED


def enabled():
    return simnode.config().get("partitions") == "ota"


def row(label):
    for r in TABLE:
        if r[4] == label:
            return r
    return None


def load():
    return simnode.read_json(_OTADATA, None) or {"boot": "ota_0", "running": "ota_0", "states": {},
                                                   "shipped": "ota_0"}


def save(d):
    simnode.write_json(_OTADATA, d)


def state(d, label):
    return d["states"].get(label, UNDEFINED)


def other(label):
    return APPS[1] if label == APPS[0] else APPS[0]


def _file():
    try:
        return open(_FLASH, "r+b")
    except OSError:
        f = open(_FLASH, "w+b")
        return f


def read(offset, buf):
    # Flash never written reads as erased (0xFF), as a chip's does.
    with _file() as f:
        f.seek(0, 2)
        end = f.tell()
        n = len(buf)
        for i in range(n):
            buf[i] = 0xFF
        if offset < end:
            f.seek(offset)
            data = f.read(min(n, end - offset))
            buf[:len(data)] = data


def write(offset, data):
    simnode.writing()  # a power cut the host asked for lands here too
    with _file() as f:
        f.seek(0, 2)
        end = f.tell()
        pad = b"\xff" * 4096
        while end < offset:  # erased flash up to the write, a sector at a time
            n = min(4096, offset - end)
            f.write(pad[:n])
            end += n
        f.seek(offset)
        f.write(data)


def erase(offset, size):
    pad = b"\xff" * 4096
    for at in range(offset, offset + size, 4096):
        write(at, pad[:min(4096, offset + size - at)])


def image_valid(d, label):
    # esp_image_verify, reduced to the header magic: an image the node wrote, or the one shipped.
    if label == d.get("shipped"):
        return True
    buf = bytearray(1)
    read(row(label)[2], buf)
    return buf[0] == IMAGE_MAGIC


def bootloader():
    # Runs before anything else at each boot (simstartup): picks the app partition to run.
    d = load()
    sel = d["boot"]
    st = state(d, sel)
    if st == NEW and image_valid(d, sel):
        d["states"][sel] = PENDING_VERIFY
    elif st == PENDING_VERIFY or st in (INVALID, ABORTED) or not image_valid(d, sel):
        if st == PENDING_VERIFY:
            d["states"][sel] = ABORTED  # never confirmed: rolled back
        back = other(sel)
        if image_valid(d, back) and state(d, back) not in (INVALID, ABORTED):
            sel = back
    d["boot"] = d["running"] = sel
    save(d)


def set_boot(label):
    d = load()
    if not image_valid(d, label):
        raise OSError(_ERR_VALIDATE_FAILED, "ESP_ERR_OTA_VALIDATE_FAILED")
    d["boot"] = label
    if label != d["running"]:
        d["states"][label] = NEW
    save(d)


def mark_valid():
    d = load()
    if state(d, d["running"]) == PENDING_VERIFY:
        d["states"][d["running"]] = VALID
        save(d)


def mark_invalid_and_reboot():
    d = load()
    back = other(d["running"])
    if not image_valid(d, back) or state(d, back) in (INVALID, ABORTED):
        raise OSError(_ERR_ROLLBACK_FAILED, "ESP_ERR_OTA_ROLLBACK_FAILED")
    d["states"][d["running"]] = INVALID
    d["boot"] = back
    save(d)
    simnode.end("hard")


def running_version():
    # The version string of the running image's esp_app_desc_t (after the 24-byte image header
    # and an 8-byte segment header: magic, secure_version, 2 reserved words, then version[32]).
    d = load()
    if d["running"] == d.get("shipped"):
        return None
    buf = bytearray(32)
    read(row(d["running"])[2] + 0x30, buf)
    return bytes(buf).split(b"\0")[0].decode()
