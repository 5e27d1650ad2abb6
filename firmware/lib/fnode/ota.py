# An application update (docs/updates.md), run when the gateway's ack of a frame offers one
# (fnode.app.Node.take_offer, Node.update): fetch the signed manifest, check it, download
# the image block-wise into a staging file (resumed after a reset or power cut), check its
# SHA-256, unpack it into the inactive slot, then point /app.json at it on trial and reset. Any
# refusal is a signed event naming the reason, and the running application goes on. Imported
# only while an update runs.
import machine
import os
import sys
from binascii import hexlify
from hashlib import sha256
from time import ticks_add, ticks_ms
from fnode import log
from fnode.cose import KIND_EVENT
from fnode.sensors import unix_time
from fnode.blockget import BlockGet, CONTENT, szx_of
from fnode.cbordecode import Tag, loads
from fnode.hkdf import hkdf
from fnode.hmac256 import HMAC256

UPDATE_LABEL = b"fieldnode update manifest v1"  # HKDF info: this key signs manifests only
PART = "/ota.part"  # the image as downloaded so far
PART_MANIFEST = "/ota.man"  # the manifest the part belongs to
_PROTECTED = b"\x43\xa1\x01\x05"  # bstr {1: 5}: alg HMAC 256/256
_MAC_CONTEXT = b"\x84\x64MAC0"


def version_tuple(text):
    try:
        return tuple(int(p) for p in text.split("."))
    except (ValueError, AttributeError):
        return None


def _bstr(data):
    n = len(data)
    if n < 24:
        return bytes((0x40 | n,)) + data
    if n < 0x100:
        return bytes((0x58, n)) + data
    return bytes((0x59, n >> 8, n & 0xFF)) + data


def open_manifest(data, key):
    # COSE_Mac0 with HMAC 256/256 over the manifest's CBOR map. -> (map, None) or (None, reason).
    try:
        msg = loads(data)
    except ValueError:
        return None, "bad-manifest"
    if not isinstance(msg, Tag) or msg.tag != 17 or not isinstance(msg.value, list) or len(msg.value) != 4:
        return None, "bad-manifest"
    prot, _unprot, payload, tag = msg.value
    if _bstr(prot) != _PROTECTED or not isinstance(payload, bytes) or not isinstance(tag, bytes):
        return None, "bad-manifest"
    mac = HMAC256(hkdf(key, UPDATE_LABEL))
    h = mac.start()
    h.update(_MAC_CONTEXT)
    h.update(_PROTECTED)
    h.update(b"\x40")
    h.update(_bstr(payload))
    if len(tag) != 32 or not mac.verify(h, tag, 0, 32):
        return None, "bad-mac"
    try:
        m = loads(payload)
    except ValueError:
        return None, "bad-manifest"
    return (m, None) if isinstance(m, dict) else (None, "bad-manifest")


def check_manifest(m, board, running, slot_bytes):
    # -> the reason to refuse a verified manifest, or None. running and slot_bytes are the
    # tier's: the application's version and slot, or the firmware's and its OTA partition.
    ver = version_tuple(m.get("ver"))
    if m.get("tier") not in ("app", "fw") or ver is None or not isinstance(m.get("size"), int) \
            or not isinstance(m.get("sha"), bytes):
        return "bad-manifest"
    if m.get("board") != board:
        return "wrong-board"
    need = version_tuple(m.get("minfw", "0"))
    if need is None or (m["tier"] == "app" and tuple(sys.implementation.version[:3]) < need):
        return "needs-newer-firmware"
    if ver <= (version_tuple(running) or ()):
        return "not-newer"
    if m["size"] > slot_bytes:
        return "too-large"
    return None


