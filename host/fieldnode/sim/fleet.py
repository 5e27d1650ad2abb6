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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..boards import load_board
from ..devicelink import DeviceLink
from ..errors import FieldnodeError
from ..keystore import Keystore
from ..paths import FIRMWARE_DIR
from ..provisioning import Settings, provision
from .vnode import VirtualNode

# Base values the simulation moves around, per emulated device type.
_WORLD_BASE: dict[str, dict[str, float]] = {
    "bme280": {"temp": 22.0, "hum": 45.0, "press": 101325.0},
    "sht4x": {"temp": 21.0, "hum": 50.0},
    "current_loop": {"ma": 12.0},
    "voltage": {"volts": 7.5},
    "ds18b20": {"temp": 40.0},
    "pulse": {"rate_hz": 5.0},
    "adxl345": {"amplitude": 2.0, "freq": 50.0},
}


def devices_for_board(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """sim.json device specs that put an emulated chip behind every sensor of a board."""
    buses = doc.get("buses", {})
    devices: list[dict[str, Any]] = []
    for sensor in doc.get("sensors", []):
        driver, name = sensor["driver"], sensor["name"]
        spec: dict[str, Any] = {"name": name, "type": driver, "init": {}}
        bus = buses.get(sensor.get("bus"), {})
        if bus.get("type") == "i2c":
            spec.update(sda=bus["sda"], address=sensor["address"])
        elif bus.get("type") == "onewire":
            spec.update(onewire=bus["pin"])
            spec["init"] = {"serial": len(devices) + 1, "temp": 40.0}
        elif bus.get("type") == "uart":
            spec.update(uart=bus["id"])
            if "de" in bus:
                spec["de"] = bus["de"]
            spec["init"] = {"unit_id": sensor["unit_id"],
                            "input": {str(r["address"]): 1000 for r in sensor["registers"]},
                            "holding": {str(r["address"]): 1000 for r in sensor["registers"]}}
        elif driver == "current_loop":
            spec.update(adc=sensor["pin"])
            spec["init"] = {"shunt_ohm": sensor["shunt_ohm"], "ma": 12.0, "range": sensor["range"]}
        elif driver == "voltage":
            spec.update(adc=sensor["pin"])
            spec["init"] = {"divider": sensor["divider"], "volts": 5.0}
        elif driver == "pulse":
            spec.update(pulse=sensor["pin"])
            spec["init"] = {"rate_hz": 5.0}
        devices.append(spec)
    return devices


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
        from ..boards import board_path
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

    def start(self, provision_nodes: bool = True) -> "Fleet":
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
        for node, name in zip(self.nodes, self.names):
            self.log(f"provisioning {name} on {node.port}")
            with DeviceLink(node.port) as link:
                provision(link, store, Settings(name=name, gateway=self.gateway, wifi_ssid="plant-floor",
                                                wifi_password="sim"), force=True)
                link.reset()  # the application starts again with its new key
        for node, mark in zip(self.nodes, marks):
            node.wait_output(b"FN1 ", timeout=20, since=mark)

    def drift(self, t: float) -> None:
        """Moves every emulated sensor a little: slow sine plus noise, different per node."""
        for node, phase in zip(self.nodes, self._phase):
            devices: dict[str, dict[str, float]] = {}
            for sensor in self.board_doc.get("sensors", []):
                base = _WORLD_BASE.get(sensor["driver"])
                if base is None:
                    continue
                wave = math.sin(t / 20.0 + phase)
                devices[sensor["name"]] = {k: round(v * (1 + 0.02 * wave) + random.gauss(0, abs(v) * 0.002), 3)
                                           for k, v in base.items()}
            node.set_world(devices=devices)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

