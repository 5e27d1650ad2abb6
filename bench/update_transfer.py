"""How fast an update crosses a slow link, and what it costs the node's heap. A virtual node
fetches the application bundle (and a MicroPython-sized firmware image) from the real gateway
through a relay that delays every datagram by half a round trip (tests/support/delayrelay.py);
the time between the first and the last block the gateway serves is compared with the
stop-and-wait limit, (blocks - 1) x RTT (one block in flight: RFC 7959 Block2 as the node uses
it). Rounds interleave the configurations; docs/performance.md judges each on its median round.

The heap: in separate runs (so that their health frames do not touch the timing), the node sends
a health frame every second (board "health_s": heap.free after a collection, fnode/health.py);
the free heap at rest before the offer, in the first half of the download and in the second
half gives the update path's share and its growth during the download.

A configuration whose stop-and-wait limit exceeds --long-limit-s (the image at 200 ms: 1522
round trips, ~5 minutes at the limit itself) runs in the first --long-rounds rounds only.

    .venv/bin/python bench/update_transfer.py [--rounds 3] [--rtt-ms 20 200] [--firmware-rtt-ms 20 200]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fieldnode.flashing.compile import build_app_files  # noqa: E402
from fieldnode.gateway.events import GatewayEvent  # noqa: E402
from fieldnode.infra.paths import BOARDS_DIR, FIRMWARE_DIR  # noqa: E402
from fieldnode.node.chips import chip_spec  # noqa: E402
from fieldnode.node.devicelink import DeviceLink  # noqa: E402
from fieldnode.node.keystore import Keystore  # noqa: E402
from fieldnode.node.provisioning import Settings, provision  # noqa: E402
from fieldnode.sim.fleet import devices_for_board, shipped_image, sim_unique_id  # noqa: E402
from fieldnode.sim.vnode import VirtualNode  # noqa: E402
from fieldnode.updates.release import build_release, offer_to  # noqa: E402
from fieldnode.updates.site import UpdateSite, updates_dir  # noqa: E402
from support.delayrelay import DelayRelay  # noqa: E402
from support.nodesite import Site, wait_for  # noqa: E402

RESULTS = REPO / "bench" / "results" / "update_transfer.json"
FIRMWARE_SIZE = 0x180000 - 14 * 1024  # a generic MicroPython image in the OTA slot, ~14 KB to spare
BLOCK = 1024  # the board's update_block (the default)
DATAGRAM = BLOCK + 64  # fnode/blockget.py _RX_MAX: the one answer alive at a time
SECTOR = 4096  # fnode/otafw.py: the firmware tier's one sector buffer
HEAPSIZE = "1M"  # VirtualNode's default -X heapsize
# The modules an update imports and forgets after it (fnode.app.Updates.run); the firmware tier adds otafw.
UPDATE_MODULES = {"app": ["fnode.ota", "fnode.blockget", "fnode.hkdf", "fnode.cbordecode"],
                  "fw": ["fnode.ota", "fnode.blockget", "fnode.hkdf", "fnode.cbordecode", "fnode.otafw"]}
REST_LOOKS = 4  # health frames before the offer: the heap at rest


@dataclass
class Download:
    """What one update run saw: when the gateway served each block, when the offer was made, and
    the node's health frames' free heap (received, bytes)."""
    size: int
    offered: float
    refused: float = 0.0  # when a first offer was refused (heap runs: the names interned before)
    blocks: list[float] = field(default_factory=list)
    heap: list[tuple[float, float]] = field(default_factory=list)


def provisioned_node(site: Site, index: int, gateway: tuple[str, int], board: dict, **vnode) -> VirtualNode:
    path = site.tmp / f"board{index}.json"
    path.write_text(json.dumps(board))
    node_dir = site.tmp / f"node{index}"
    node_dir.mkdir()
    # What ships (the library as .mpy in littlefs2, as `fieldnode flash` writes it): the heap
    # figures are those of the code a board runs, not of source compiled on the node.
    (node_dir / "flash.img").write_bytes(shipped_image(path))
    node = VirtualNode(node_dir, sim_unique_id(index, 0x7B), board=path, devices=devices_for_board(board),
                       flash=node_dir / "flash.img", firmware_lib=None, heap=HEAPSIZE, **vnode)
    site.nodes.append(node)
    node.start()
    node.wait_output(b"not sending", timeout=30)
    with DeviceLink(node.port) as link:
        provision(link, Keystore.load(site.keys), Settings(name=f"bench-{index}", gateway=f"{gateway[0]}:{gateway[1]}",
                                                           wifi_ssid="plant-floor", wifi_password="sim"))
        link.reset()
    return node


def _release(ups: UpdateSite, tier: str, board: dict, version: str = "9.0.0", size: int = FIRMWARE_SIZE):
    if tier == "fw":
        image = b"\xe9" + bytes(0x2F) + version.encode().ljust(32, b"\0") + os.urandom(size - 80)
        return ups.add_release(image, version, "virtual", "1.20.0", tier="fw")
    return build_release(ups, FIRMWARE_DIR, version, board)


def _names_first(site: Site, ups: UpdateSite, node: VirtualNode, tier: str, board: dict) -> float:
    """An offer the node refuses (not newer than what runs), after the heap at rest is seen: the
    update path is imported for it and forgotten, the names it interns stay (interned strings are
    never freed). -> when the refusal arrived; the heap after it is the rest the download is
    compared with, so its share is the path's objects and buffers, the names counted apart."""
    wait_for(lambda: len(site.telemetry(node, "heap.free")) >= REST_LOOKS, 60, "the heap at rest")
    offer_to(ups, Keystore.load(site.keys), node.unique_id, _release(ups, tier, board, "0.0.1", 40_000))
    wait_for(lambda: any(s == "update.refused" for _, _, s in site.readings(node, "event")), 60, "the refusal")
    refused = time.time()
    wait_for(lambda: sum(t > refused for t, _ in site.telemetry(node, "heap.free")) >= REST_LOOKS, 60,
             "the heap after the refusal")
    return refused


