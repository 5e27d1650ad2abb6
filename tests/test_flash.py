"""fieldnode flash end to end: the real esptool writes to emulated ROM loaders on ptys, and
--app-only writes through mpremote to the real MicroPython unix port on a pty."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

import pytest
import serial

from conftest import micropython_binary
from fieldnode.cli.main import main
from fieldnode.flashing.appimage import read_image
from fieldnode.node.chips import CHIPS
from fieldnode.flashing.compile import build_app_files
from fieldnode.flashing.slots import slot_layout
from fieldnode.infra.paths import SIMHAL_DIR
from fieldnode.flashing.partitions import TYPE_DATA, Partition, filesystem_region, generic_table
from fieldnode.sim.esp_rom import MIB, EspRomEmulator
from fieldnode.testing.fake_firmware import fake_firmware

FS_OFFSET = 0x200000  # MicroPython's generic table: the filesystem starts where the app ends
BOARD = {"schema": 1, "name": "bench-board", "chip": "esp32", "flash_size_mb": 4,
         "sensors": [], "actuators": []}


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    (app / "lib" / "fnode").mkdir(parents=True)
    (app / "boot.py").write_text("import gc\ngc.collect()\n")
    (app / "main.py").write_text("import fnode.node\nfnode.node.run()\n")
    (app / "lib" / "fnode" / "__init__.py").write_text("VERSION = '0.1'\n")
    (app / "lib" / "fnode" / "node.py").write_text("def run():\n    return 'running'\n")
    (app / "lib" / "fnode" / "defaults.json").write_text('{"period_s": 10}')
    (app / "lib" / "fnode" / "__pycache__").mkdir()
    (app / "lib" / "fnode" / "__pycache__" / "node.cpython-311.pyc").write_bytes(b"junk")
    (app / "notes.txt").write_text("not shipped")
    return app


@pytest.fixture
def board_file(tmp_path: Path) -> Path:
    path = tmp_path / "bench-board.json"
    path.write_text(json.dumps(BOARD))
    return path


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    path = tmp_path / "ESP32_GENERIC-test.bin"
    path.write_bytes(fake_firmware("esp32", 96 * 1024))
    return path


def flash(*ports: str, app_dir: Path, extra: list[str] = ()) -> int:
    args = ["flash", "--app-dir", str(app_dir), "--baud", "921600", *extra]
    for port in ports:
        args += ["--port", port]
    return main(args)


def untouched(rom: EspRomEmulator) -> bool:
    return rom.flash == b"\xff" * len(rom.flash)


# -- the application image, offline ---------------------------------------------------------------

def test_app_files_compile_lib_and_keep_entry_points(app_dir: Path):
    app = build_app_files(app_dir, BOARD, "xtensawin")
    assert sorted(app.files) == ["/board.json", "/boot.py", "/lib/fnode/__init__.mpy",
                                 "/lib/fnode/defaults.json", "/lib/fnode/node.mpy", "/main.py"]
    assert app.files["/boot.py"] == (app_dir / "boot.py").read_bytes()
    assert app.files["/lib/fnode/node.mpy"][:2] == b"M\x06"  # .mpy version 6
    assert json.loads(app.files["/board.json"]) == BOARD


def test_shipped_modules_name_file_and_function_in_a_traceback_and_lines_only_when_asked(app_dir, micropython):
    (app_dir / "lib" / "probe_fail.py").write_text("def boom(x):\n    y = x + 1\n    return y / 0\n")
    traces = {}
    for lines in (False, True):
        mpy = build_app_files(app_dir, BOARD, "xtensawin", source_lines=lines).files["/lib/probe_fail.mpy"]
        lib = micropython.tmp / f"lib-{lines}"
        lib.mkdir()
        (lib / "probe_fail.mpy").write_bytes(mpy)
        traces[lines] = (len(mpy), micropython.eval_json(
            "import io, json, sys, probe_fail\ntry:\n    probe_fail.boom(1)\nexcept ZeroDivisionError as e:\n"
            "    s = io.StringIO()\n    sys.print_exception(e, s)\n    print(json.dumps(s.getvalue()))\n",
            path=[lib]))
    (small, bare), (large, full) = traces[False], traces[True]
    # The heap the line table would take is left to the application; the file and function stay.
    assert 'File "probe_fail", line 1, in boom' in bare  # the module's name: interned by its import anyway
    assert 'File "lib/probe_fail.py", line 3, in boom' in full
    assert small < large


def test_repo_firmware_tree_builds(tmp_path: Path):
    """Whatever is in firmware/ now: every lib .py compiles, nothing else becomes .mpy."""
    from fieldnode.infra.paths import FIRMWARE_DIR

    app = build_app_files(FIRMWARE_DIR, None, "xtensawin")
    sources = {p.relative_to(FIRMWARE_DIR).with_suffix(".mpy").as_posix()
               for p in (FIRMWARE_DIR / "lib").rglob("*.py") if "__pycache__" not in p.parts}
    assert {"/" + s for s in sources} <= set(app.files)
    assert not any(p.endswith(".py") for p in app.files if p.startswith("/lib/"))


def test_filesystem_region_follows_micropython():
    table = generic_table(CHIPS["esp32"])
    assert filesystem_region(table, 4 * MIB).offset == FS_OFFSET
    assert filesystem_region(table, 8 * MIB).size == 6 * MIB  # the rest of a bigger flash
    old_style = table + [Partition("vfs", TYPE_DATA, 0x81, 0x200000, 0x180000)]
    assert filesystem_region(old_style, 4 * MIB).size == 0x180000
    with pytest.raises(Exception, match="no room for the filesystem"):
        filesystem_region(table, 2 * MIB)


# -- full flash through esptool -----------------------------------------------------------------

def test_flash_one_node_end_to_end(roms, app_dir, firmware, board_file, capsys):
    rom = roms("esp32", mac=bytes.fromhex("240ac4000001"))
    old = os.urandom(len(rom.flash))  # a node with an old install: every write must erase first
    rom.flash[:] = old
    assert flash(rom.port, app_dir=app_dir, extra=["--firmware", str(firmware), "--board", str(board_file)]) == 0

    fw = firmware.read_bytes()
    assert rom.flash_bytes(0x1000, len(fw)) == fw
    image = rom.flash_bytes(FS_OFFSET, 2 * MIB)
    files = read_image(image)  # the filesystem read back from the emulated flash mounts
    assert files == build_app_files(app_dir, BOARD, "xtensawin").files
    # Outside the two images (rounded to erase sectors) the old content is still there.
    fw_end = -(-(0x1000 + len(fw)) // 0x1000) * 0x1000
    assert rom.flash_bytes(0, 0x1000) == old[:0x1000]
    assert rom.flash_bytes(fw_end, FS_OFFSET - fw_end) == old[fw_end:FS_OFFSET]
    out = capsys.readouterr().out
    assert "24:0a:c4:00:00:01" in out and "ESP32-D0WD-V3" in out and "ok" in out


def test_flashed_filesystem_mounts_in_micropython(roms, app_dir, firmware, board_file, tmp_path):
    """The real MicroPython mounts the image from flash with VfsLfs2 and imports the .mpy."""
    rom = roms("esp32")
    assert flash(rom.port, app_dir=app_dir, extra=["--firmware", str(firmware), "--board", str(board_file)]) == 0
    dump = tmp_path / "vfs.bin"
    dump.write_bytes(rom.flash_bytes(FS_OFFSET, 2 * MIB))
    script = tmp_path / "mount.py"
    script.write_text(
        "import vfs, sys, json\n"
        "class Flash:\n"
        " def __init__(s, p): s.f = open(p, 'rb')\n"
        " def readblocks(s, n, buf, off=0): s.f.seek(n * 4096 + off); s.f.readinto(buf)\n"
        " def writeblocks(s, n, buf, off=0): raise OSError(30)\n"
        " def ioctl(s, op, arg): return {4: 512, 5: 4096}.get(op, 0)\n"
        f"vfs.mount(vfs.VfsLfs2(Flash({str(dump)!r})), '/flash', readonly=True)\n"
        "sys.path.insert(0, '/flash/lib')\n"
        "import fnode.node\n"
        "print(fnode.node.run(), json.load(open('/flash/board.json'))['name'])\n")
    proc = subprocess.run([micropython_binary(), str(script)], capture_output=True, text=True, timeout=30)
    assert proc.stdout.split() == ["running", "bench-board"], proc.stdout + proc.stderr


def test_two_ports_in_parallel(roms, app_dir, firmware, board_file, capsys):
    a = roms("esp32", mac=bytes.fromhex("240ac40000aa"))
    b = roms("esp32", mac=bytes.fromhex("240ac40000bb"))
    assert flash(a.port, b.port, app_dir=app_dir, extra=["--firmware", str(firmware), "--board", str(board_file)]) == 0
    fw = firmware.read_bytes()
    for rom in (a, b):
        assert rom.flash_bytes(0x1000, len(fw)) == fw
        assert set(read_image(rom.flash_bytes(FS_OFFSET, 2 * MIB))) >= {"/main.py", "/lib/fnode/node.mpy"}
    out = capsys.readouterr().out
    assert "24:0a:c4:00:00:aa" in out and "24:0a:c4:00:00:bb" in out


def test_wrong_chip_is_refused_and_flash_untouched(roms, app_dir, firmware, capsys):
    rom = roms("esp32s3")
    assert flash(rom.port, app_dir=app_dir, extra=["--firmware", str(firmware), "--chip", "esp32"]) == 1
    assert untouched(rom)
    out = capsys.readouterr().out
    assert "ESP32-S3" in out and "nothing written" in out


def test_unsupported_chip_is_refused(roms, app_dir, firmware, capsys):
    rom = roms("esp8266")
    assert flash(rom.port, app_dir=app_dir, extra=["--firmware", str(firmware)]) == 1
    assert untouched(rom)
    assert "does not flash" in capsys.readouterr().out


def test_missing_port_stops_everything(roms, app_dir, firmware, capsys):
    rom = roms("esp32")
    assert flash(rom.port, "/dev/ttyUSB-fieldnode-missing", app_dir=app_dir, extra=["--firmware", str(firmware)]) == 2
    err = capsys.readouterr().err
    assert "/dev/ttyUSB-fieldnode-missing does not exist" in err
    assert untouched(rom)  # the port that was there was not written either


def test_busy_port_is_refused(roms, app_dir, firmware, capsys):
    rom = roms("esp32")
    holder = serial.Serial(rom.port, exclusive=True)  # as esptool or mpremote would hold it
    try:
        assert flash(rom.port, app_dir=app_dir, extra=["--firmware", str(firmware)]) == 2
    finally:
        holder.close()
    assert "is busy" in capsys.readouterr().err
    assert untouched(rom)


def test_firmware_too_big_for_the_app_partition(roms, app_dir, tmp_path, capsys):
    rom = roms("esp32")
    big = tmp_path / "big.bin"
    big.write_bytes(fake_firmware("esp32", 0x200000))
    assert flash(rom.port, app_dir=app_dir, extra=["--firmware", str(big)]) == 2
    assert "past the start of the filesystem at 0x200000" in capsys.readouterr().err
    assert untouched(rom)


def test_application_too_big_for_the_filesystem(roms, app_dir, firmware, capsys):
    rom = roms("esp32")
    (app_dir / "lib" / "fnode" / "blob.bin").write_bytes(os.urandom(2 * MIB + 4096))
    assert flash(rom.port, app_dir=app_dir, extra=["--firmware", str(firmware)]) == 2
    assert "does not fit in the 2048 KiB filesystem" in capsys.readouterr().err
    assert untouched(rom)


def test_flash_too_small_for_the_filesystem(roms, app_dir, firmware, capsys):
    rom = roms("esp32", flash_size=2 * MIB)
    assert flash(rom.port, app_dir=app_dir, extra=["--firmware", str(firmware)]) == 1
    assert "no room for the filesystem" in capsys.readouterr().out
    assert untouched(rom)


def test_unplug_mid_write_fails_fast(roms, app_dir, firmware, capsys):
    rom = roms("esp32", unplug_after_flash_bytes=48 * 1024)
    assert flash(rom.port, app_dir=app_dir, extra=["--firmware", str(firmware), "--verbose"]) == 1
    out = capsys.readouterr().out
    assert "connection lost" in out and "partly written" in out
    # reported at once: esptool's reconnect loop (it says so in the transcript --verbose shows) never ran
    assert "esptool/mpremote output" in out and "retrying" not in out and "reconnect" not in out
    assert not rom.plugged


def test_missing_firmware_names_the_cache(tmp_path, app_dir, monkeypatch, capsys):
    monkeypatch.setenv("FIELDNODE_CACHE", str(tmp_path / "cache"))
    assert flash("/dev/null", app_dir=app_dir, extra=["--chip", "esp32s3"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert str(tmp_path / "cache" / "firmware" / "esp32s3") in err
    assert "micropython.org/download/ESP32_GENERIC_S3" in err


def test_firmware_from_the_cache(roms, tmp_path, app_dir, monkeypatch, capsys):
    monkeypatch.setenv("FIELDNODE_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "firmware" / "esp32c3"
    cached.mkdir(parents=True)
    fw = fake_firmware("esp32c3", 64 * 1024)
    (cached / "ESP32_GENERIC_C3-test.bin").write_bytes(fw)
    rom = roms("esp32c3")
    assert flash(rom.port, app_dir=app_dir, extra=["--chip", "esp32c3"]) == 0
    assert rom.flash_bytes(0x0, len(fw)) == fw  # S3/C3 images start at 0


def test_firmware_for_another_chip_is_refused(tmp_path, app_dir, capsys):
    other = tmp_path / "s3.bin"
    other.write_bytes(fake_firmware("esp32s3", 64 * 1024))
    assert flash("/dev/null", app_dir=app_dir, extra=["--firmware", str(other), "--chip", "esp32"]) == 2
    assert "built for esp32s3" in capsys.readouterr().err


# -- --app-only through mpremote ------------------------------------------------------------------

class MicroPythonOnPty:
    """The unix port's REPL behind a pty, its filesystem root mounted on a temp dir.

    hold_when: once it is true, what the host sends is held (the node's output still flows), with
    `held` set, until release()."""

    def __init__(self, root: Path, hold_when: Callable[[], bool] | None = None) -> None:
        startup = root.parent / "mp_startup.py"
        # simroot's FlashDir, not vfs.VfsPosix(root): this port's VfsPosix with a root fails every
        # rename, and the slot pointer is switched by one (simroot.py).
        startup.write_text(f"import sys\nsys.path.insert(0, {str(SIMHAL_DIR)!r})\nimport simroot\n"
                           f"simroot.mount_flash({str(root)!r})\nsys.path[:] = ['', '/lib']\n")
        self._node, node_slave = pty.openpty()
        tty.setraw(node_slave)
        self.proc = subprocess.Popen([micropython_binary(), "-i", str(startup)], stdin=node_slave,
                                     stdout=node_slave, stderr=node_slave, start_new_session=True)
        os.close(node_slave)
        # mpremote gets the slave of a second pair; a thread relays between the two masters.
        self._host, host_slave = pty.openpty()
        tty.setraw(host_slave)
        self.port = os.ttyname(host_slave)
        os.close(host_slave)
        self._hold_when = hold_when
        self.held = threading.Event()
        self._released = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._released.set()

    def _holding(self) -> bool:
        if self._hold_when is None or self._released.is_set():
            return False
        if self.held.is_set() or self._hold_when():
            self.held.set()
            return True
        return False

    def _relay(self) -> None:
        while not self._stop.is_set():
            sources = [self._node] if self._holding() else [self._node, self._host]
            readable, _, _ = select.select(sources, [], [], 0.2)
            for src, dst in ((self._node, self._host), (self._host, self._node)):
                if src not in readable:
                    continue
                try:
                    data = os.read(src, 4096)
                except OSError:  # node exited, or no client on the host side yet
                    if src == self._node:
                        return
                    time.sleep(0.01)
                    continue
                try:
                    os.write(dst, data)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._released.set()
        self._thread.join(timeout=2)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        os.close(self._node)
        os.close(self._host)


def test_app_only_updates_a_running_node(tmp_path, app_dir, board_file, capsys):
    root = tmp_path / "node-root"
    (root / "lib" / "fnode").mkdir(parents=True)
    (root / "lib" / "other").mkdir()
    (root / "lib" / "fnode" / "node.py").write_text("def run():\n    return 'old source'\n")  # would shadow node.mpy
    (root / "lib" / "fnode" / "gone.mpy").write_bytes(b"M\x06stale")  # no longer in the app
    (root / "lib" / "other" / "keep.py").write_text("x = 1\n")  # a mip package: not ours
    (root / "keys.json").write_text("{}")  # node data: not ours
    node = MicroPythonOnPty(root)
    try:
        assert main(["flash", "--app-only", "--port", node.port, "--app-dir", str(app_dir),
                     "--board", str(board_file)]) == 0
        assert node.proc.wait(timeout=10) == 0  # the soft reset (Ctrl-D) ends the unix REPL
    finally:
        node.close()
    expected = slot_layout(build_app_files(app_dir, BOARD, "xtensawin").files, "a")  # the slot not running
    for path, data in expected.items():
        assert (root / path.lstrip("/")).read_bytes() == data, path
    assert json.loads((root / "app.json").read_text())["slot"] == "a"
    assert not (root / "lib" / "fnode" / "node.py").exists()  # the package lives in the slot now
    assert not (root / "lib" / "fnode" / "gone.mpy").exists()
    assert (root / "lib" / "other" / "keep.py").exists() and (root / "keys.json").exists()
    assert "written and verified" in capsys.readouterr().out
    # The copied bytecode runs on MicroPython.
    proc = subprocess.run([micropython_binary(), "-c", "import fnode.node; print(fnode.node.run())"],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "MICROPYPATH": str(root / "app_a")})
    assert proc.stdout.strip() == "running", proc.stderr


def test_app_only_on_a_silent_port_fails_cleanly(roms, app_dir, capsys):
    rom = roms("esp32")  # a ROM loader, not a REPL: no raw REPL prompt ever comes
    assert main(["flash", "--app-only", "--port", rom.port, "--app-dir", str(app_dir)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_ctrl_c_during_app_only_stops_at_the_next_chunk_and_shows_the_port(tmp_path, app_dir, board_file, capsys,
                                                                          monkeypatch):
    from support.ctrl_c import press_ctrl_c_while_held

    root = tmp_path / "node-root"
    root.mkdir()
    # The slot first, the boot code and the switch to the slot last. Once a file is in the slot, the
    # port holds what the host sends until the command has said it stops.
    node = MicroPythonOnPty(root, hold_when=lambda: (root / "app_a" / "fnode" / "__init__.mpy").exists())
    try:
        press_ctrl_c_while_held(monkeypatch, node.held, node.release, said="Ctrl-C: stopping")
        rc = main(["flash", "--app-only", "--port", node.port, "--app-dir", str(app_dir),
                   "--board", str(board_file)])
    finally:
        node.close()
    out = capsys.readouterr().out
    assert rc == 130
    table = out.index("fieldnode flash")
    assert out.index("Ctrl-C: stopping") < table
    assert node.port in out[table:] and "STOPPED" in out[table:]
    assert ("stopped by Ctrl-C: the new application is partly written to the slot that does not run (the node "
            "runs what it ran); run flash --app-only on this port again") in " ".join(out.split())
    assert not (root / "main.py").exists()  # the boot code comes after the slot: never reached
    assert not (root / "app.json").exists()  # nor the switch to the slot


def test_the_summary_prints_a_mac_with_ab_in_it_as_it_is():
    # rich reads ":ab:" as the emoji code for the AB button unless the console is told not to.
    from fieldnode.flashing.report import FlashReport, PortResult
    from fieldnode.ui.terminal import terminal

    console = terminal(record=True, width=200, force_terminal=False)
    FlashReport(console, ["/dev/ttyUSB0"]).summary(
        [PortResult("/dev/ttyUSB0", ok=True, chip="ESP32", mac="02:f1:e1:ab:00:01", message="done")])
    assert "02:f1:e1:ab:00:01" in console.export_text()
