"""Actuators, edge rules and authenticated commands, end to end: the real firmware in a virtual
node (MicroPython unix port, simulated HAL) against the real gateway and over USB.

What the node drives is read from its simulated pins (node.outputs()); what it said is read from
its USB console (every frame it makes is also an FN1 line there, verified here with the
keystore) and from the gateway's database.
"""
from __future__ import annotations

import json
import sqlite3
import time

import pytest

from fieldnode.cli.main import main
from fieldnode.node.commanding import ack_result, build_command, counters_path, find_node, next_counter, send_over_usb
from fieldnode.wire.console import frame_from_line
from fieldnode.node.devicelink import DeviceLink
from fieldnode.infra.errors import FieldnodeError
from fieldnode.wire.frame import (KIND_ACK, KIND_COMMAND, KIND_EVENT, KIND_TELEMETRY, Frame, ReplayWindow, Verifier,
                             build_frame, device_base_name)
from fieldnode.gateway import GatewayThread, list_commands
from fieldnode.node.keystore import KeyEntry, Keystore
from support.nodesite import Site, console_since, wait_for

NODE = "e2e-1"
HEATER, PUMP, VENT, FAN = "26", "27", "14", "25"

# The test board: the virtual board's sensors (env: BME280, loop1: 4-20 mA, 0-10 bar, one sample a
# second) with actuators, an interlock, an alert and two rules that exercise every safeguard.
CONTROL = {
    "actuators": [
        {"name": "heater", "driver": "relay", "pin": 26, "failsafe": False, "min_on_s": 600},
        {"name": "pump", "driver": "relay", "pin": 27, "failsafe": False, "min_off_s": 600},
        {"name": "vent", "driver": "relay", "pin": 14, "failsafe": False, "min_on_s": 600},
        {"name": "fan", "driver": "pwm", "pin": 25, "freq": 25000, "failsafe": 1.0},
    ],
    "interlocks": [{"actuator": "heater", "reading": "env.temp", "above": 60, "force": False}],
    "alerts": [{"reading": "env.temp", "above": 50, "hysteresis": 2}],
    "rules": [
        {"reading": "loop1", "above": 8, "hysteresis": 0.5, "set": "fan", "value": 0.75, "else": 0.25},
        {"reading": "loop1", "above": 8, "hysteresis": 0.5, "set": "vent", "value": True, "else": False},
    ],
    "failsafe_after_s": 300,
}


def bar_to_ma(bar: float) -> float:
    return 4.0 + 16.0 * bar / 10.0  # loop1: 4-20 mA over 0-10 bar


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


def control_node(site: Site, **changes):
    node = site.node(**{**CONTROL, **changes})
    sampling(site, node, 0)
    return node


def sampling(site: Site, node, since: int) -> None:
    # The heater's interlock needs a first good env reading before the heater may be switched, and
    # the fan rule's first sample (loop1 at 5 bar: below its limit) moves the fan off its failsafe.
    wait_for(lambda: len(telemetry(site, node, "env.temp", since)) >= 2 and duty(node) == 0.25, 30,
             "the first samples")


# -- reading the node ---------------------------------------------------------------------------
def pin(node, number: str) -> int | None:
    return node.outputs().get("pins", {}).get(number)


def duty(node) -> float | None:
    pwm = node.outputs().get("pwm", {}).get(FAN)
    return None if pwm is None else round(pwm["duty_u16"] / 65535, 3)


def outputs(node) -> tuple:
    return tuple(pin(node, p) for p in (HEATER, PUMP, VENT)) + (duty(node),)


def sent(site: Site, node, since: int = 0) -> list[Frame]:
    """Every frame the node printed on its console after `since`, verified with its key."""
    store = Keystore.load(site.keys)
    verifier = Verifier(store.lookup, None, accept_kinds=range(5))
    frames = []
    for line in console_since(node, since).split(b"\n")[:-1]:
        data = frame_from_line(line) if line.startswith(b"FN1 ") else None
        if data:
            frames.append(verifier.verify(data))  # raises if a frame the node made does not verify
    return frames


def values(frame: Frame) -> dict:
    return {r["n"]: r.get("v", r.get("vs", r.get("vb", ("err", r.get("err"))))) for r in frame.records()}


