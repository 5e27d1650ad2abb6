"""Publishing the outbox of a PostgreSQL store: one gateway at a time, so each reading is
published once across all the gateways on the database, and each node's readings in order.

Every gateway's batches queue their readings in `outbox`, and every gateway runs this publisher,
but only the one holding a PostgreSQL advisory lock publishes: it sends the rows in id order and
deletes each on the broker's PUBACK, as the SQLite publisher does (mqtt.OutboxPublisher). The
others stand by and try for the lock every `retry` seconds; the lock belongs to the publisher's
database session, so when that gateway stops, dies or loses the database, the server releases it
and another gateway takes over from the oldest row left. A row in flight when that happens is
published again (at least once, as with SQLite across a restart).

Order: a gateway's batches take ids from one sequence as they are written and commit in that
order, and a node sends to one gateway at a time, so a node's rows are in id order; rows of
another gateway's batch that commits later with lower ids are published when they appear (the
query takes the lowest ids not yet sent, not those above the last one sent)."""
from __future__ import annotations

import logging
import time

import psycopg

from ..store.postgres.connection import connect
from ..store.target import PgTarget
from .mqtt import _DISCONNECT_WITH_WILL, MqttExtra, MqttUrl, OutboxPublisher, _Flight

log = logging.getLogger(__name__)

PUBLISHER_LOCK = 0x6D717474  # 'mqtt': held by the one gateway that publishes


class PgOutboxPublisher(OutboxPublisher):
    def __init__(self, target: PgTarget, url: MqttUrl, *, client_id: str, retry: float = 2.0,
                 extras: tuple[MqttExtra, ...] = ()) -> None:
        super().__init__(target, url, client_id=client_id, retry=retry, extras=extras)
        self.target = target

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                if self._lead():
                    self._publish_while_leading()
                self._release()
                self._stop_event.wait(self.retry)
        finally:
            self._release()
            self.state = "stopped"

    def _lead(self) -> bool:
        """True when this gateway holds the publisher's lock (connecting first if need be)."""
        try:
            if self._conn is None or self._conn.broken or self._conn.closed:
                self._conn = connect(self.target, application="fieldnode-mqtt")
            if self._conn.execute("SELECT pg_try_advisory_lock(%s)", (PUBLISHER_LOCK,)).fetchone()[0]:
                return True
        except Exception as exc:  # the database is out of reach: the writer says so; try again later
            log.debug("mqtt publisher cannot reach %s: %s", self.target, exc)
            self._release()
            return False
        self.state, self.detail = "standby", "another gateway on this database publishes"
        return False

    def _publish_while_leading(self) -> None:
        """The SQLite publisher's loop (connect, publish, reconnect) while the lock is held; a
        database error ends it, and with it the lock."""
        log.info("mqtt %s: this gateway publishes the readings of every gateway on %s", self.url.display(),
                 self.target)
        while not self._stop_event.is_set():
            try:
                client = self._connect()  # the extras read the database when connected
            except psycopg.Error as exc:
                log.warning("mqtt publisher lost %s (%s); another gateway may take over", self.target, exc)
                return
            if client is None:
                self._stop_event.wait(self.retry)
                continue
            try:
                self._pump(client)
            except psycopg.Error as exc:
                log.warning("mqtt publisher lost %s (%s); another gateway may take over", self.target, exc)
                self.state, self.detail = "disconnected", "database lost"
                return
            finally:
                try:
                    stopping = self._stop_event.is_set() and self._will() is not None
                    client.disconnect(_DISCONNECT_WITH_WILL if stopping else None)
                except Exception:  # the socket may already be gone
                    pass
            if not self._stop_event.is_set():
                self._stop_event.wait(self.retry)

    def _release(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the session's advisory lock goes with it
        self._conn = None

    def _next_rows(self, flight: _Flight) -> list[tuple[int, str, str]]:
        """The oldest rows not in flight, up to the window (ids from several gateways' commits
        need not arrive in order, so not "after the last one sent")."""
        return self._conn.execute(
            "SELECT id, topic, payload FROM outbox WHERE id <> ALL(%s) ORDER BY id LIMIT %s",
            (list(flight.inflight.values()), self.window - len(flight.inflight))).fetchall()

    def _delete_rows(self, ids: list[int]) -> None:
        with self._conn.transaction():
            self._conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", (ids,))
            self._conn.execute("UPDATE mqtt_state SET published=published+%s, updated=%s WHERE id=1",
                               (len(ids), time.time()))

    def _record_state(self, state: str, detail: str) -> None:
        if self._conn is None:
            return  # no connection to the database now: nowhere to record it
        try:
            self._conn.execute(
                "INSERT INTO mqtt_state (id, url, state, detail, published, updated) VALUES (1,%s,%s,%s,0,%s) "
                "ON CONFLICT (id) DO UPDATE SET url=excluded.url, state=excluded.state, "
                "detail=excluded.detail, updated=excluded.updated",
                (self.url.display(), state, detail, time.time()))
        except psycopg.Error as exc:  # health only: the publishing itself goes on
            log.warning("cannot record mqtt state: %s", exc)
