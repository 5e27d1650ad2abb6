"""Reliability of the real firmware (boot.py, main.py, fnode) in virtual nodes against the real
gateway: boot and telemetry, a Wi-Fi outage of minutes, a power cut with frames in the spool (link
down, or up with frames waiting for their answer), a full spool, the watchdog (a hung bus, a dead
or stuck uplink), a power cut during provisioning, a node without a key, and kill -9 at 100
random moments.

Every frame a node makes is also printed on its USB console (an FN1 line) once it is safe
(answered by the gateway, or in the spool in flash), so the console is the record of what the node
made and vouches for; the gateway's database is the record of what arrived. Frames are read back
from the console verified with the node's key.
"""
from __future__ import annotations

import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from littlefs import LittleFS

from fieldnode.node.boards import validate_board
from fieldnode.wire.console import frame_from_line
from fieldnode.flashing.appimage import BLOCK_SIZE, LOOKAHEAD_SIZE, READ_PROG_SIZE, build_image
from fieldnode.wire.frame import KIND_BOOT, KIND_EVENT, KIND_TELEMETRY, Frame, Verifier
from fieldnode.gateway import GatewayThread
from fieldnode.node.keystore import Keystore
from fieldnode.infra.paths import BOARDS_DIR, FIRMWARE_DIR, SIMHAL_DIR
from fieldnode.sim.fleet import devices_for_board, install_app, sim_unique_id
from fieldnode.sim.vnode import VirtualNode
from conftest import micropython_binary
from support.nodesite import Site, console_since, wait_for
from support.spoolread import spool_contents

VERSION = re.search(r'^VERSION = "([^"]+)"', (FIRMWARE_DIR / "lib" / "fnode" / "app.py").read_text(), re.M)[1]
MPREMOTE = str(Path(sys.executable).parent / "mpremote")
IMAGE_SIZE = 512 * 1024  # the kill test's flash: a littlefs2 image, as on a board


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDNODE_WIFI_PASSWORD", "sim")  # read by `fieldnode provision --wifi`
    s = Site(tmp_path)
    yield s
    s.close()


def make_node(site: Site, index: int, *, period_s: float = 1.0, nvs: str = "commit", image: bool = False,
              **board) -> VirtualNode:
    """A virtual node with the virtual board (every sensor at period_s, plus board changes),
    provisioned with `fieldnode provision` for the site's gateway; returns once it sends."""
    doc = json.loads((BOARDS_DIR / "virtual.json").read_text())
    for sensor in doc["sensors"]:
        sensor["period_s"] = period_s
    doc.update(board)
    assert validate_board(doc) == []
    board_file = site.tmp / f"board{index}.json"
    board_file.write_text(json.dumps(doc))
    node_dir = site.tmp / f"node{index}"
    flash = None
    if image:
        node_dir.mkdir()
        flash = node_dir / "flash.img"
        files = {"/" + n: (FIRMWARE_DIR / n).read_bytes() for n in ("boot.py", "main.py")}
        files["/board.json"] = board_file.read_bytes()
        flash.write_bytes(build_image(files, IMAGE_SIZE))
    else:
        install_app(node_dir / "flash", board_file)
    node = VirtualNode(node_dir, sim_unique_id(index, 0x7E), board=board_file, devices=devices_for_board(doc),
                       nvs=nvs, flash=flash)
    return site.start_with_cli_provisioning(node, f"rel-{index}")


def made(site: Site, node: VirtualNode, since: int = 0, until: int | None = None) -> list[Frame]:
    """The frames the node printed on its console between two output offsets, verified with
    its key. A line cut by a power cut is the last of its stretch and has no newline: left out."""
    verifier = Verifier(Keystore.load(site.keys).lookup)
    text = console_since(node, since)
    if until is not None:
        text = text[:len(text) - len(console_since(node, until))]
    frames = []
    for line in text.split(b"\n")[:-1]:
        data = frame_from_line(line)
        if data is not None:
            frames.append(verifier.verify(data))
    return frames


def counters(frames: list[Frame]) -> list[int]:
    return [f.counter for f in frames]


def record(frame: Frame, name: str):
    rec = next(r for r in frame.records() if r["n"] == name)
    return rec.get("v", rec.get("vs"))


def stored(site: Site, node: VirtualNode) -> list[int]:
    """Counters of the node's frames in the database, in the order they were committed."""
    return [c for c, _, _ in site.frames(node)]


def stored_readings(site: Site, node: VirtualNode) -> dict[int, list[tuple[str, object]]]:
    with sqlite3.connect(f"file:{site.db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT f.counter, r.name, COALESCE(r.value, r.string, r.err) FROM readings r "
                            "JOIN frames f ON r.frame_id = f.id WHERE r.device=? ORDER BY r.id",
                            (node.unique_id.hex(),)).fetchall()
    out: dict[int, list[tuple[str, object]]] = {}
    for counter, name, value in rows:
        out.setdefault(counter, []).append((name, value))
    return out