def acks(site: Site, node, since: int = 0) -> dict[int, tuple[str, str | None]]:
    """{command counter: (result, reason)} from the node's signed ack frames."""
    return {int(v["ack"]): (v["result"], v.get("reason")) for v in
            (values(f) for f in sent(site, node, since) if f.kind == KIND_ACK)}


def events(site: Site, node, since: int = 0) -> list[tuple[int, str, dict]]:
    return [(f.counter, values(f)["event"], values(f)) for f in sent(site, node, since) if f.kind == KIND_EVENT]


def telemetry(site: Site, node, name: str, since: int = 0) -> list[tuple[int, object]]:
    return [(f.counter, values(f)[name]) for f in sent(site, node, since)
            if f.kind == KIND_TELEMETRY and name in values(f)]


def settle(site: Site, node, name: str, check, what: str, timeout: float = 30) -> None:
    """Waits for two telemetry frames of reading `name` that pass check: the node has sampled the
    new world at least once and acted on it (rules and alerts run before the frame is built)."""
    mark = node.output_mark()
    wait_for(lambda: len([v for _, v in telemetry(site, node, name, mark) if check(v)]) >= 2, timeout, what)


# -- commanding it --------------------------------------------------------------------------------
def entry_for(site: Site) -> KeyEntry:
    return find_node(Keystore.load(site.keys), NODE)


def command(site: Site, items, ttl: float = 30.0, *, entry: KeyEntry | None = None, counter: int | None = None,
            now: float | None = None) -> tuple[bytes, int]:
    """A command frame exactly as `fieldnode command` builds it (next counter from the host's file)."""
    entry = entry or entry_for(site)
    if counter is None:
        counter = next_counter(counters_path(site.keys), entry.device)
    frame, _ = build_command(entry, counter, items, ttl, now=now)
    return frame, counter


def over_usb(site: Site, node, frame: bytes, counter: int, timeout: float = 15) -> tuple[str, str | None]:
    ack = send_over_usb(node.port, entry_for(site), frame, counter, timeout)  # returns only a verified ack
    return ack_result(ack)


def cli(*args: str) -> int:
    return main(["command", *args])


def stored_raw(site: Site, node, kind: int) -> list[bytes]:
    """The frames of one kind the gateway stored for node, byte for byte."""
    with sqlite3.connect(f"file:{site.db}?mode=ro", uri=True) as conn:
        return [bytes(r) for (r,) in conn.execute("SELECT raw FROM frames WHERE device=? AND kind=? ORDER BY id",
                                                  (node.unique_id.hex(), kind))]


# -- 1. through the gateway -----------------------------------------------------------------------
def test_command_through_the_gateway_is_delivered_applied_and_acked(site, capsys):
    node = control_node(site)
    assert pin(node, HEATER) == 0
    rc = cli(NODE, "heater", "on", "--db", str(site.db), "--keys", str(site.keys), "--ttl", "60", "--wait")
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "queued command" in out and f"{NODE}: heater=on applied" in out
    assert pin(node, HEATER) == 1
    (cmd,) = list_commands(site.db)
    assert cmd.state == "applied" and cmd.attempts == 1 and cmd.reason is None
    # The ack frame the gateway stored verifies with the node's key on its own, and answers that
    # command's counter. (A CoAP retransmission would bring the same command again: the node then
    # answers "replay", which leaves the command applied.)
    store = Keystore.load(site.keys)
    verifier = Verifier(store.lookup, ReplayWindow(), accept_kinds=(KIND_ACK,))
    stored = [values(verifier.verify(r)) for r in stored_raw(site, node, KIND_ACK)]
    assert [(v["ack"], v["result"]) for v in stored if v["result"] == "applied"] == [(cmd.counter, "applied")]
    assert all(v.get("reason") == "replay" for v in stored if v["result"] != "applied")

    # A refusal travels the same way, with its reason, and changes nothing.
    before = outputs(node)
    rc = cli(NODE, "pump", "on", "--db", str(site.db), "--keys", str(site.keys), "--ttl", "60", "--wait")
    out = capsys.readouterr().out
    assert rc == 1 and f"{NODE}: pump=on refused (min-off-time)" in out
    assert list_commands(site.db)[0].state == "refused" and list_commands(site.db)[0].reason == "min-off-time"
    assert outputs(node) == before