def _exists(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _rmtree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _makedirs(path):
    d = ""
    for part in path.strip("/").split("/"):
        d += "/" + part
        try:
            os.mkdir(d)
        except OSError:
            pass


def unpack(part, slot_dir):
    # The image: entries of [path length u8][path][size u32 big-endian][bytes], into slot_dir.
    _rmtree(slot_dir)
    _makedirs(slot_dir)
    buf = bytearray(512)
    with open(part, "rb") as f:
        while True:
            head = f.read(1)
            if not head:
                return
            name = f.read(head[0]).decode()
            if ".." in name or name[:1] == "/":
                raise ValueError("bad path in image")
            n = int.from_bytes(f.read(4), "big")
            dest = slot_dir + "/" + name
            _makedirs(dest[:dest.rfind("/")])
            with open(dest, "wb") as out:
                while n:
                    k = f.readinto(memoryview(buf)[:min(n, len(buf))])
                    if not k:
                        raise ValueError("image truncated")
                    out.write(memoryview(buf)[:k])
                    n -= k


class FileSink:
    # The application image, appended to PART a block at a time, each flushed (a littlefs commit).
    def __init__(self, manifest):
        self.manifest = manifest
        self.f = None
        self.have = 0

    def resume(self, bs, size):
        # -> bytes already stored for this manifest (0: start over): whole blocks, or all of it
        have = _exists(PART) if _read(PART_MANIFEST) == self.manifest else -1
        if have < 0 or have > size or (have % bs and have != size):
            _remove(PART)
            with open(PART_MANIFEST + ".new", "wb") as f:
                f.write(self.manifest)
            os.rename(PART_MANIFEST + ".new", PART_MANIFEST)
            have = 0
        self.have = have
        return have

    def prefix(self, h):
        buf = bytearray(512)
        with open(PART, "rb") as f:
            while True:
                k = f.readinto(buf)
                if not k:
                    return
                h.update(memoryview(buf)[:k])

    def open(self):
        self.f = open(PART, "ab" if self.have else "wb")

    def write(self, data):
        self.f.write(data)
        self.f.flush()  # littlefs commits the block: a power cut keeps it

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None

    def discard(self):
        _remove(PART)


class Update:
    def __init__(self, node, slot_kb, block):
        self.node = node
        self.slot_bytes = slot_kb * 1024
        self.block = block
        self.boot = sys.modules.get("fnboot")

    def running(self):
        st = self.boot.state if self.boot is not None else None
        if st:
            return st.get("ver", "0")
        return sys.modules["fnode.app"].VERSION

    def refuse(self, why, ver):
        log.warn("update refused:", why)
        b = self.node.builder
        b.begin(KIND_EVENT, self.node.counter.take(), unix_time())
        b.add_str("event", "update.refused")
        b.add_str("reason", why)
        b.add_str("offer", ver)
        self.node.uplink.submit(b.finish())

    async def run(self, offer):
        # -> offer when refused (not fetched again until another is offered), else None
        node = self.node
        if self.boot is None:  # started without fnboot (an old main.py): nowhere to switch slots
            self.refuse("no-boot-code", str(offer, "utf-8"))
            return offer
        kid = hexlify(node.cfg.kid())
        get = BlockGet(node.uplink.addr, (b"u", kid, b"m"))
        try:
            data = await self.fetch_manifest(get)
            if data is None:
                return None  # no answer: tried again at the next offer
            # The image's first block is asked for now and arrives while the manifest is checked
            # (a GET changes nothing; a refused manifest leaves its answer unread). download()
            # asks again when what is stored already says to start elsewhere.
            get.path = (b"u", kid, b"i")  # as long as the manifest's path: the same buffer
            get.request(0, szx_of(self.block))
            m, why = open_manifest(data, node.cfg.key())
            sink = None
            if why is None:
                sink, running, room = self.target(m, data)
                why = check_manifest(m, node.board_name, running, room)
            if why is not None:
                self.refuse(why, str(offer, "utf-8"))
                return offer
            digest = await self.download(get, m, sink)
        finally:
            get.close()
        if digest is None:
            return None
        if digest != m["sha"]:
            sink.discard()
            self.refuse("hash-mismatch", m["ver"])
            return offer
        self.settle_spool()
        if m.get("tier") == "fw":
            sink.install(m["ver"])  # resets into the new firmware
        self.install(m["ver"])
        return None

    def target(self, m, manifest):
        # -> (where the image goes, the version it replaces, the room there) for its tier
        if m.get("tier") == "fw":
            from fnode.otafw import PartitionSink
            sink = PartitionSink(manifest)
            return sink, sink.running_version(), sink.room()
        return FileSink(manifest), self.running(), self.slot_bytes

    def settle_spool(self):
        spool = self.node.uplink.spool
        if spool is not None:  # frames still waiting in RAM for their answer go to flash first
            spool.settle(ticks_add(ticks_ms(), spool.after_ms))

    async def fetch_manifest(self, get):
        out = b""
        num = 0
        while True:
            if await get.get(num, szx_of(self.block)) != CONTENT or get.payload is None:
                return None
            out += get.payload
            if not get.more or len(out) > 1024:
                return out
            num = get.num + 1

    async def download(self, get, m, sink):
        # -> SHA-256 of the whole image, or None when the gateway stopped answering (what is
        # stored stays, and the next offer resumes from it)
        size = m["size"]
        bs = 16 << szx_of(self.block)
        have = sink.resume(bs, size)
        h = sha256()
        if have:
            log.info("update: resuming at", have, "of", size, "bytes")
            sink.prefix(h)  # what is there already counts in the hash
        sink.open()
        try:
            if 0 < have < size:  # block 0 is already asked for (run)
                get.request(have // bs, szx_of(bs))
            while have < size:
                code = await get.answer()
                data = get.payload
                if code != CONTENT or data is None or get.num * (16 << get.szx) != have:
                    return None
                bs = 16 << get.szx  # the gateway may answer with smaller blocks (RFC 7959 §2.4)
                end = have + len(data)
                if len(data) != min(bs, size - have) or get.more != (end < size):
                    return None
                if end < size:
                    get.request(end // bs, get.szx)  # in flight while this block is stored
                sink.write(data)
                h.update(data)
                have = end
        finally:
            sink.close()
        return h.digest()

    def install(self, ver):
        boot = self.boot
        st = boot.state or {"slot": "", "ver": self.running()}
        slot = "b" if st.get("slot") == "a" else "a"
        # The pointer stops naming the slot as a way back before that slot is overwritten.
        boot.state = {"slot": st.get("slot", ""), "ver": st["ver"], "last": st.get("last")}
        boot.write_state(boot.state)
        unpack(PART, boot.slot_path(slot))
        boot.state = {"slot": slot, "ver": ver, "prev": st.get("slot", ""), "pver": st["ver"],
                      "trial": 1, "tries": 0, "last": st.get("last")}
        boot.write_state(boot.state)
        _remove(PART)
        _remove(PART_MANIFEST)
        log.info("update: installed", ver, "in slot", slot, "- restarting on trial")
        machine.reset()