def rejections(site: Site) -> dict[str, int]:
    return {k: v for k, v in dict(site.gateway.gateway.counts).items() if k.startswith("rejected")}


def spool_files(node: VirtualNode) -> dict[int, bytes]:
    """The frames waiting in the node's flash spool (directory flash), read by the firmware's
    own spool reader: counter -> frame. A segment the node removes while this reads is left out."""
    return spool_contents(micropython_binary(), node.nvs(), flash_dir=node.flash)


def wait_counters_stored(site: Site, node: VirtualNode, wanted: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        missing = sorted(set(wanted) - set(stored(site, node)))
        if not missing:
            return
        assert time.monotonic() < deadline, f"{len(missing)} frames never arrived, e.g. {missing[:10]}"
        time.sleep(0.25)


def wait_made(site: Site, node: VirtualNode, since: int, n: int, timeout: float) -> list[Frame]:
    return wait_for(lambda: (lambda f: f if len(f) >= n else None)(made(site, node, since)), timeout,
                    f"{n} frames on the console")


def assert_in_order_once(site: Site, node: VirtualNode) -> list[int]:
    order = stored(site, node)
    assert order == sorted(order), "frames were committed out of counter order"
    assert len(order) == len(set(order)), "a frame was stored twice"
    assert rejections(site) == {}, "the gateway refused frames (a replayed or reused counter?)"
    return order


# -- 1 -------------------------------------------------------------------------------------------
def test_boot_frame_and_telemetry_follow_the_emulated_sensors(site):
    node = make_node(site, 1)
    boot = wait_for(lambda: [c for c, k, _ in site.frames(node) if k == KIND_BOOT], 30, "the boot frame")[0]
    readings = dict(stored_readings(site, node)[boot])
    heap = {k: readings.pop(k) for k in ("heap.free", "heap.low", "heap.block")}
    # `fieldnode provision` restarted the node with machine.reset(): a hard reset.
    assert readings == {"fw": VERSION, "board": "virtual", "reset": "hard", "schema": 1}
    assert 0 < heap["heap.block"] <= heap["heap.free"] and heap["heap.low"] == heap["heap.free"]

    def latest(name: str, after: int) -> list[float]:
        return [v for c, vals in sorted(stored_readings(site, node).items()) if c > after
                for n, v in vals if n == name]

    for temp, hum, ma in ((31.25, 55.5, 16.0), (12.5, 30.0, 8.0)):
        # (the boot frame may be committed on its own, before the first telemetry)
        before = wait_for(lambda: latest("env.temp", 0), 30, "env.temp readings")
        assert abs(before[-1] - temp) > 1  # the readings are about to change
        mark = max(stored(site, node))
        node.set_world(devices={"env": {"temp": temp, "hum": hum}, "loop1": {"ma": ma}})
        bar = (ma - 4) / 16 * 10  # 4-20 mA over the sensor's 0-10 bar range
        wait_for(lambda temp=temp, mark=mark: any(abs(v - temp) < 0.02 for v in latest("env.temp", mark)), 30,
                 f"env.temp={temp}")
        wait_for(lambda bar=bar, mark=mark: any(abs(v - bar) < 0.01 for v in latest("loop1", mark)), 30,
                 f"loop1={bar}")
        # Once a reading shows the change, every later one keeps it: values follow the world.
        temps = latest("env.temp", mark)
        first = next(i for i, v in enumerate(temps) if abs(v - temp) < 0.02)
        assert all(abs(v - temp) < 0.02 for v in temps[first:])
        hums = latest("env.hum", mark)
        assert abs(hums[-1] - hum) < 0.5
    # A power cut: the next boot frame names it.
    mark = node.output_mark()
    node.power_cycle()
    node.wait_output(b"FN1 ", timeout=30, since=mark)
    boots = wait_for(lambda: [c for c, k, _ in site.frames(node) if k == KIND_BOOT][1:], 30, "a second boot frame")
    assert dict(stored_readings(site, node)[boots[0]])["reset"] == "power_on"
    # Telemetry goes on after the cut (waited for: the readings above may all have come in a
    # second or two).
    wait_for(lambda: [k for _, k, _ in site.frames(node)].count(KIND_TELEMETRY) >= 8, 30, "telemetry")
    assert_in_order_once(site, node)


# -- 2 -------------------------------------------------------------------------------------------
# An outage of minutes, at a smaller scale: the node's longest Wi-Fi and uplink backoffs (30 s on
# a board) are shrunk to BACKOFF_S, and the outage lasts nine of them (185 s was six of 30 s),
# with the sensors five times as fast, so as many frames wait in the spool.
BACKOFF_S = 5
OUTAGE_S = 9 * BACKOFF_S
CHECKS = 37  # looks at the gateway during the outage, as many as every 5 s of 185 s


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_wifi_outage_of_minutes_every_reading_arrives_once_and_in_order(site):
    # Two sensors five times a second: ~450 frames during the outage, so the spool is raised above that.
    node = make_node(site, 2, period_s=0.2, spool_frames=1024, wifi_backoff_max_s=BACKOFF_S,
                     uplink_backoff_max_s=BACKOFF_S)
    wait_for(lambda: len(site.frames(node)) >= 4, 30, "frames before the outage")
    mark = node.output_mark()
    node.set_world(wifi="down")
    down_at = time.time()
    # The frame in flight at the cut may still get through; after that, nothing can.
    wait_made(site, node, mark, 4, 30)
    at_cut = stored(site, node)
    deadline = time.monotonic() + OUTAGE_S
    while time.monotonic() < deadline:  # the node samples throughout; the spool grows in flash
        assert stored(site, node) == at_cut, "a frame reached the gateway with the link down"
        time.sleep(OUTAGE_S / CHECKS)
    during = made(site, node, mark)
    spooled = spool_files(node)
    node.set_world(wifi="up")  # nothing else: the node reconnects and drains by itself
    up_at = time.time()

    assert len(during) >= 300
    assert counters(during) == list(range(during[0].counter, during[-1].counter + 1))  # one boot: no gaps
    # Every frame not sent before the cut is in the spool in flash, whole and verifiable (the
    # last one may have been printed but not yet written when the spool was listed).
    unsent = [c for c in counters(during)[:-1] if c not in at_cut]
    assert set(unsent) <= set(spooled)
    verifier = Verifier(Keystore.load(site.keys).lookup)
    for counter, data in spooled.items():
        assert verifier.verify(data).counter == counter

    wait_counters_stored(site, node, counters(during), timeout=150)
    # The node is back to sending at once: frames sampled after the link returned arrive.
    wait_for(lambda: [t for _, k, t in site.frames(node) if k == KIND_TELEMETRY and t > up_at + 2], 60,
             "telemetry sampled after the link returned")
    wait_for(lambda: not spool_files(node), 30, "an empty spool")

    order = assert_in_order_once(site, node)
    first = order[0]
    assert order[:order.index(during[-1].counter) + 1] == list(range(first, during[-1].counter + 1))
    # Counter order is sample-time order, and sampling went on all through the outage.
    times = [t for _, _, t in site.frames(node)]
    assert times == sorted(times)
    for sensor in ("env.temp", "loop1"):
        sampled = [f.base_time for f in during if f.kind == KIND_TELEMETRY and f.records()[0]["n"] == sensor]
        assert sampled[0] <= down_at + 5 and sampled[-1] >= up_at - 5
        assert max(b - a for a, b in zip(sampled, sampled[1:], strict=False)) <= 15
    # Every reading arrived with the value the node sent, once.
    db = stored_readings(site, node)
    for f in during:
        sent = [(r["n"], r.get("v", r.get("vs", r.get("err")))) for r in f.records()]
        assert [n for n, _ in db[f.counter]] == [n for n, _ in sent]
        for (_, got), (_, want) in zip(db[f.counter], sent, strict=True):
            assert got == pytest.approx(want, rel=1e-6) if isinstance(want, float) else got == want


# -- 3 -------------------------------------------------------------------------------------------
def test_spool_survives_a_power_cut_during_an_outage(site):
    node = make_node(site, 3, period_s=0.5)
    wait_for(lambda: len(site.frames(node)) >= 3, 30, "frames before the outage")
    mark = node.output_mark()
    node.set_world(wifi="down")
    wait_made(site, node, mark, 15, 60)
    node.kill()  # power cut with the spool full of frames
    before = made(site, node)
    in_spool = spool_files(node)
    sent = set(stored(site, node))
    # Everything made before the cut is sent or in the spool; only a frame being written at the
    # cut (printed, not yet renamed into place) may be missing.
    assert set(counters(before)) - sent - set(in_spool) <= {before[-1].counter}

    mark = node.output_mark()
    node.power_on()
    after = wait_made(site, node, mark, 10, 60)
    assert after[0].kind == KIND_BOOT and record(after[0], "reset") == "power_on"
    assert after[0].counter > max(counters(before))  # the counter went on, never back
    node.set_world(wifi="up")
    expected = sorted(set(in_spool) | set(counters(made(site, node, mark))))
    wait_counters_stored(site, node, expected, timeout=60)
    order = assert_in_order_once(site, node)
    assert [c for c in order if c in in_spool] == sorted(in_spool)  # spooled frames before the cut ...
    assert max(in_spool) < min(c for c in order if c >= after[0].counter)  # ... then the new boot's


# -- 4 -------------------------------------------------------------------------------------------
def test_full_spool_drops_the_oldest_and_reports_exactly_the_loss(site):
    spool = 8
    node = make_node(site, 4, period_s=0.5, spool_frames=spool)
    wait_for(lambda: len(site.frames(node)) >= 3, 30, "frames before the outage")
    # The link drops while a frame is on its way: the gateway stores it, but its answer is lost
    # with the link, so the node cannot know. (The gateway holds its answers for a moment to
    # make that certain: 4 s, far more than a busy machine takes to see the datagram and cut the
    # link.) That frame must not be counted as lost if the spool overflows.
    gw = site.gateway.gateway
    gw.batch_delay = 4.0
    sent = gw.counts.get("datagrams", 0)
    wait_for(lambda: gw.counts.get("datagrams", 0) > sent, 10, "a frame on its way")
    mark = node.output_mark()
    node.set_world(wifi="down")
    gw.batch_delay = 0.002
    at_cut = set(stored(site, node))
    # A frame is printed once answered or in flash: the one in flight shows within a second.
    in_doubt = wait_for(lambda: min((c for c in counters(made(site, node)) if c not in at_cut), default=None),
                        10, "the frame in flight on the console")
    wait_for(lambda: in_doubt in stored(site, node), 10, "the frame in flight stored")
    wait_made(site, node, mark, 30, 60)  # ~30 frames into a spool of 8
    assert len(spool_files(node)) <= spool
    made_before_up = max(counters(made(site, node)))
    node.set_world(wifi="up")

    def loss_events():
        return [(c, v) for c, vals in stored_readings(site, node).items()
                for n, v in vals if n == "lost"]

    ((loss_counter, lost),) = wait_for(loss_events, 60, "the queue.loss event")
    event = dict(stored_readings(site, node)[loss_counter])
    assert event["event"] == "queue.loss"
    all_made = [c for c in counters(made(site, node)) if c < loss_counter]
    arrived = set(stored(site, node))
    dropped = [c for c in all_made if c not in arrived]
    assert len(dropped) >= 15
    assert lost == len(dropped)  # the report counts exactly the frames that never arrived
    assert node.nvs()["fieldnode"]["lost"] == ["i32", 0]  # reported, so no longer owed
    # The oldest went, except the frame in doubt: it was sent again and the gateway said it
    # already had it (2.03). Everything newer than the dropped run arrived. A frame on its way
    # when the spool overflowed again after the link came back (a busy machine answers slower
    # than the node samples) is in doubt too, and kept: nothing is sent while the link is down,
    # and the uplink sends the oldest first, so such a frame is one of those the spool held when
    # the link came back. A hole anywhere else in the dropped run is a frame dropped out of turn.
    kept = [c for c in all_made if in_doubt < c < dropped[-1] and c not in dropped]
    assert all(made_before_up - spool < c <= made_before_up for c in kept), (kept, made_before_up)
    assert dropped == [c for c in all_made if c > in_doubt and c not in kept][:len(dropped)]
    assert gw.counts.get("duplicate", 0) >= 1
    assert_in_order_once(site, node)
    # One report for one loss, even as the node keeps sending.
    wait_for(lambda: len(site.frames(node)) > len(arrived) + 6, 30, "more frames")
    assert len(loss_events()) == 1


# -- 4b ------------------------------------------------------------------------------------------
def test_power_cut_with_the_link_up_loses_no_frame_waiting_for_its_answer(site):
    # Issue 6: a frame not yet acknowledged is in flash before it is sent, not only in RAM. The
    # gateway holds its answers, so frames queue up behind the one on its way; then the power
    # goes with the link up. Every frame the node printed arrives once, in order.
    node = make_node(site, 9, period_s=0.5)
    wait_for(lambda: len(site.frames(node)) >= 3, 30, "frames before the cut")
    gw = site.gateway.gateway
    gw.batch_delay = 1.5
    mark = node.output_mark()
    wait_made(site, node, mark, 8, 30)
    node.kill()
    before = made(site, node)
    waiting = set(counters(before)) - set(stored(site, node))
    gw.batch_delay = 0.002
    assert len(waiting) >= 3, "no frames were waiting for their answer at the cut"
    mark = node.output_mark()
    node.power_on()
    after = wait_made(site, node, mark, 3, 60)
    assert after[0].kind == KIND_BOOT and after[0].counter > max(counters(before))
    wait_counters_stored(site, node, counters(before) + counters(after), timeout=30)
    order = assert_in_order_once(site, node)
    assert [c for c in order if c <= max(counters(before))] == counters(before)
    assert node.nvs()["fieldnode"].get("lost", ["i32", 0]) == ["i32", 0]  # nothing counted as lost


# -- 4c ------------------------------------------------------------------------------------------
def test_a_gateway_without_the_node_key_costs_no_frame_and_an_event_says_so(site, tmp_path):
    # Issue 12: a gateway restarted with an old key export answers 4.01 unknown-kid to every
    # frame. The node keeps its frames (backing off, the board's key_retry_max_s apart), and
    # once a gateway with the key takes them, every one arrives, in order, and a signed
    # gateway.key-unknown event says for how long the key was unknown.
    node = make_node(site, 12, period_s=0.5, key_retry_max_s=2)
    wait_for(lambda: len(site.frames(node)) >= 3, 30, "frames with the right keys")
    address = site.gateway.address
    site.gateway.stop()
    old_export = tmp_path / "old-export.json"
    Keystore(old_export, []).save()
    site.gateway = GatewayThread(Keystore.load(old_export), site.db, address, health_interval=0.2).start()
    mark = node.output_mark()
    stored_before = len(site.frames(node))
    refusals = lambda: site.gateway.gateway.counts.get("rejected.unknown-kid", 0)  # noqa: E731
    wait_for(lambda: refusals() >= 4, 60, "the node trying again after unknown-kid")
    refused = refusals()
    made_meanwhile = wait_made(site, node, mark, 10, 60)  # kept in flash and printed
    site.gateway.stop()
    assert refused >= 4 and len(site.frames(node)) == stored_before  # the keyless gateway stored none
    site.gateway = GatewayThread(Keystore.load(site.keys), site.db, address, health_interval=0.2).start()
    wait_counters_stored(site, node, counters(made_meanwhile), timeout=60)  # nothing thrown away
    node.wait_output(b"gateway does not know our key", timeout=10, since=mark)

    def key_events():
        return [f for f in made(site, node, mark) if f.kind == KIND_EVENT
                and record(f, "event") == "gateway.key-unknown"]

    (event,) = wait_for(key_events, 60, "the gateway.key-unknown event")
    made_all = [c for c in counters(made(site, node, mark)) if c <= event.counter]
    wait_counters_stored(site, node, made_all, timeout=60)
    assert counters(made_meanwhile) == made_all[:len(made_meanwhile)]
    assert record(event, "duration") >= 2
    assert dict(stored_readings(site, node)[event.counter])["event"] == "gateway.key-unknown"
    order = stored(site, node)
    assert order == sorted(order) and len(order) == len(set(order))
    assert node.nvs()["fieldnode"].get("lost", ["i32", 0]) == ["i32", 0]
    wait_for(lambda: len(site.frames(node)) > len(order) + 3, 30, "frames after the event")
    assert len(key_events()) == 1  # said once


# -- 5 -------------------------------------------------------------------------------------------
WATCHDOG_S = 5  # the board's 30 s watchdog, shrunk (board "watchdog_s"): a hung bus still outlasts it


@pytest.mark.timeout(240)
def test_watchdog_resets_a_hung_bus_and_the_boot_frame_says_so(site):
    node = make_node(site, 5, period_s=1.0, watchdog_s=WATCHDOG_S)
    wait_for(lambda: len(site.frames(node)) >= 3, 30, "frames")
    boots = len(node.boots)
    mark = node.output_mark()
    node.set_world(i2c_stall=21)  # the BME280's bus is held: its next transfer never ends
    node.wait_boots(boots + 1, timeout=90)
    assert node.boots[-1] == "wdt"
    hung = made(site, node, mark)
    assert len(hung) <= 3  # the whole loop stopped (one or two frames before the stall took hold)
    # The bus is still held after the reset: the node must not hang for good in start-up.
    node.wait_boots(boots + 2, timeout=90)
    assert node.boots[-1] == "wdt"
    before = max(stored(site, node))
    node.set_world(i2c_stall=None)
    boot = wait_for(lambda: [c for c, k, _ in site.frames(node) if k == KIND_BOOT and c > before], 60,
                    "a boot frame after the reset")[0]
    assert dict(stored_readings(site, node)[boot])["reset"] == "watchdog"
    wait_for(lambda: [c for c, k, _ in site.frames(node) if k == KIND_TELEMETRY and c > boot], 30,
             "telemetry after the reset")
    assert_in_order_once(site, node)


# -- 5b ------------------------------------------------------------------------------------------
# The real fnode.app.main() on the unix port with the simulated HAL, its uplink broken from
# inside: the watchdog must stop being fed (the board's watchdog_s and uplink_stall_s shrunk to
# 2 s, so the reset comes quickly).
UPLINK_FAULTS = {
    "died": ("async def broken(self):\n"
             "    await asyncio.sleep_ms(1500)\n"
             "    raise RuntimeError('injected uplink fault')\n"
             "uplink.Uplink.run = broken\n"),
    # A hang inside an exchange (an await that never returns): the task lives but sends nothing.
    "stuck": ("async def hang(self, frame):\n"
              "    await asyncio.Event().wait()\n"
              "uplink.Uplink.exchange = hang\n"),
}


@pytest.mark.parametrize("fault", sorted(UPLINK_FAULTS))
def test_a_dead_or_stuck_uplink_ends_in_a_watchdog_reset(micropython, tmp_path, fault):
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    (node_dir / "sim.json").write_text(json.dumps({"unique_id": "240ac4a1b2c3", "devices": []}))
    identity = bytes([4]) + bytes(range(8)) + bytes(range(32))
    settings = {"id": identity, "gw": b"127.0.0.1:9", "ssid": b"plant-floor", "wpass": b"sim"}
    (node_dir / "nvs.json").write_text(json.dumps(
        {"fieldnode": {k: ["blob", v.hex()] for k, v in settings.items()}}))
    (tmp_path / "board.json").write_text(json.dumps({"name": "bare", "sensors": [], "watchdog_s": 2,
                                                     "uplink_stall_s": 2}))
    code = ("import asyncio\nimport fnode.app as app\nimport fnode.uplink as uplink\n"
            + UPLINK_FAULTS[fault] + "app.run()\n")
    proc = micropython.run(code, path=[SIMHAL_DIR], env={"FIELDNODE_SIM_NODE": str(node_dir)}, check=False,
                           timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert (node_dir / "reset").read_text() == "wdt"
    assert "FN1 " in proc.stdout  # it had started: the boot frame
    if fault == "died":  # the reason is on the console, not only the reset
        assert "E task uplink died: RuntimeError('injected uplink fault'" in proc.stdout
    assert "E uplink stopped making progress" in proc.stdout


# -- 6 -------------------------------------------------------------------------------------------
def test_node_without_a_key_says_why_sends_nothing_and_keeps_its_repl(site, tmp_path):
    doc = json.loads((BOARDS_DIR / "virtual.json").read_text())
    node_dir = tmp_path / "bare"
    install_app(node_dir / "flash", BOARDS_DIR / "virtual.json")
    # Gateway and Wi-Fi are set (as after a key was wiped): only the key is missing.
    host, port = site.gateway.address
    settings = {"gw": f"{host}:{port}", "ssid": "plant-floor", "wpass": "sim"}
    (node_dir / "nvs.json").write_text(json.dumps(
        {"fieldnode": {k: ["blob", v.encode().hex()] for k, v in settings.items()}}))
    node = VirtualNode(node_dir, sim_unique_id(6, 0x7E), board="virtual", devices=devices_for_board(doc))
    site.nodes.append(node)
    node.start()
    node.wait_output(b"E not sending: no device key in NVS: provision this node (fieldnode provision --port",
                     timeout=30)
    deadline = time.monotonic() + 5  # the time a provisioned node needs many times over to send
    while time.monotonic() < deadline:
        assert site.gateway.gateway.counts.get("datagrams", 0) == 0
        time.sleep(0.25)
    tail = node.console_tail(1 << 16)
    assert b"FN1 " not in tail and b"Traceback" not in tail
    assert node.state == "running" and len(node.boots) == 1  # no crash, no restart
    # mpremote reaches the REPL (it interrupts main.py with Ctrl-C, as on a board).
    out = subprocess.run([MPREMOTE, "connect", node.port, "resume", "exec",
                          "from fnode.config import Config; print('missing:', Config().missing())"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "missing: no device key in NVS" in out.stdout
    assert node.state == "running" and len(node.boots) == 1
    assert site.frames(node) == [] and site.gateway.gateway.counts.get("datagrams", 0) == 0


# -- 6b ------------------------------------------------------------------------------------------
OLD_ID = bytes([4]) + b"old-kid!" + bytes(32)
NEW_ID = bytes([5]) + b"new-kid!" + bytes(range(32))
OLD_SETTINGS = {"name": "pump-3", "gw": "10.0.0.2:5683", "ssid": "plant-floor", "wpass": "old secret"}
NEW_SETTINGS = {"name": "pump-4", "gw": "10.0.9.9:5700", "ssid": "yard", "wpass": "n3w secret"}
READ_SETTINGS = """
import json
from binascii import hexlify
from fnode.config import Config
c = Config()
i = c.identity()
print(json.dumps({"name": c.name(), "gw": "%s:%d" % c.gateway(), "ssid": c.wifi()[0], "wpass": c.wifi()[1],
                  "id": hexlify(bytes([i[0]]) + i[1] + i[2]).decode()}))
"""


def _activate_cut_after(micropython, node_dir: Path, writes: int) -> bool:
    """Runs provision.activate() with NVS in esp-idf mode and kills the process (kill -9) just
    before its NVS write number `writes` + 1 reaches the file. -> whether activate() finished."""
    code = ("import esp32, os\nleft = [{}]\n_persist = esp32.NVS._persist\n"
            "def persist(self):\n"
            "    if left[0] == 0:\n"
            "        os.system('kill -9 $PPID')\n"
            "    left[0] -= 1\n"
            "    _persist(self)\n"
            "esp32.NVS._persist = persist\n"
            "import fnode.provision as p\np.activate({!r}, {!r}, {!r}, {!r})\n").format(
                writes, *(NEW_SETTINGS[k] for k in ("name", "gw", "ssid", "wpass")))
    proc = micropython.run(code, path=[SIMHAL_DIR], env={"FIELDNODE_SIM_NODE": str(node_dir)}, check=False)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stdout + proc.stderr
    return "activated" in proc.stdout


@pytest.mark.parametrize("before", ["entries", "blob"])
def test_a_power_cut_during_activate_leaves_the_old_settings_or_the_new(micropython, tmp_path, before):
    # ESP-IDF writes every NVS set at once: a cut after any one of activate()'s writes must leave
    # the whole old set of settings or the whole new one, and the new key only with the new set.
    # "entries": one NVS entry per setting, as firmware before the settings blob wrote them.
    old = {**{k: v.encode() for k, v in OLD_SETTINGS.items()}, "id": OLD_ID}
    if before == "blob":
        old = {"cfg": b"\x01" + b"".join(bytes([len(v)]) + v.encode() for v in OLD_SETTINGS.values()), "id": OLD_ID}
    start = {"fieldnode": {k: ["blob", v.hex()] for k, v in {**old, "pid": NEW_ID}.items()}}
    old_state = {**OLD_SETTINGS, "id": OLD_ID.hex()}
    new_state = {**NEW_SETTINGS, "id": NEW_ID.hex()}
    seen = []
    for writes in range(30):
        node_dir = tmp_path / f"cut{writes}"
        node_dir.mkdir()
        (node_dir / "sim.json").write_text(json.dumps({"unique_id": "240ac4a1b2c3", "nvs": "esp-idf"}))
        (node_dir / "nvs.json").write_text(json.dumps(start))
        done = _activate_cut_after(micropython, node_dir, writes)
        state = micropython.eval_json(READ_SETTINGS, path=[SIMHAL_DIR], env={"FIELDNODE_SIM_NODE": str(node_dir)})
        settings = {k: state[k] for k in OLD_SETTINGS}
        assert settings in (OLD_SETTINGS, NEW_SETTINGS), (writes, state)
        assert state["id"] in (OLD_ID.hex(), NEW_ID.hex()), (writes, state)
        if state["id"] == NEW_ID.hex():
            assert settings == NEW_SETTINGS, (writes, state)
        seen.append("old" if state == old_state else "new" if state == new_state else "settings only")
        if done:
            assert state == new_state
            break
    else:
        pytest.fail("activate() never finished")
    assert seen[0] == "old" and seen[-1] == "new" and len(seen) >= 3, seen


# -- 7 -------------------------------------------------------------------------------------------
KILLS = 100


def image_spool(node: VirtualNode, verifier: Verifier) -> tuple[dict[int, Frame], bool]:
    """The spool in the node's littlefs image (node off): {counter: frame}, and whether the
    kill cut a littlefs commit short (the simulated flash's wear record says a commit was under
    way). The image must mount with littlefs-python too; every frame the firmware's spool
    reader finds must verify."""
    image = node.flash_image.read_bytes()
    # disk_version 0: whatever version is on the image (MicroPython moves a 2.0 image built by
    # appimage to 2.1 on its first write, which appimage.read_image's 2.0 setting refuses).
    fs = LittleFS(block_size=BLOCK_SIZE, block_count=len(image) // BLOCK_SIZE, read_size=READ_PROG_SIZE,
                  prog_size=READ_PROG_SIZE, lookahead_size=LOOKAHEAD_SIZE, disk_version=0, mount=False)
    fs.context.buffer[:] = image
    fs.mount()
    fs.unmount()
    cut = json.loads(Path(f"{node.flash_image}.wear").read_text())["dirty"] == 1
    spool = {}
    for counter, data in spool_contents(micropython_binary(), node.nvs(), image=node.flash_image).items():
        frame = verifier.verify(data)
        assert frame.counter == counter
        spool[counter] = frame
    return spool, cut


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_at_100_random_moments_keeps_state_consistent_and_counters_ahead(site):
    # Ten frames a second into a spool of 16 while the link is down: spool files, and the loss
    # count in NVS (written through at once, as ESP-IDF does), are written all the time.
    node = make_node(site, 7, period_s=0.2, nvs="esp-idf", image=True, spool_frames=16)
    rng = random.Random(0x5EED)
    verifier = Verifier(Keystore.load(site.keys).lookup)
    identity = node.nvs()["fieldnode"]["id"]
    mark = node.output_mark()
    first_boot = len(node.boots)
    node.power_cycle()  # from here on every boot is a power-on
    highest = max(counters(made(site, node, 0, mark)))  # every counter the node has used so far
    ctr = 0
    interrupted = 0
    early = False
    link_down = False
    for kill in range(KILLS):
        if kill % 8 == 0:
            link_down = kill < KILLS - 8 and rng.random() < 0.7  # up for the last stretch
            node.set_world(wifi="down" if link_down else "up")
        if early:  # during start-up: its first write, the counter reservation in NVS
            node.wait_off(timeout=30)
        else:
            at = node.wait_output(b"FN1 ", timeout=30, since=mark)
            node.wait_output(b"\n", timeout=10, since=at)
            if link_down and rng.random() < 0.6:
                # In the middle of a spool write or of its NVS loss count: the power goes just
                # before the node's next write but a few, chosen here, not by the wall clock.
                node.set_world(power_cut_after_writes=rng.randint(1, 8))
                node.wait_off(timeout=30)
            else:
                # Between writes (with the link up a frame stays in RAM, so few are made): the
                # power goes after a number of frames chosen here, counted on the console, not
                # timed by the wall clock, so a failure replays with the seed.
                for _ in range(rng.randint(0, 4)):
                    at = node.wait_output(b"FN1 ", timeout=30, since=at)
                node.kill()
        # What this boot made: a consistent start (its first frame is the boot frame, signed
        # with the key from NVS), and counters above every one used before.
        this_boot = made(site, node, mark)
        console = console_since(node, mark)
        assert b"Traceback" not in console and b"\nsim: " not in console, (kill, console[-2000:])
        if not early:
            assert this_boot and this_boot[0].kind == KIND_BOOT, kill
            assert record(this_boot[0], "reset") == "power_on", (kill, node.boots[first_boot:])  # not a crash
        if this_boot:
            assert min(counters(this_boot)) > highest, (kill, min(counters(this_boot)), highest)
        # What the gateway received: in counter order, so every frame that arrived after a
        # restart has a higher counter than everything that arrived before it.
        order = stored(site, node)
        assert order == sorted(order) and len(order) == len(set(order)), kill
        # The state left in NVS and flash: NVS parses, the identity is whole; the image mounts
        # and its spool files verify. A frame goes into the spool before it is printed, so the
        # cut may leave one there that the console never showed: it counts as used all the same.
        nvs = node.nvs()["fieldnode"]
        assert nvs["id"] == identity
        spool, cut = image_spool(node, verifier)
        used = counters(this_boot) + list(spool) + order
        highest = max([highest, *used])
        # The counter mark never goes back and covers every counter used, wherever it was seen.
        assert nvs["ctr"][1] >= max(ctr, highest), (kill, nvs["ctr"], ctr, highest)
        ctr = nvs["ctr"][1]
        if cut:  # a flash commit cut short: littlefs starts from the last whole one
            interrupted += 1
        early = rng.random() < 0.2 and kill < KILLS - 1  # the last boot runs on
        node.set_world(power_cut_after_writes=1 if early else None)
        mark = node.output_mark()
        node.power_on()

    # The last boot runs on with the link up: what the spool held at the last cut arrives.
    node.wait_output(b"\n", timeout=10, since=node.wait_output(b"FN1 ", timeout=30, since=mark))  # a whole line
    wait_counters_stored(site, node, sorted(spool), timeout=90)
    after = made(site, node, mark)
    assert after[0].kind == KIND_BOOT and after[0].counter > highest
    assert_in_order_once(site, node)
    assert node.boots[first_boot:] == ["pwron"] * (KILLS + 1)  # no crash restarts in between
    print(f"kills: {KILLS}, flash commits cut short: {interrupted}")
    # Some kills must have landed inside a write, or this test did not test what it says.
    assert interrupted >= 3, f"only {interrupted} of {KILLS} kills cut a flash commit short"