# -- 2. over USB ----------------------------------------------------------------------------------
def test_command_over_usb_is_applied_and_acked(site, capsys):
    node = control_node(site)
    mark = node.output_mark()
    assert cli(NODE, "fan", "0.4", "--port", node.port, "--keys", str(site.keys)) == 0
    assert f"{NODE}: fan=0.4 applied" in capsys.readouterr().out
    assert duty(node) == 0.4
    # The signed ack was on the console (verified by `sent`) and also reaches the gateway.
    ((counter, result),) = acks(site, node, mark).items()
    assert result == ("applied", None)
    wait_for(lambda: [v for _, v, _ in site.readings(node, "ack")] == [counter], 30, "the ack at the gateway")
    (ack_frame,) = [c for c, _, _ in site.readings(node, "ack")]  # the ack frame's own counter
    assert [s for c, _, s in site.readings(node, "result") if c == ack_frame] == ["applied"]


# -- 3. every refusal ----------------------------------------------------------------------------
def test_every_refused_command_is_acked_with_its_reason_and_changes_nothing(site, capsys):
    node = control_node(site)
    keys = str(site.keys)
    frame, counter = command(site, [("fan", 0.5)])
    assert over_usb(site, node, frame, counter) == ("applied", None)
    assert duty(node) == 0.5

    def refused(reason: str, frame: bytes, counter: int) -> None:
        before, mark = outputs(node), node.output_mark()
        assert over_usb(site, node, frame, counter) == ("refused", reason)
        assert acks(site, node, mark) == {counter: ("refused", reason)}  # signed, names the counter
        assert outputs(node) == before

    refused("replay", frame, counter)  # the same frame again: its counter is spent
    # Signed with the node's key but malformed (no expiry): answered with the reason, spent.
    entry = entry_for(site)
    spent = next_counter(counters_path(site.keys), entry.device)
    malformed = build_frame(entry.key, entry.kid, entry.alg, spent, KIND_COMMAND, device_base_name(entry.device),
                            int(time.time()), [{"n": "fan", "v": 0.2}])
    refused("bad-senml", malformed, spent)
    refused("replay", malformed, spent)
    refused("expired", *command(site, [("fan", 0.9)], ttl=5, now=time.time() - 60))
    for args, reason in ((["nosuch", "on"], "unknown-actuator"), (["fan", "1.5"], "bad-value"),
                         (["heater", "0.5"], "bad-value"), (["pump", "on"], "min-off-time")):
        before, mark = outputs(node), node.output_mark()
        assert cli(NODE, *args, "--port", node.port, "--keys", keys) == 1
        assert f"refused ({reason})" in capsys.readouterr().out
        assert [r for r in acks(site, node, mark).values()] == [("refused", reason)]
        assert outputs(node) == before

    # Interlock: no heater while env.temp is above 60.
    node.set_world(devices={"env": {"temp": 65.0}})
    settle(site, node, "env.temp", lambda v: v == pytest.approx(65.0, abs=0.05), "env.temp=65")
    refused("interlock", *command(site, [("heater", True)]))
    node.set_world(devices={"env": {"temp": 20.0}})
    settle(site, node, "env.temp", lambda v: v == pytest.approx(20.0, abs=0.05), "env.temp=20")
    assert over_usb(site, node, *command(site, [("heater", True)])) == ("applied", None)
    refused("min-on-time", *command(site, [("heater", False)]))  # on for less than min_on_s
    assert pin(node, HEATER) == 1

    # Forged (right key id, wrong key): the MAC fails, so the node does not answer at all (forged
    # input never makes it transmit), logs why, spends no counter, and nothing moves.
    before, mark = outputs(node), node.output_mark()
    forged_entry = KeyEntry(kid=entry_for(site).kid, key=b"\x42" * 32, alg=entry_for(site).alg, name=NODE)
    forged, forged_counter = command(site, [("heater", False)], entry=forged_entry, counter=10_000)
    with pytest.raises(FieldnodeError, match="no answer"):
        over_usb(site, node, forged, forged_counter, timeout=3)
    node.wait_output(b"command refused: bad-mac", timeout=10, since=mark)
    assert acks(site, node, mark) == {} and outputs(node) == before
    assert over_usb(site, node, *command(site, [("fan", 0.3)])) == ("applied", None)  # counter not burnt

    # The spent counter survives a power cut: the first frame is still a replay after reboot.
    boots, mark = len(node.boots), node.output_mark()
    node.power_cycle()
    node.wait_boots(boots + 1, timeout=30)
    sampling(site, node, mark)
    before = outputs(node)
    assert over_usb(site, node, frame, counter) == ("refused", "replay")
    assert outputs(node) == before


