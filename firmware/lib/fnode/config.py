# Node settings and secrets in NVS (esp32.NVS), never in a file on the filesystem: a file would
# travel with every filesystem image and be readable over the REPL with a plain `cat`.
import esp32
from micropython import const

NAMESPACE = "fieldnode"
KEY_LEN = const(32)
KID_LEN = const(8)


class Config:
    def __init__(self, nvs=None):
        self.nvs = nvs or esp32.NVS(NAMESPACE)

    def blob(self, name, size):
        buf = bytearray(size)
        try:
            n = self.nvs.get_blob(name, buf)
        except OSError:
            return None
        return bytes(buf[:n])

    def text(self, name, default=None):
        b = self.blob(name, 96)
        return b.decode() if b is not None else default

    def i32(self, name, default=None):
        try:
            return self.nvs.get_i32(name)
        except OSError:
            return default

    def key(self):
        k = self.blob("key", KEY_LEN)
        return k if k is not None and len(k) == KEY_LEN else None

    def kid(self):
        k = self.blob("kid", KID_LEN)
        return k if k is not None and len(k) == KID_LEN else None

    def alg(self):
        return self.i32("alg", 4)

    def gateway(self):
        # "host:port"; None when the node was provisioned for USB only.
        gw = self.text("gw")
        if not gw:
            return None
        host, _, port = gw.rpartition(":")
        return (host, int(port)) if host else (gw, 5683)

    def wifi(self):
        return self.text("ssid"), self.text("wpass", "")

    def name(self):
        return self.text("name", "")

    def missing(self):
        # What stops the node from sending, in words for the serial console.
        if self.key() is None:
            return "no device key in NVS: provision this node (fieldnode provision --port ...)"
        if self.kid() is None:
            return "no key id in NVS: provision this node again"
        return None

    def store_identity(self, key, kid, alg):
        # Provisioning writes all three and commits once: NVS commit is atomic per namespace.
        self.nvs.set_blob("key", key)
        self.nvs.set_blob("kid", kid)
        self.nvs.set_i32("alg", alg)
        self.nvs.commit()

    def store_text(self, name, value):
        self.nvs.set_blob(name, value.encode())
        self.nvs.commit()
