"""How fast an update crosses a slow link: a virtual node fetches the application bundle (and, with
--firmware, a MicroPython-sized image) from the real gateway through a relay that delays every
datagram by half a round trip, and the time between the first and the last block is compared
with the stop-and-wait limit, (blocks - 1) x RTT (one block in flight: RFC 7959 Block2 as the
node uses it). docs/updates.md quotes the figures; not part of `make bench`'s report yet.

    .venv/bin/python bench/update_transfer.py [--rtt-ms 20 200] [--firmware]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fieldnode.gateway.events import GatewayEvent  # noqa: E402
from fieldnode.infra.paths import BOARDS_DIR, FIRMWARE_DIR  # noqa: E402
from fieldnode.node.devicelink import DeviceLink  # noqa: E402
from fieldnode.node.keystore import Keystore  # noqa: E402
from fieldnode.node.provisioning import Settings, provision  # noqa: E402
from fieldnode.sim.fleet import devices_for_board, install_app, sim_unique_id  # noqa: E402
from fieldnode.sim.vnode import VirtualNode  # noqa: E402
from fieldnode.updates.release import build_release, offer_to  # noqa: E402
from fieldnode.updates.site import UpdateSite, updates_dir  # noqa: E402
from support.nodesite import Site, wait_for  # noqa: E402

RESULTS = REPO / "bench" / "results" / "update_transfer.json"
FIRMWARE_SIZE = 0x180000 - 14 * 1024  # a generic MicroPython image in the OTA slot, ~14 KB to spare


class DelayRelay:
    """UDP between the node and the gateway, each datagram held rtt/2 each way. Each of the node's
    sockets (the uplink's, the download's) gets its own upstream socket, so answers go back to
    the socket that asked."""

    def __init__(self, upstream: tuple[str, int], rtt: float) -> None:
        self.upstream = upstream
        self.half = rtt / 2
        self.clients: dict[tuple[str, int], socket.socket] = {}
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.loop.call_soon_threadsafe(self.loop.add_reader, self.sock.fileno(), self._from_node)

    def _from_node(self) -> None:
        data, addr = self.sock.recvfrom(2048)
        up = self.clients.get(addr)
        if up is None:
            up = self.clients[addr] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            up.bind(("127.0.0.1", 0))
            self.loop.add_reader(up.fileno(), self._from_gateway, up, addr)
        self.loop.call_later(self.half, up.sendto, data, self.upstream)

    def _from_gateway(self, up: socket.socket, client: tuple[str, int]) -> None:
        data = up.recv(2048)
        self.loop.call_later(self.half, self.sock.sendto, data, client)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def provisioned_node(site: Site, index: int, gateway: tuple[str, int], board: dict, **vnode) -> VirtualNode:
    path = site.tmp / f"board{index}.json"
    path.write_text(json.dumps(board))
    node_dir = site.tmp / f"node{index}"
    install_app(node_dir / "flash", path)
    node = VirtualNode(node_dir, sim_unique_id(index, 0x7B), board=path, devices=devices_for_board(board), **vnode)
    site.nodes.append(node)
    node.start()
    node.wait_output(b"not sending", timeout=30)
    with DeviceLink(node.port) as link:
        provision(link, Keystore.load(site.keys), Settings(name=f"bench-{index}", gateway=f"{gateway[0]}:{gateway[1]}",
                                                           wifi_ssid="plant-floor", wifi_password="sim"))
        link.reset()
    return node


def measure(rtt_ms: int, tier: str, index: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="fieldnode-update-bench-") as tmp:
        site = Site(Path(tmp))
        relay = DelayRelay(site.gateway.address, rtt_ms / 1000)
        blocks: list[float] = []

        def seen(event: GatewayEvent) -> None:
            if event.outcome == "update-block":
                blocks.append(event.time)
            if os.environ.get("BENCH_DEBUG"):
                print(f"{event.time:.3f} {event.outcome} {event.reason}", file=sys.stderr)
        site.gateway.gateway.subscribe(seen)
        try:
            board = json.loads((BOARDS_DIR / "virtual.json").read_text())
            board.update(update_trial_s=600, uplink_stall_s=600, watchdog_s=600)
            node = provisioned_node(site, index, relay.address, board,
                                    **({"partitions": "ota"} if tier == "fw" else {}))
            ups = UpdateSite(updates_dir(site.db))
            if tier == "fw":
                image = b"\xe9" + bytes(0x2F) + b"9.0.0".ljust(32, b"\0") + os.urandom(FIRMWARE_SIZE - 80)
                rel = ups.add_release(image, "9.0.0", "virtual", "1.20.0", tier="fw")
            else:
                rel = build_release(ups, FIRMWARE_DIR, "9.0.0", board)
            offer_to(ups, Keystore.load(site.keys), node.unique_id, rel)
            expected = -(-rel.size // 1024) + 1  # image blocks and the manifest's one
            wait_for(lambda: len(blocks) >= expected, 60 + expected * rtt_ms / 1000 * 3, "the download")
        finally:
            relay.close()
            site.close()
    elapsed = blocks[-1] - blocks[0]
    limit = (len(blocks) - 1) * rtt_ms / 1000
    return {"tier": tier, "rtt_ms": rtt_ms, "bytes": rel.size, "blocks": len(blocks), "seconds": round(elapsed, 3),
            "limit_seconds": round(limit, 3), "fraction_of_limit": round(limit / elapsed, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--firmware", action="store_true", help="also a ~1.56 MB image (at the first RTT only)")
    args = parser.parse_args()
    os.environ.setdefault("FIELDNODE_WIFI_PASSWORD", "sim")
    rows = [measure(rtt, "app", i) for i, rtt in enumerate(args.rtt_ms, 1)]
    if args.firmware:
        rows.append(measure(args.rtt_ms[0], "fw", len(rows) + 1))
    for row in rows:
        print(f"{row['tier']:>3} {row['bytes']:>8} B  RTT {row['rtt_ms']:>3} ms  {row['blocks']:>5} blocks  "
              f"{row['seconds']:>8.2f} s  limit {row['limit_seconds']:>8.2f} s  "
              f"fraction {row['fraction_of_limit']:.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
