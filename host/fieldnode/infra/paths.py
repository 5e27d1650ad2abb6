"""Where the project's files are: the firmware tree, the simulated HAL, the boards, the cache."""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
# The checkout the package sits in when it runs from the repository (PYTHONPATH=host or an
# editable install); in an installed wheel this is just a directory above site-packages.
REPO_DIR = PACKAGE_DIR.parent.parent
# A built wheel carries firmware/ and boards/ here: setup.py copies them in at build time.
SHIPPED_DATA_DIR = Path(str(files("fieldnode") / "_data"))


def _project_dir(name: str, override: str) -> Path:
    """firmware/ or boards/: the environment's override, else the copy shipped in the package,
    else the repository's own (a checkout never holds _data, so an edit there takes effect)."""
    if os.environ.get(override):
        return Path(os.environ[override])
    shipped = SHIPPED_DATA_DIR / name
    return shipped if shipped.is_dir() else REPO_DIR / name


FIRMWARE_DIR = _project_dir("firmware", "FIELDNODE_FIRMWARE")
FIRMWARE_LIB_DIR = FIRMWARE_DIR / "lib"
BOARDS_DIR = _project_dir("boards", "FIELDNODE_BOARDS")
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
