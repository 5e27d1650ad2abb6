"""Readings to a real Mosquitto: topics and payloads, broker down and back, nothing lost or doubled."""
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from contextlib import ExitStack

import pytest

from fieldnode.gateway import GatewayThread, read_status
from fieldnode.gateway.mqtt import MqttUrl
from fieldnode.infra.errors import FieldnodeError
from support.gateway_peers import Client, Nodes, Observer, is_reading, wait_until
from support.ports import claimed_port, refusing_port


def outbox_depth(gt: GatewayThread) -> int:
    with sqlite3.connect(gt.gateway.db_path) as conn:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]


def publish_markers(c: Client, nodes: Nodes, obs: Observer) -> list[tuple[str, bytes]]:
    """Every message obs has when one more frame of each node has arrived through the broker.

    The marker frames' readings go out on the same topics, from the same publisher, after
    everything before them; a reading published twice before them has arrived first. So a count
    taken then needs no sleep, and the markers are part of it (two readings each)."""
    markers = {f"{d.hex()}-{nodes.counters[d] + 1}-{k}" for d in nodes.devices for k in (0, 1)}
    for i in range(len(nodes.devices)):
        assert c.post(nodes.frame(i)).code == 68
    assert obs.wait_until(lambda m: markers <= {json.loads(p)["id"] for _, p in m}), "the markers never arrived"
    return obs.wait_for(0)


def test_readings_are_published_with_topic_and_payload(tmp_path, broker, nodes):
    obs = Observer(broker.observer_port, keep=is_reading)
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), mqtt=broker.url) as gt:
        c = Client(gt.address)
        frame = nodes.frame(0, counter=5, records=[{"n": "temp", "u": "Cel", "v": 21.25},
                                                   {"n": "door/left", "vb": False},
                                                   {"n": "loop1", "u": "A", "err": "broken-loop"}])
        assert c.post(frame).code == 68
        c.close()
        msgs = obs.wait_for(3)
        assert wait_until(lambda: outbox_depth(gt) == 0)
    obs.close()
    dev = nodes.devices[0].hex()
    by_topic = {t: json.loads(p) for t, p in msgs}
    assert set(by_topic) == {"test/farm-north/node-1/temp", "test/farm-north/node-1/door_left",
                             "test/farm-north/node-1/loop1"}
    assert by_topic["test/farm-north/node-1/temp"] == {
        "id": f"{dev}-5-0", "device": dev, "node": "node-1", "kind": "telemetry", "counter": 5,
        "sensor": "temp", "time": 1_764_057_605, "value": 21.25, "unit": "Cel"}
    assert by_topic["test/farm-north/node-1/door_left"]["value"] is False
    assert by_topic["test/farm-north/node-1/loop1"]["value"] is None
    assert by_topic["test/farm-north/node-1/loop1"]["error"] == "broken-loop"


def test_broker_down_then_back_every_reading_once(tmp_path, broker, nodes):
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), mqtt=broker.url,
                       mqtt_retry=0.2, health_interval=0.2) as gt:
        c = Client(gt.address)
        for _ in range(5):
            assert c.post(nodes.frame(0)).code == 68
        assert wait_until(lambda: outbox_depth(gt) == 0)  # published while the broker was up
        broker.stop()
        for _ in range(20):  # the broker is down: frames are still stored and acknowledged
            for i in (0, 1):
                assert c.post(nodes.frame(i)).code == 68
        assert outbox_depth(gt) == 40 * 2
        assert wait_until(lambda: read_status(gt.gateway.db_path).mqtt["state"] == "disconnected")
        assert read_status(gt.gateway.db_path).outbox == 80
        # the broker comes back; the observer subscribes before the gateway may publish again
        broker.start(gateway_allowed=False)
        obs = Observer(broker.observer_port, keep=is_reading)
        for _ in range(3):
            assert c.post(nodes.frame(1)).code == 68
        assert wait_until(lambda: "refused" in (read_status(gt.gateway.db_path).mqtt or {}).get("detail", ""))
        assert outbox_depth(gt) == 86
        broker.allow_gateway()
        obs.wait_for(86)
        assert wait_until(lambda: outbox_depth(gt) == 0)
        msgs = publish_markers(c, nodes, obs)
        c.close()
    obs.close()
    ids = Counter(json.loads(p)["id"] for _, p in msgs)
    assert len(ids) == 86 + 4 and set(ids.values()) == {1}, "every reading exactly once"
    with sqlite3.connect(tmp_path / "gw.db") as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 100
        assert conn.execute("SELECT published FROM mqtt_state").fetchone()[0] == 100


