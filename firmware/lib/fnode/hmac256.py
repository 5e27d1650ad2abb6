# HMAC-SHA256 (RFC 2104) on hashlib.sha256, for the node's hot path.
#
# The key pads are computed once per key. MicroPython's sha256 has no copy(), so each MAC still
# makes two sha256 objects and two digests: that is the whole per-MAC allocation
# (~450 bytes on the 64-bit unix port, less on the ESP32). Named hmac256, not hmac, so that it
# cannot shadow the standard library's hmac on the host.
from micropython import const
from hashlib import sha256

_BLOCK = const(64)
_DIGEST_SIZE = const(32)


class HMAC256:
    """HMAC-SHA256 with one key.

    h = mac.start(); h.update(...)...; then mac.finish (the MAC) or mac.verify (a tag).
    """

    def __init__(self, key):
        if len(key) > _BLOCK:
            key = sha256(key).digest()
        ipad = bytearray(_BLOCK)
        opad = bytearray(_BLOCK)
        for i in range(_BLOCK):
            k = key[i] if i < len(key) else 0
            ipad[i] = k ^ 0x36
            opad[i] = k ^ 0x5C
        self._ipad = bytes(ipad)
        self._opad = bytes(opad)

    def start(self):
        """A sha256 already fed the inner pad: update() it with the message."""
        return sha256(self._ipad)

    def finish(self, h):
        """The 32-byte MAC of the message fed to h (a new bytes object)."""
        outer = sha256(self._opad)
        outer.update(h.digest())
        return outer.digest()

    def verify(self, h, buf, off, n):
        """True if buf[off:off+n] is the first n bytes of the MAC (n >= 8), compared in constant
        time: every byte is looked at, whatever differs."""
        d = self.finish(h)
        if n < 8 or n > _DIGEST_SIZE or off + n > len(buf):
            return False
        acc = 0
        for i in range(n):
            acc |= d[i] ^ buf[off + i]
        return acc == 0

    def digest(self, msg):
        """MAC of one buffer (convenience; not for the hot path)."""
        h = self.start()
        h.update(msg)
        return self.finish(h)
