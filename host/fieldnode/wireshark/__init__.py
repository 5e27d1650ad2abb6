"""The Wireshark plugin shipped with the package (fieldnode.lua beside this file) and where it goes."""
from __future__ import annotations

import os
import shutil
import sys
from importlib import resources
from pathlib import Path

from ..infra.errors import FieldnodeError

PLUGIN_NAME = "fieldnode.lua"


def shipped_plugin() -> Path:
    """The plugin inside the installed package (a plain file: the package is installed unzipped)."""
    return Path(str(resources.files("fieldnode") / "wireshark" / PLUGIN_NAME))


def personal_plugin_dir() -> Path:
    """Wireshark's personal plugin folder (Help > About Wireshark > Folders, "Personal Lua Plugins"):
    ~/.local/lib/wireshark/plugins on Linux and macOS, %APPDATA%\\Wireshark\\plugins on Windows."""
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "Wireshark" / "plugins"
    return Path.home() / ".local" / "lib" / "wireshark" / "plugins"


def install(directory: Path | None = None) -> tuple[Path, bool]:
    """Copies the plugin into directory (the personal plugin folder by default); (where, changed)."""
    source = shipped_plugin()
    target = (directory or personal_plugin_dir()) / PLUGIN_NAME
    try:
        if target.is_file() and target.read_bytes() == source.read_bytes():
            return target, False
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(0o644)
    except OSError as exc:
        raise FieldnodeError(f"cannot install the Wireshark plugin into {target.parent}: "
                             f"{exc.strerror or exc}") from None
    return target, True
