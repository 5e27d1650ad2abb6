"""Application updates over the air (docs/updates.md), end to end: virtual nodes provisioned to the
real gateway on loopback, releases built from firmware trees, offers through the updates
directory. The node learns of an update from the ack of a normal frame, pulls it block-wise,
installs it into the inactive slot on trial, and keeps it only once the gateway acks a frame."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fieldnode.cli.main import main
from fieldnode.infra.paths import FIRMWARE_DIR
from fieldnode.node.keystore import Keystore
from fieldnode.wire.console import frame_from_line
from fieldnode.wire.frame import Verifier
from fieldnode.sim.vnode import VirtualNode
from fieldnode.updates.release import build_release, offer_to
from fieldnode.updates.site import UpdateSite, updates_dir
from support.delayrelay import DelayRelay
from support.nodesite import Site, console_counters, console_since, wait_for

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
        # Every frame the node printed, under either version, reaches the gateway: the reset into
        # the new slot loses none of those waiting for their answer.
        site.wait_stored(node, console_counters(node), timeout=60)


def test_each_refusal_is_a_signed_event_with_its_reason_and_the_old_application_runs_on(site, capsys):
    node, small = site.node(1, **FAST), site.node(2, app_slot_kb=24, **FAST)
    ups = UpdateSite(updates_dir(site.db))
    image = (ups.root / "releases" / release(site, "0.2.0").version / "image.bin").read_bytes()
    assert len(image) > 24 * 1024  # so that the node with a 24 KB slot refuses it as too large
    keys = Keystore.load(site.keys)
    bad = bytearray(image)
    bad[len(bad) // 2] ^= 0xFF
    hashed = ups.add_release(image, "0.4.0", "virtual", "1.20.0")
    (ups.root / "releases" / "0.4.0" / "image.bin").write_bytes(bytes(bad))  # swapped after signing
    cases = [  # (node, reason, release, key it is signed with: None for the node's own)
        (small, "too-large", ups.release("0.2.0"), None),
        (node, "bad-mac", ups.add_release(image, "0.3.0", "virtual", "1.20.0"), bytes(32)),
        (node, "wrong-board", ups.add_release(image, "0.5.0", "esp32-devkitc", "1.20.0"), None),
        (node, "not-newer", ups.add_release(image, "0.0.5", "virtual", "1.20.0"), None),
        (node, "needs-newer-firmware", ups.add_release(image, "0.7.0", "virtual", "99.0.0"), None),
        (node, "hash-mismatch", hashed, None),
        # A firmware image for a node flashed without OTA partitions: no room at all.
        (node, "too-large", ups.add_release(firmware_image("1.30.0"), "1.30.0", "virtual", "1.20.0", tier="fw"), None),
    ]
    for target, reason, rel, key in cases:
        seen = len(strings(site, target, "reason"))
        entry = keys.current(target.unique_id)
        ups.offer(entry.kid, key or entry.key, rel)
        wait_for(lambda t=target, s=seen: len(strings(site, t, "reason")) > s, 60, f"refusal {reason}")
        assert strings(site, target, "reason")[seen] == reason
        assert strings(site, target, "offer")[seen] == rel.version
    for target in (node, small):
        assert not (target.flash / "app.json").exists()  # the application that was there runs on
        assert not (target.flash / "ota.part").exists()
        before = len(site.frames(target))
        wait_for(lambda t=target, b=before: len(site.frames(t)) > b + 2, 30, "frames after the refusals")
    assert strings(site, node, "event").count("update.refused") == len(cases) - 1
    # status names the last refusal of each tier as that tier's last outcome.
    main(["status", "--db", str(site.db), "--json"])
    updates = json.loads(capsys.readouterr().out)["updates"]
    assert (updates[node.unique_id.hex()]["fwupdate"], updates[node.unique_id.hex()]["fwwhy"]) == \
        ("refused", "1.30.0: too-large")
    assert (updates[small.unique_id.hex()]["update"], updates[small.unique_id.hex()]["why"]) == \
        ("refused", "0.2.0: too-large")


KILL_RTT_S = 0.008  # a quarter of the image is 250-odd blocks: 2 s at least, ten polls of wait_for


def test_kill_9_mid_download_resumes_from_the_stored_blocks_and_never_half_switches(site):
    # Without a round trip the loopback download can finish between a poll and the kill.
    relay = DelayRelay(site.gateway.address, KILL_RTT_S)
    site.closers.append(relay.close)
    node = site.node(1, via=relay.address, **{**FAST, "update_block": 64})
    rel = release(site, "0.2.0")
    image = UpdateSite(updates_dir(site.db)).image("0.2.0")
    part = node.flash / "ota.part"
    offer(site, node, rel)
    resumed_at = []
    for share in (0.15, 0.45, 0.75):  # the points where the power goes: bytes stored so far
        wait_for(lambda s=share: part.exists() and part.stat().st_size >= s * len(image), 60, f"{share:.0%} stored")
        node.kill()
        stored = part.stat().st_size
        assert stored % 64 == 0 and stored < len(image)
        assert part.read_bytes() == image[:stored]  # what is kept is the image's own prefix
        assert not (node.flash / "app.json").exists()  # nothing switched
        mark = node.output_mark()
        node.power_on()
        line = node.wait_output(b"resuming at", timeout=60, since=mark)
        resumed_at.append(line)
    wait_for(lambda: "update.kept" in strings(site, node, "event"), 90, "the update kept")
    assert len(resumed_at) == 3
    assert pointer(node)["ver"] == "0.2.0"
    from fieldnode.updates.image import unpack
    for path, data in unpack(image).items():
        assert (node.flash / "app_a" / path).read_bytes() == data


# Each bad link harms two ways at once.
BAD_LINKS = {"drops-duplicates": {"loss": 0.1, "duplicate": 0.1},
             "duplicates-late": {"duplicate": 0.1, "late": 0.1},
             "drops-late": {"loss": 0.1, "late": 0.1}}


@pytest.mark.parametrize("link", list(BAD_LINKS))
def test_a_bad_link_slows_the_download_and_never_corrupts_the_slot(site, link):
    # One datagram in ten each way harmed each way the link has: dropped, sent twice, or held back
    # until later ones have passed it (an answer to a block long asked, a request already
    # answered): the node must take each block once, at its place, and nothing else.
    relay = DelayRelay(site.gateway.address, 0.004, seed=0x1055, **BAD_LINKS[link])
    site.closers.append(relay.close)
    # Whole blocks of 1024 B (fewer exchanges, so fewer ACK timeouts), each ACK timeout shrunk
    # from CoAP's 2-3 s to 0.5-0.75 s (a loss still costs a retransmission, four times sooner);
    # a trial long enough for the first frame's ack to survive a few losses.
    node = site.node(1, via=relay.address, **{**FAST, "update_block": 1024, "update_trial_s": 90,
                                               "coap_ack_timeout_ms": 500})
    offer(site, node, release(site, "0.2.0"))
    wait_for(lambda: "update.kept" in strings(site, node, "event"), 240, "the update kept over the bad link")
    assert pointer(node)["ver"] == "0.2.0"
    from fieldnode.updates.image import unpack
    for path, data in unpack(UpdateSite(updates_dir(site.db)).image("0.2.0")).items():
        assert (node.flash / "app_a" / path).read_bytes() == data
    harms = {"loss": "dropped", "duplicate": "duplicated", "late": "late"}
    for kind in BAD_LINKS[link]:  # the link was bad: each of its harms happened, many times
        assert relay.counts[harms[kind]] >= 5, relay.counts


BROKEN = {
    "import-error": {"firmware__lib__fnode__app": ("import asyncio\n", "raise RuntimeError('broken build')\n")},
    "watchdog": {"firmware__lib__fnode__app": ("    def boot_frame(self):\n",
                                               "    def boot_frame(self):\n        while True:\n            pass\n")},
    "no-ack": {"firmware__lib__fnode__app": ("uplink = Uplink(gateway, link, spool)",
                                             "uplink = Uplink((gateway[0], 9), link, spool)")},
    # Imports, then fails as it starts: fnboot's run() sees app.run() raise.
    "crash": {"firmware__lib__fnode__app": ("        asyncio.run(main())\n",
                                            "        raise RuntimeError('broken at start')\n")},
    # Resets itself at every boot (no watchdog): the third trial boot that is never kept goes back.
    "boot-loop": {"firmware__lib__fnode__app": ("    def boot_frame(self):\n",
                                                "    def boot_frame(self):\n        machine.reset()\n")},
}


@pytest.mark.parametrize("why", list(BROKEN))
def test_a_broken_application_is_rolled_back_by_itself_and_says_why(site, why):
    node = site.node(1, **FAST)
    patches = {k.removeprefix("firmware__"): v for k, v in BROKEN[why].items()}
    offer(site, node, release(site, "0.2.0", **patches))
    wait_for(lambda: "rolled-back" in strings(site, node, "update"), 90, f"a rollback ({why})")
    assert strings(site, node, "why")[-1] == why
    assert strings(site, node, "failed")[-1] == "0.2.0"
    st = pointer(node)
    assert st["slot"] == "" and st["ver"] == "0.1.0" and not st.get("trial")
    assert st["last"] == {"out": "rolled-back", "why": why, "ver": "0.2.0"}
    before = len(site.frames(node))
    wait_for(lambda: len(site.frames(node)) > before + 2, 30, "frames from the old application")
    assert "update.kept" not in strings(site, node, "event")


def cli_release(site: Site, version: str, **patches: tuple[str, str]) -> None:
    tree = firmware_tree(site.tmp, version, {k.removeprefix("firmware__").replace("__", "/") + ".py": v
                                             for k, v in patches.items()})
    assert main(["release", "--version", version, "--app-dir", str(tree), "--db", str(site.db)]) == 0


def test_a_rollout_updates_the_canary_then_the_rest_and_reports_each_node(site, capsys):
    nodes = [site.node(i, **FAST) for i in (1, 2, 3)]
    cli_release(site, "0.2.0")
    assert "release 0.2.0 (app) for board virtual" in capsys.readouterr().out
    rc = main(["update", "--all", "--canary", "1", "--json", "--timeout", "90", "--keys", str(site.keys),
               "--db", str(site.db)])
    out = capsys.readouterr()
    assert out.out.startswith("{"), (out.out[:500], out.err[-1500:])
    report = json.loads(out.out)
    assert rc == 0, report
    assert [n["state"] for n in report["nodes"]] == ["kept"] * 3
    assert [n["stage"] for n in report["nodes"]] == ["canary", "rest", "rest"]
    assert UpdateSite(updates_dir(site.db)).offers() == {}  # every offer withdrawn once answered
    for node in nodes:
        assert pointer(node)["ver"] == "0.2.0"
    main(["status", "--db", str(site.db), "--json"])
    updates = json.loads(capsys.readouterr().out)["updates"]
    assert {d: (u["running"], u["update"], u["offered"]) for d, u in updates.items()} == {
        n.unique_id.hex(): ("0.2.0", "kept", None) for n in nodes}


def test_a_canary_that_rolls_back_stops_the_rollout_before_the_rest(site, capsys):
    nodes = [site.node(i, **FAST) for i in (1, 2, 3)]
    cli_release(site, "0.2.0", firmware__lib__fnode__app=BROKEN["import-error"]["firmware__lib__fnode__app"])
    capsys.readouterr()
    rc = main(["update", "e2e-1", "e2e-2", "e2e-3", "--canary", "1", "--json", "--timeout", "90",
               "--keys", str(site.keys), "--db", str(site.db)])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1
    states = {n["name"]: (n["state"], n["detail"]) for n in report["nodes"]}
    assert states == {"e2e-1": ("rolled-back", "import-error"),
                      "e2e-2": ("skipped", "rollout stopped after failures"),
                      "e2e-3": ("skipped", "rollout stopped after failures")}
    for node in nodes[1:]:  # never offered: nothing downloaded, nothing switched
        assert not (node.flash / "app.json").exists() and not (node.flash / "ota.part").exists()
    assert pointer(nodes[0])["last"]["out"] == "rolled-back"
    main(["status", "--db", str(site.db)])
    table = capsys.readouterr().out
    assert "updates" in table and "rolled-back (import-error)" in table


def test_usb_and_over_the_air_share_the_slots_a_rollback_returns_to_what_usb_installed(site, capsys):
    node = site.node(1, **FAST)
    mark = node.output_mark()
    assert main(["flash", "--app-only", "--port", node.port, "--board", str(site.tmp / "board1.json")]) == 0
    assert pointer(node) == {"slot": "a", "ver": "0.1.0", "last": {"out": "usb", "ver": "0.1.0"}}
    node.wait_output(b"FN1 ", timeout=30, since=mark)  # the USB install runs from slot a
    wait_for(lambda: "usb" in strings(site, node, "update"), 30, "a boot frame naming the USB install")
    rel = release(site, "0.2.0", lib__fnode__app=BROKEN["import-error"]["firmware__lib__fnode__app"])
    offer(site, node, rel)
    wait_for(lambda: "rolled-back" in strings(site, node, "update"), 90, "the rollback")
    st = pointer(node)
    assert (st["slot"], st["ver"], st["last"]["why"]) == ("a", "0.1.0", "import-error")  # back to USB's slot
    assert (node.flash / "app_b" / "fnode" / "app.mpy").is_file()  # the update went to the other slot


def firmware_image(version: str, size: int = 40_000) -> bytes:
    """An ESP32 app image as far as the bootloader looks: header magic, and the version where
    esp_app_desc_t keeps it."""
    head = b"\xe9" + bytes(0x2F) + version.encode().ljust(32, b"\0")
    return head + bytes((i * 7) & 0xFF for i in range(size - len(head)))


def otadata(node: VirtualNode) -> dict:
    return json.loads((node.node_dir / "otadata.json").read_text())


def test_a_firmware_update_goes_to_the_other_partition_and_is_confirmed_once_acked(site, capsys):
    node = site.node(1, partitions="ota", **FAST)
    image = firmware_image("1.30.0")
    full_flash = site.tmp / "firmware.bin"  # what a user may take by mistake: starts with the bootloader
    full_flash.write_bytes(bytes(0x1000) + image)
    assert main(["release", "--firmware", str(full_flash), "--version", "1.30.0", "--db", str(site.db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "0xE9" in err and err.count("\n") == 1, err
    assert UpdateSite(updates_dir(site.db)).releases() == []  # nothing stored
    (site.tmp / "micropython.bin").write_bytes(image)
    assert main(["release", "--firmware", str(site.tmp / "micropython.bin"), "--version", "1.30.0",
                 "--db", str(site.db)]) == 0
    assert "release 1.30.0 (fw) for board virtual" in capsys.readouterr().out
    rel = UpdateSite(updates_dir(site.db)).release("1.30.0")
    offer(site, node, rel)
    wait_for(lambda: "1.30.0" in strings(site, node, "firmware") and "update.kept" in strings(site, node, "event"),
             90, "the firmware kept")
    d = otadata(node)
    assert (d["running"], d["states"]["ota_1"]) == ("ota_1", 2)  # VALID: the bootloader keeps it
    with open(node.node_dir / "ota.bin", "rb") as f:
        f.seek(0x190000)
        assert f.read(len(image)) == image
    assert not (node.flash / "app.json").exists()  # the application tier was not touched
    main(["status", "--db", str(site.db), "--json"])
    u = json.loads(capsys.readouterr().out)["updates"][node.unique_id.hex()]
    assert (u["firmware"], u["fwupdate"], u["running"]) == ("1.30.0", "kept", None)
    main(["status", "--db", str(site.db)])
    assert re.search(r"e2e-1 .* 1\.30\.0 .* kept ", capsys.readouterr().out)


def console_strings(site: Site, node: VirtualNode, name: str) -> list[str]:
    """Text records called name in the frames the node printed (verified), oldest first."""
    verifier = Verifier(Keystore.load(site.keys).lookup)
    lines = console_since(node).split(b"\n")[:-1]
    frames = [verifier.verify(frame_from_line(line)) for line in lines if line.startswith(b"FN1 ")]
    return [r["vs"] for f in frames for r in f.records() if r["n"] == name and "vs" in r]


def test_a_firmware_not_confirmed_in_time_is_taken_back_by_the_bootloader(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDNODE_WIFI_PASSWORD", "sim")
    site = Site(tmp_path, batch_delay=10)  # a new frame is answered ~10 s late: after the 2 s trial
    try:
        node = site.node(1, partitions="ota", **{**FAST, "update_trial_s": 2})
        rel = UpdateSite(updates_dir(site.db)).add_release(firmware_image("1.30.0"), "1.30.0", "virtual",
                                                             "1.20.0", tier="fw")
        offer(site, node, rel)
        wait_for(lambda: "rolled-back" in console_strings(site, node, "fwupdate"), 120, "the bootloader's rollback")
        assert console_strings(site, node, "fwwhy")[-1] == "bootloader"
        assert console_strings(site, node, "fwfailed")[-1] == "1.30.0"
        assert "trial" in console_strings(site, node, "fwupdate")  # it did boot the new image first
        d = otadata(node)
        assert (d["running"], d["states"]["ota_1"]) == ("ota_0", 4)  # ABORTED
        assert "update.kept" not in console_strings(site, node, "event")
    finally:
        site.close()
