"""The updates directory beside the gateway's database: releases, the manifests signed for each
node, and the offers the gateway makes. The contract between `fieldnode release` / `fieldnode
update` (which write it) and the gateway (which reads it and serves the images):

    <db directory>/updates/releases/<version>/image.bin     the application image
    <db directory>/updates/releases/<version>/release.json  version, board, minimum firmware, size, sha256
    <db directory>/updates/manifests/<kid hex>.cose         the manifest signed for that node's key
    <db directory>/updates/offers.json                      {kid hex: version} offered now

Every file is replaced by rename, so the gateway reads an old or a new one, never a torn one."""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..infra.errors import FieldnodeError
from ..store.target import PgTarget
from .manifest import Manifest, sign

_VERSION = re.compile(r"^[0-9]{1,6}(\.[0-9]{1,6}){0,3}$")


def updates_dir(db_path: Path | PgTarget) -> Path:
    if isinstance(db_path, PgTarget):
        raise FieldnodeError(f"--db {db_path}: updates over the air keep their releases beside a SQLite gateway "
                             "database; a PostgreSQL store does not serve them yet (docs/updates.md). Pass the "
                             "--db of a SQLite gateway")
    return Path(db_path).resolve().parent / "updates"


def check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise FieldnodeError(f"version {version!r}: use numbers separated by dots, e.g. 0.2.0")
    return version


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Release:
    version: str
    board: str
    min_firmware: str
    size: int
    sha256: str
    tier: str = "app"  # app (the fnode package) or fw (a MicroPython image)

    def manifest(self) -> Manifest:
        return Manifest(self.version, self.size, bytes.fromhex(self.sha256), self.board, self.min_firmware,
                        self.tier)


class UpdateSite:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _release_dir(self, version: str) -> Path:
        return self.root / "releases" / check_version(version)

    def add_release(self, image: bytes, version: str, board: str, min_firmware: str, tier: str = "app") -> Release:
        man = Manifest.for_image(image, check_version(version), board, check_version(min_firmware))
        release = Release(version, board, min_firmware, len(image), man.sha256.hex(), tier)
        folder = self._release_dir(version)
        if (folder / "release.json").exists():
            raise FieldnodeError(f"release {version} exists already in {folder}; versions only go up: "
                                 f"give the new build a higher --version")
        _write_atomic(folder / "image.bin", image)
        _write_atomic(folder / "release.json", json.dumps(release.__dict__, indent=1).encode())
        return release

    def release(self, version: str) -> Release:
        path = self._release_dir(version) / "release.json"
        try:
            return Release(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise FieldnodeError(f"no release {version} in {self.root / 'releases'} (make it with "
                                 f"`fieldnode release --version {version}`)") from None

    def releases(self) -> list[Release]:
        found = [self.release(p.parent.name) for p in (self.root / "releases").glob("*/release.json")
                 if _VERSION.match(p.parent.name)] if (self.root / "releases").is_dir() else []
        return sorted(found, key=lambda r: version_key(r.version))

    def image(self, version: str) -> bytes | None:
        try:
            return (self._release_dir(version) / "image.bin").read_bytes()
        except (FileNotFoundError, FieldnodeError):
            return None

    def manifest(self, kid: bytes) -> bytes | None:
        try:
            return (self.root / "manifests" / f"{kid.hex()}.cose").read_bytes()
        except FileNotFoundError:
            return None

    def offers(self) -> dict[str, str]:
        try:
            return json.loads((self.root / "offers.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def offer(self, kid: bytes, device_key: bytes, release: Release) -> None:
        """Signs the release's manifest for this node's key and offers it to the node."""
        _write_atomic(self.root / "manifests" / f"{kid.hex()}.cose", sign(release.manifest(), device_key))
        offers = self.offers()
        offers[kid.hex()] = release.version
        _write_atomic(self.root / "offers.json", json.dumps(offers, indent=1, sort_keys=True).encode())

    def withdraw(self, kid: bytes) -> None:
        offers = self.offers()
        if offers.pop(kid.hex(), None) is not None:
            _write_atomic(self.root / "offers.json", json.dumps(offers, indent=1, sort_keys=True).encode())
