"""MQTT from gateways on one PostgreSQL database: every gateway queues its readings in the shared
outbox, one of them publishes them all (the others stand by), so each reading is published once
and each node's in order; when the publishing gateway stops, another takes over."""
from __future__ import annotations

import json
from contextlib import ExitStack

import psycopg
import pytest

from fieldnode.gateway import GatewayThread, read_status
from support.gateway_peers import Client, Nodes, Observer, is_reading, wait_until


@pytest.fixture
def node_count() -> int:
    return 4


def outbox_depth(target) -> int:
    with psycopg.connect(target.dsn) as conn:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]


def test_readings_through_two_gateways_are_published_once_in_order_and_the_other_takes_over(pg_db, broker,
                                                                                           nodes: Nodes):
    obs = Observer(broker.observer_port, keep=is_reading)
    with ExitStack() as stack:
        gts = [stack.enter_context(GatewayThread(nodes.keystore(), pg_db, ("127.0.0.1", 0), mqtt=broker.url,
                                                 mqtt_retry=0.2, health_interval=0.2)) for _ in range(2)]
        assert wait_until(lambda: sorted(gt.gateway.mqtt_state.split(" ")[0] for gt in gts)
                          == ["connected", "standby"])
        clients = [Client(gt.address) for gt in gts]
        for _ in range(10):
            for i in range(4):  # nodes 0 and 1 on the first gateway, 2 and 3 on the second
                assert clients[i // 2].post(nodes.frame(i)).code == 68
        for i in range(4):  # a retransmission that reached the other gateway: stored already, no message
            assert clients[1 - i // 2].post(nodes.frame(i, counter=10)).code == 67
        assert obs.wait_until(lambda m: len(m) >= 80)
        assert wait_until(lambda: outbox_depth(pg_db) == 0)
        assert wait_until(lambda: read_status(pg_db).mqtt["published"] == 80)
        leader = next(gt for gt in gts if gt.gateway.mqtt_state == "connected")
        other = gts[1 - gts.index(leader)]
        leader.stop()
        assert wait_until(lambda: other.gateway.mqtt_state == "connected", 30)
        client = clients[gts.index(other)]
        for i in range(4):  # every node through the gateway that is left
            assert client.post(nodes.frame(i)).code == 68
        assert obs.wait_until(lambda m: len(m) >= 88)
        markers = {f"{d.hex()}-12-{k}" for d in nodes.devices for k in (0, 1)}
        for i in range(4):
            assert client.post(nodes.frame(i)).code == 68
        assert obs.wait_until(lambda m: markers <= {json.loads(p)["id"] for _, p in m})
        msgs = obs.wait_for(0)
        for c in clients:
            c.close()
    obs.close()
    payloads = [json.loads(p) for _, p in msgs]
    assert len({p["id"] for p in payloads}) == 96 == len(payloads), "every reading exactly once"
    for dev in nodes.devices:
        counters = [p["counter"] for p in payloads if p["device"] == dev.hex() and p["sensor"] == "temp"]
        assert counters == list(range(1, 13)), dev.hex()


def test_home_assistant_discovery_comes_from_the_publishing_gateway_for_every_gateway_s_nodes(pg_db, broker,
                                                                                             nodes: Nodes):
    with ExitStack() as stack:
        gts = [stack.enter_context(GatewayThread(nodes.keystore(), pg_db, ("127.0.0.1", 0), mqtt=broker.url,
                                                 mqtt_retry=0.2, mqtt_discovery="homeassistant"))
               for _ in range(2)]
        for i, gt in enumerate(gts):  # node-1 through one gateway, node-2 through the other
            client = Client(gt.address)
            assert client.post(nodes.frame(i)).code == 68
            client.close()
        assert wait_until(lambda: outbox_depth(pg_db) == 0)
        want = {f"homeassistant/sensor/fieldnode_{nodes.devices[i].hex()}/{name}/config"
                for i in (0, 1) for name in ("temp", "hum")}
        obs = Observer(broker.observer_port, "homeassistant/#")
        assert obs.wait_until(lambda _: want <= set(obs.retained)), sorted(obs.retained)
        obs.close()


def test_an_mqtt_command_is_queued_once_by_the_publishing_gateway_and_delivered_through_either(pg_db, broker,
                                                                                              nodes: Nodes):
    """Every gateway runs the command topic's handler, but only the one connected to the broker
    (the publisher) is subscribed: the command is queued once, whichever gateway the node uses."""
    from fieldnode.store.commandqueue import list_commands
    from fieldnode.wire.frame import KIND_BOOT
    from test_gateway_mqtt_conventions import BOOT, command_frames, publish
    with ExitStack() as stack:
        gts = [stack.enter_context(GatewayThread(nodes.keystore(), pg_db, ("127.0.0.1", 0), mqtt=broker.url,
                                                 mqtt_retry=0.2, mqtt_commands=True)) for _ in range(2)]
        a, b = (Client(gt.address) for gt in gts)
        assert a.post(nodes.frame(0, kind=KIND_BOOT, records=BOOT)).code == 68  # board "virtual"
        assert wait_until(lambda: outbox_depth(pg_db) == 0)  # published: the publisher is subscribed
        publish(broker.observer_port, "test/farm-north/node-1/$command", '{"heater": "on", "ttl": 120}')
        assert wait_until(lambda: len(list_commands(pg_db)) == 1)
        answer = b.post(nodes.frame(0))  # through the other gateway
        assert answer.code == 68 and [r["n"] for r in command_frames(nodes, 0, answer)][:1] == ["heater"]
        assert a.post(nodes.frame(0)).payload == b""  # handed out once (not resent before 30 s)
        a.close()
        b.close()
    (info,) = list_commands(pg_db)
    assert (info.state, info.attempts, info.counter) == ("sent", 1, 1)
