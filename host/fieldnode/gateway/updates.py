"""The gateway's side of updates (docs/updates.md): the Update-Offer option on the ack of a
frame from a node that has an offer, and GET /u/<kid>/m (the node's signed manifest) and
/u/<kid>/i (the image) with block-wise transfer (RFC 7959 Block2). Reads the updates directory
(updates/site.py) again when offers.json changes; the images are read once per release."""
from __future__ import annotations

import os
from pathlib import Path

from ..updates.site import UpdateSite
from ..wire import coap

OPT_UPDATE_OFFER = 65000  # experimental-use range (RFC 7252 §12.2); the node's fnode.coap knows it
MAX_SZX = 6  # 1024-byte blocks


def _block2(msg: coap.Message) -> tuple[int, int]:
    value = msg.option(coap.BLOCK2)
    if value is None:
        return 0, MAX_SZX
    v = coap.decode_uint(value)
    return v >> 4, min(v & 7, MAX_SZX)


class UpdateServer:
    def __init__(self, root: Path, max_szx: int = MAX_SZX) -> None:
        self.site = UpdateSite(root)
        self.max_szx = max_szx
        self._offers: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        self._images: dict[str, bytes] = {}

    def _refresh(self) -> None:
        try:
            st = os.stat(self.site.root / "offers.json")
            stamp = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            self._offers = self.site.offers()

    def offer_option(self, kid: bytes) -> tuple[tuple[int, bytes], ...]:
        """The option to put on the ack of this node's frame: (Update-Offer, version) or none."""
        self._refresh()
        version = self._offers.get(kid.hex())
        return ((OPT_UPDATE_OFFER, version.encode()),) if version else ()

    @staticmethod
    def handles(msg: coap.Message) -> bool:
        path = msg.option_values(coap.URI_PATH)
        return bool(path) and path[0] == b"u"

    def answer(self, msg: coap.Message) -> tuple[int, bytes, tuple[tuple[int, bytes], ...]]:
        """(code, payload, options) for a GET /u/<kid hex>/<m|i>."""
        path = msg.option_values(coap.URI_PATH)
        if msg.code != coap.GET:
            return coap.METHOD_NOT_ALLOWED, b"method-not-allowed", ()
        if len(path) != 3 or path[2] not in (b"m", b"i"):
            return coap.NOT_FOUND, b"not-found", ()
        try:
            kid = bytes.fromhex(path[1].decode())
        except ValueError:
            return coap.NOT_FOUND, b"not-found", ()
        self._refresh()
        version = self._offers.get(kid.hex())
        body = None
        if version is not None:
            body = self.site.manifest(kid) if path[2] == b"m" else self._image(version)
        if body is None:
            return coap.NOT_FOUND, b"no-update", ()
        num, szx = _block2(msg)
        szx = min(szx, self.max_szx)
        size = 16 << szx
        if num * size >= len(body) and not (num == 0 and not body):
            return coap.BAD_OPTION, b"block-out-of-range", ()
        chunk = body[num * size:(num + 1) * size]
        more = (num + 1) * size < len(body)
        options: list[tuple[int, bytes]] = [(coap.BLOCK2, coap.encode_uint(num << 4 | more << 3 | szx))]
        if num == 0:
            options.append((coap.SIZE2, coap.encode_uint(len(body))))
        return coap.CONTENT, chunk, tuple(options)

    def _image(self, version: str) -> bytes | None:
        if version not in self._images:
            image = self.site.image(version)
            if image is None:
                return None
            self._images[version] = image
        return self._images[version]
