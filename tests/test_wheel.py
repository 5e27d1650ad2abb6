"""The package as a user installs it: a wheel built from the repository, installed into a fresh
venv, runs `fieldnode board list`, builds the application image `fieldnode flash` writes, and
starts a virtual node whose frame `fieldnode decode` verifies, all with the repository out of
reach (its firmware/ and boards/ must come from inside the installed package)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from fieldnode.flashing.plan import load_app, resolve_target
from fieldnode.infra.paths import REPO_DIR
from fieldnode.wire import coap
from fieldnode.wire.frame import parse_unverified

# What a build needs from a checkout; the rest (tests, docs, bench) stays out of the wheel.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "host", "firmware", "boards")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the built wheel; returns its bin directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = REPO_DIR / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "_data"))
        else:
            shutil.copy(path, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "--no-cache-dir"]
    # Without PYTHONPATH: a checkout on it (and its fieldnode.egg-info) would make pip see fieldnode
    # as installed already in the fresh venv, and install nothing.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"),
                    str(src)], check=True, capture_output=True, timeout=240, env=env)
    shutil.rmtree(src)  # the build's sources are gone: only the wheel can supply firmware/ and boards/
    (wheel,) = (tmp / "dist").glob("fieldnode-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    ask = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = subprocess.run([venv / "bin" / "python", "-c", ask], check=True, capture_output=True, text=True,
                             timeout=60, env=env).stdout.strip()
    # The dependencies are those this venv already holds (no downloads in tests): a path line in a
    # .pth adds its site-packages after the fresh one, without running its .pth files, so the
    # editable fieldnode installed there stays invisible.
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # The one dependency command fieldnode runs (the MicroPython unix port), where pip would put it.
    (venv / "bin" / "micropython").symlink_to(Path(sys.executable).parent / "micropython")
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=240, env=env)
    return venv / "bin"


@pytest.fixture
def outside(tmp_path) -> dict[str, str]:
    """Environment for a run from a directory outside the repository, as a user's shell has."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FIELDNODE_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    return env


def run(cmd: list, env: dict[str, str], cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
                          **kwargs)


def test_the_installed_package_finds_its_firmware_and_boards_inside_itself(installed, outside, tmp_path):
    probe = ("import json, fieldnode; from fieldnode.infra import paths; print(json.dumps({"
             "'package': fieldnode.__file__, 'firmware': str(paths.FIRMWARE_DIR), 'boards': str(paths.BOARDS_DIR),"
             "'simhal': str(paths.SIMHAL_DIR)}))")
    proc = run([installed / "python", "-c", probe], outside, tmp_path)
    assert proc.returncode == 0, proc.stderr
    where = json.loads(proc.stdout)
    venv = installed.parent.resolve()
    for name, path in where.items():
        assert Path(path).resolve().is_relative_to(venv), (name, path)
    assert (Path(where["firmware"]) / "main.py").is_file()
    assert (Path(where["firmware"]) / "lib" / "fnode" / "frame.py").is_file()
    assert (Path(where["simhal"]) / "simboot.py").is_file()
    shipped = sorted(p.name for p in Path(where["boards"]).glob("*.json"))
    assert shipped == sorted(p.name for p in (REPO_DIR / "boards").glob("*.json"))


