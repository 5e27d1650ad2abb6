"""Provisioning a node over USB: identity, a fresh key, settings, and proof the key arrived.

Order matters so that a failure at any step leaves a usable state:
1. the new key goes into the node's NVS as *pending*; the active key is untouched;
2. the node MACs a random challenge with the pending key and the host checks it, so the key is
   proven to be there without ever being read back;
3. the host records the key in its keystore (atomic file replace);
4. the node stores its settings, then makes the pending identity active with one NVS entry
   write (atomic on ESP-IDF, where each entry is written when set);
5. on --rotate the old key stays valid at the gateway for a grace period.
A failure before 3 leaves the keystore as it was and the node on its old key; a failure at 4
leaves the new key recorded but unused, and the old one still valid: provisioning again fixes it.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from .devicelink import DeviceLink
from ..infra.errors import FieldnodeError
from .keystore import KeyEntry, Keystore, make_kid

PROOF_CONTEXT = b"fieldnode provision proof\0"
DEFAULT_GRACE_S = 7 * 24 * 3600


@dataclass
class Settings:
    name: str | None = None
    gateway: str | None = None  # host:port
    # The gateways to fail over to, in order (host:port each); with `gateway` given and none here,
    # the node forgets any it had.
    fallbacks: list[str] = field(default_factory=list)
    wifi_ssid: str | None = None
    wifi_password: str | None = None
    alg: int = 4


@dataclass
class Result:
    port: str
    device: bytes
    kid: bytes
    name: str
    fingerprint: str
    action: str  # "provisioned", "rotated", "replaced"


def proof(key: bytes, challenge: bytes) -> bytes:
    return hmac.new(key, PROOF_CONTEXT + challenge, hashlib.sha256).digest()


def _py_str(value: str | None) -> str:
    # repr() of a str is valid MicroPython source for the same string.
    return repr(value) if value is not None else "None"


def _node_kid(link: DeviceLink, device: bytes) -> bytes | None:
    """The key id the node holds (not secret, unlike its key), if it is one of this device's."""
    answer = link.exec("import binascii;from fnode.config import Config;k=Config().kid();"
                       "print(binascii.hexlify(k).decode() if k else '')")
    try:
        kid = bytes.fromhex(answer)
    except ValueError:
        return None
    return kid if len(kid) == 8 and kid[:6] == device else None


def _check_failover(link: DeviceLink, settings: Settings) -> None:
    """Before anything is written: an application older than failover would store the list as one
    gateway it cannot parse, and send nothing."""
    if settings.fallbacks and link.exec("import fnode.provision as p;print(getattr(p,'FAILOVER',False))") != "True":
        raise FieldnodeError(f"{link.port}: this node's application predates gateway failover and takes one "
                             "--gateway; update it (fieldnode flash --app-only) to give it several")


def _activate(link: DeviceLink, name: str, settings: Settings) -> None:
    values = [name, settings.gateway, settings.wifi_ssid, settings.wifi_password]
    if settings.fallbacks:  # only then: the call stays the one an application before failover takes
        values.append(",".join(settings.fallbacks))
    args = ", ".join(map(_py_str, values))
    link.exec(f"import fnode.provision as p;p.activate({args})")


def provision(link: DeviceLink, store: Keystore, settings: Settings, force: bool = False,
              rotate: bool = False, grace_s: float = DEFAULT_GRACE_S) -> Result:
    device_hex = link.exec("import fnode.provision as p;p.identity()")
    try:
        device = bytes.fromhex(device_hex)
        assert len(device) == 6
    except (ValueError, AssertionError):
        raise FieldnodeError(f"{link.port}: the node answered {device_hex!r} instead of its 6-byte id: "
                             "is the fieldnode application flashed? (fieldnode flash --app-only)") from None
    _check_failover(link, settings)
    has_key = link.exec("import fnode.provision as p;p.has_key()") == "True"
    node_kid = _node_kid(link, device) if has_key else None
    known = store.for_device(device)
    if has_key and not (force or rotate):
        if not known:  # --rotate would only be refused next: it needs the old key in this keystore
            raise FieldnodeError(f"node {device.hex()} on {link.port} already has a key that {store.path} "
                                 "does not hold (provisioned with another keystore?). Use --force to replace "
                                 "it, or --keys with the keystore that provisioned it")
        raise FieldnodeError(f"node {device.hex()} on {link.port} already has a key (keystore: "
                             f"{', '.join(e.kid.hex() for e in known)}). Use --rotate to give it a new key "
                             "and keep the old one valid for a grace period, or --force to replace it")
    if rotate and not known:
        raise FieldnodeError(f"--rotate: node {device.hex()} has no key in {store.path} to keep valid; "
                             "use --force to replace a key this keystore does not hold, or --keys with the "
                             "keystore that provisioned it")
    # Never a key id issued before: a gateway keeps each key id's replay window, so a new key under
    # an old key id would have its frames refused as `replay`. The keystore remembers revoked and
    # replaced key ids; the node says which key id it holds (for a keystore that lost its entry).
    generation = store.next_generation(device, int.from_bytes(node_kid[6:], "big") if node_kid else 0)
    key = secrets.token_bytes(32)
    kid = make_kid(device, generation)
    name = settings.name or (known[-1].name if known else "") or f"node-{device.hex()[-6:]}"

    link.exec(f"import fnode.provision as p;p.stage('{key.hex()}','{kid.hex()}',{settings.alg})")
    challenge = secrets.token_bytes(16)
    answer = link.exec(f"import fnode.provision as p;p.prove('{challenge.hex()}')")
    if not hmac.compare_digest(answer.encode(), proof(key, challenge).hex().encode()):
        link.exec("import fnode.provision as p;p.unstage()")
        raise FieldnodeError(f"node {device.hex()} did not prove it holds the new key; nothing was "
                             "recorded and the node keeps its old key. Run provision again")

    now = time.time()
    entry = KeyEntry(kid=kid, key=key, name=name, alg=settings.alg, created=now)
    if rotate:
        for old in known:
            if old.expires is None or old.expires > now + grace_s:
                old.expires = now + grace_s
    elif force:
        for old in known:
            store.remove(old.kid, why="replaced")
    if node_kid is not None and not rotate:
        store.retire(node_kid, "replaced")  # no-op when it was one of `known`
    store.add(entry)
    store.save()

    _activate(link, name, settings)
    action = "rotated" if rotate else "replaced" if has_key else "provisioned"
    return Result(link.port, device, kid, name, entry.fingerprint, action)
