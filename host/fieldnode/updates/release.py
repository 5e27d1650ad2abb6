"""`fieldnode release`'s work: the application of a firmware tree as a versioned update in the
updates directory, and the offer of a release to nodes (a manifest signed for each node's key)."""
from __future__ import annotations

from pathlib import Path

from ..infra.errors import FieldnodeError
from ..node.chips import chip_spec
from ..node.keystore import Keystore
from .image import app_image
from .site import Release, UpdateSite, version_key

DEFAULT_MIN_FIRMWARE = "1.20.0"  # the oldest MicroPython the application runs on (docs/firmware.md)


def build_release(site: UpdateSite, firmware_dir: Path, version: str, board: dict,
                  min_firmware: str = DEFAULT_MIN_FIRMWARE) -> Release:
    newest = site.releases()
    if newest and version_key(version) <= version_key(newest[-1].version):
        raise FieldnodeError(f"version {version} is not newer than the last release, {newest[-1].version}; "
                             f"nodes refuse anything not newer")
    image = app_image(Path(firmware_dir), chip_spec(board["chip"]).mpy_march)
    return site.add_release(image, version, board["name"], min_firmware)


def offer_to(site: UpdateSite, keys: Keystore, device: bytes, release: Release) -> bytes:
    """Offers the release to one node (its current key); -> the kid offered to."""
    entry = keys.current(device)
    if entry is None:
        raise FieldnodeError(f"no current key for device {device.hex()} in the keystore")
    site.offer(entry.kid, entry.key, release)
    return entry.kid