def run_update(rtt_ms: int, tier: str, index: int, health_s: float | None = None) -> Download:
    """One update of a fresh node through the relay; with health_s, a health frame that often."""
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
            if health_s is not None:
                board["health_s"] = health_s
            node = provisioned_node(site, index, relay.address, board,
                                    **({"partitions": "ota"} if tier == "fw" else {}))
            ups = UpdateSite(updates_dir(site.db))
            refused = _names_first(site, ups, node, tier, board) if health_s is not None else 0.0
            rel = _release(ups, tier, board)
            blocks.clear()  # the refused offer's manifest
            run = Download(rel.size, time.time(), refused, blocks)
            offer_to(ups, Keystore.load(site.keys), node.unique_id, rel)
            expected = -(-rel.size // BLOCK) + 1  # image blocks and the manifest's one
            wait_for(lambda: len(blocks) >= expected, 60 + expected * rtt_ms / 1000 * 3, "the download")
            if health_s is not None:
                time.sleep(1)  # the last health frames of the download reach the database
                run.heap = site.telemetry(node, "heap.free")
        finally:
            relay.close()
            site.close()
    return run


def limit_seconds(tier: str, rtt_ms: int) -> float:
    """The stop-and-wait limit of a configuration before it runs (the bundle's size is ~64 KB)."""
    size = FIRMWARE_SIZE if tier == "fw" else 64 * 1024
    return -(-size // BLOCK) * rtt_ms / 1000


def transfer_row(tier: str, rtt_ms: int, runs: list[Download]) -> dict[str, Any]:
    blocks = len(runs[0].blocks)
    limit = (blocks - 1) * rtt_ms / 1000
    seconds = [round(r.blocks[-1] - r.blocks[0], 3) for r in runs]
    return {"tier": tier, "rtt_ms": rtt_ms, "bytes": runs[0].size, "blocks": blocks, "limit_seconds": round(limit, 3),
            "seconds": seconds, "fractions": [round(limit / s, 3) for s in seconds]}


def mpy_sizes(board: dict) -> dict[str, int]:
    """The .mpy size of each library module as `fieldnode flash` builds it: the byte data of its code."""
    files = build_app_files(FIRMWARE_DIR, board, chip_spec(board["chip"]).mpy_march).files
    return {p[len("/lib/"):-len(".mpy")].replace("/", "."): len(d) for p, d in files.items() if p.endswith(".mpy")}


def heap_row(tier: str, rtt_ms: int, run: Download, sizes: dict[str, int]) -> dict[str, Any]:
    """The free heap at rest (the last looks before the offer), in the first and second half of
    the download; the update path's share (rest - least free in the first half), its growth
    (least free in the first half - least free in the second), and the share's ESP32 estimate by
    docs/firmware.md's rule: byte data (the modules' .mpy, the buffers) as it is, words halved."""
    first, last = run.blocks[0], run.blocks[-1]
    mid = (first + last) / 2
    rest = [v for t, v in run.heap if t < run.refused][-REST_LOOKS:]
    named = [v for t, v in run.heap if run.refused < t < run.offered][-REST_LOOKS:]
    early = [v for t, v in run.heap if first <= t < mid]
    late = [v for t, v in run.heap if mid <= t <= last]
    if min(len(rest), len(named), len(early), len(late)) < 2:
        raise RuntimeError(f"too few health frames: {len(rest)} at rest, {len(named)} after the refusal, "
                           f"{len(early)} and {len(late)} in the download")
    share = median(named) - min(early)
    buffers = DATAGRAM + (SECTOR if tier == "fw" else 0)
    byte_data = sum(sizes[m] for m in UPDATE_MODULES[tier]) + buffers
    return {"tier": tier, "rtt_ms": rtt_ms, "seconds": round(last - first, 1), "heapsize": HEAPSIZE,
            "rest": rest, "after_refusal": named, "early": early, "late": late,
            "names": median(rest) - median(named), "update_share": share, "growth": min(early) - min(late),
            "modules": UPDATE_MODULES[tier], "byte_data": byte_data, "buffers": buffers,
            "esp32_update_share": round(byte_data + (share - byte_data) / 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt-ms", type=int, nargs="+", default=[20, 200], help="round trips for the bundle")
    parser.add_argument("--firmware-rtt-ms", type=int, nargs="*", default=[20, 200],
                        help="round trips for the ~1.56 MB image (200 ms: ~5 minutes a round)")
    parser.add_argument("--long-rounds", type=int, default=1,
                        help="rounds for a configuration whose limit exceeds --long-limit-s")
    parser.add_argument("--long-limit-s", type=float, default=120.0)
    parser.add_argument("--no-heap", action="store_true", help="skip the heap runs")
    args = parser.parse_args()
    os.environ.setdefault("FIELDNODE_WIFI_PASSWORD", "sim")
    configs = [("app", rtt) for rtt in args.rtt_ms] + [("fw", rtt) for rtt in args.firmware_rtt_ms]
    runs: dict[tuple[str, int], list[Download]] = {c: [] for c in configs}
    index = 0
    for round_no in range(args.rounds):  # rounds interleave the configurations: each round sees about the same load
        for tier, rtt in configs:
            if round_no >= args.long_rounds and limit_seconds(tier, rtt) > args.long_limit_s:
                continue
            index += 1
            runs[tier, rtt].append(run_update(rtt, tier, index))
    rows = [transfer_row(tier, rtt, r) for (tier, rtt), r in runs.items()]
    for row in rows:
        print(f"{row['tier']:>3} {row['bytes']:>8} B  RTT {row['rtt_ms']:>3} ms  {row['blocks']:>5} blocks  "
              f"limit {row['limit_seconds']:>7.2f} s  seconds {row['seconds']}  fractions {row['fractions']}")
    heap = []
    if not args.no_heap:
        board = json.loads((BOARDS_DIR / "virtual.json").read_text())
        sizes = mpy_sizes(board)
        # The bundle at the longest round trip and the image at the shortest: long enough for many looks.
        for tier, rtt in (("app", max(args.rtt_ms)), ("fw", min(args.firmware_rtt_ms or [20]))):
            index += 1
            row = heap_row(tier, rtt, run_update(rtt, tier, index, health_s=1), sizes)
            print(f"heap {tier} RTT {rtt} ms: names {row['names']:.0f} B, update path {row['update_share']:.0f} B "
                  f"(~{row['esp32_update_share']} B on an ESP32), growth over the download {row['growth']:.0f} B")
            heap.append(row)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "what": "A virtual node's update from the real gateway through a delaying UDP relay on loopback",
        "block_bytes": BLOCK, "target": 0.9, "rounds": args.rounds, "transfers": rows, "heap": heap,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
