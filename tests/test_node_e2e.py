"""The real firmware in virtual nodes against the real gateway: boot and telemetry, Wi-Fi outages
with store-and-forward, power cuts, a full spool, the watchdog, kill -9 during writes, the clock.

Every frame a node makes goes to its USB console too (FN1 lines), so the console is the record
of what the node sent; the gateway's database is the record of what arrived.
"""
from __future__ import annotations

import json
import random
import time

import pytest

from fieldnode.devicelink import DeviceLink
from fieldnode.frame import KIND_BOOT, KIND_TELEMETRY
from fieldnode.paths import BOARDS_DIR
from fieldnode.sim.fleet import devices_for_board, install_app, sim_unique_id
from fieldnode.sim.vnode import VirtualNode
from support.nodesite import Site, console_counters, console_since, wait_for


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


def test_boot_and_telemetry_reach_the_gateway_and_follow_the_sensors(site):
    node = site.node()
    boot = wait_for(lambda: [f for f in site.frames(node) if f[1] == KIND_BOOT], 30, "the boot frame")
    boot_counter = boot[0][0]
    assert site.readings(node, "board", boot_counter - 1)[0][2] == "virtual"
    assert site.readings(node, "reset", boot_counter - 1)[0][2] == "hard"  # provisioning restarted it

    for temp, ma, bar in ((31.25, 12.0, 5.0), (12.5, 16.0, 7.5)):
        mark = max(c for c, _, _ in site.frames(node))
        node.set_world(devices={"env": {"temp": temp}, "loop1": {"ma": ma}})
        # Readings after the change reach the database with the new values.
        wait_for(lambda: any(abs(v - temp) < 0.02 for _, v, _ in site.readings(node, "env.temp", mark)), 30,
                 f"env.temp={temp}")
        wait_for(lambda: any(abs(v - bar) < 0.01 for _, v, _ in site.readings(node, "loop1", mark)), 30,
                 f"loop1={bar}")
    kinds = {k for _, k, _ in site.frames(node)}
    assert KIND_TELEMETRY in kinds


@pytest.mark.timeout(420)
def test_wifi_outage_of_minutes_every_reading_arrives_once_in_order(site):
    node = site.node(spool_frames=1024)
    wait_for(lambda: len(site.frames(node)) >= 3, 30, "frames before the outage")
    before = site.frames(node)
    mark = node.output_mark()
    node.set_world(wifi="down")
    time.sleep(2)
    stored_at_cut = len(site.frames(node))
    time.sleep(185)  # over three minutes; the node samples throughout, two sensors a second
    assert len(site.frames(node)) == stored_at_cut  # nothing got through while the link was down
    made = console_counters(node, mark)
    assert len(made) > 300
    node.set_world(wifi="up")  # the station reconnects by itself; the spool drains
    site.wait_stored(node, made, timeout=120)

    frames = site.frames(node)
    counters = [c for c, _, _ in frames]
    assert counters == sorted(counters), "frames were committed out of order"
    assert len(counters) == len(set(counters))
    first = before[0][0]
    # One boot, so every counter from the first stored one up to the last is a frame that was
    # made: none may be missing, and none stored twice (UNIQUE, and the count matches).
    assert counters == list(range(first, counters[-1] + 1))
    times = [t for _, _, t in frames]
    assert times == sorted(times), "sample times go backwards in counter order"


def test_spool_survives_a_power_cut_during_an_outage(site):
    node = site.node()
    wait_for(lambda: len(site.frames(node)) >= 2, 30, "frames before the outage")
    mark = node.output_mark()
    node.set_world(wifi="down")
    time.sleep(8)
    node.kill()  # power cut with frames in the spool
    node.power_on()
    node.wait_output(b"FN1 ", timeout=30, since=node.output_mark())
    time.sleep(6)
    made = console_counters(node, mark)
    assert len(made) > 10
    node.set_world(wifi="up")
    site.wait_stored(node, made, timeout=60)
    counters = [c for c, _, _ in site.frames(node)]
    assert counters == sorted(counters) and len(counters) == len(set(counters))
    boots = [c for c, k, _ in site.frames(node) if k == KIND_BOOT]
    assert len(boots) == 2 and boots[1] > max(c for c in made if c < boots[1])  # counter ahead after the cut


def test_full_spool_drops_the_oldest_and_reports_the_loss(site):
    node = site.node(spool_frames=5)
    wait_for(lambda: len(site.frames(node)) >= 2, 30, "frames before the outage")
    mark = node.output_mark()
    node.set_world(wifi="down")
    time.sleep(10)  # about 20 frames into a spool of 5
    node.set_world(wifi="up")
    loss = wait_for(lambda: site.readings(node, "lost"), 60, "the queue.loss event")
    (loss_counter, lost_count, _), = loss
    # The loss is reported once the spool has drained: every frame made before the report was
    # either stored or dropped from the full spool, and the report counts exactly the dropped.
    made = [c for c in console_counters(node, mark) if c < loss_counter]
    stored = {c for c, _, _ in site.frames(node)}
    dropped = [c for c in made if c not in stored]
    assert len(dropped) >= 10
    assert lost_count == len(dropped)
    assert dropped == made[:len(dropped)]  # the oldest went; everything newer arrived


