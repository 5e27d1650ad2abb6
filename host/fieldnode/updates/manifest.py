"""The signed manifest of an update: a COSE_Mac0 (RFC 9052) with HMAC 256/256 (alg 5, a 32-byte
tag) over a CBOR map naming the tier, the version, the image's size and SHA-256, the board and the
minimum firmware. The MAC key is derived from the node's device key with HKDF-SHA256 and a label
of its own (docs/security.md, "Update signatures"), so a telemetry MAC cannot authorize an image
and no new secret is provisioned. The node's side is fnode.ota.open_manifest."""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..infra.errors import FieldnodeError

UPDATE_LABEL = b"fieldnode update manifest v1"
ALG_HMAC_256_256 = 5
PROTECTED = cbor2.dumps({1: ALG_HMAC_256_256})
COSE_MAC0_TAG = 17


def update_key(device_key: bytes) -> bytes:
    """The manifest MAC key of a node: HKDF-SHA256(device key, no salt, info=UPDATE_LABEL)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=UPDATE_LABEL).derive(device_key)


@dataclass(frozen=True)
class Manifest:
    version: str
    size: int
    sha256: bytes
    board: str
    min_firmware: str = "1.20.0"
    tier: str = "app"

    def to_cbor_map(self) -> dict[str, object]:
        return {"tier": self.tier, "ver": self.version, "size": self.size, "sha": self.sha256,
                "board": self.board, "minfw": self.min_firmware}

    @classmethod
    def for_image(cls, image: bytes, version: str, board: str, min_firmware: str = "1.20.0") -> Manifest:
        return cls(version, len(image), hashlib.sha256(image).digest(), board, min_firmware)


def _mac_structure(payload: bytes) -> bytes:
    return cbor2.dumps(["MAC0", PROTECTED, b"", payload])


def sign(manifest: Manifest, device_key: bytes) -> bytes:
    payload = cbor2.dumps(manifest.to_cbor_map())
    tag = hmac.new(update_key(device_key), _mac_structure(payload), hashlib.sha256).digest()
    return cbor2.dumps(cbor2.CBORTag(COSE_MAC0_TAG, [PROTECTED, {}, payload, tag]))


def verify(data: bytes, device_key: bytes) -> dict[str, object]:
    """The manifest's map if its MAC verifies for this device key; FieldnodeError otherwise."""
    try:
        msg = cbor2.loads(data)
        prot, _unprot, payload, tag = msg.value
    except (cbor2.CBORDecodeError, AttributeError, ValueError, TypeError) as exc:
        raise FieldnodeError(f"not a COSE_Mac0 manifest: {exc}") from None
    expected = hmac.new(update_key(device_key), cbor2.dumps(["MAC0", prot, b"", payload]), hashlib.sha256).digest()
    if msg.tag != COSE_MAC0_TAG or prot != PROTECTED or not hmac.compare_digest(expected, tag):
        raise FieldnodeError("the manifest's MAC does not verify for this node's key")
    return cbor2.loads(payload)
