"""Actuators, edge rules and authenticated commands on the real firmware in a virtual node:
commands through the gateway and over USB, every way a command is refused, failsafe on gateway
silence, threshold alerts with hysteresis, and local rules that keep working with the network
down. Outputs are read from the simulated pins (node.outputs())."""
from __future__ import annotations

import json
import time

import pytest

from fieldnode.cli import main
from fieldnode.commanding import ack_result, build_command, counters_path, find_node, next_counter, send_over_usb
from fieldnode.errors import FieldnodeError
from fieldnode.gateway import list_commands
from fieldnode.keystore import KeyEntry, Keystore
from fieldnode.paths import BOARDS_DIR
from support.nodesite import Site, console_since, wait_for

HEATER, FAN = "26", "25"
ACTUATORS = json.loads((BOARDS_DIR / "virtual.json").read_text())["actuators"]


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


def heater(node) -> int | None:
    return node.outputs().get("pins", {}).get(HEATER)


def fan(node) -> float | None:
    pwm = node.outputs().get("pwm", {}).get(FAN)
    return None if pwm is None else round(pwm["duty_u16"] / 65535, 3)


def events(site, node, after: int = 0) -> list[tuple[int, str]]:
    return [(c, s) for c, _, s in site.readings(node, "event", after)]


def usb(site, node, items, ttl=30.0, *, key: bytes | None = None, counter: int | None = None, now=None):
    """A command over USB through the library `fieldnode command --port` uses: (frame, ack result)."""
    store = Keystore.load(site.keys)
    entry = find_node(store, "e2e-1")
    if key is not None:
        entry = KeyEntry(kid=entry.kid, key=key, alg=entry.alg, name=entry.name)
    if counter is None:
        counter = next_counter(counters_path(store.path), entry.device)
    frame, _ = build_command(entry, counter, items, ttl, now=now)
    return frame, counter, entry


def send(node, frame, counter, entry, timeout=10.0) -> tuple[str, str | None]:
    return ack_result(send_over_usb(node.port, entry, frame, counter, timeout))


def test_command_through_the_gateway_is_applied_and_acked(site, capsys):
    node = site.node()
    assert heater(node) == 0  # the failsafe state it booted into
    assert main(["command", "e2e-1", "heater", "on", "--db", str(site.db), "--keys", str(site.keys)]) == 0
    assert "queued command" in capsys.readouterr().out
    # Delivered in the answer to the node's next frame; applied; the signed ack closes it.
    wait_for(lambda: heater(node) == 1, 30, "the heater on")
    (cmd,) = wait_for(lambda: [c for c in list_commands(site.db) if c.state == "applied"], 30, "the ack")
    assert cmd.reason is None
    acks = wait_for(lambda: site.readings(node, "result"), 30, "the ack frame in the database")
    assert acks[-1][2] == "applied"


def test_command_over_usb_is_applied_and_acked(site, capsys):
    node = site.node()
    assert main(["command", "e2e-1", "fan", "0.25", "--port", node.port, "--keys", str(site.keys)]) == 0
    assert "fan=0.25 applied" in capsys.readouterr().out
    assert fan(node) == 0.25


