"""MQTT as the ecosystem expects it, against a real Mosquitto and subscribers that join late:
retained availability (the gateway's with a last will), retained latest values, Home Assistant
discovery, and commands on a node's $command topic."""
from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from fieldnode.wire.frame import KIND_BOOT, KIND_COMMAND, ReplayWindow, Verifier
from fieldnode.gateway import GatewayThread, list_commands
from fieldnode.gateway.mqtt import topic_level
from support.gateway_peers import Client, Mosquitto, Nodes, Observer, gateway_port, wait_until
from support.ports import claimed_port

CLI = [sys.executable, "-m", "fieldnode.cli"]
GW = "test/farm-north/$availability"
NODE1 = "test/farm-north/node-1/$availability"
BOOT = [{"n": "fw", "vs": "0.9.0"}, {"n": "board", "vs": "virtual"}, {"n": "reset", "vs": "power-on"},
        {"n": "schema", "v": 1}]


def outbox_empty(gt: GatewayThread) -> bool:
    with sqlite3.connect(gt.gateway.db_path) as conn:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def late_observer(broker: Mosquitto, topic: str, want: set[str]) -> Observer:
    """A subscriber that joins now and has received the retained messages of every topic in want."""
    obs = Observer(broker.observer_port, topic)
    assert obs.wait_until(lambda _: want <= set(obs.retained)), f"retained: {sorted(obs.retained)}"
    return obs


