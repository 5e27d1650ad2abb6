"""The gateways' health as the PostgreSQL store holds it, for `fieldnode status`: every gateway
that writes the database (one row a machine, listening address and worker), counters summed
over them, devices, heap readings, the command queue."""
from __future__ import annotations

from typing import Any

import psycopg

from ...infra.errors import FieldnodeError
from ..target import PgTarget
from .connection import connect

HEAP_READINGS = ("heap.free", "heap.low", "heap.block")


def read_into(target: PgTarget, st: Any, stale_after: float) -> None:
    """Fills st (gateway.status.Status) in one snapshot; FieldnodeError naming the database when
    it cannot be read (its gateways cannot reach it either, and do not acknowledge frames)."""
    conn = connect(target, create=False, application="fieldnode-status")
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            _read(conn, st, stale_after)
    except psycopg.Error as exc:
        raise FieldnodeError(f"PostgreSQL {target}: {str(exc).strip().splitlines()[0]}; pass the --db the "
                             "gateways use") from None
    finally:
        conn.close()


def _read(conn: psycopg.Connection, st: Any, stale_after: float) -> None:
    now = st.now
    for (host, listen, worker, pid, started, heartbeat, stopped, pending, exchanges, dedup, outages,
         detail) in conn.execute(
            "SELECT host, listen, worker, pid, started, heartbeat, stopped, batch_pending, exchanges, dedup_bytes, "
            "store_outages, store_detail FROM gateway ORDER BY host, listen, worker"):
        state = "stopped" if stopped else ("running" if now - heartbeat < stale_after else "not responding")
        st.workers.append({"worker": worker, "host": host, "pid": pid, "listen": listen, "started": started,
                           "heartbeat": heartbeat, "stopped": stopped, "state": state, "batch_pending": pending,
                           "exchanges": exchanges, "dedup_bytes": dedup, "store_outages": outages,
                           "store_detail": detail})
    st.counters.update({name: int(v) for name, v in conn.execute(
        "SELECT name, sum(value) FROM counters GROUP BY name")})
    by_device = {}
    for device, name, frames, highest, first, last, source, kind in conn.execute(
            "SELECT device, name, frames, highest_counter, first_seen, last_seen, last_source, last_kind FROM devices"):
        row = {"device": device, "name": name or "", "frames": frames, "highest_counter": highest,
               "first_seen": first, "last_seen": last, "last_source": source, "last_kind": kind}
        st.devices.append(row)
        by_device[device] = row
    for device, name, value, at in conn.execute(
            "SELECT DISTINCT ON (r.id) r.device, r.name, s.value, s.time FROM series r "
            "JOIN samples s ON s.series = r.id WHERE r.name = ANY(%s) ORDER BY r.id, s.time DESC",
            (list(HEAP_READINGS),)):
        target = by_device.get(device)
        if target is None or value is None:
            continue
        heap = target.setdefault("heap", {"time": at})
        heap[name.split(".", 1)[1]] = int(value)
        heap["time"] = max(heap["time"], at)
    st.outbox, st.outbox_oldest = conn.execute("SELECT count(*), min(created) FROM outbox").fetchone()
    row = conn.execute("SELECT url, state, detail, published, updated FROM mqtt_state WHERE id=1").fetchone()
    if row:
        st.mqtt = dict(zip(("url", "state", "detail", "published", "updated"), row, strict=True))
    st.commands = dict(conn.execute(
        "SELECT CASE WHEN state IN ('pending','sent') AND expires<=%s THEN 'expired' ELSE state END AS s, "
        "count(*) FROM commands GROUP BY 1", (now,)).fetchall())