@pytest.mark.timeout(180)
def test_watchdog_resets_a_hung_loop_and_the_boot_frame_says_so(site):
    node = site.node()
    wait_for(lambda: len(site.frames(node)) >= 2, 30, "frames")
    boots = len(node.boots)
    node.set_world(i2c_stall=21)  # the BME280's bus hangs: its read never returns
    node.wait_boots(boots + 1, timeout=90)
    assert node.boots[-1] == "wdt"
    node.set_world(i2c_stall=None)
    wait_for(lambda: [v for _, _, v in site.readings(node, "reset") if v == "watchdog"], 60,
             "a boot frame with reset=watchdog")


def test_node_without_a_key_says_why_and_sends_nothing(site, tmp_path):
    doc = json.loads((BOARDS_DIR / "virtual.json").read_text())
    install_app(tmp_path / "bare" / "flash", BOARDS_DIR / "virtual.json")
    node = VirtualNode(tmp_path / "bare", sim_unique_id(9, 0x5E), board="virtual", devices=devices_for_board(doc))
    site.nodes.append(node)
    node.start()
    node.wait_output(b"not sending: no device key in NVS: provision this node", timeout=30)
    time.sleep(3)
    assert b"FN1 " not in node.console_tail() and b"Traceback" not in node.console_tail()
    with DeviceLink(node.port) as link:  # the REPL stays reachable for provisioning
        assert link.exec("print(1 + 1)") == "2"
    assert site.frames(node) == []


@pytest.mark.timeout(420)
def test_kill_9_at_100_random_points_keeps_state_consistent_and_the_counter_ahead(site):
    node = site.node(spool_frames=64)
    rng = random.Random(20261125)
    highest_seen = 0
    restarts = 0
    for i in range(100):
        if i % 10 == 0:
            node.set_world(wifi="down" if (i // 10) % 2 == 0 else "up")  # spool writes, then sends
        time.sleep(rng.uniform(0.05, 1.2))
        node.kill()
        time.sleep(0.1)  # the last bytes the node wrote reach the console tail
        highest_seen = max([highest_seen, *console_counters(node)])
        mark = node.output_mark()
        node.power_on()
        restarts += 1
        at = node.wait_output(b"FN1 ", timeout=30, since=mark)  # booted and sending again
        node.wait_output(b"\n", timeout=10, since=at)  # ... the whole line
        after = console_counters(node, mark)
        assert min(after) > highest_seen, (i, min(after), highest_seen)
        assert b"Traceback" not in console_since(node, mark)
    node.set_world(wifi="up")
    # NVS still parses and everything spooled is intact enough to send: the backlog drains.
    wait_for(lambda: max(c for c, _, _ in site.frames(node)) >= highest_seen, 120, "the backlog")
    counters = [c for c, _, _ in site.frames(node)]
    assert len(counters) == len(set(counters)) and restarts == 100


def test_commands_wait_for_a_set_clock(site, capsys):
    """An ESP32's clock is unset after a power cut: a command's expiry cannot be checked then, so
    it is refused ("no-clock") until SNTP (from the gateway host) has set the clock."""
    from fieldnode.cli import main
    node = site.node(rules=[])  # only the command may move the fan
    node.set_world(wifi="down")
    with DeviceLink(node.port) as link:
        link.exec("import machine; machine.RTC().datetime((2000, 1, 1, 6, 0, 0, 0, 0))")
        mark = node.output_mark()
        link.reset()  # the RTC keeps its (wrong) time across a reset, as on the board
    node.wait_output(b"FN1 ", timeout=30, since=mark)
    before = node.outputs()
    assert main(["command", "e2e-1", "fan", "0.5", "--port", node.port, "--keys", str(site.keys)]) != 0
    out = capsys.readouterr()
    assert "no-clock" in out.out + out.err
    after = node.outputs()
    assert after["pwm"] == before["pwm"] and after["pins"].get("26") == before["pins"].get("26")
    mark = node.output_mark()
    node.set_world(wifi="up")
    node.wait_output(b"clock set", timeout=60, since=mark)
    assert main(["command", "e2e-1", "fan", "0.5", "--port", node.port, "--keys", str(site.keys)]) == 0
    assert "applied" in capsys.readouterr().out
    assert abs(node.outputs()["pwm"]["25"]["duty_u16"] - 32768) <= 1
