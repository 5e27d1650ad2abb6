"""Commands over MQTT: `<prefix>/<site>/<node>/$command` -> a signed command in the gateway's queue.

The payload is a JSON object of actuator -> value (`{"heater": "on", "fan": 0.4}`), with an
optional "ttl" in seconds (default 30). The gateway checks each actuator against the node's board
(named by the node's latest boot frame, looked up in the board files), then signs and queues the
command exactly as `fieldnode command --db` does (commanding.build_command, store.commandqueue.enqueue_command):
it rides on the answer to the node's next frame. Every command taken or refused is logged.

Whoever may publish on these topics may move actuators: the broker's ACL must keep them to the
operators (docs/security.md). Retained messages are refused, or a command would run again at every
gateway start.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..node.boards import BoardError, load_board
from ..node.commanding import build_command, counters_path, next_counter, parse_value
from ..infra.errors import FieldnodeError
from ..node.keystore import KeyEntry, Keystore
from ..infra.paths import BOARDS_DIR
from ..store.commandqueue import enqueue_command
from ..store.sqlite.connection import connect
from ..store.sqlite.shards import shard_paths
from ..store.target import PgTarget, Target
from .mqtt import MqttExtra, node_level, topic_level

log = logging.getLogger(__name__)

TOPIC = "$command"


def command_topic(prefix: str, site: str, node: str, device_hex: str) -> str:
    return f"{prefix}/{topic_level(site)}/{node_level(node, device_hex)}/{TOPIC}"
DEFAULT_TTL = 30.0
MAX_TTL = 3600.0
# A command names a few actuators; anything longer is not one (and is not parsed).
MAX_PAYLOAD = 4096


class CommandRefused(Exception):
    pass


def last_boot_board(conn: sqlite3.Connection, device_hex: str) -> tuple[float, str] | None:
    """(received, board name) of the device's latest boot frame in this database file (or, over
    a PostgreSQL connection, in that database)."""
    if not isinstance(conn, sqlite3.Connection):
        from ..store.postgres.readers import last_boot_board_in
        return last_boot_board_in(conn, device_hex)
    for (series,) in conn.execute("SELECT id FROM series WHERE device=? AND name='board'", (device_hex,)):
        for table in ("samples_recent", "samples"):  # the newest first
            row = conn.execute(
                f"SELECT f.received, s.string FROM {table} s JOIN frames f ON f.id = s.frame_id "
                "WHERE s.series=? AND f.kind=2 AND s.string IS NOT NULL ORDER BY s.id DESC LIMIT 1",
                (series,)).fetchone()
            if row is not None:
                return row
    return None


def board_of(db_path: Target, device_hex: str) -> str | None:
    """The board named in the node's latest stored boot frame (in whichever shard holds it)."""
    if isinstance(db_path, PgTarget):
        from ..store.postgres.readers import last_boot_board as pg_last_boot_board
        row = pg_last_boot_board(db_path, device_hex)
        return None if row is None else row[1]
    found: list[tuple[float, str]] = []
    for path in shard_paths(db_path).values():
        conn = connect(path, create=False)
        try:
            row = last_boot_board(conn, device_hex)
        finally:
            conn.close()
        if row is not None:
            found.append(row)
    return max(found)[1] if found else None


def boards_by_name(boards_dir: Path) -> dict[str, dict]:
    """Every valid board file in boards_dir, by the name the firmware reports (its "name")."""
    boards = {}
    for path in sorted(boards_dir.glob("*.json")):
        try:
            doc = load_board(path)
        except BoardError:
            continue  # `fieldnode board check` says what is wrong with it; it cannot be a node's board
        boards.setdefault(doc["name"], doc)
    return boards


def actuator_value(name: str, driver: str, raw: object) -> bool | float:
    """The value for a relay (on/off, true/false) or a PWM output (0..1); CommandRefused otherwise."""
    value = raw
    if isinstance(raw, str):
        try:
            value = parse_value(raw)
        except FieldnodeError:
            value = None
    if driver == "relay" and type(value) is bool:
        return value
    if driver == "pwm" and type(value) in (int, float) and 0 <= value <= 1:
        return float(value)
    wanted = "on/off (or true/false)" if driver == "relay" else "a number from 0 to 1"
    raise CommandRefused(f"{name} is a {driver}: its value is {wanted}, not {raw!r}")


