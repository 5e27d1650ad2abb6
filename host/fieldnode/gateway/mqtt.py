"""Readings to MQTT: topics and payloads, and the publisher that drains the outbox table.

The gateway's commit writes one outbox row per reading in the same transaction as the frame, so
a reading is either stored *and* queued for MQTT, or neither. The publisher sends rows with
QoS 1 and deletes a row only when the broker has acknowledged it (PUBACK). While the broker is
down the rows wait; when it is back they go out, oldest first. A row is lost never; it goes out
twice only if the broker's PUBACK is lost (the connection drops, or the gateway dies, between the
broker taking the message and the delete committing): each payload carries a stable "id" so
consumers can drop such a repeat.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from ..infra.errors import FieldnodeError
from ..store.sqlite.connection import connect
from ..wire.frame import KIND_NAMES, Frame
from ..wire.hostport import is_host

log = logging.getLogger(__name__)
SAY_EVERY_S = 30.0  # the console's rate limit for "cannot connect to the broker"

DEFAULT_PREFIX = "fieldnode"
# json.dumps with separators builds an encoder per call; one encoder is ~3x faster per reading.
_to_json = json.JSONEncoder(separators=(",", ":")).encode
PASSWORD_ENV = "FIELDNODE_MQTT_PASSWORD"


@dataclass(frozen=True)
class MqttUrl:
    """mqtt://[user[:password]@]host[:port][/prefix] (mqtts:// for TLS, default port 8883)."""
    host: str
    port: int = 1883
    prefix: str = DEFAULT_PREFIX
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> MqttUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise FieldnodeError(f"--mqtt {cls._redact(url)}: expected mqtt://HOST[:PORT][/PREFIX] "
                                 "(or mqtts:// for TLS), e.g. mqtt://127.0.0.1:1883/fieldnode")
        if not is_host(parts.hostname):
            raise FieldnodeError(f"--mqtt {cls._redact(url)}: {parts.hostname!r} is neither an IP address nor "
                                 "a host name")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            raise FieldnodeError(f"--mqtt {cls._redact(url)}: the port is not a number 1-65535") from None
        prefix = parts.path.strip("/") or DEFAULT_PREFIX
        if any(c in prefix for c in "+#\0"):
            raise FieldnodeError(f"--mqtt: topic prefix {prefix!r} must not contain + or #")
        password = unquote(parts.password) if parts.password else os.environ.get(PASSWORD_ENV)
        return cls(parts.hostname, port, prefix, unquote(parts.username) if parts.username else None,
                   password, parts.scheme == "mqtts")

    @staticmethod
    def _redact(url: str) -> str:
        parts = urlsplit(url)
        if parts.password:
            return url.replace(f":{parts.password}@", ":***@", 1)
        return url

    def display(self) -> str:
        """The URL without the password (for logs and the status table)."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}/{self.prefix}"


def topic_level(name: str) -> str:
    """A name made safe as one topic level: no separators or wildcards, never empty, and no
    leading $ (levels beginning with $ are the gateway's own: $availability, $command)."""
    out = "".join("_" if c in "/+#\0" or c.isspace() else c for c in name)
    if out.startswith("$"):
        out = "_" + out[1:]
    return out or "_"


def node_level(node: str, device_hex: str) -> str:
    """A node's topic level: its keystore name, or its device id when it has none."""
    return topic_level(node) if node else device_hex


def message_id(frame: Frame, index: int) -> str:
    """Stable identity of one reading: device, counter (unique per device), record index."""
    return f"{frame.device.hex()}-{frame.counter}-{index}"


class ReadingMessages:
    """Builds (topic, payload) per reading: <prefix>/<site>/<node>/<sensor> and a JSON object.

    Payload: {"id", "device", "node", "kind", "counter", "sensor", "time", "value", "unit"?,
    "error"?}; value is a number, string or boolean, or null with "error" for a failed reading.
    """

    def __init__(self, prefix: str, site: str) -> None:
        self.base = f"{prefix}/{topic_level(site)}/"

    def __call__(self, frame: Frame, node: str, records: list[dict] | None = None) -> list[tuple[str, str]]:
        dev = frame.device.hex()
        who = node_level(node, dev)
        kind = KIND_NAMES[frame.kind]
        out = []
        for i, rec in enumerate(records if records is not None else frame.records()):
            obj = {"id": message_id(frame, i), "device": dev, "node": node or None, "kind": kind,
                   "counter": frame.counter, "sensor": rec["n"], "time": rec["t"]}
            if "err" in rec:
                obj["value"], obj["error"] = None, rec["err"]
            else:
                obj["value"] = rec.get("v", rec.get("vs", rec.get("vb")))
            if "u" in rec:
                obj["unit"] = rec["u"]
            out.append((f"{self.base}{who}/{topic_level(rec['n'])}",
                        _to_json(obj)))
        return out


class MqttExtra:
    """What the publisher does besides draining the outbox, on its own connection and thread:
    availability (mqtt_availability.py), discovery (mqtt_discovery.py), the command topic
    (mqtt_commands.py). Each hook runs on the publisher's thread; conn is its database connection."""

    def will(self) -> tuple[str, str] | None:
        """(topic, payload) the broker publishes, retained, when this connection dies."""
        return None

    def connected(self, client: paho.Client, conn: sqlite3.Connection) -> None:
        """A new connection (retained state may be gone with a restarted broker: publish it again)."""

    def tick(self, client: paho.Client, conn: sqlite3.Connection) -> None:
        """Called on every round of the publishing loop (at least every poll interval)."""

    def reading(self, client: paho.Client, topic: str, payload: str) -> None:
        """An outbox row is about to be published."""

    def message(self, client: paho.Client, msg: paho.MQTTMessage) -> None:
        """A message arrived on a subscription."""


# MQTT 5: a DISCONNECT that asks the broker to publish the will anyway (our "offline").
_DISCONNECT_WITH_WILL = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")


@dataclass
class _Flight:
    """One connection's publishing: paho message id -> outbox row id for what is in flight, and
    what paho's callbacks reported (on paho's loop, called from _pump's thread)."""
    inflight: dict[int, int] = field(default_factory=dict)
    acked: list[int] = field(default_factory=list)  # outbox row ids the broker acknowledged
    failed: list[str] = field(default_factory=list)
    lost: dict[str, object] = field(default_factory=dict)
    last_id: int = 0  # the last outbox row sent

    def on_publish(self, c, u, mid, rc, props) -> None:
        row = self.inflight.pop(mid, None)
        if row is None:
            return
        if rc.is_failure:  # e.g. "Not authorized": the broker took the message but dropped it
            self.failed.append(str(rc))
        else:
            self.acked.append(row)

    def on_disconnect(self, c, u, flags, rc, props) -> None:
        self.lost.setdefault("rc", rc)


class OutboxPublisher(threading.Thread):
    """Publishes outbox rows with QoS 1; deletes each on the broker's PUBACK.

    One paho client per connection: when a connection drops, its client is dropped with whatever
    it had in flight, and the next connection starts again from the oldest row still in the
    outbox. That keeps the outbox the only queue (paho's own resend queue would duplicate it).
    """

    def __init__(self, db_path: Path | str, url: MqttUrl, *, client_id: str, retry: float = 2.0,
                 window: int = 100, poll: float = 0.05, retain: bool = True,
                 extras: tuple[MqttExtra, ...] = ()) -> None:
        super().__init__(name="fieldnode-mqtt", daemon=True)
        self.db_path = db_path
        self.url = url
        self.client_id = client_id
        self.retry = retry
        self.window = window
        self.poll = poll
        # Each reading topic keeps its latest value at the broker: a dashboard that connects
        # later shows it at once. A consumer that records history ignores the retain flag.
        self.retain = retain
        self.extras = extras
        self.published = 0
        self.state = "starting"
        self.detail = ""
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._conn: sqlite3.Connection | None = None
        self._failures = 0  # connection attempts failed in a row
        self._next_say = 0.0  # monotonic time before which another failure is not printed

    def wake(self) -> None:
        """New rows were committed (saves waiting for the next poll)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self._wake.set()
        self.join(timeout)

    def run(self) -> None:
        self._conn = connect(self.db_path)
        try:
            while not self._stop_event.is_set():
                client = self._connect()
                if client is None:
                    self._stop_event.wait(self.retry)
                    continue
                self._pump(client)
                try:
                    # Stopping for good: the broker publishes our will ("offline"), as it would
                    # for a crash; otherwise (reconnecting) a plain disconnect.
                    stopping = self._stop_event.is_set() and self._will() is not None
                    client.disconnect(_DISCONNECT_WITH_WILL if stopping else None)
                except Exception:  # the socket may already be gone; nothing to do about it
                    pass
                if not self._stop_event.is_set():
                    self._stop_event.wait(self.retry)
        finally:
            self._set_state("stopped", "")
            self._conn.close()

    def _connect(self) -> paho.Client | None:
        result: dict[str, object] = {}
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv5)
        if self.url.username:
            client.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            client.tls_set()
        client.on_connect = lambda c, u, flags, rc, props: result.setdefault("rc", rc)
        client.on_message = self._on_message
        will = self._will()
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.max_inflight_messages_set(self.window)
        try:
            client.connect(self.url.host, self.url.port, keepalive=30)
            deadline = time.monotonic() + 10
            while "rc" not in result and time.monotonic() < deadline and not self._stop_event.is_set():
                if client.loop(0.1) != paho.MQTT_ERR_SUCCESS:
                    break
        except (OSError, ValueError) as exc:
            self._failed(f"cannot connect: {exc}")
            return None
        rc = result.get("rc")
        if rc is None or rc.is_failure:
            self._failed(f"broker refused: {rc}" if rc is not None else "no CONNACK")
            try:
                client.disconnect()
            except Exception:
                pass
            return None
        if self._failures:
            log.warning("mqtt %s: connected after %d failed attempt(s)", self.url.display(), self._failures)
        self._failures, self._next_say = 0, 0.0
        self._set_state("connected", "")
        for extra in self.extras:
            extra.connected(client, self._conn)
        return client

    def _will(self) -> tuple[str, str] | None:
        return next((w for w in (e.will() for e in self.extras) if w is not None), None)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        for extra in self.extras:
            try:
                extra.message(client, msg)
            except Exception:  # one bad message must not stop the publishing
                log.exception("handling the MQTT message on %r failed", msg.topic)

    def _failed(self, detail: str) -> None:
        # On the console (a warning reaches stderr even with logging not configured) at the first
        # failure and then at most every SAY_EVERY_S: a gateway without its broker must say so,
        # but not fill the terminal at one line per retry.
        self._failures += 1
        now = time.monotonic()
        if now >= self._next_say:
            self._next_say = now + SAY_EVERY_S
            log.warning("mqtt %s: %s (attempt %d; retrying every %.0f s, readings wait in the database)",
                        self.url.display(), detail, self._failures, self.retry)
        self._set_state("disconnected", detail)

    def _pump(self, client: paho.Client) -> None:
        flight = _Flight()
        client.on_publish = flight.on_publish
        client.on_disconnect = flight.on_disconnect
        draining_since: float | None = None
        while True:
            if self._stop_event.is_set():
                # Give what is in flight a moment to be acknowledged, then go.
                draining_since = draining_since or time.monotonic()
                if not flight.inflight or time.monotonic() - draining_since > 2.0:
                    break
            elif len(flight.inflight) < self.window:
                self._publish_more(client, flight)
            for extra in self.extras:
                extra.tick(client, self._conn)
            busy = bool(flight.inflight)
            rc = client.loop(0.01 if busy else 0)
            if not self._settle(flight, rc):
                return  # reconnect later and start over from the oldest row
            if not busy:
                self._wake.wait(self.poll)
                self._wake.clear()

    def _next_rows(self, flight: _Flight) -> list[tuple[int, str, str]]:
        """The next outbox rows after the last one sent, up to the window."""
        return self._conn.execute("SELECT id, topic, payload FROM outbox WHERE id>? ORDER BY id LIMIT ?",
                                  (flight.last_id, self.window - len(flight.inflight))).fetchall()

    def _publish_more(self, client: paho.Client, flight: _Flight) -> None:
        for row_id, topic, payload in self._next_rows(flight):
            for extra in self.extras:
                extra.reading(client, topic, payload)
            info = client.publish(topic, payload, qos=1, retain=self.retain)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                flight.lost.setdefault("rc", info.rc)
                break
            flight.inflight[info.mid] = row_id
            flight.last_id = row_id

    def _settle(self, flight: _Flight, rc: int) -> bool:
        """Deletes the rows the broker acknowledged; False when this connection is done with (a
        publish refused, the connection lost)."""
        if flight.acked:
            self._delete_rows(flight.acked)
            self.published += len(flight.acked)
            flight.acked.clear()
        if flight.failed:
            self._set_state("error", f"broker refused a publish: {flight.failed[-1]}")
            return False
        if rc != paho.MQTT_ERR_SUCCESS or "rc" in flight.lost:
            self._set_state("disconnected", f"connection lost: {flight.lost.get('rc', rc)}")
            return False
        return True

    def _delete_rows(self, ids: list[int]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids])
            conn.execute("UPDATE mqtt_state SET published=published+?, updated=? WHERE id=1",
                         (len(ids), time.time()))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _set_state(self, state: str, detail: str) -> None:
        if (state, detail) == (self.state, self.detail):
            return
        self.state, self.detail = state, detail
        if state != "connected":
            log.info("mqtt %s: %s %s", self.url.display(), state, detail)
        self._record_state(state, detail)

    def _record_state(self, state: str, detail: str) -> None:
        """The state where `fieldnode status` reads it."""
        try:
            self._conn.execute(
                "INSERT INTO mqtt_state (id, url, state, detail, published, updated) VALUES (1,?,?,?,0,?) "
                "ON CONFLICT (id) DO UPDATE SET url=excluded.url, state=excluded.state, "
                "detail=excluded.detail, updated=excluded.updated",
                (self.url.display(), state, detail, time.time()))
        except sqlite3.Error as exc:  # health only: the publishing itself goes on
            log.warning("cannot record mqtt state: %s", exc)
