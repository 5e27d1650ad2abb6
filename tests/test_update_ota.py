"""Application updates over the air (docs/updates.md), end to end: virtual nodes provisioned to the
real gateway on loopback, releases built from firmware trees, offers through the updates
directory. The node learns of an update from the ack of a normal frame, pulls it block-wise,
installs it into the inactive slot on trial, and keeps it only once the gateway acks a frame."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from fieldnode.infra.paths import FIRMWARE_DIR
from fieldnode.node.keystore import Keystore
from fieldnode.sim.vnode import VirtualNode
from fieldnode.updates.release import build_release, offer_to
from fieldnode.updates.site import UpdateSite, updates_dir
from support.nodesite import Site, wait_for

BOARD = {"name": "virtual", "chip": "esp32"}
FAST = {"update_trial_s": 8, "update_block": 256, "watchdog_s": 4,
        "uplink_backoff_max_s": 1, "key_retry_max_s": 1}


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDNODE_WIFI_PASSWORD", "sim")
    s = Site(tmp_path)
    yield s
    s.close()


def firmware_tree(tmp: Path, version: str, patches: dict[str, tuple[str, str]] | None = None) -> Path:
    """A copy of the firmware tree declaring `version`, with text replaced in named files."""
    tree = tmp / f"fw-{version}"
    shutil.copytree(FIRMWARE_DIR, tree, ignore=shutil.ignore_patterns("__pycache__"))
    app = tree / "lib" / "fnode" / "app.py"
    app.write_text(app.read_text().replace('VERSION = "0.1.0"', f'VERSION = "{version}"', 1))
    for rel, (old, new) in (patches or {}).items():
        path = tree / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new, 1))
    return tree


def release(site: Site, version: str, **patches: tuple[str, str]):
    tree = firmware_tree(site.tmp, version, {k.replace("__", "/") + ".py": v for k, v in patches.items()})
    return build_release(UpdateSite(updates_dir(site.db)), tree, version, BOARD)


def offer(site: Site, node: VirtualNode, rel) -> None:
    offer_to(UpdateSite(updates_dir(site.db)), Keystore.load(site.keys), node.unique_id, rel)


def strings(site: Site, node: VirtualNode, name: str) -> list[str]:
    return [s for _, _, s in site.readings(node, name)]


def pointer(node: VirtualNode) -> dict:
    return json.loads((node.flash / "app.json").read_text())


def test_an_update_reaches_several_nodes_each_runs_it_and_keeps_it(site):
    nodes = [site.node(i, **FAST) for i in (1, 2)]
    rel = release(site, "0.2.0")
    for node in nodes:
        offer(site, node, rel)
    for node in nodes:
        wait_for(lambda n=node: "update.kept" in strings(site, n, "event"), 90, "the update kept")
        assert "0.2.0" in strings(site, node, "app")
        assert pointer(node)["slot"] == "a" and pointer(node)["ver"] == "0.2.0"
        assert not pointer(node).get("trial")
        assert (node.flash / "app_a" / "fnode" / "app.mpy").is_file()
        assert not (node.flash / "ota.part").exists()