def publish(port: int, topic: str, payload: str, retain: bool = False, auth: tuple[str, str] | None = None) -> None:
    """An operator's client publishing one message (QoS 1, acknowledged before it returns)."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    if auth:
        c.username_pw_set(*auth)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def test_late_subscriber_gets_retained_availability_and_latest_values_and_nodes_go_offline(tmp_path, broker, nodes):
    db = tmp_path / "gw.db"
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0), mqtt=broker.url, node_timeout=60) as gt:
        c = Client(gt.address)
        for counter in (1, 2):
            assert c.post(nodes.frame(0, counter=counter, records=[
                {"n": "temp", "u": "Cel", "v": 20.0 + counter}, {"n": "door", "vb": counter == 1}])).code == 68
        assert wait_until(lambda: outbox_empty(gt))
        obs = late_observer(broker, "test/#", {GW, NODE1, "test/farm-north/node-1/temp"})
        assert obs.retained[GW] == b"online" and obs.retained[NODE1] == b"online"
        latest = json.loads(obs.retained["test/farm-north/node-1/temp"])
        assert (latest["counter"], latest["value"]) == (2, 22.0)
        assert json.loads(obs.retained["test/farm-north/node-1/door"])["value"] is False
        assert "test/farm-north/node-2/$availability" not in obs.retained  # never heard from
        c.close()
    # A clean stop publishes the gateway's will too: it is offline, and says so.
    assert obs.wait_until(lambda m: (GW, b"offline") in m)
    obs.close()
    assert late_observer(broker, "test/#", {GW}).retained[GW] == b"offline"

    # Restarted with a short node timeout (long enough for a loaded machine to see it online):
    # node-1 goes offline (its last frame is, or soon becomes, older than that); a
    # new frame brings it online, and silence takes it offline again.
    obs = Observer(broker.observer_port, NODE1)
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0), mqtt=broker.url, node_timeout=1.5) as gt:
        assert obs.wait_until(lambda m: (NODE1, b"offline") in m)
        seen = len(obs.messages)
        c = Client(gt.address)
        assert c.post(nodes.frame(0, counter=3)).code == 68
        c.close()
        assert obs.wait_until(lambda m: [p for _, p in m[seen:]][:2] == [b"online", b"offline"])
    obs.close()


def test_home_assistant_discovery_is_retained_with_units_and_device_classes(tmp_path, broker, nodes):
    records = [{"n": "env.temp", "u": "Cel", "v": 21.5}, {"n": "env.hum", "u": "%RH", "v": 40.0},
               {"n": "env.press", "u": "Pa", "v": 101325.0}, {"n": "supply", "u": "V", "v": 12.1},
               {"n": "loop1", "u": "bar", "v": 2.5}, {"n": "meter.power", "u": "W", "v": 300.0},
               {"n": "flow.count", "u": "m3", "v": 3.25}, {"n": "door", "vb": True},
               {"n": "probe", "u": "A", "err": "broken-loop"}]
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), mqtt=broker.url,
                       mqtt_discovery="homeassistant") as gt:
        c = Client(gt.address)
        assert c.post(nodes.frame(0, kind=KIND_BOOT, records=BOOT)).code == 68
        assert c.post(nodes.frame(0, records=records)).code == 68
        c.close()
        assert wait_until(lambda: outbox_empty(gt))
        dev = nodes.devices[0].hex()
        base = f"homeassistant/sensor/fieldnode_{dev}"
        want = {f"{base}/{o}/config" for o in ("env_temp", "env_hum", "env_press", "supply", "loop1",
                                                 "meter_power", "flow_count")}
        want.add(f"homeassistant/binary_sensor/fieldnode_{dev}/door/config")
        obs = late_observer(broker, "#", want | {GW, NODE1})
        obs.close()
    configs = {t: json.loads(p) for t, p in obs.retained.items() if t.startswith("homeassistant/")}
    assert set(configs) == want, "one config per telemetry reading; none for boot records or a failed one"
    units = {c["name"]: (c.get("unit_of_measurement"), c.get("device_class")) for c in configs.values()}
    assert units == {"env.temp": ("°C", "temperature"), "env.hum": ("%", "humidity"),
                     "env.press": ("Pa", "pressure"), "supply": ("V", "voltage"), "loop1": ("bar", "pressure"),
                     "meter.power": ("W", "power"), "flow.count": ("m³", "volume"), "door": (None, None)}
    temp = configs[f"{base}/env_temp/config"]
    assert temp["state_topic"] == "test/farm-north/node-1/env.temp" and temp["state_topic"] in obs.retained
    assert temp["availability"] == [{"topic": GW}, {"topic": NODE1}] and temp["availability_mode"] == "all"
    assert temp["unique_id"] == f"fieldnode_{dev}_env_temp" and temp["state_class"] == "measurement"
    assert temp["device"]["identifiers"] == [f"fieldnode_{dev}"] and temp["device"]["name"] == "node-1"
    assert configs[f"homeassistant/binary_sensor/fieldnode_{dev}/door/config"]["value_template"].count("ON") == 1


def test_discovery_is_off_unless_asked_for_and_units_without_a_class_pass_through(tmp_path, broker, nodes):
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), mqtt=broker.url) as gt:
        c = Client(gt.address)
        assert c.post(nodes.frame(0)).code == 68
        c.close()
        assert wait_until(lambda: outbox_empty(gt))
        obs = late_observer(broker, "#", {GW, NODE1, "test/farm-north/node-1/temp"})
        obs.close()
    assert not [t for t in obs.retained if t.startswith("homeassistant/")]
    from fieldnode.gateway.mqtt_discovery import sensor_config
    _, config = sensor_config("p/s/n/rate", {"device": "02f000000001", "node": "n", "sensor": "rate",
                                             "unit": "1/s", "value": 2.0}, prefix="p", site="s")
    assert config["unit_of_measurement"] == "1/s" and "device_class" not in config
    _, config = sensor_config("p/s/n/state", {"device": "02f000000001", "node": "", "sensor": "state",
                                              "value": "idle"}, prefix="p", site="s")
    assert "state_class" not in config and config["device"]["name"] == "02f000000001"


def test_reading_names_cannot_take_the_gateways_own_topics():
    assert topic_level("$availability") == "_availability" and topic_level("$command") == "_command"
    assert topic_level("a$b") == "a$b"


def command_frames(nodes: Nodes, i: int, answer) -> list[dict]:
    """The records of the command frame a gateway answer carries, verified with node i's key."""
    d = nodes.devices[i]
    verifier = Verifier(lambda kid: (nodes.keys[d], nodes.alg) if kid[:6] == d else None, ReplayWindow(),
                        accept_kinds=(KIND_COMMAND,))
    return verifier.verify(answer.payload).records()


