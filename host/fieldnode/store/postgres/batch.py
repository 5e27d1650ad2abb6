"""One batch of frames in one PostgreSQL transaction: counters claimed, rows copied in.

The order of the statements is the order of the locks, the same in every gateway, so two
gateways' batches wait for one another but never deadlock: replay rows by key id, then
declarations by (device, id), then new series by (device, name, unit), then devices by id.
Frames and samples go in with COPY, their ids taken from the sequences first. A declaration
frame (frame format v2) claims no counter: it is outside the replay window (declarations.py)."""
from __future__ import annotations

from collections.abc import Sequence

import psycopg

from ...wire.frame import KIND_ACK, SENML_BT, SENML_ERR, SENML_N, SENML_T, SENML_U, SENML_V, SENML_VB, SENML_VS, \
    present
from ..records import OutboxRows, StoreItem
from .replay import CLAIM, refusal

FRAME_NAMES = "id, device, counter, kid, kind, alg, tag, base_time, received, source, raw"
SAMPLE_NAMES = "id, frame_id, series, time, value, string, bool, err"

SeriesKey = tuple[str, str, str]


def claim_counters(conn: psycopg.Connection, items: Sequence[StoreItem]) -> list[str | None]:
    """Per item: None when its counter was new (and is now taken), else 'duplicate' or 'replay'.
    The items are frames of the replay window (no declaration)."""
    if not items:
        return []
    order = sorted(range(len(items)), key=lambda i: items[i].frame.kid)  # stable: a key's frames in order
    with conn.cursor() as cur:
        cur.executemany(CLAIM, [(items[i].frame.kid.hex(), items[i].frame.device.hex(), items[i].frame.counter)
                                for i in order], returning=True)
        won = []
        while True:
            won.append(cur.fetchone() is not None)
            if not cur.nextset():
                break
    refused: list[str | None] = [None] * len(items)
    tags: dict[tuple[bytes, int], bytes] = {}
    for i, taken in zip(order, won, strict=True):
        f = items[i].frame
        if taken:
            tags[f.kid, f.counter] = f.tag
        else:
            refused[i] = refusal(conn, f.kid.hex(), f.counter, f.tag, tags.get((f.kid, f.counter)))
    return refused


class SeriesIds:
    """(device, name, unit) -> series id, cached by the writer; what a rolled-back transaction
    made is forgotten with it."""

    def __init__(self) -> None:
        self.known: dict[SeriesKey, int] = {}
        self.added: list[SeriesKey] = []

    def begin(self) -> None:
        self.added.clear()

    def mark(self) -> int:
        return len(self.added)

    def forget(self, keep: int = 0) -> None:
        """Forgets the series made after the first `keep` of this transaction (rolled back)."""
        for key in self.added[keep:]:
            self.known.pop(key, None)
        del self.added[keep:]

    def ensure(self, conn: psycopg.Connection, keys: set[SeriesKey]) -> None:
        for key in sorted(keys - self.known.keys()):
            row = conn.execute("INSERT INTO series (device, name, unit) VALUES (%s,%s,%s) "
                               "ON CONFLICT (device, name, unit) DO NOTHING RETURNING id", key).fetchone()
            if row is None:
                row = conn.execute("SELECT id FROM series WHERE device=%s AND name=%s AND unit=%s", key).fetchone()
            self.known[key] = row[0]
            self.added.append(key)


def series_keys(items: Sequence[StoreItem]) -> set[SeriesKey]:
    return {(item.frame.device.hex(), rec[SENML_N], rec.get(SENML_U, "")) for item in items
            for rec in item.frame.pack}


def sample_values(rec: dict) -> tuple:
    value = rec.get(SENML_V)
    if value is not None:
        return present(value), None, None, None
    if SENML_VS in rec:
        return None, rec[SENML_VS], None, None
    if SENML_VB in rec:
        return None, None, rec[SENML_VB], None
    return None, None, None, rec[SENML_ERR]