def test_a_command_counter_the_node_cannot_store_is_refused_unspent_and_never_resets_it(site):
    # The node keeps the last command counter as an NVS i32 (the ESP32 port's set_i32 raises
    # OverflowError beyond 2^31-1): a signed command above that must be answered, not crash the
    # node into a watchdog reset that the gateway's re-sends repeat until the command expires.
    node = control_node(site)
    boots = len(node.boots)
    for huge in (2**31, 2**32 - 1):  # the largest a host builds
        before = outputs(node)
        assert over_usb(site, node, *command(site, [("fan", 0.9)], counter=huge)) == ("refused", "counter-range")
        assert outputs(node) == before
    assert over_usb(site, node, *command(site, [("fan", 0.6)])) == ("applied", None)  # nothing was spent
    assert duty(node) == 0.6
    assert len(node.boots) == boots and node.nvs()["fieldnode"]["cmdctr"][1] < 2**31


def test_a_command_whose_counter_cannot_be_kept_is_refused_and_never_resets_the_node(site):
    # NVS full (ESP_ERR_NVS_NOT_ENOUGH_SPACE from set_i32): the command is refused, as applied it
    # could be replayed after a reboot, and the error does not take the node down.
    node = control_node(site)
    boots, before = len(node.boots), outputs(node)
    node.set_world(nvs_full=True, devices={"env": {"temp": 33.0}})
    settle(site, node, "env.temp", lambda v: v == pytest.approx(33.0, abs=0.05), "the node in the full-NVS world")
    assert over_usb(site, node, *command(site, [("fan", 0.9)])) == ("refused", "nvs-error")
    assert outputs(node) == before
    node.set_world(nvs_full=False, devices={"env": {"temp": 20.0}})
    settle(site, node, "env.temp", lambda v: v == pytest.approx(20.0, abs=0.05), "the node with room in NVS")
    assert over_usb(site, node, *command(site, [("fan", 0.6)])) == ("applied", None)
    assert duty(node) == 0.6 and len(node.boots) == boots


def test_the_host_never_issues_a_command_counter_the_node_cannot_store(tmp_path, capsys):
    entry = KeyEntry(kid=bytes.fromhex("02f1e1000001") + b"\x00\x01", key=b"\x11" * 32, name=NODE)
    keys = Keystore(tmp_path / "keys.json", [entry])
    keys.save()
    path = counters_path(keys.path)
    path.write_text(json.dumps({entry.device.hex(): 2**31 - 1}))
    assert cli(NODE, "fan", "0.5", "--port", "/dev/null", "--keys", str(keys.path)) == 2
    assert "2147483647" in capsys.readouterr().err
    assert json.loads(path.read_text()) == {entry.device.hex(): 2**31 - 1}  # nothing spent either


def test_a_queued_command_is_numbered_as_the_gateway_log_and_the_queue_number_it(tmp_path, capsys):
    # Counter and queue id part ways as soon as one command went over USB: the user is shown the
    # number the gateway's "-> command #N sent" line and `fieldnode status` use.
    from fieldnode.store.sqlite.connection import connect
    entry = KeyEntry(kid=bytes.fromhex("02f1e1000001") + b"\x00\x01", key=b"\x11" * 32, name=NODE)
    keys = Keystore(tmp_path / "keys.json", [entry])
    keys.save()
    counters_path(keys.path).write_text(json.dumps({entry.device.hex(): 4}))  # four went over USB
    db = tmp_path / "gateway.db"
    connect(db).close()
    assert cli(NODE, "fan", "0.5", "--db", str(db), "--keys", str(keys.path)) == 0
    (cmd,) = list_commands(db)
    assert cmd.counter == 5 and f"queued command #{cmd.id} " in capsys.readouterr().out