def test_mqtt_commands_are_signed_and_queued_only_for_the_boards_actuators(tmp_path, broker, nodes, caplog):
    caplog.set_level(logging.INFO, logger="fieldnode.gateway.mqtt_commands")
    db = tmp_path / "gw.db"
    topic = "test/farm-north/node-1/$command"
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0), mqtt=broker.url, mqtt_commands=True) as gt:
        c = Client(gt.address)
        assert c.post(nodes.frame(0, kind=KIND_BOOT, records=BOOT)).code == 68  # board "virtual"
        assert wait_until(lambda: outbox_empty(gt))  # connected (and so subscribed)
        refusals = [(topic, '{"mixer": "on"}', "no actuator 'mixer'"),
                    (topic, '{"heater": 0.5}', "heater is a relay"),
                    (topic, '{"fan": 2}', "fan is a pwm"),
                    (topic, "heater on", "JSON object"),
                    (topic, '{"heater": "on", "ttl": 0}', "ttl 0"),
                    ("test/farm-north/node-2/$command", '{"heater": "on"}', "no boot frame of node-2"),
                    ("test/farm-north/node-9/$command", '{"heater": "on"}', "no node 'node-9'")]
        for where, payload, _ in refusals:
            publish(broker.observer_port, where, payload)
        publish(broker.observer_port, topic, '{"heater": "on"}', retain=True)
        publish(broker.observer_port, topic, '{"heater": "on", "fan": 0.4, "ttl": 120}')
        assert wait_until(lambda: len(list_commands(db)) == 1)
        assert wait_until(lambda: len([r for r in caplog.records if "refused" in r.getMessage()]) == 8)
        taken = [r.getMessage() for r in caplog.records if "queued" in r.getMessage()]
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        for (_, _, why), line in zip(refusals, refused[:-1], strict=True):  # the last: retained
            assert why in line, (why, line)
        assert "retained" in refused[-1]
        assert taken == [f"mqtt command #1 queued for node-1 ({nodes.devices[0].hex()}): heater=on, fan=0.4, "
                         "counter 1, expires in 120 s"]
        (info,) = list_commands(db)
        assert info.device == nodes.devices[0].hex() and info.state == "pending"
        answer = c.post(nodes.frame(0))
        c.close()
    assert answer.code == 68
    records = command_frames(nodes, 0, answer)
    assert (records[0]["n"], records[0]["vb"]) == ("heater", True)
    assert (records[1]["n"], records[1]["v"]) == ("fan", 0.4) and records[2]["n"] == "exp"
    assert 100 < records[2]["v"] - time.time() <= 120


def test_mqtt_command_counter_stays_above_commands_queued_by_other_keystore_copies(tmp_path, broker, nodes):
    """`fieldnode command --db` run with another copy of the keystore keeps its own counter file;
    the gateway's MQTT command must still get a counter the node has not applied yet."""
    from fieldnode.cli.main import main
    db = tmp_path / "gw.db"
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0), mqtt=broker.url, mqtt_commands=True) as gt:
        c = Client(gt.address)
        assert c.post(nodes.frame(0, kind=KIND_BOOT, records=BOOT)).code == 68
        other = tmp_path / "laptop" / "keys.json"
        other.parent.mkdir()
        other.write_bytes(nodes.path.read_bytes())
        for _ in range(3):
            assert main(["command", "node-1", "heater", "off", "--db", str(db), "--keys", str(other)]) == 0
        assert wait_until(lambda: outbox_empty(gt))
        publish(broker.observer_port, "test/farm-north/node-1/$command", '{"heater": "on"}')
        assert wait_until(lambda: len(list_commands(db)) == 4)
        c.close()
    assert sorted(i.counter for i in list_commands(db)) == [1, 2, 3, 4]