def test_every_refused_command_changes_nothing_and_says_why(site):
    node = site.node(actuators=[dict(ACTUATORS[0], min_on_s=60), ACTUATORS[1]], rules=[])
    frame, counter, entry = usb(site, node, [("fan", 0.5)])
    assert send(node, frame, counter, entry) == ("applied", None)
    assert fan(node) == 0.5

    def refused(items, reason, **kw):
        before = node.outputs()["pwm"], heater(node)
        f, c, e = usb(site, node, items, **kw)
        assert send(node, f, c, e) == ("refused", reason)
        assert (node.outputs()["pwm"], heater(node)) == before

    # The same frame again: the counter was spent when it was applied.
    before = fan(node)
    assert send(node, frame, counter, entry) == ("refused", "replay")
    assert fan(node) == before
    refused([("fan", 0.9)], "expired", ttl=5, now=time.time() - 60)
    refused([("pump", 1.0)], "unknown-actuator")
    refused([("fan", 1.5)], "bad-value")
    refused([("heater", 0.5)], "bad-value")
    node.set_world(devices={"env": {"temp": 65.0}})  # above the heater's interlock (60)
    wait_for(lambda: [v for _, v, _ in site.readings(node, "env.temp") if v > 64], 30, "the hot reading")
    refused([("heater", True)], "interlock")
    node.set_world(devices={"env": {"temp": 20.0}})
    wait_for(lambda: [v for _, v, _ in site.readings(node, "env.temp")][-1] < 21, 30, "the cool reading")
    f, c, e = usb(site, node, [("heater", True)])
    assert send(node, f, c, e) == ("applied", None)
    refused([("heater", False)], "min-on-time")  # on for less than min_on_s
    assert heater(node) == 1
    # Forged: a wrong key. The MAC fails, so the node does not answer at all (forged input never
    # makes it transmit), logs why, and nothing moves.
    mark = node.output_mark()
    f, c, e = usb(site, node, [("heater", False)], key=b"\x42" * 32)
    with pytest.raises(FieldnodeError, match="no answer"):
        send(node, f, c, e, timeout=3)
    assert b"command refused: bad-mac" in console_since(node, mark)
    assert heater(node) == 1 and fan(node) == 0.5


def test_actuators_go_to_failsafe_when_the_gateway_falls_silent(site):
    node = site.node(failsafe_after_s=4)
    frame, counter, entry = usb(site, node, [("fan", 0.3)])
    assert send(node, frame, counter, entry) == ("applied", None)
    first = max(c for c, _, _ in wait_for(lambda: site.frames(node), 30, "frames"))
    node.set_world(wifi="down")  # nothing valid from the gateway from now on
    wait_for(lambda: fan(node) == 1.0, 30, "the fan at its failsafe (full)")
    assert heater(node) == 0
    node.set_world(wifi="up")
    # The frame that says so was spooled and arrives once the link is back.
    wait_for(lambda: [e for e in events(site, node, first) if e[1] == "failsafe"], 60, "the failsafe event")
    # Actuators stay in failsafe until commanded again: the gateway answering is not an order.
    time.sleep(3)
    assert fan(node) == 1.0
    frame, counter, entry = usb(site, node, [("fan", 0.4)])
    assert send(node, frame, counter, entry) == ("applied", None)
    assert fan(node) == 0.4


def test_threshold_alert_is_sent_at_once_with_hysteresis(site):
    node = site.node()
    mark = max(c for c, _, _ in wait_for(lambda: site.frames(node), 30, "frames"))

    def set_temp(value: float) -> None:
        node.set_world(devices={"env": {"temp": value}})
        wait_for(lambda: any(abs(v - value) < 0.02 for _, v, _ in site.readings(node, "env.temp", mark)), 30,
                 f"env.temp={value}")
        time.sleep(2.5)  # a few more samples at this value

    set_temp(55.0)  # above 50: alert
    set_temp(49.0)  # inside the 2-degree band: still alerting, no clear
    set_temp(55.0)  # above again: no second alert, it never cleared
    set_temp(47.0)  # below 50 - 2: clear
    got = [e for e in events(site, node, mark) if e[1].startswith("env.temp")]
    assert [e[1] for e in got] == ["env.temp.high", "env.temp.clear"]
    # At once: the alert frame comes right after the telemetry frame of the sample that crossed,
    # not with a later sample.
    high = got[0][0]
    temps = {c: v for c, v, _ in site.readings(node, "env.temp", mark)}
    assert temps.get(high - 1, 0) > 50 or temps.get(high, 0) > 50


def test_local_rule_drives_the_fan_with_the_network_down(site):
    node = site.node()
    node.set_world(wifi="down")
    frame, counter, entry = usb(site, node, [("fan", 0.5)])  # a known state, not the failsafe's 1.0
    assert send(node, frame, counter, entry) == ("applied", None)
    node.set_world(devices={"env": {"temp": 35.0}})  # rule: above 30 -> fan 1.0
    wait_for(lambda: fan(node) == 1.0, 30, "the rule setting the fan")
    node.set_world(devices={"env": {"temp": 25.0}})  # below 30 - 1 -> else 0.2
    wait_for(lambda: fan(node) == 0.2, 30, "the rule's else value")