# -- 4. failsafe ----------------------------------------------------------------------------------
def test_gateway_silence_sends_every_actuator_to_failsafe_until_commanded(site, capsys):
    node = control_node(site, failsafe_after_s=5)
    keys = str(site.keys)
    for args in (["heater", "on"], ["fan", "0.4"]):
        assert cli(NODE, *args, "--port", node.port, "--keys", keys) == 0
    assert outputs(node) == (1, 0, 0, 0.4)
    host, port = site.gateway.address
    mark = node.output_mark()
    site.gateway.stop()  # the node's link stays up; nothing answers
    wait_for(lambda: outputs(node) == (0, 0, 0, 1.0), 30, "every actuator at its failsafe state")
    # A frame is on the console once answered or in flash: the event shows within spool_after_ms.
    (fs,) = wait_for(lambda: [e for e in events(site, node, mark) if e[1] == "failsafe"], 10, "the failsafe event")

    site.gateway = GatewayThread(Keystore.load(site.keys), site.db, (host, port), health_interval=0.2).start()
    # The spooled frames, the failsafe event among them, reach the gateway when it is back.
    wait_for(lambda: any(c == fs[0] for c, _, _ in site.readings(node, "event")), 60, "the failsafe event stored")
    node.wait_output(b"gateway answers again", timeout=30, since=mark)
    # Outputs stay in their failsafe state until commanded: the gateway answering is not an order.
    settle(site, node, "loop1", lambda v: True, "telemetry after the gateway came back")
    assert outputs(node) == (0, 0, 0, 1.0)
    assert cli(NODE, "heater", "on", "--db", str(site.db), "--keys", keys, "--ttl", "60", "--wait") == 0
    assert "heater=on applied" in capsys.readouterr().out
    assert pin(node, HEATER) == 1

    # The guard re-armed: the next silence (Wi-Fi gone this time) fails safe again.
    mark = node.output_mark()
    node.set_world(wifi="down")
    wait_for(lambda: pin(node, HEATER) == 0, 30, "the heater off again")
    assert wait_for(lambda: [e[1] for e in events(site, node, mark)], 10, "the event") == ["failsafe"]


# -- 5. threshold alert --------------------------------------------------------------------------
def test_threshold_alert_is_sent_at_once_with_hysteresis_and_clears(site):
    node = control_node(site)
    mark = node.output_mark()

    def temp(value: float) -> None:
        node.set_world(devices={"env": {"temp": value}})
        settle(site, node, "env.temp", lambda v: v == pytest.approx(value, abs=0.05), f"env.temp={value}")

    temp(55.0)  # above 50: alert
    temp(49.0)  # inside the 2-degree band: no clear
    temp(51.0)  # above again: no second alert, it never cleared
    temp(48.5)  # still inside the band
    temp(47.0)  # below 50 - 2: clear
    got = [(c, name, v["env.temp"]) for c, name, v in events(site, node, mark)]
    assert [name for _, name, _ in got] == ["env.temp.high", "env.temp.clear"]
    (high, _, high_value), (clear, _, clear_value) = got
    assert high_value == pytest.approx(55.0, abs=0.05) and clear_value == pytest.approx(47.0, abs=0.05)
    # At once: each event is the frame just before the telemetry of the sample that crossed, so
    # no telemetry frame carried the new value before the alert did.
    temps = dict(telemetry(site, node, "env.temp", mark))
    assert temps.get(high + 1) == pytest.approx(55.0, abs=0.05)
    assert all(v < 50 for c, v in temps.items() if c < high)
    assert temps.get(clear + 1) == pytest.approx(47.0, abs=0.05)
    # And both reached the gateway.
    wait_for(lambda: {s for _, _, s in site.readings(node, "event")} >= {"env.temp.high", "env.temp.clear"}, 30,
             "the alert events at the gateway")