def test_board_list_shows_every_board_of_the_repository(installed, outside, tmp_path):
    proc = run([installed / "fieldnode", "board", "list"], {**outside, "COLUMNS": "200"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    for board in (REPO_DIR / "boards").glob("*.json"):
        assert f" {board.stem} " in proc.stdout


def test_flash_builds_the_application_image_from_the_shipped_firmware(installed, outside, tmp_path):
    # The image is built before any port is opened; the missing port then ends the run cleanly.
    proc = run([installed / "fieldnode", "flash", "--app-only", "--board", "virtual", "--port", tmp_path / "none"],
               {**outside, "COLUMNS": "300"}, tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    app_line = next(line for line in proc.stdout.splitlines() if line.startswith("app "))
    assert str(installed.parent / "lib") in app_line and "fieldnode/_data/firmware" in app_line
    # The whole application: what the repository's own firmware/ gives, file for file.
    app = load_app(REPO_DIR / "firmware", resolve_target(None, "virtual", None))
    assert f"{len(app.files)} files, {app.total_bytes} bytes, board virtual" in app_line
    assert "does not exist" in proc.stdout + proc.stderr


def test_a_virtual_node_from_the_wheel_sends_frames_that_decode_verifies(installed, outside, tmp_path):
    keys = tmp_path / "keys.json"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gateway:
        gateway.bind(("127.0.0.1", 0))
        # PYTHONFAULTHANDLER: should sim not stop on Ctrl-C, SIGABRT makes it print where each of
        # its threads is, and the failure shows that rather than only a timeout.
        sim = subprocess.Popen([str(installed / "fieldnode"), "sim", "--nodes", "1", "--keys", str(keys),
                                "--gateway", f"127.0.0.1:{gateway.getsockname()[1]}", "--dir", str(tmp_path / "nodes")],
                               env={**outside, "PYTHONFAULTHANDLER": "1"}, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        try:
            frames = _frames_until_telemetry(gateway)
        finally:
            sim.send_signal(signal.SIGINT)
            out = _output_when_stopped(sim, 60)
    assert sim.returncode == 0 and "Traceback" not in out, out
    proc = run([installed / "fieldnode", "decode", "--hex", "--json", "--keys", keys], outside, tmp_path,
               input="".join(f"{frame.hex()}\n" for frame in frames))
    assert proc.returncode == 0, proc.stdout + proc.stderr  # 1 if any frame failed to verify
    shown = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(shown) == len(frames) and all(f["verified"] for f in shown)
    telemetry = shown[-1]
    assert telemetry["kind"] == "telemetry"
    assert {"env.temp", "env.hum", "env.press"} <= {r["n"] for r in telemetry["records"]}


def _output_when_stopped(proc: subprocess.Popen, timeout: float) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        exited = proc.poll()
        signals = _signal_state(proc.pid)
        if exited is None:
            proc.send_signal(signal.SIGABRT)
        out = proc.communicate(timeout=30)[0]
        what = "did not stop" if exited is None else f"exited ({exited}) but something held its output open"
        pytest.fail(f"sim {what} {timeout:.0f} s after Ctrl-C; signals {signals}; its output, with its "
                    f"threads' stacks:\n{out}")


def _signal_state(pid: int) -> dict[str, list[str]]:
    """Pending, blocked, ignored and caught signal masks of the process and of each thread."""
    state = {}
    for status in [Path(f"/proc/{pid}/status"), *Path(f"/proc/{pid}/task").glob("*/status")]:
        try:
            lines = status.read_text().splitlines()
        except OSError:
            continue
        state[str(status.parent.name)] = [ln for ln in lines if ln.startswith(("SigQ", "SigPnd", "ShdPnd", "SigBlk",
                                                                           "SigIgn", "SigCgt"))]
    return state


def _frames_until_telemetry(gateway: socket.socket) -> list[bytes]:
    """Each frame the node sent up to its first telemetry, acknowledged (2.04) as a gateway
    does, since the node holds its next frame until the one in flight is answered."""
    frames: list[bytes] = []
    deadline = time.monotonic() + 120
    while not frames or parse_unverified(frames[-1]).kind_name != "telemetry":
        gateway.settimeout(max(deadline - time.monotonic(), 0.001))
        datagram, node = gateway.recvfrom(2048)
        request = coap.decode(datagram)
        gateway.sendto(coap.encode(coap.Message(coap.ACK, coap.CHANGED, request.mid, request.token)), node)
        if request.payload not in frames:  # a retransmission carries the same frame
            frames.append(request.payload)
    return frames


def test_the_installed_package_carries_the_web_page_and_its_chart_library(installed, outside, tmp_path):
    probe = ("import json; from fieldnode.web.app import STATIC; print(json.dumps({'static': str(STATIC)}))")
    proc = run([installed / "python", "-c", probe], outside, tmp_path)
    assert proc.returncode == 0, proc.stderr
    static = Path(json.loads(proc.stdout)["static"])
    assert static.resolve().is_relative_to(installed.parent.resolve())
    for name in ("index.html", "app.js", "style.css", "uplot/uPlot.iife.min.js", "uplot/uPlot.min.css",
                 "uplot/LICENSE", "uplot/VERSION"):
        assert (static / name).read_bytes() == (REPO_DIR / "host/fieldnode/web/static" / name).read_bytes(), name