def next_ids(conn: psycopg.Connection, sequence: str, n: int) -> list[int]:
    if n == 0:
        return []
    return [i for (i,) in conn.execute(f"SELECT nextval('{sequence}') FROM generate_series(1, %s)", (n,))]


def write_rows(conn: psycopg.Connection, items: Sequence[StoreItem], series: SeriesIds,
               outbox: OutboxRows | None = None, now: float = 0.0) -> dict[int, list[dict]]:
    """The stored items' frames and samples copied in, their MQTT messages queued when `outbox`,
    and their devices moved on; returns the decoded records of ack frames by item index (their
    command is closed next)."""
    series.ensure(conn, series_keys(items))
    frame_ids = next_ids(conn, "frames_id_seq", len(items))
    sample_ids = iter(next_ids(conn, "samples_id_seq", sum(len(item.frame.pack) for item in items)))
    acks: dict[int, list[dict]] = {}
    with conn.cursor() as cur:
        with cur.copy(f"COPY frames ({FRAME_NAMES}) FROM STDIN") as copy:
            for frame_id, item in zip(frame_ids, items, strict=True):
                f = item.frame
                copy.write_row((frame_id, f.device.hex(), f.counter, f.kid.hex(), f.kind, f.alg, f.tag,
                                f.base_time, item.received, item.source, item.raw))
        with cur.copy(f"COPY samples ({SAMPLE_NAMES}) FROM STDIN") as copy:
            for n, (frame_id, item) in enumerate(zip(frame_ids, items, strict=True)):
                dev, pack = item.frame.device.hex(), item.frame.pack
                bt = pack[0][SENML_BT]
                for rec in pack:
                    sid = series.known[dev, rec[SENML_N], rec.get(SENML_U, "")]
                    at = bt + rec[SENML_T] if SENML_T in rec else bt
                    copy.write_row((next(sample_ids), frame_id, sid, at, *sample_values(rec)))
                if item.frame.kind == KIND_ACK:
                    acks[n] = item.frame.records()
        if outbox is not None:
            with cur.copy("COPY outbox (topic, payload, created) FROM STDIN") as copy:
                for item in items:
                    for topic, payload in outbox(item.frame, item.node, None):
                        copy.write_row((topic, payload, now))
    _move_devices(conn, items)
    return acks


def _move_devices(conn: psycopg.Connection, items: Sequence[StoreItem]) -> None:
    last: dict[str, StoreItem] = {}
    counts: dict[str, int] = {}
    highest: dict[bytes, int] = {}
    for item in items:
        dev, kid = item.frame.device.hex(), item.frame.kid
        last[dev] = item
        counts[dev] = counts.get(dev, 0) + 1
        highest[kid] = max(highest.get(kid, 0), item.frame.counter)
    rows = [(dev, item.node, highest[item.frame.kid], counts[dev], item.received, item.source, item.frame.kind,
             item.frame.kid.hex()) for dev, item in sorted(last.items())]
    # One statement for the batch's devices (each once: ON CONFLICT may touch a row once a statement).
    conn.execute(
        "INSERT INTO devices AS d (device, name, highest_counter, frames, first_seen, last_seen, last_source, "
        "last_kind, kid) SELECT dev, name, high, n, seen, seen, src, kind, kid FROM unnest("
        "%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::float8[], %s::text[], %s::int[], %s::text[]) "
        "AS u (dev, name, high, n, seen, src, kind, kid) ON CONFLICT (device) DO UPDATE SET "
        "name=excluded.name, highest_counter=CASE WHEN d.kid IS NOT DISTINCT FROM excluded.kid THEN "
        "GREATEST(d.highest_counter, excluded.highest_counter) ELSE excluded.highest_counter END, "
        "frames=d.frames+excluded.frames, last_seen=GREATEST(d.last_seen, excluded.last_seen), "
        "last_source=excluded.last_source, last_kind=excluded.last_kind, kid=excluded.kid",
        [list(column) for column in zip(*rows, strict=True)])
