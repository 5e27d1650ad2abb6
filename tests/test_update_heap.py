"""The node's heap while it downloads an update (docs/updates.md, "Figures"): the update path holds
its modules and one block at a time, so what it holds in the second half of a download is what it
held in the first, give or take one block buffer. Read as the fleet reads it: the node's health
frames (heap.free after a collection, fnode/health.py), sent four times a second here, with a relay
that delays every datagram so that the download lasts long enough for many of them."""
from __future__ import annotations

from statistics import median

import pytest

from fieldnode.gateway.events import GatewayEvent
from fieldnode.infra.paths import FIRMWARE_DIR
from fieldnode.node.keystore import Keystore
from fieldnode.updates.release import build_release, offer_to
from fieldnode.updates.site import UpdateSite, updates_dir
from support.delayrelay import DelayRelay
from support.nodesite import Site, wait_for

BOARD = {"name": "virtual", "chip": "esp32"}
BLOCK = 1024
ONE_BLOCK_BUFFER = BLOCK + 64  # fnode/blockget.py _RX_MAX: the answer datagram, the one alive at a time
RTT_S = 0.08  # 60-odd blocks, one a round trip: the download takes at least 4.8 s on any machine
LOOKS = 3  # health frames at least in each span


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDNODE_WIFI_PASSWORD", "sim")
    s = Site(tmp_path)
    relay = DelayRelay(s.gateway.address, RTT_S)
    s.relay = relay
    yield s
    relay.close()
    s.close()


def test_the_heap_does_not_grow_during_a_download_beyond_one_block_buffer(site):
    blocks: list[float] = []

    def served(event: GatewayEvent) -> None:
        if event.outcome == "update-block":
            blocks.append(event.time)
    site.gateway.gateway.subscribe(served)
    node = site.node(1, via=site.relay.address, health_s=0.25, update_block=BLOCK, update_trial_s=600)
    wait_for(lambda: len(site.telemetry(node, "heap.free")) >= LOOKS + 2, 30, "the heap at rest")
    ups = UpdateSite(updates_dir(site.db))
    rel = build_release(ups, FIRMWARE_DIR, "0.2.0", BOARD)
    assert not blocks
    offer_to(ups, Keystore.load(site.keys), node.unique_id, rel)
    whole = -(-rel.size // BLOCK) + 1  # the image's blocks and the manifest's one
    # Its boot frame under the new version: the download is whole, and every look of it is stored.
    wait_for(lambda: "0.2.0" in {s for _, _, s in site.readings(node, "app")}, 120, "the update installed")
    assert len(blocks) == whole  # one download from the start, no block asked twice
    first, last = blocks[0], blocks[-1]
    mid = (first + last) / 2
    looks = site.telemetry(node, "heap.free")
    rest = [v for t, v in looks if t < first]
    early = [v for t, v in looks if first <= t < mid]
    late = [v for t, v in looks if mid <= t <= last]
    assert min(len(rest), len(early), len(late)) >= LOOKS, (len(rest), len(early), len(late))
    # The looks saw the update: its modules and buffers are held in both halves.
    assert min(early) < median(rest) - ONE_BLOCK_BUFFER
    assert min(late) < median(rest) - ONE_BLOCK_BUFFER
    # What the second half holds at most is what the first did, give or take one block buffer.
    assert min(late) >= min(early) - ONE_BLOCK_BUFFER, (sorted(early), sorted(late))
