"""Update authenticity (docs/updates.md, docs/security.md "Update signatures"): the node's HKDF
against RFC 5869 and the cryptography package, and the node's manifest check against manifests
the host signs: each refusal by its reason."""
from __future__ import annotations

import hashlib
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fieldnode.infra.errors import FieldnodeError
from fieldnode.updates.image import pack, unpack
from fieldnode.updates.manifest import Manifest, sign, update_key, verify

# RFC 5869 appendix A, test cases 1 and 3 (SHA-256).
RFC5869 = [
    ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42,
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
    ("0b" * 22, "", "", 42,
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
]


def test_node_hkdf_matches_rfc5869_vectors_and_the_cryptography_package(micropython):
    keys = [os.urandom(32) for _ in range(3)]
    cases = [[ikm, salt, info, n] for ikm, salt, info, n, _ in RFC5869]
    cases += [[k.hex(), "", b"fieldnode update manifest v1".hex(), 32] for k in keys]
    out = micropython.eval_json(f"""
import json
from binascii import hexlify, unhexlify
from fnode.hkdf import hkdf
print(json.dumps([hexlify(hkdf(unhexlify(i), unhexlify(inf), n, unhexlify(s))).decode()
                  for i, s, inf, n in {json.dumps(cases)}]))
""")
    assert out[:2] == [okm for *_, okm in RFC5869]
    for key, got in zip(keys, out[2:], strict=True):
        ref = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fieldnode update manifest v1").derive(key)
        assert got == ref.hex() == update_key(key).hex()
        assert ref != key  # the update key is not the telemetry key


def test_host_verifies_what_it_signs_and_nothing_else():
    key = os.urandom(32)
    m = Manifest.for_image(b"image", "0.2.0", "virtual")
    signed = sign(m, key)
    assert verify(signed, key)["ver"] == "0.2.0"
    with pytest.raises(FieldnodeError, match="does not verify"):
        verify(signed, os.urandom(32))
    assert unpack(pack({"fnode/a.mpy": b"1", "fnode/drivers/b.mpy": b"22"})) == {
        "fnode/a.mpy": b"1", "fnode/drivers/b.mpy": b"22"}


CHECK = """
import json, sys
from binascii import unhexlify
from fnode.ota import open_manifest, check_manifest
key = unhexlify({key!r})
out = []
for data in {manifests!r}:
    m, why = open_manifest(unhexlify(data), key)
    if why is None:
        why = check_manifest(m, "virtual", "0.2.0", 64 * 1024)
    out.append(why)
print(json.dumps(out))
"""


def test_node_refuses_each_bad_manifest_by_its_reason(micropython):
    key = os.urandom(32)
    image = b"x" * 1000
    sha = hashlib.sha256(image).digest()
    fw = "1.20.0"
    cases = {
        None: sign(Manifest("0.3.0", len(image), sha, "virtual", fw), key),
        "bad-mac": sign(Manifest("0.3.0", len(image), sha, "virtual", fw), os.urandom(32)),
        "wrong-board": sign(Manifest("0.3.0", len(image), sha, "esp32-devkitc", fw), key),
        "not-newer": sign(Manifest("0.2.0", len(image), sha, "virtual", fw), key),
        "too-large": sign(Manifest("0.3.0", 65 * 1024, sha, "virtual", fw), key),
        "needs-newer-firmware": sign(Manifest("0.3.0", len(image), sha, "virtual", "99.0.0"), key),
    }
    tampered = bytearray(cases[None])
    tampered[-40] ^= 1  # inside the payload: the MAC no longer covers it
    cases["bad-mac "] = bytes(tampered)
    older = sign(Manifest("0.1.9", len(image), sha, "virtual", fw), key)
    cases["not-newer "] = older
    out = micropython.eval_json(CHECK.format(key=key.hex(), manifests=[c.hex() for c in cases.values()]))
    assert out == [k.strip() if k else None for k in cases]