def test_outbox_survives_a_gateway_restart(tmp_path, broker, nodes):
    db = tmp_path / "gw.db"
    # A broker address that refuses: rows wait in the outbox.
    with refusing_port() as unused, GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0),
                                                  mqtt=f"mqtt://127.0.0.1:{unused}/test") as gt:
        c = Client(gt.address)
        for _ in range(4):
            assert c.post(nodes.frame(0)).code == 68
        c.close()
    obs = Observer(broker.observer_port, keep=is_reading)
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0), mqtt=broker.url) as gt:
        assert wait_until(lambda: outbox_depth(gt) == 0)
        msgs = obs.wait_for(8)
    obs.close()
    assert len({json.loads(p)["id"] for _, p in msgs}) == 8 == len(msgs)


def test_mqtt_url_parsing_and_no_password_in_display(monkeypatch):
    u = MqttUrl.parse("mqtt://gw:s3cret@broker.lan/farm")
    assert (u.host, u.port, u.prefix, u.username, u.password) == ("broker.lan", 1883, "farm", "gw", "s3cret")
    assert "s3cret" not in u.display() and "s3cret" not in repr(u)
    assert MqttUrl.parse("mqtts://b").port == 8883 and MqttUrl.parse("mqtt://b").prefix == "fieldnode"
    monkeypatch.setenv("FIELDNODE_MQTT_PASSWORD", "fromenv")
    assert MqttUrl.parse("mqtt://u@b").password == "fromenv"
    for bad in ("http://b", "mqtt://", "mqtt://b:x/", "mqtt://b/a+b"):
        with pytest.raises(FieldnodeError):
            MqttUrl.parse(bad)
    with pytest.raises(FieldnodeError) as exc:
        MqttUrl.parse("http://u:hunter2@b")
    assert "hunter2" not in str(exc.value)


def test_two_workers_publish_every_reading_once_each_device_in_order(tmp_path, broker):
    """Each worker publishes its own shard's outbox (its own devices, so a device's readings
    keep their order); status adds the two publishers up."""
    nodes = Nodes(tmp_path / "farm-north.json", n=6)
    db = tmp_path / "gw.db"
    obs = Observer(broker.observer_port, keep=is_reading)
    with ExitStack() as stack:
        port = stack.enter_context(claimed_port())
        gws = [stack.enter_context(GatewayThread(nodes.keystore(), db, ("127.0.0.1", port), mqtt=broker.url,
                                                 reuse_port=True, worker=w, workers=2, group=f"mqtt-{port}",
                                                 health_interval=0.1)) for w in (0, 1)]
        clients = [Client(("127.0.0.1", port)) for _ in range(4)]
        for n in range(5):
            for i in range(6):
                assert clients[(n + i) % 4].post(nodes.frame(i)).code == 68
        msgs = obs.wait_for(6 * 5 * 2)
        assert wait_until(lambda: all(outbox_depth(gt) == 0 for gt in gws))
        assert wait_until(lambda: read_status(db).mqtt["published"] == 60)
        assert read_status(db).mqtt["state"] == "connected"
        msgs = publish_markers(clients[0], nodes, obs)
        for c in clients:
            c.close()
    obs.close()
    payloads = [json.loads(p) for _, p in msgs]
    assert len({p["id"] for p in payloads}) == 60 + 12 == len(payloads), "every reading exactly once"
    for dev in nodes.devices:
        counters = [p["counter"] for p in payloads if p["device"] == dev.hex() and p["sensor"] == "temp"]
        assert counters == [1, 2, 3, 4, 5, 6], dev.hex()
