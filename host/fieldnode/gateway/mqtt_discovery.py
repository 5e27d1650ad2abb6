"""Home Assistant MQTT discovery: one retained config per telemetry reading of each node, and
with commands over MQTT one per actuator of its board (a switch for a relay, a number for PWM).

Published just before the first reading of a sensor on each connection (so after a broker
restart too), at `<discovery prefix>/<sensor|binary_sensor>/fieldnode_<device>/<reading>/config`.
The entity reads the reading's own topic (retained, so it shows a value at once), is available
when both the gateway and the node are ("availability_mode": "all"), and belongs to one Home
Assistant device per node. Unit and device class come from the SenML unit (UNITS).
Format: https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery
"""
from __future__ import annotations

import json
import logging
import re
import sqlite3
from pathlib import Path

import paho.mqtt.client as paho

from ..infra.paths import BOARDS_DIR
from .mqtt import MqttExtra
from .mqtt_availability import gateway_topic, node_topic
from .mqtt_commands import boards_by_name, command_topic, last_boot_board

DEFAULT_PREFIX = "homeassistant"

log = logging.getLogger(__name__)

# SenML unit (RFC 8428 §12.1, and the secondary units of RFC 8798) -> Home Assistant's unit and
# device class. Home Assistant accepts only certain units for each class (its sensor docs), so
# Cel is sent as °C and %RH as %. A unit not here is passed on as is, with no device class.
UNITS: dict[str, tuple[str, str]] = {
    "Cel": ("°C", "temperature"),
    "K": ("K", "temperature"),
    "%RH": ("%", "humidity"),
    "Pa": ("Pa", "pressure"),
    "hPa": ("hPa", "pressure"),
    "kPa": ("kPa", "pressure"),
    "bar": ("bar", "pressure"),
    "mbar": ("mbar", "pressure"),
    "V": ("V", "voltage"),
    "mV": ("mV", "voltage"),
    "A": ("A", "current"),
    "mA": ("mA", "current"),
    "W": ("W", "power"),
    "kW": ("kW", "power"),
    "Wh": ("Wh", "energy"),
    "kWh": ("kWh", "energy"),
    "Hz": ("Hz", "frequency"),
    "lx": ("lx", "illuminance"),
    "m3": ("m³", "volume"),
}

_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")


def discovery_id(text: str) -> str:
    """Home Assistant's node_id/object_id alphabet: letters, digits, _ and -."""
    return _NOT_ID.sub("_", text) or "_"


def _entity(name: str, unique_id: str, prefix: str, site: str, node: str, dev: str) -> dict:
    """What every entity of a node has: available when the gateway and the node are, one device."""
    return {
        "name": name,
        "unique_id": unique_id,
        "availability": [{"topic": gateway_topic(prefix, site)}, {"topic": node_topic(prefix, site, node, dev)}],
        "availability_mode": "all",
        "device": {"identifiers": [f"fieldnode_{dev}"], "name": node or dev, "manufacturer": "fieldnode",
                   "connections": [["mac", ":".join(dev[i:i + 2] for i in range(0, 12, 2))]]},
    }


def sensor_config(reading_topic: str, reading: dict, *, prefix: str, site: str,
                  discovery: str = DEFAULT_PREFIX) -> tuple[str, dict]:
    """(config topic, config) for one reading, from its MQTT payload (mqtt.ReadingMessages)."""
    dev, node, sensor, unit = reading["device"], reading.get("node") or "", reading["sensor"], reading.get("unit")
    config = _entity(sensor, f"fieldnode_{dev}_{discovery_id(sensor)}", prefix, site, node, dev)
    config["state_topic"] = reading_topic
    value = reading.get("value")
    if isinstance(value, bool):
        component = "binary_sensor"
        # "None" is Home Assistant's payload for an unknown state (a failed reading).
        config["value_template"] = ("{% if value_json.value is none %}None{% elif value_json.value %}ON"
                                    "{% else %}OFF{% endif %}")
    else:
        component = "sensor"
        config["value_template"] = "{{ value_json.value }}"
        if unit:
            ha_unit, device_class = UNITS.get(unit, (unit, None))
            config["unit_of_measurement"] = ha_unit
            if device_class:
                config["device_class"] = device_class
        if not isinstance(value, str):
            config["state_class"] = "measurement"
    return f"{discovery}/{component}/fieldnode_{dev}/{discovery_id(sensor)}/config", config


