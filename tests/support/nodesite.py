"""Virtual nodes provisioned to a real gateway on loopback, and reading what they sent and what
arrived: the console (every frame a node makes is also an FN1 line there) and the database."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from collections.abc import Callable

from fieldnode.cli.main import main
from fieldnode.wire.console import frame_from_line
from fieldnode.node.devicelink import DeviceLink
from fieldnode.wire.frame import parse_protected, split_envelope
from fieldnode.gateway import GatewayThread
from fieldnode.node.keystore import Keystore
from fieldnode.infra.paths import BOARDS_DIR
from fieldnode.node.provisioning import Settings, provision
from fieldnode.sim.fleet import devices_for_board, install_app, sim_unique_id
from fieldnode.sim.vnode import VirtualNode
from fieldnode.store.target import Target


def counter_of(frame: bytes) -> int:
    protected, _payload, _tag = split_envelope(frame)
    return parse_protected(protected)[2]


def console_since(node: VirtualNode, since: int = 0) -> bytes:
    """What the node printed on its console after output offset `since` (the kept tail of it)."""
    tail = node.console_tail(1 << 20)
    return tail[max(since - (node.output_mark() - len(tail)), 0):]


def console_counters(node: VirtualNode, since: int = 0) -> list[int]:
    """Counters of the frames the node printed on its console after output offset `since`."""
    out = []
    for line in console_since(node, since).split(b"\n")[:-1]:  # the last one may be half written
        frame = frame_from_line(line) if line.startswith(b"FN1 ") else None
        if frame:
            out.append(counter_of(frame))
    return out


class Site:
    """A gateway on loopback with its database, a keystore, and virtual nodes provisioned to it."""

    def __init__(self, tmp: Path, db: Target | None = None, **gateway_options) -> None:
        """`db`: the gateway's store (default a SQLite file in tmp; the readers below read SQLite)."""
        self.tmp = tmp
        self.keys = tmp / "keys.json"
        Keystore(self.keys, []).save()
        self.db = db or tmp / "gw.db"
        self.gateway = GatewayThread(Keystore.load(self.keys), self.db, ("127.0.0.1", 0), health_interval=0.2,
                                     **gateway_options).start()
        self.nodes: list[VirtualNode] = []
        self.closers: list[Callable[[], None]] = []  # things in front of the gateway, closed after the nodes

    def node(self, index: int = 1, *, epoch: int = 1970, partitions: str = "generic",
             via: tuple[str, int] | None = None, **board_changes) -> VirtualNode:
        """A node provisioned to this site's gateway (or to `via`, a relay in front of it)."""
        doc = json.loads((BOARDS_DIR / "virtual.json").read_text())
        for sensor in doc["sensors"]:
            sensor["period_s"] = 1
        doc.update(board_changes)
        board = self.tmp / f"board{index}.json"
        board.write_text(json.dumps(doc))
        node_dir = self.tmp / f"node{index}"
        install_app(node_dir / "flash", board)
        node = VirtualNode(node_dir, sim_unique_id(index, 0x5E), board=board, devices=devices_for_board(doc),
                           epoch=epoch, partitions=partitions)
        self.nodes.append(node)
        node.start()
        node.wait_output(b"not sending", timeout=30)
        mark = node.output_mark()
        host, port = via or self.gateway.address
        with DeviceLink(node.port) as link:
            provision(link, Keystore.load(self.keys),
                      Settings(name=f"e2e-{index}", gateway=f"{host}:{port}", wifi_ssid="plant-floor",
                               wifi_password="sim"))
            link.reset()
        node.wait_output(b"FN1 ", timeout=30, since=mark)
        return node

    def start_with_cli_provisioning(self, node: VirtualNode, name: str) -> VirtualNode:
        """Starts an unprovisioned node and provisions it with the `fieldnode provision` command, as a
        technician would, for this site's gateway; returns once its first frame line is whole."""
        self.nodes.append(node)
        node.start()
        node.wait_output(b"not sending", timeout=30)
        mark = node.output_mark()
        host, port = self.gateway.address
        assert main(["provision", "--port", node.port, "--keys", str(self.keys), "--name", name,
                     "--gateway", f"{host}:{port}", "--wifi", "plant-floor"]) == 0
        node.wait_output(b"\n", timeout=10, since=node.wait_output(b"FN1 ", timeout=30, since=mark))
        return node

    def frames(self, node: VirtualNode) -> list[tuple[int, int, float]]:
        """(counter, kind, base_time) of the node's stored frames, in commit order."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT counter, kind, base_time FROM frames WHERE device=? ORDER BY id",
                                (node.unique_id.hex(),)).fetchall()

    def readings(self, node: VirtualNode, name: str,
                 after_counter: int = 0) -> list[tuple[int, float | None, str | None]]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return conn.execute(
                "SELECT f.counter, r.value, COALESCE(r.string, r.err) "
                "FROM readings r JOIN frames f ON r.frame_id = f.id "
                "WHERE r.device=? AND r.name=? AND f.counter>? ORDER BY f.counter",
                (node.unique_id.hex(), name, after_counter)).fetchall()

    def telemetry(self, node: VirtualNode, name: str) -> list[tuple[float, float]]:
        """(received, value) of a reading in the node's telemetry frames (the health frame's heap
        readings: not the boot frame's or an event's), in the order received."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return conn.execute(
                "SELECT f.received, r.value FROM readings r JOIN frames f ON r.frame_id = f.id "
                "WHERE r.device=? AND r.name=? AND f.kind=0 ORDER BY f.received",
                (node.unique_id.hex(), name)).fetchall()

    def wait_stored(self, node: VirtualNode, counters: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            stored = {c for c, _, _ in self.frames(node)}
            missing = [c for c in counters if c not in stored]
            if not missing:
                return
            assert time.monotonic() < deadline, f"{len(missing)} frames never arrived, e.g. {missing[:10]}"
            time.sleep(0.2)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        for close in self.closers:
            close()
        self.gateway.stop()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
