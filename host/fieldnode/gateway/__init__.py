"""The CoAP frame gateway: receive, verify, store, acknowledge, forward to MQTT, deliver commands.

Library API (docs/gateway.md):
    Gateway, GatewayThread, GatewayEvent  - run the gateway in-process, watch what it does
    enqueue_command, list_commands        - downlink queue for `fieldnode command`
    read_status                           - the health snapshot `fieldnode status` prints
"""
from .server import DEFAULT_PORT, Gateway, GatewayEvent, GatewayThread, site_from_keystore
from .status import read_status
from .store import CommandInfo, default_db_path, enqueue_command, list_commands

__all__ = [
    "Gateway", "GatewayThread", "GatewayEvent", "DEFAULT_PORT", "enqueue_command", "list_commands",
    "CommandInfo", "read_status", "default_db_path", "site_from_keystore",
]
