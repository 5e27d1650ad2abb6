"""VirtualNode: the firmware on the unix port behind a pty that mpremote and pyserial use as they
use a board's USB serial port; resets, the watchdog, power cuts and a littlefs flash image."""
from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import littlefs
import pytest
import serial

from fieldnode.infra.paths import FIRMWARE_DIR, REPO_DIR
from fieldnode.sim.vnode import VirtualNode

MPREMOTE = str(Path(sys.executable).parent / "mpremote")

# Runs forever under asyncio, as the real firmware does.
TICKING_MAIN = """
import asyncio, machine
print("cause", machine.reset_cause())
async def tick():
    n = 0
    while True:
        print("tick", n)
        n += 1
        await asyncio.sleep_ms(50)
asyncio.run(tick())
"""


@pytest.fixture
def make_node(tmp_path):
    nodes: list[VirtualNode] = []

    def make(main: str | None = TICKING_MAIN, name: str = "n1", **kwargs) -> VirtualNode:
        node_dir = tmp_path / name
        if main is not None and "flash" not in kwargs:
            (node_dir / "flash").mkdir(parents=True)
            (node_dir / "flash" / "main.py").write_text(main)
        node = VirtualNode(node_dir, "240ac4000001", **kwargs)
        nodes.append(node)
        return node.start()

    yield make
    for node in nodes:
        node.stop()