# -- 6. local rules without the network -----------------------------------------------------------
def test_local_rules_keep_working_with_the_network_down(site):
    node = control_node(site, failsafe_after_s=4)
    mark = node.output_mark()
    node.set_world(wifi="down")
    node.wait_output(b"gateway silent", timeout=30, since=mark)
    wait_for(lambda: outputs(node) == (0, 0, 0, 1.0), 10, "the failsafe state (fan full)")

    def loop1(bar: float) -> None:
        node.set_world(devices={"loop1": {"ma": bar_to_ma(bar)}})

    def move_clock(seconds: int, check=lambda v: v < 7.1) -> None:
        """The node's clock moves on (ticks_skip_ms): the vent's ten minutes on pass at once, and
        the test's own pace cannot eat into them. Returns after two samples that pass check."""
        skip = node.world.read().get("ticks_skip_ms", 0)
        node.set_world(ticks_skip_ms=skip + seconds * 1000)
        settle(site, node, "loop1", check, "two samples after the clock moved")

    loop1(9.0)  # above 8 bar: fan 0.75, vent open
    settle(site, node, "loop1", lambda v: v > 8.9, "loop1=9")
    assert outputs(node) == (0, 0, 1, 0.75)
    # The rules' settings hold: the failsafe does not take them back while silent, however long
    # (the node's clock moves past failsafe_after_s again; two samples are taken after it).
    move_clock(10, check=lambda v: v > 8.9)
    assert outputs(node) == (0, 0, 1, 0.75)
    assert [e[1] for e in events(site, node, mark)].count("failsafe") == 1
    loop1(5.0)
    move_clock(600)  # past the vent's minimum on time (below)
    wait_for(lambda: outputs(node) == (0, 0, 0, 0.25), 30, "the rules' else values")

    # The vent's minimum on time (600 s) defers the rule's "close" when loop1 falls again at once;
    # the rule applies it when the time is up.
    loop1(9.0)
    wait_for(lambda: pin(node, VENT) == 1, 30, "the vent opened by the rule")
    at = node.output_mark()
    loop1(7.0)  # below 8 - 0.5
    wait_for(lambda: duty(node) == 0.25, 30, "the fan rule's else value")
    # the rule wants the vent closed and the vent's minimum on time holds it open
    node.wait_output(b"rule: vent = False waits: min-on-time", timeout=10, since=at)
    move_clock(590)  # 590 s and the few real ones since it opened: not yet 600
    assert pin(node, VENT) == 1, "closed before its minimum on time"
    move_clock(10)
    wait_for(lambda: pin(node, VENT) == 0, 30, "the deferred close once the minimum on time is over")


# -- 7. a failing driver, end to end --------------------------------------------------------------
def test_failed_reading_is_sent_as_an_error_while_the_rest_carry_on(site):
    node = control_node(site)
    assert cli(NODE, "heater", "on", "--port", node.port, "--keys", str(site.keys)) == 0
    mark = node.output_mark()
    node.set_world(devices={"env": {"absent": True}})  # the BME280 NACKs every transfer
    settle(site, node, "env.temp", lambda v: v == ("err", "nack"), "env.temp with err nack")
    bad = [f for f in sent(site, node, mark) if f.kind == KIND_TELEMETRY and "env.temp" in values(f)
           and values(f)["env.temp"] == ("err", "nack")]
    assert values(bad[0]) == {"env.temp": ("err", "nack"), "env.hum": ("err", "nack"), "env.press": ("err", "nack")}
    # The other sensor keeps reporting values meanwhile.
    after = wait_for(lambda: [v for c, v in telemetry(site, node, "loop1", mark) if c > bad[0].counter][1:], 30,
                     "loop1 readings while env fails")
    assert all(v == pytest.approx(5.0, abs=0.05) for v in after)
    # No reading, no permission: the heater's interlock trips and forces it off, min_on_s or not,
    # and says so.
    wait_for(lambda: pin(node, HEATER) == 0, 30, "the heater forced off")
    forced = wait_for(lambda: [v for _, name, v in events(site, node, mark) if name == "interlock"], 10,
                      "the interlock event")
    assert forced[0].get("heater.forced") == 1
    # The error readings reach the gateway as readings with an error status.
    wait_for(lambda: any(s == "nack" and v is None for _, v, s in site.readings(node, "env.hum", bad[0].counter - 1)),
             30, "env.hum err=nack at the gateway")

    node.set_world(devices={"env": {"absent": False}})
    settle(site, node, "env.temp", lambda v: v == pytest.approx(21.0, abs=0.05), "env.temp back")
    assert cli(NODE, "heater", "on", "--port", node.port, "--keys", str(site.keys)) == 0


def test_commands_wait_for_a_set_clock(site, capsys):
    """An ESP32's clock is unset after a power cut: a command's expiry cannot be checked then, so
    it is refused ("no-clock") until SNTP (from the gateway host) has set the clock."""
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