class MqttCommands(MqttExtra):
    """Subscribes to the command topics and queues what the node's board allows."""

    def __init__(self, db_path: Path | str, prefix: str, site: str, keys: Callable[[], Keystore],
                 boards_dir: Path = BOARDS_DIR) -> None:
        self.db_path: Target = db_path if isinstance(db_path, PgTarget) else Path(db_path)
        self.subscription = f"{prefix}/{topic_level(site)}/+/{TOPIC}"
        self.keys = keys  # the gateway's keystore as it is now (it is re-read when the file changes)
        self.boards_dir = boards_dir

    def connected(self, client: paho.Client, conn: object) -> None:
        # A clean session: commands published while the gateway was away are not taken later.
        # retainAsPublished: a retained command is known as such when it arrives live, too.
        client.subscribe(self.subscription, options=SubscribeOptions(qos=1, retainAsPublished=True))

    def message(self, client: paho.Client, msg: paho.MQTTMessage) -> None:
        if not paho.topic_matches_sub(self.subscription, msg.topic):
            return
        try:
            log.info("%s", self.take(msg.topic, msg.payload, retained=bool(msg.retain)))
        except CommandRefused as exc:
            log.warning("mqtt command on %r refused: %s", msg.topic, exc)

    def take(self, topic: str, payload: bytes, retained: bool = False) -> str:
        """Queues the command; returns the line to log. CommandRefused says why not."""
        if retained:
            raise CommandRefused("it is a retained message (a command must not run again at every "
                                 f"start); clear it with: mosquitto_pub -r -n -t '{topic}'")
        if len(payload) > MAX_PAYLOAD:
            raise CommandRefused(f"{len(payload)} bytes: a command is at most {MAX_PAYLOAD}")
        entry = self._node(topic.split("/")[-2])
        items, ttl = self._items(entry, payload)
        keys_path = self.keys().path
        if keys_path is None:
            raise CommandRefused("the gateway's keystore has no file to keep command counters beside")
        try:
            counter = next_counter(counters_path(keys_path), entry.device,
                                   at_least=self._queued_counter(entry) + 1)
            frame, expires = build_command(entry, counter, items, ttl)
            command_id = enqueue_command(self.db_path, entry.device, frame, expires)
        except OSError as exc:  # e.g. the keystore's directory is read-only for the gateway
            raise CommandRefused(f"cannot keep the command counter in {counters_path(keys_path)}: "
                                 f"{exc.strerror}") from None
        except FieldnodeError as exc:
            raise CommandRefused(str(exc)) from None
        what = ", ".join(f"{n}={'on' if v is True else 'off' if v is False else f'{v:g}'}" for n, v in items)
        return (f"mqtt command #{command_id} queued for {entry.name or entry.device.hex()} ({entry.device.hex()}): "
                f"{what}, counter {counter}, expires in {ttl:g} s")

    def _node(self, level: str) -> KeyEntry:
        keys = self.keys()
        devices = {e.device for e in keys if node_level(e.name, e.device.hex()) == level}
        if len(devices) != 1:
            raise CommandRefused(f"no node {level!r} in the gateway's keystore" if not devices else
                                 f"node name {level!r} belongs to several devices; give them distinct names")
        entry = keys.current(devices.pop())
        if entry is None:
            raise CommandRefused(f"node {level!r} has no valid key")
        return entry

    def _items(self, entry: KeyEntry, payload: bytes) -> tuple[list[tuple[str, bool | float]], float]:
        try:
            request = json.loads(payload)
        except ValueError:
            request = None
        if not isinstance(request, dict) or not request:
            raise CommandRefused('the payload must be a JSON object of actuator: value, e.g. {"heater": "on"}')
        ttl = request.pop("ttl", DEFAULT_TTL)
        if type(ttl) not in (int, float) or not 0 < ttl <= MAX_TTL:
            raise CommandRefused(f"ttl {ttl!r}: seconds, more than 0 and at most {MAX_TTL:g}")
        board_name = board_of(self.db_path, entry.device.hex())
        if board_name is None:
            raise CommandRefused(f"no boot frame of {entry.name or entry.device.hex()} is stored yet, so its "
                                 "board (and its actuators) is not known")
        board = boards_by_name(self.boards_dir).get(board_name)
        if board is None:
            raise CommandRefused(f"the node's board {board_name!r} is not among the board files in "
                                 f"{self.boards_dir} (set $FIELDNODE_BOARDS to the directory of yours)")
        drivers = {a["name"]: a["driver"] for a in board.get("actuators", [])}
        unknown = sorted(set(request) - set(drivers))
        if unknown:
            raise CommandRefused(f"board {board_name!r} has no actuator {', '.join(map(repr, unknown))} "
                                 f"(it has: {', '.join(sorted(drivers)) or 'none'})")
        return [(name, actuator_value(name, drivers[name], raw)) for name, raw in request.items()], float(ttl)

    def _queued_counter(self, entry: KeyEntry) -> int:
        """The highest command counter queued for the device by anyone (`fieldnode command --db`
        on another keystore copy keeps its own counter file): ours must be above it."""
        if isinstance(self.db_path, PgTarget):
            from ..store.postgres.readers import highest_queued_counter
            return highest_queued_counter(self.db_path, entry.device.hex())
        conn = connect(self.db_path, create=False)
        try:
            return conn.execute("SELECT COALESCE(MAX(counter), 0) FROM commands WHERE device=?",
                                (entry.device.hex(),)).fetchone()[0]
        finally:
            conn.close()
