"""The CoAP frame gateway: receive, verify, store, acknowledge, forward to MQTT, deliver commands.

Library API (docs/gateway.md):
    Gateway, GatewayThread, GatewayEvent  - run the gateway in-process, watch what it does
    enqueue_command, list_commands        - downlink queue for `fieldnode command` (fieldnode.store.commandqueue)
    read_status                           - the health snapshot `fieldnode status` prints
"""
from ..store.commandqueue import CommandInfo, enqueue_command, list_commands
from ..store.location import default_db_path
from .events import GatewayEvent
from .protocol import DEFAULT_PORT, Gateway, site_from_keystore
from .status import read_status
from .thread import GatewayThread

__all__ = [
    "Gateway", "GatewayThread", "GatewayEvent", "DEFAULT_PORT", "enqueue_command", "list_commands",
    "CommandInfo", "read_status", "default_db_path", "site_from_keystore",
]
