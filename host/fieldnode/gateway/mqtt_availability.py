"""Availability on MQTT: is the gateway up, and has each node been heard from lately.

`<prefix>/<site>/$availability` is the gateway's: "online" once connected, "offline" as its last
will, which the broker publishes when the connection dies (a crash, kill -9, a cable pulled) and,
on request, when the gateway stops. `<prefix>/<site>/<node>/$availability` is a node's: "online"
while its last stored frame is younger than the node timeout, "offline" after. All retained, so
whoever subscribes later gets the current state at once.

A node's state is derived from the `devices` table (its last_seen), which the commit writes, so
it holds across gateway restarts: after a restart every node is published again, online or not.
With several workers each publishes its own devices (they are in its shard) and each connection
carries the gateway's will: a worker that dies takes its nodes with it.
"""
from __future__ import annotations

import logging
import sqlite3
import time

import paho.mqtt.client as paho

from .mqtt import MqttExtra, node_level, topic_level

ONLINE = "online"
OFFLINE = "offline"
TOPIC = "$availability"
DEFAULT_NODE_TIMEOUT = 300.0

log = logging.getLogger(__name__)


def gateway_topic(prefix: str, site: str) -> str:
    return f"{prefix}/{topic_level(site)}/{TOPIC}"


def node_topic(prefix: str, site: str, node: str, device_hex: str) -> str:
    return f"{prefix}/{topic_level(site)}/{node_level(node, device_hex)}/{TOPIC}"


class Availability(MqttExtra):
    """Publishes the gateway's and its nodes' availability, retained, as it changes."""

    def __init__(self, prefix: str, site: str, node_timeout: float = DEFAULT_NODE_TIMEOUT) -> None:
        self.prefix, self.site = prefix, site
        self.node_timeout = node_timeout
        self.gateway_topic = gateway_topic(prefix, site)
        # A node going silent is noticed within a second (sooner for short test timeouts).
        self.check_every = min(1.0, node_timeout / 4)
        self._published: dict[str, str] = {}  # topic -> state, on this connection
        self._next_check = 0.0

    def will(self) -> tuple[str, str]:
        return self.gateway_topic, OFFLINE

    def connected(self, client: paho.Client, conn: sqlite3.Connection) -> None:
        self._published.clear()
        client.publish(self.gateway_topic, ONLINE, qos=1, retain=True)
        self._next_check = 0.0

    def tick(self, client: paho.Client, conn: sqlite3.Connection) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.check_every
        try:
            states = self.node_states(conn, time.time())
        except sqlite3.Error as exc:  # e.g. locked past the busy timeout: the next round tries again
            log.warning("cannot read the nodes' last frames for their availability: %s", exc)
            return
        for topic, state in states:
            if self._published.get(topic) != state:
                client.publish(topic, state, qos=1, retain=True)
                self._published[topic] = state

    def node_states(self, conn: sqlite3.Connection, now: float) -> list[tuple[str, str]]:
        """(topic, online/offline) of every node this database has stored a frame of."""
        return [(node_topic(self.prefix, self.site, name or "", device),
                 ONLINE if now - last_seen < self.node_timeout else OFFLINE)
                for device, name, last_seen in conn.execute("SELECT device, name, last_seen FROM devices")]
