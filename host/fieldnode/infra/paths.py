"""Where the project's files are: the firmware tree, the simulated HAL, the boards, the cache."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
# The host package is installed editable from the repository, whose firmware/ and boards/ it uses.
REPO_DIR = PACKAGE_DIR.parent.parent
FIRMWARE_DIR = Path(os.environ.get("FIELDNODE_FIRMWARE", REPO_DIR / "firmware"))
FIRMWARE_LIB_DIR = FIRMWARE_DIR / "lib"
BOARDS_DIR = Path(os.environ.get("FIELDNODE_BOARDS", REPO_DIR / "boards"))
SIMHAL_DIR = PACKAGE_DIR / "simhal"


def cache_dir() -> Path:
    """Downloaded/placed MicroPython images live here (FIELDNODE_CACHE overrides)."""
    base = os.environ.get("FIELDNODE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fieldnode"
    )
    return Path(base)


def default_keystore() -> Path:
    """The host keystore (mode 0600). FIELDNODE_KEYS overrides."""
    base = os.environ.get("FIELDNODE_KEYS") or os.path.join(
        os.environ.get("XDG_CONFIG_HOME", os.path.expanduser("~/.config")), "fieldnode", "keys.json"
    )
    return Path(base)
