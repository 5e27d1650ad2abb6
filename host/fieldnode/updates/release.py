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
    _check_newer(site, version)
    image = app_image(Path(firmware_dir), chip_spec(board["chip"]).mpy_march)
    return site.add_release(image, version, board["name"], min_firmware)


ESP_IMAGE_MAGIC = 0xE9  # esp_image_header_t: every ESP32 app image starts with it


def build_firmware_release(site: UpdateSite, image_file: Path, version: str, board: dict) -> Release:
    """A MicroPython image (the app partition's content, e.g. micropython.bin from a build, not the
    full-flash firmware.bin with its bootloader) as a firmware-tier release."""
    try:
        image = Path(image_file).read_bytes()
    except OSError as exc:
        raise FieldnodeError(f"cannot read {image_file}: {exc.strerror}") from None
    if not image or image[0] != ESP_IMAGE_MAGIC:
        raise FieldnodeError(f"{image_file} is not an ESP32 app image (no 0xE9 header); give the "
                             f"app partition's image (micropython.bin), not a full-flash firmware.bin")
    _check_newer(site, version)
    return site.add_release(image, version, board["name"], DEFAULT_MIN_FIRMWARE, tier="fw")


def _check_newer(site: UpdateSite, version: str) -> None:
    newest = site.releases()
    if newest and version_key(version) <= version_key(newest[-1].version):
        raise FieldnodeError(f"version {version} is not newer than the last release, {newest[-1].version}; "
                             f"nodes refuse anything not newer")


def offer_to(site: UpdateSite, keys: Keystore, device: bytes, release: Release) -> bytes:
    """Offers the release to one node (its current key); -> the kid offered to."""
    entry = keys.current(device)
    if entry is None:
        raise FieldnodeError(f"no current key for device {device.hex()} in the keystore")
    site.offer(entry.kid, entry.key, release)
    return entry.kid
