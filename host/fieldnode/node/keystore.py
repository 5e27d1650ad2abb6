"""The host keystore: device keys by key id, in one JSON file that only its owner can read.

Keys never leave this module as text except into the file itself: ``KeyEntry.__repr__`` hides
the key, and listings show a fingerprint instead.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..infra.errors import FieldnodeError

FORMAT = "fieldnode keystore v1"
EXPOSURE_POLICIES = ("warn", "refuse")

log = logging.getLogger(__name__)


def exposure(path: Path) -> str | None:
    """What is wrong with a keystore file's permissions, or None: other users must not read it
    (every node's key is in it) nor write it (whoever adds a key can forge for that key id)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    who = "read" if not mode & 0o022 else "read and changed" if mode & 0o044 else "changed"
    return (f"keystore {path} can be {who} by other users of this machine (mode {mode:04o}): it holds "
            f"every node's key. Run: chmod 600 {path}")


def device_hex(device: bytes) -> str:
    return device.hex()


def make_kid(device: bytes, generation: int) -> bytes:
    """kid = 6-byte device id + 2-byte key generation (docs/frame-format.md)."""
    if len(device) != 6:
        raise FieldnodeError(f"device id must be 6 bytes, got {len(device)}")
    if not 0 < generation < 0x10000:
        raise FieldnodeError(f"key generation {generation} out of range 1..65535")
    return device + generation.to_bytes(2, "big")


def fingerprint(key: bytes) -> str:
    """A short, one-way name for a key, safe to print and compare by eye."""
    return hashlib.sha256(b"fieldnode key fingerprint\0" + key).hexdigest()[:16]


class _KeyId:
    """What a key id says: the device (its first 6 bytes) and the key generation (the last 2)."""
    kid: bytes

    @property
    def device(self) -> bytes:
        return self.kid[:6]

    @property
    def generation(self) -> int:
        return int.from_bytes(self.kid[6:8], "big")


@dataclass
class KeyEntry(_KeyId):
    kid: bytes
    key: bytes = field(repr=False)
    name: str = ""
    alg: int = 4
    created: float = field(default_factory=time.time)
    expires: float | None = None  # set on the old key when a key is rotated

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    def valid_at(self, now: float) -> bool:
        return self.expires is None or now < self.expires

    def to_json(self) -> dict:
        return {
            "kid": self.kid.hex(), "key": self.key.hex(), "name": self.name, "alg": self.alg,
            "created": self.created, "expires": self.expires,
        }

    @classmethod
    def from_json(cls, obj: dict) -> KeyEntry:
        return cls(
            kid=bytes.fromhex(obj["kid"]), key=bytes.fromhex(obj["key"]), name=obj.get("name", ""),
            alg=int(obj.get("alg", 4)), created=float(obj.get("created", 0)), expires=obj.get("expires"),
        )


@dataclass
class RetiredKid(_KeyId):
    """A key id whose key was removed (revoked, or replaced by --force). Kept, without the key, so
    that the key id is never issued again: a gateway keeps each key id's replay window, and a new
    key under an old key id would have every frame refused as `replay`."""
    kid: bytes
    name: str = ""
    fingerprint: str = ""
    retired: float = field(default_factory=time.time)
    why: str = "revoked"  # or "replaced"

    def to_json(self) -> dict:
        return {"kid": self.kid.hex(), "name": self.name, "fingerprint": self.fingerprint,
                "retired": self.retired, "why": self.why}

    @classmethod
    def from_json(cls, obj: dict) -> RetiredKid:
        return cls(kid=bytes.fromhex(obj["kid"]), name=obj.get("name", ""), fingerprint=obj.get("fingerprint", ""),
                   retired=float(obj.get("retired", 0)), why=obj.get("why", "revoked"))


class Keystore:
    """Keys by kid, and the key ids retired from it. ``load`` tolerates a missing file (empty
    store); ``save`` is atomic, mode 0600."""

    def __init__(self, path: Path | None = None, entries: list[KeyEntry] | None = None,
                 retired: list[RetiredKid] | None = None) -> None:
        self.path = path
        self._by_kid: dict[bytes, KeyEntry] = {e.kid: e for e in entries or []}
        self._retired: dict[bytes, RetiredKid] = {r.kid: r for r in retired or []}

    @classmethod
    def load(cls, path: Path | str, must_exist: bool = False, exposed: str = "warn") -> Keystore:
        """exposed: what to do with a file other users can read or write: "warn" (one line on
        stderr, then load it), "refuse" (FieldnodeError) or "ignore" (a caller that has warned)."""
        path = Path(path)
        if not path.exists():
            if must_exist:
                raise FieldnodeError(
                    f"keystore {path} does not exist: provision a node first "
                    "(fieldnode provision) or pass --keys PATH"
                )
            return cls(path)
        problem = exposure(path)
        if problem is not None:
            if exposed == "refuse":
                raise FieldnodeError(problem + " (refused: --strict-keys)")
            if exposed == "warn":
                log.warning("warning: %s", problem)
        try:
            doc = json.loads(path.read_text())
            entries = [KeyEntry.from_json(o) for o in doc["keys"]]
            retired = [RetiredKid.from_json(o) for o in doc.get("retired", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FieldnodeError(f"keystore {path} is unreadable or malformed ({type(exc).__name__}); "
                                 "restore it from your backup") from None
        return cls(path, entries, retired)

    def save(self, path: Path | str | None = None) -> Path:
        target = Path(path or self.path or "")
        if not str(target):
            raise FieldnodeError("no keystore path to save to")
        target.parent.mkdir(parents=True, exist_ok=True)
        doc = {"format": FORMAT, "keys": [e.to_json() for e in self._by_kid.values()]}
        if self._retired:
            doc["retired"] = [r.to_json() for r in self.retired()]
        fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=target.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return target

    def __len__(self) -> int:
        return len(self._by_kid)

    def __iter__(self):
        return iter(sorted(self._by_kid.values(), key=lambda e: (e.kid[:6], e.generation)))

    def get(self, kid: bytes, now: float | None = None) -> KeyEntry | None:
        """The key for kid if it exists and has not expired."""
        entry = self._by_kid.get(kid)
        if entry is None or not entry.valid_at(time.time() if now is None else now):
            return None
        return entry

    def lookup(self, kid: bytes) -> tuple[bytes, int] | None:
        """(key, alg) for a Verifier, or None for an unknown or expired kid."""
        entry = self.get(kid)
        return (entry.key, entry.alg) if entry else None

    def add(self, entry: KeyEntry) -> None:
        self._by_kid[entry.kid] = entry

    def remove(self, kid: bytes, why: str = "revoked") -> None:
        """Drops the key; its key id stays retired, so it is never issued again."""
        entry = self._by_kid.pop(kid, None)
        if entry is not None:
            self.retire(kid, why, entry.name, entry.fingerprint)

    def retire(self, kid: bytes, why: str, name: str = "", fingerprint: str = "") -> None:
        """Records a key id as used for good (also one this keystore never held, such as the key
        id a node reports when its keystore entry was lost)."""
        if kid not in self._retired:
            self._retired[kid] = RetiredKid(kid, name, fingerprint, why=why)

    def retired(self, device: bytes | None = None) -> list[RetiredKid]:
        return sorted((r for r in self._retired.values() if device is None or r.device == device),
                      key=lambda r: (r.device, r.generation))

    def next_generation(self, device: bytes, seen: int = 0) -> int:
        """The key generation to issue next for device: above every generation this keystore holds
        or has retired, and above `seen` (what the node itself reports), so a key id is never
        issued twice."""
        used = [e.generation for e in self.for_device(device)] + [r.generation for r in self.retired(device)]
        generation = max(used + [seen]) + 1
        if generation > 0xFFFF:
            raise FieldnodeError(f"device {device.hex()} has used all 65535 key generations: it cannot be "
                                 "given a new key id")
        return generation

    def for_device(self, device: bytes) -> list[KeyEntry]:
        return [e for e in self if e.device == device]

    def current(self, device: bytes) -> KeyEntry | None:
        """The newest unexpired key of a device (the one commands are signed with)."""
        live = [e for e in self.for_device(device) if e.valid_at(time.time())]
        return max(live, key=lambda e: e.generation) if live else None

    def subset(self, devices: set[bytes] | None = None, valid_at: float | None = None) -> Keystore:
        """The keys of the given devices (all if None); with valid_at, only those unexpired then
        (a key in its grace period keeps its expiry, so a gateway drops it on time)."""
        entries = [e for e in self if (devices is None or e.device in devices)
                   and (valid_at is None or e.valid_at(valid_at))]
        return Keystore(None, entries)