def actuator_configs(dev: str, node: str, board: dict, *, prefix: str, site: str,
                     discovery: str = DEFAULT_PREFIX) -> list[tuple[str, dict]]:
    """(config topic, config) for each actuator of the board: a switch (relay) or a number (PWM
    duty 0..1) that publishes on the node's $command topic. Optimistic: the node reports no
    output state, so Home Assistant shows what it last sent (the command's ack says whether the
    node applied it: `fieldnode status`)."""
    out = []
    command = command_topic(prefix, site, node, dev)
    for act in board.get("actuators", []):
        name = act["name"]
        config = _entity(name, f"fieldnode_{dev}_actuator_{discovery_id(name)}", prefix, site, node, dev)
        config.update(command_topic=command, optimistic=True)
        if act["driver"] == "relay":
            component = "switch"
            config.update(payload_on=json.dumps({name: "on"}), payload_off=json.dumps({name: "off"}))
        else:
            component = "number"
            config.update(command_template="{" + json.dumps(name) + ": {{ value }}}", min=0, max=1,
                          step=0.01, mode="slider")
        out.append((f"{discovery}/{component}/fieldnode_{dev}/{discovery_id(name)}/config", config))
    return out


class Discovery(MqttExtra):
    """Announces each telemetry reading's entity once per connection, before its first value;
    with actuators, each node's actuator entities once its board is known (from its boot frame)."""

    def __init__(self, prefix: str, site: str, discovery: str = DEFAULT_PREFIX, *, actuators: bool = False,
                 boards_dir: Path = BOARDS_DIR) -> None:
        self.prefix, self.site, self.discovery = prefix, site, discovery
        self.actuators = actuators
        self.boards_dir = boards_dir
        self._announced: set[str] = set()  # reading topics, on this connection
        self._boards: dict[str, str] = {}  # device -> board whose actuators were announced, on this connection

    def connected(self, client: paho.Client, conn: sqlite3.Connection) -> None:
        self._announced.clear()
        self._boards.clear()
        if not self.actuators:
            return
        boards = boards_by_name(self.boards_dir)
        try:
            known = [(device, name, last_boot_board(conn, device))
                     for device, name in conn.execute("SELECT device, name FROM devices").fetchall()]
        except sqlite3.Error as exc:  # a node's next boot frame announces it all the same
            log.warning("cannot read the nodes' boards for discovery: %s", exc)
            return
        for device, name, found in known:
            if found is not None:
                self._announce_actuators(client, device, name or "", found[1], boards)

    def _announce_actuators(self, client: paho.Client, dev: str, node: str, board_name: str,
                            boards: dict[str, dict] | None = None) -> None:
        if self._boards.get(dev) == board_name:
            return
        board = (boards if boards is not None else boards_by_name(self.boards_dir)).get(board_name)
        if board is None:
            return  # not among our board files: a command to it would be refused (and logged)
        for topic, config in actuator_configs(dev, node, board, prefix=self.prefix, site=self.site,
                                              discovery=self.discovery):
            client.publish(topic, json.dumps(config, ensure_ascii=False), qos=1, retain=True)
        self._boards[dev] = board_name

    def reading(self, client: paho.Client, topic: str, payload: str) -> None:
        if topic in self._announced:
            return
        reading = json.loads(payload)
        if (self.actuators and reading.get("kind") == "boot" and reading.get("sensor") == "board"
                and isinstance(reading.get("value"), str)):
            self._announce_actuators(client, reading["device"], reading.get("node") or "", reading["value"])
            return
        if reading.get("kind") != "telemetry" or reading.get("value") is None:
            return  # events, boot and ack records are not sensors; a failed reading has no type
        config_topic, config = sensor_config(topic, reading, prefix=self.prefix, site=self.site,
                                             discovery=self.discovery)
        client.publish(config_topic, json.dumps(config, ensure_ascii=False), qos=1, retain=True)
        self._announced.add(topic)
