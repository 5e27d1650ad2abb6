"""Home Assistant MQTT discovery: one retained config per telemetry reading of each node.

Published just before the first reading of a sensor on each connection (so after a broker
restart too), at `<discovery prefix>/<sensor|binary_sensor>/fieldnode_<device>/<reading>/config`.
The entity reads the reading's own topic (retained, so it shows a value at once), is available
when both the gateway and the node are ("availability_mode": "all"), and belongs to one Home
Assistant device per node. Unit and device class come from the SenML unit (UNITS).
Format: https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery
"""
from __future__ import annotations

import json
import re

import paho.mqtt.client as paho

from .mqtt import MqttExtra
from .mqtt_availability import gateway_topic, node_topic

DEFAULT_PREFIX = "homeassistant"

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


def sensor_config(reading_topic: str, reading: dict, *, prefix: str, site: str,
                  discovery: str = DEFAULT_PREFIX) -> tuple[str, dict]:
    """(config topic, config) for one reading, from its MQTT payload (mqtt.ReadingMessages)."""
    dev, node, sensor, unit = reading["device"], reading.get("node") or "", reading["sensor"], reading.get("unit")
    config: dict = {
        "name": sensor,
        "unique_id": f"fieldnode_{dev}_{discovery_id(sensor)}",
        "state_topic": reading_topic,
        "availability": [{"topic": gateway_topic(prefix, site)}, {"topic": node_topic(prefix, site, node, dev)}],
        "availability_mode": "all",
        "device": {"identifiers": [f"fieldnode_{dev}"], "name": node or dev, "manufacturer": "fieldnode",
                   "connections": [["mac", ":".join(dev[i:i + 2] for i in range(0, 12, 2))]]},
    }
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


class Discovery(MqttExtra):
    """Announces each telemetry reading's entity once per connection, before its first value."""

    def __init__(self, prefix: str, site: str, discovery: str = DEFAULT_PREFIX) -> None:
        self.prefix, self.site, self.discovery = prefix, site, discovery
        self._announced: set[str] = set()  # reading topics, on this connection

    def connected(self, client: paho.Client, conn: object) -> None:
        self._announced.clear()

    def reading(self, client: paho.Client, topic: str, payload: str) -> None:
        if topic in self._announced:
            return
        reading = json.loads(payload)
        if reading.get("kind") != "telemetry" or reading.get("value") is None:
            return  # events, boot and ack records are not sensors; a failed reading has no type
        config_topic, config = sensor_config(topic, reading, prefix=self.prefix, site=self.site,
                                             discovery=self.discovery)
        client.publish(config_topic, json.dumps(config, ensure_ascii=False), qos=1, retain=True)
        self._announced.add(topic)
