"""A fleet of virtual nodes: the board's sensors as emulated devices, the application on each
node's flash, and each node provisioned over its pty with `fieldnode provision`'s own code path.
Used by `fieldnode sim`, `fieldnode demo` and the end-to-end tests.

By default each node's flash is the application image `fieldnode flash` would write for the
board (the library compiled to .mpy, in littlefs2), built from the working tree at start, with
nothing else on the path: what runs is what ships. source=True runs firmware/lib as source
instead, so an edit takes effect at the node's next reset."""
from __future__ import annotations

import math
import random
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..node.boards import load_board
from ..node.drivers import DRIVERS, SensorDriver
from ..node.devicelink import DeviceLink
from ..infra.errors import FieldnodeError
from ..node.keystore import Keystore
from ..infra.paths import FIRMWARE_DIR
from ..node.provisioning import Settings, provision
from .vnode import VirtualNode

# Where an emulated chip hangs on each kind of bus, in sim.json's terms (simhal/simdev.py).
_ON_BUS: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
    "i2c": lambda bus, sensor: {"sda": bus["sda"], "address": sensor["address"]},
    "onewire": lambda bus, sensor: {"onewire": bus["pin"]},
    "uart": lambda bus, sensor: {"uart": bus["id"], **({"de": bus["de"]} if "de" in bus else {})},
}


def _sensor_devices(doc: dict[str, Any]) -> Iterator[tuple[SensorDriver, dict[str, Any]]]:
    # (driver, sim.json device spec) for every emulated chip behind the board's sensors.
    buses = doc.get("buses", {})
    serial = 1  # the board's device number: chips that share a bus must differ (1-Wire ROM ids)
    for sensor in doc.get("sensors", []):
        driver = DRIVERS[sensor["driver"]]
        sim = driver.sim
        place = (_ON_BUS[buses[sensor["bus"]]["type"]](buses[sensor["bus"]], sensor) if sim.pin_key is None
                 else {sim.pin_key: sensor["pin"]})
        inits = sim.inits(sensor, serial)
        serial += len(inits)
        for i, init in enumerate(inits, 1):
            name = sensor["name"] if len(inits) == 1 else f"{sensor['name']}.{i}"
            yield driver, {"name": name, "type": sim.type, **place, "init": init}


def devices_for_board(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """sim.json device specs that put an emulated chip behind every sensor of a board, as each
    driver's declaration says (node/drivers/). A sensor with one chip gives it its own name, so
    world.json moves it by sensor name; several (DS18B20 probes) are <name>.1, <name>.2..."""
    return [spec for _, spec in _sensor_devices(doc)]


def _world_centres(doc: dict[str, Any]) -> dict[str, Mapping[str, float]]:
    """Per emulated device of the board: the values `drift` moves, and their centres."""
    return {spec["name"]: driver.sim.world for driver, spec in _sensor_devices(doc) if driver.sim.world}


def install_app(flash: Path, board_file: Path) -> None:
    """boot.py, main.py and board.json onto a node's flash directory. The library (fnode) comes
    from the working tree's firmware/lib on the path, so what runs is what is checked out."""
    flash.mkdir(parents=True, exist_ok=True)
    for name in ("boot.py", "main.py"):
        shutil.copyfile(FIRMWARE_DIR / name, flash / name)
    shutil.copyfile(board_file, flash / "board.json")


def sim_unique_id(index: int, salt: int = 0) -> bytes:
    # 02 = a locally administered MAC: never one a real ESP32 ships with.
    return bytes([0x02, 0xF1, 0xE1, salt & 0xFF]) + index.to_bytes(2, "big")


SHIPPED_IMAGE_SIZE = 1024 * 1024  # the node's filesystem: room for the app and a full spool


def shipped_image(board: str | Path) -> bytes:
    """The littlefs2 application image `fieldnode flash` writes for this board."""
    from ..flashing.appimage import ImageCache
    from ..flashing.plan import load_app, resolve_target
    return ImageCache(load_app(FIRMWARE_DIR, resolve_target(None, str(board), None)).files).image(SHIPPED_IMAGE_SIZE)


class Fleet:
    def __init__(self, base: Path, count: int, board: str = "virtual", keys: Path | None = None,
                 gateway: str | None = None, salt: int | None = None,
                 log: Callable[[str], None] = lambda s: None, source: bool = False) -> None:
        if count < 1:
            raise FieldnodeError("--nodes must be at least 1")
        self.base = Path(base)
        self.board_doc = load_board(board)
        from ..node.boards import board_path
        self.board_file = board_path(board)
        self.keys_path = keys or self.base / "keys.json"
        self.gateway = gateway
        self.log = log
        salt = random.randrange(256) if salt is None else salt
        self.nodes: list[VirtualNode] = []
        self.names: list[str] = []
        devices = devices_for_board(self.board_doc)
        image = None if source else shipped_image(self.board_file)
        for i in range(1, count + 1):
            node_dir = self.base / f"node{i}"
            if image is None:
                install_app(node_dir / "flash", self.board_file)
                node = VirtualNode(node_dir, sim_unique_id(i, salt), board=self.board_file, devices=devices)
            else:
                # Written afresh at every start, as `fieldnode flash` would: NVS (key, counter)
                # lives beside it in nvs.json and is kept.
                node_dir.mkdir(parents=True, exist_ok=True)
                (node_dir / "flash.img").write_bytes(image)
                node = VirtualNode(node_dir, sim_unique_id(i, salt), board=self.board_file, devices=devices,
                                   flash=node_dir / "flash.img", firmware_lib=None)
            self.nodes.append(node)
            self.names.append(f"sim-{i}")
        self._phase = [random.random() * 6.28 for _ in self.nodes]
        self._world = _world_centres(self.board_doc)

    def start(self, provision_nodes: bool = True) -> Fleet:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_output(b"not sending", timeout=20) if provision_nodes else node.wait_boots(1)
        if provision_nodes:
            self.provision()
        return self

    def provision(self) -> None:
        store = Keystore.load(self.keys_path)
        marks = [node.output_mark() for node in self.nodes]
        for node, name in zip(self.nodes, self.names, strict=True):
            self.log(f"provisioning {name} on {node.port}")
            with DeviceLink(node.port) as link:
                provision(link, store, Settings(name=name, gateway=self.gateway, wifi_ssid="plant-floor",
                                                wifi_password="sim"), force=True)
                link.reset()  # the application starts again with its new key
        for node, mark in zip(self.nodes, marks, strict=True):
            node.wait_output(b"FN1 ", timeout=20, since=mark)

    def drift(self, t: float) -> None:
        """Moves every emulated sensor a little: slow sine plus noise, different per node."""
        for node, phase in zip(self.nodes, self._phase, strict=True):
            wave = math.sin(t / 20.0 + phase)
            devices = {name: {k: round(v * (1 + 0.02 * wave) + random.gauss(0, abs(v) * 0.002), 3)
                              for k, v in centres.items()}
                       for name, centres in self._world.items()}
            node.set_world(devices=devices)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