def test_commands_are_not_taken_without_the_option(tmp_path, broker, nodes):
    db = tmp_path / "gw.db"
    obs = Observer(broker.observer_port, "test/farm-north/node-1/temp")
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0), mqtt=broker.url) as gt:
        c = Client(gt.address)
        assert c.post(nodes.frame(0, kind=KIND_BOOT, records=BOOT)).code == 68
        assert wait_until(lambda: outbox_empty(gt))
        publish(broker.observer_port, "test/farm-north/node-1/$command", '{"heater": "on"}')
        # a reading after the command has made its way through the broker and the gateway
        assert c.post(nodes.frame(0)).code == 68
        assert obs.wait_until(lambda m: len(m) == 1)
        c.close()
    obs.close()
    assert list_commands(db) == []


def test_cli_gateway_killed_leaves_its_last_will_and_logs_mqtt_commands(tmp_path, broker, nodes):
    obs = Observer(broker.observer_port, GW)
    proc = subprocess.Popen(CLI + ["gateway", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "gw.db"),
                                   "--keys", str(nodes.path), "--mqtt", broker.url, "--mqtt-commands",
                                   "--mqtt-discovery", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        startup = proc.stdout.readline()
        assert "nodes offline after 300 s, discovery homeassistant/, commands on .../$command" in startup
        port = gateway_port(startup)
        assert obs.wait_until(lambda m: (GW, b"online") in m)
        c = Client(("127.0.0.1", port))
        assert c.post(nodes.frame(0, kind=KIND_BOOT, records=BOOT)).code == 68
        c.close()
        publish(broker.observer_port, "test/farm-north/node-1/$command", '{"fan": 1}')
        assert "mqtt command #1 queued for node-1" in proc.stdout.readline()
        publish(broker.observer_port, "test/farm-north/node-1/$command", '{"pump": "on"}')
        assert "refused: board 'virtual' has no actuator 'pump'" in proc.stdout.readline()
    finally:
        proc.kill()  # SIGKILL: no clean-up of any kind, as in a crash
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert obs.wait_until(lambda m: m[-1:] == [(GW, b"offline")])
    obs.close()
    assert late_observer(broker, "test/#", {GW}).retained[GW] == b"offline"


def test_cli_refuses_mqtt_options_without_mqtt(tmp_path, nodes):
    for args, msg in ((["--mqtt-discovery"], "go with --mqtt"), (["--mqtt-commands"], "go with --mqtt"),
                      (["--mqtt", "mqtt://127.0.0.1/x", "--node-timeout", "0"], "positive number"),
                      (["--mqtt", "mqtt://127.0.0.1/x", "--mqtt-discovery", "ha/#"], "without + or #")):
        proc = subprocess.run(CLI + ["gateway", "--db", str(tmp_path / "g.db"), "--keys", str(nodes.path)] + args,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and msg in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


def docs_acl() -> str:
    """The Mosquitto ACL file of docs/security.md, as written there."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()
    block = text.split("# /etc/mosquitto/acl\n", 1)[1].split("```", 1)[0]
    assert "topic write fieldnode/farm-north/+/$command" in block
    return block


def test_the_documented_broker_acl_lets_operators_command_and_nobody_else(tmp_path, nodes, caplog):
    """docs/security.md's ACL on a real Mosquitto: the gateway publishes and reads commands, an
    operator's command is taken, a read-only account's never reaches the gateway."""
    caplog.set_level(logging.INFO, logger="fieldnode.gateway.mqtt_commands")
    users = {"fieldnode-gw": "gw-secret", "operator": "op-secret", "grafana": "gf-secret", "homeassistant": "ha"}
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True)
    (tmp_path / "acl").write_text(docs_acl())
    broker = Mosquitto(tmp_path, gateway_settings=f"allow_anonymous false\npassword_file {passwd}\n"
                                                  f"acl_file {tmp_path / 'acl'}\n").start()
    port = broker.port  # the listener with the documented ACL
    try:
        watcher = Observer(port, "fieldnode/#", auth=("grafana", "gf-secret"))
        with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), mqtt_commands=True,
                           mqtt=f"mqtt://fieldnode-gw:gw-secret@127.0.0.1:{port}/fieldnode") as gt:
            c = Client(gt.address)
            assert c.post(nodes.frame(0, kind=KIND_BOOT, records=BOOT)).code == 68
            c.close()
            topic = "fieldnode/farm-north/node-1/$command"
            # the gateway may write, grafana may read
            assert watcher.wait_until(lambda m: any(t == "fieldnode/farm-north/node-1/board" for t, _ in m))
            publish(port, topic, '{"heater": "on"}', auth=("grafana", "gf-secret"))
            publish(port, topic, '{"fan": 0.5}', auth=("operator", "op-secret"))
            assert wait_until(lambda: len(list_commands(gt.gateway.db_path)) == 1)
        watcher.close()
    finally:
        broker.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "fan=0.5" in lines[0], lines


def test_a_command_the_gateway_cannot_take_is_refused_with_the_reason_not_a_traceback(tmp_path, nodes):
    from fieldnode.node.commanding import counters_path
    from fieldnode.gateway.mqtt_commands import CommandRefused, MqttCommands
    db = tmp_path / "gw.db"
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0)) as gt:
        c = Client(gt.address)
        assert c.post(nodes.frame(0, kind=KIND_BOOT, records=BOOT)).code == 68
        c.close()
    commands = MqttCommands(db, "test", "farm-north", nodes.keystore)
    topic = "test/farm-north/node-1/$command"
    with pytest.raises(CommandRefused, match="at most 4096"):
        commands.take(topic, b'{"fan": 0.5, "x": "' + b"x" * 5000 + b'"}')
    counters_path(nodes.path).mkdir()  # the counter file cannot be written
    with pytest.raises(CommandRefused, match="cannot keep the command counter in"):
        commands.take(topic, b'{"fan": 0.5}')
    assert list_commands(db) == []
    counters_path(nodes.path).rmdir()
    assert "mqtt command #1 queued for node-1" in commands.take(topic, b'{"fan": 0.5}')


def test_two_workers_publish_their_nodes_availability_and_one_takes_each_command(tmp_path, broker):
    """Each worker publishes its own nodes' availability; worker 0 alone takes commands (they
    live in shard 0), finding the board of a node whose boot frame is in worker 1's shard."""
    from contextlib import ExitStack

    from fieldnode.store.owners import owner_of
    nodes = Nodes(tmp_path / "farm-north.json", n=6)
    i = next(k for k, d in enumerate(nodes.devices) if owner_of(d, 2) == 1)
    j = next(k for k, d in enumerate(nodes.devices) if owner_of(d, 2) == 0)
    db = tmp_path / "gw.db"
    with ExitStack() as stack:
        port = stack.enter_context(claimed_port())
        gws = [stack.enter_context(GatewayThread(nodes.keystore(), db, ("127.0.0.1", port), mqtt=broker.url,
                                                 reuse_port=True, worker=w, workers=2, group=f"mc-{port}",
                                                 mqtt_commands=True)) for w in (0, 1)]
        c = Client(("127.0.0.1", port))
        assert c.post(nodes.frame(i, kind=KIND_BOOT, records=BOOT)).code == 68
        assert c.post(nodes.frame(j)).code == 68
        assert wait_until(lambda: all(outbox_empty(gt) for gt in gws))
        want = {f"test/farm-north/node-{k + 1}/$availability" for k in (i, j)}
        obs = late_observer(broker, "test/#", want | {GW})
        assert {obs.retained[t] for t in want} == {b"online"}
        publish(broker.observer_port, f"test/farm-north/node-{i + 1}/$command", '{"heater": "off"}')
        assert wait_until(lambda: len(list_commands(db)) == 1)
        # a frame of the node after the command has reached the gateway: it carries the command
        answer = c.post(nodes.frame(i))
        c.close()
        obs.close()
    assert answer.code == 68 and command_frames(nodes, i, answer)[0]["vb"] is False
    assert len(list_commands(db)) == 1, "worker 1 took no copy"


def test_the_real_firmware_appears_in_home_assistant_and_its_heater_switch_works(tmp_path, broker):
    """A virtual node (the firmware on MicroPython, board "virtual"): its own boot frame names the
    board, its readings and actuators get discovery configs, and what the heater switch's config
    says to publish, published on its $command topic, switches its heater pin."""
    from support.nodesite import Site
    site = Site(tmp_path, mqtt=broker.url, mqtt_discovery="homeassistant", mqtt_commands=True)
    try:
        node = site.node()
        assert wait_until(lambda: len(site.readings(node, "env.temp")) >= 2, 60)  # the interlock's first samples
        dev = node.unique_id.hex()
        base = f"homeassistant/sensor/fieldnode_{dev}"
        switch, number = (f"homeassistant/{kind}/fieldnode_{dev}/{name}/config"
                          for kind, name in (("switch", "heater"), ("number", "fan")))
        obs = late_observer(broker, "#", {f"{base}/env_temp/config", f"{base}/loop1/config", switch, number,
                                          "test/default/e2e-1/$availability", "test/default/$availability"})
        temp = json.loads(obs.retained[f"{base}/env_temp/config"])
        assert (temp["unit_of_measurement"], temp["device_class"]) == ("°C", "temperature")
        assert json.loads(obs.retained[f"{base}/loop1/config"])["device_class"] == "pressure"  # bar
        assert obs.retained["test/default/e2e-1/$availability"] == b"online"
        heater, fan = json.loads(obs.retained[switch]), json.loads(obs.retained[number])
        obs.close()
        assert heater["command_topic"] == fan["command_topic"] == "test/default/e2e-1/$command"
        assert fan["command_template"] == '{"fan": {{ value }}}' and (fan["min"], fan["max"]) == (0, 1)
        assert node.outputs().get("pins", {}).get("26") == 0
        # What Home Assistant sends when the switch is turned on:
        publish(broker.observer_port, heater["command_topic"], heater["payload_on"])
        assert wait_until(lambda: [c.state for c in list_commands(site.db)] == ["applied"], 60)
        assert node.outputs()["pins"]["26"] == 1
    finally:
        site.close()


def test_actuator_entities_come_back_after_a_broker_restart_from_the_stored_boot_frame(tmp_path, broker, nodes):
    """The broker lost its retained messages (no persistence): on its next connection the gateway
    announces the actuators again, from the boot frame in its database, without a new boot."""
    db = tmp_path / "gw.db"
    dev = nodes.devices[0].hex()
    switch = f"homeassistant/switch/fieldnode_{dev}/heater/config"
    number = f"homeassistant/number/fieldnode_{dev}/fan/config"
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0), mqtt=broker.url, mqtt_retry=0.2,
                       mqtt_discovery="homeassistant", mqtt_commands=True) as gt:
        c = Client(gt.address)
        assert c.post(nodes.frame(0, kind=KIND_BOOT, records=BOOT)).code == 68
        c.close()
        late_observer(broker, "homeassistant/#", {switch, number}).close()
        broker.stop()
        broker.start()
        obs = late_observer(broker, "homeassistant/#", {switch, number})
        obs.close()
    assert json.loads(obs.retained[switch])["payload_off"] == '{"heater": "off"}'