def mpremote(node: VirtualNode, *args: str) -> str:
    proc = subprocess.run([MPREMOTE, "connect", node.port, *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, (proc.stdout, proc.stderr, node.console_tail(500))
    return proc.stdout


def test_mpremote_exec_interrupts_the_running_firmware(make_node):
    node = make_node()
    node.wait_output("tick 1")
    assert mpremote(node, "resume", "exec", "print(1+1)") == "2\n"
    assert b"KeyboardInterrupt" in node.console_tail()  # Ctrl-C stopped main.py, as on a board
    assert node.boots == ["pwron"]


def test_mpremote_fs_cp_and_ls_use_the_node_flash(make_node, tmp_path):
    node = make_node()
    node.wait_output("tick 0")
    local = tmp_path / "board.json"
    local.write_text('{"name": "virtual"}\n')
    mpremote(node, "resume", "fs", "cp", str(local), ":board.json")
    assert (node.flash / "board.json").read_text() == '{"name": "virtual"}\n'
    listing = mpremote(node, "resume", "fs", "ls")
    assert "board.json" in listing and "main.py" in listing


def test_mpremote_without_resume_soft_resets_like_a_board(make_node):
    node = make_node()
    node.wait_output("tick 0")
    out = mpremote(node, "exec", "import machine; print(machine.reset_cause())")
    assert out == "5\n"  # SOFT_RESET
    assert node.boots == ["pwron", "soft"]
    assert b"MPY: soft reboot\r\n" in node.console_tail()


def test_the_console_reads_and_writes_like_a_serial_port(make_node):
    node = make_node()
    with serial.Serial(node.port, 115200, timeout=0.1) as port:
        seen = b""
        deadline = time.monotonic() + 10
        while seen.count(b"tick") < 2:
            assert time.monotonic() < deadline, seen
            seen += port.read(256)
        port.write(b"\x03")  # Ctrl-C from a terminal: the REPL comes up
        port.write(b"print(6 * 7)\r")
        while b"42" not in seen:
            assert time.monotonic() < deadline, seen
            seen += port.read(256)


def test_an_unfed_watchdog_restarts_the_firmware_with_wdt_reset(make_node):
    node = make_node("""
import machine
cause = machine.reset_cause()
print("cause", cause)
if cause == machine.PWRON_RESET:
    machine.WDT(timeout=150)
    while True:  # hung: no Python-level way out, only the watchdog
        pass
""")
    node.wait_output("cause 3")
    assert node.boots == ["pwron", "wdt"]


def test_deepsleep_and_reset_boot_again_with_their_cause(make_node):
    node = make_node("""
import machine
cause = machine.reset_cause()
print("cause", cause, machine.RTC().memory())
if cause == machine.PWRON_RESET:
    machine.RTC().memory(b"kept")
    machine.deepsleep(400)
elif cause == machine.DEEPSLEEP_RESET:
    machine.reset()
""", sleep_scale=0.25)
    node.wait_output("cause 2 b'kept'")  # RTC memory survives deep sleep and resets
    assert node.boots == ["pwron", "deepsleep", "hard"]
    mark = node.output_mark()
    node.power_cycle()
    node.wait_output("cause 1 b''", since=mark)  # not a power cut


def _open_descriptors() -> set[tuple[str, str]]:
    # (fd, what it points at): earlier tests' objects may close theirs meanwhile (garbage
    # collection), so what counts is a descriptor this test leaves open, not the total.
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:
            pass  # the listing's own descriptor, closed by now
    return out


def test_power_cut_and_stop_leave_no_process_or_descriptor_behind(tmp_path):
    gc.collect()
    fds_before = _open_descriptors()
    threads_before = set(threading.enumerate())
    (tmp_path / "n1" / "flash").mkdir(parents=True)
    (tmp_path / "n1" / "flash" / "main.py").write_text(TICKING_MAIN)
    node = VirtualNode(tmp_path / "n1", "240ac4000001").start()
    try:
        node.wait_output("tick 0")
        first = node._proc.pid
        node.kill()
        assert not node.running and node.state == "off"
        mark = node.output_mark()
        node.power_on()
        node.wait_output("cause 1", since=mark)
        assert node.boots == ["pwron", "pwron"]
        second = node._proc.pid
    finally:
        node.stop()
    node.stop()  # twice is fine
    for pid in (first, second):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: not even a zombie
    assert _open_descriptors() - fds_before == set()
    assert set(threading.enumerate()) - threads_before == set()


def test_the_flash_can_be_a_littlefs_image(make_node, tmp_path):
    image = tmp_path / "flash.img"
    fs = littlefs.LittleFS(block_size=4096, block_count=128)
    fs.mkdir("lib")
    with fs.open("lib/greeting.py", "w") as f:
        f.write("TEXT = 'hello from the image'\n")
    with fs.open("main.py", "w") as f:
        f.write("import greeting, os\nprint(greeting.TEXT, os.getcwd())\n")
    image.write_bytes(fs.context.buffer)
    node = make_node(main=None, flash=image)
    node.wait_output("hello from the image /")
    local = tmp_path / "local.txt"
    local.write_text("copied in\n")
    mpremote(node, "resume", "fs", "cp", str(local), ":copied.txt")
    node.stop()
    back = littlefs.LittleFS(block_size=4096, block_count=128, mount=False)
    back.context.buffer[:] = image.read_bytes()
    back.mount()
    assert sorted(back.listdir("/")) == ["copied.txt", "lib", "main.py"]
    with back.open("copied.txt") as f:
        assert f.read() == "copied in\n"


def test_the_flash_is_the_nodes_root_so_absolute_paths_never_reach_the_hosts(make_node, tmp_path):
    # `flash --app-only` writes /main.py and /lib/fnode/... as it must on a board; on a virtual
    # node they belong in its flash, never in the host's / (where they once landed).
    probe = f"fieldnode-root-probe-{os.getpid()}"
    node = make_node()
    node.wait_output("tick 1")
    out = mpremote(node, "resume", "exec",
                   f"import os; os.mkdir('/lib'); f = open('/lib/{probe}', 'w'); f.write('x'); f.close(); "
                   "print(sorted(n for n in os.listdir('/') if not n.startswith('_')))")
    assert out.strip() == "['lib', 'main.py']"
    assert (node.flash / "lib" / probe).read_text() == "x"
    assert not Path("/lib", probe).exists() and not Path("/usr/lib", probe).exists()


def test_the_real_firmware_boots_on_the_virtual_board(make_node, tmp_path):
    flash = tmp_path / "n1" / "flash"
    flash.mkdir(parents=True)
    for name in ("boot.py", "main.py"):
        shutil.copy(FIRMWARE_DIR / name, flash / name)
    shutil.copy(REPO_DIR / "boards" / "virtual.json", flash / "board.json")
    node = make_node(main=None, devices=[{"name": "env", "type": "bme280", "sda": 21, "address": 118}])
    node.wait_output("board virtual")
    assert mpremote(node, "resume", "exec", "import fnode.provision as p; p.identity()") == "240ac4000001\n"


@pytest.mark.parametrize("kwargs, message", [
    ({"unique_id": "24:0a:c4"}, "6 bytes"),
    ({"unique_id": "zz0ac4000001"}, "12 hex digits"),
    ({"devices": [{"type": "no_such_chip"}]}, "known types:"),
    ({"nvs": "sometimes"}, "'commit' or 'esp-idf'"),
    ({"baud": 0}, "positive whole number"),
    ({"baud": "fast"}, "positive whole number"),
])
def test_bad_node_settings_are_refused_with_a_clear_error(tmp_path, kwargs, message):
    from fieldnode.infra.errors import FieldnodeError
    args = {"unique_id": "240ac4000001", **kwargs}
    with pytest.raises(FieldnodeError, match=message):
        VirtualNode(tmp_path / "n1", **args)


def test_the_image_fieldnode_flash_writes_runs_the_node_by_itself(tmp_path):
    """What ships is what runs: the application image `fieldnode flash` would write for the
    virtual board (boot.py, main.py, the library as .mpy, board.json, in littlefs2) is the node's
    flash, with no source tree on the path. It boots, is provisioned, and sends verified frames."""
    import json

    from fieldnode.node.devicelink import DeviceLink
    from fieldnode.flashing.appimage import ImageCache
    from fieldnode.flashing.plan import load_app, resolve_target
    from fieldnode.node.keystore import Keystore
    from fieldnode.node.provisioning import Settings, provision
    from fieldnode.sim.fleet import devices_for_board
    from support.nodesite import Site, console_counters, console_since

    target = resolve_target(None, "virtual", None)
    app = load_app(FIRMWARE_DIR, target)
    assert "/lib/fnode/app.mpy" in app.files and not any(p.endswith(".py") and "/lib/" in p for p in app.files)
    image = tmp_path / "flash.img"
    image.write_bytes(ImageCache(app.files).image(512 * 1024))
    doc = json.loads((REPO_DIR / "boards" / "virtual.json").read_text())
    site = Site(tmp_path)
    node = VirtualNode(tmp_path / "node", "240ac4000042", board="virtual", flash=image, firmware_lib=None,
                       devices=devices_for_board(doc))
    site.nodes.append(node)
    try:
        node.start()
        node.wait_output(b"not sending: no device key", timeout=30)
        with DeviceLink(node.port) as link:
            assert link.exec("import fnode.app; print(fnode.app.__file__)") == "/lib/fnode/app.mpy"
            host, port = site.gateway.address
            provision(link, Keystore.load(site.keys),
                      Settings(name="from-image", gateway=f"{host}:{port}", wifi_ssid="plant-floor",
                               wifi_password="sim"))
            mark = node.output_mark()
            link.reset()
        node.wait_output(b"FN1 ", timeout=30, since=mark)
        deadline = time.monotonic() + 30
        while len(site.frames(node)) < 3:
            assert time.monotonic() < deadline, node.console_tail(2000)
            time.sleep(0.2)
        assert set(console_counters(node, mark)) >= {c for c, _, _ in site.frames(node)}
        # (before the mark: the KeyboardInterrupt of taking the REPL for provisioning, as on a board)
        assert b"Traceback" not in console_since(node, mark)
    finally:
        site.close()


def test_input_written_just_before_the_port_closes_still_reaches_the_node(make_node):
    # A USB-serial adapter sends what the host wrote even after the host closes the port:
    # `flash --app-only` ends with Ctrl-D and a close, and that Ctrl-D must reset the node.
    node = make_node()
    node.wait_output("tick 0")
    fd = os.open(node.port, os.O_RDWR | os.O_NOCTTY)
    os.write(fd, b"\x03")  # into the REPL
    os.close(fd)
    node.wait_output(b">>> ", timeout=10)
    for i in range(20):
        fd = os.open(node.port, os.O_RDWR | os.O_NOCTTY)
        os.write(fd, f"print('written', {i} * 3)\r".encode())
        os.close(fd)  # at once: before the node's relay has read it
    for i in range(20):
        node.wait_output(f"written {i * 3}".encode(), timeout=10)
