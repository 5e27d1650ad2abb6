# Node settings and secrets in NVS (esp32.NVS), never in a file on the filesystem: a file would
# travel with every filesystem image and be readable over the REPL with a plain `cat`.
import esp32
from micropython import const

NAMESPACE = "fieldnode"
# The identity is ONE blob, alg (1) + kid (8) + key (32): ESP-IDF writes each NVS entry
# atomically at set time (commit() does nothing there), so separate entries for key, kid and
# alg could be torn by a power cut into a key of one generation and a kid of another.
ID_LEN = const(41)  # the key's 32 bytes and the kid's 8 are fnode.provision's
# The settings are ONE blob too, for the same reason: a power cut while provisioning must leave
# the old set or the new one, never a new gateway with the old Wi-Fi password. Format: version
# byte 1, then name, gw, ssid, wpass, gws, each a length byte and UTF-8 (empty: not set), written
# by fnode.provision.pack_settings (not here: a running node only reads it). "gw" is the preferred
# gateway, "gws" the ones to fail over to, in order, comma-separated (docs/firmware.md,
# "Failover"): last, so firmware that knows only the first four reads them as before and keeps
# sending to "gw"; a blob written by such firmware simply ends before "gws".
SETTINGS = "cfg"
FIELDS = ("name", "gw", "ssid", "wpass", "gws")
_SETTINGS_MAX = const(1 + 5 * 256)


def parse_gateway(gw):
    # "host" or "host:port" -> (host, port); ValueError for anything else. The host tools check
    # the setting before writing it, but a node provisioned by an older tool or by hand may hold
    # e.g. "coap://10.0.0.5": the caller must go on without a gateway rather than stop at boot.
    host, sep, port = gw.rpartition(":")
    if not sep:
        host, port = gw, "5683"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(gw)
    for c in host:
        if not (c.isalpha() or c.isdigit() or c in ".-"):
            raise ValueError(gw)
    return host, int(port)


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

    def settings(self):
        # {field: text} of the fields that are set. Firmware before the "cfg" blob kept one entry
        # per field: such a node is read as it was until it is provisioned again.
        b = self.blob(SETTINGS, _SETTINGS_MAX)
        out = {}
        if b is None or not b or b[0] != 1:
            for field in FIELDS:
                v = self.text(field)
                if v:
                    out[field] = v
            return out
        i = 1
        for field in FIELDS:
            if i >= len(b):
                break  # written before the field existed
            n = b[i]
            if n:
                out[field] = b[i + 1:i + 1 + n].decode()
            i += 1 + n
        return out

    def setting(self, field, default=None):
        return self.settings().get(field, default)

    def i32(self, name, default=None):
        try:
            return self.nvs.get_i32(name)
        except OSError:
            return default

    def identity(self, name="id"):
        # (alg, kid, key) or None
        b = self.blob(name, ID_LEN)
        if b is None or len(b) != ID_LEN or b[0] not in (4, 5):
            return None
        return b[0], b[1:9], b[9:]

    def key(self):
        i = self.identity()
        return i[2] if i else None

    def kid(self):
        i = self.identity()
        return i[1] if i else None

    def alg(self):
        i = self.identity()
        return i[0] if i else 4

    def gateway(self):
        # (host, port); None when the node was provisioned for USB only; ValueError for a setting
        # it cannot use (see parse_gateway).
        gw = self.setting("gw")
        if not gw:
            return None
        return parse_gateway(gw)

    def wifi(self):
        s = self.settings()
        return s.get("ssid"), s.get("wpass", "")

    def name(self):
        return self.setting("name", "")

    def missing(self):
        # What stops the node from sending, in words for the serial console.
        if self.identity() is None:
            return "no device key in NVS: provision this node (fieldnode provision --port ...)"
        return None

