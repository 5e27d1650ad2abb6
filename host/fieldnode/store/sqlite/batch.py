"""The rows of one batch of frames: built in memory while the write lock is held, then inserted
many to a statement.

The database, not the gateway's in-memory window, has the last word on replay: with several
workers another process may have stored frames of the same key. The batch's transaction holds
the write lock, and `replay.highest_counter` moves with every stored frame, so a counter above it
cannot be in `frames` yet: only the others (UDP reordering within the window, retransmissions)
need a look at the table. UNIQUE (kid, counter) stays the backstop. The other shards hold what a
run with another number of workers stored for these keys."""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ...wire.frame import KIND_ACK
from ..records import REPLAY_SPAN, OutboxRows, StoreItem
from .declarations import DECLARATION_COLUMNS, INSERT_DECLARATIONS
from .replay import highest_counters, stored_tag
from .rows import insert_rows
from .samples import INSERT_SAMPLES, SAMPLE_COLUMNS, VALUE_COLUMNS, SampleRows

FRAME_COLUMNS = 11


class FrameBatch:
    """One transaction's frames: refused() says whether an item is a replay or a duplicate,
    add() makes its rows, write() inserts them all and moves the replay state and devices on."""

    def __init__(self, conn: sqlite3.Connection, items: Sequence[StoreItem], schemas: Sequence[str],
                 samples: SampleRows, outbox: OutboxRows | None, now: float) -> None:
        self.conn = conn
        self.schemas = schemas
        self.samples = samples
        self.outbox = outbox
        self.now = now
        self.stored_high = highest_counters(conn, {item.frame.kid.hex() for item in items}, schemas)
        self.highs = dict(self.stored_high)
        (self.frame_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM frames").fetchone()
        samples.start(conn)
        self.tags: dict[tuple[str, int], bytes] = {}
        self.touched: dict[str, StoreItem] = {}  # device -> its last stored item
        self.stored_kids: set[str] = set()
        self.counts: dict[str, int] = {}
        self.frame_rows: list = []  # flat: FRAME_COLUMNS values a row
        # flat, SAMPLE_COLUMNS values a row, one list a kind of value (VALUE_COLUMNS)
        self.sample_rows: tuple[list, ...] = tuple([] for _ in VALUE_COLUMNS)
        self.outbox_rows: list = []  # flat: topic, payload, created
        self.declaration_rows: list = []  # flat: DECLARATION_COLUMNS values a row (frame format v2)

    def refused(self, item: StoreItem) -> str | None:
        """'replay' or 'duplicate' when the item's counter is taken (in the database or earlier
        in this batch); None when it is new."""
        f = item.frame
        if f.declared is not None:
            return None  # a declaration is outside the replay window (declarations.py)
        kid, counter = f.kid.hex(), f.counter
        if counter <= self.highs[kid] - REPLAY_SPAN:
            return "replay"
        tag = self.tags.get((kid, counter))
        if tag is None and counter <= self.stored_high[kid]:
            tag = stored_tag(self.conn, f.kid, counter, self.schemas)
        if tag is not None:
            return "duplicate" if tag == f.tag else "replay"
        return None

    def add(self, item: StoreItem) -> list[dict] | None:
        """The item's rows; returns its SenML records when they were decoded (for the outbox,
        or an ack frame), else None."""
        f = item.frame
        dev, kid, counter = f.device.hex(), f.kid.hex(), f.counter
        if f.declared is not None:  # frame format v2: kept in declarations only, by its id
            self.declaration_rows += (dev, f.declaration.hex(), f.declared.payload, kid, counter, item.received)
            return None
        self.frame_id += 1
        self.tags[kid, counter] = f.tag
        self.stored_kids.add(kid)
        self.frame_rows.extend((self.frame_id, dev, counter, kid, f.kind, f.alg, f.tag, f.base_time,
                                item.received, item.source, item.raw))
        self.samples.add(self.conn, self.sample_rows, self.frame_id, dev, f.pack)
        records = None
        if self.outbox is not None or f.kind == KIND_ACK:
            records = f.records()
            if self.outbox is not None:
                for topic, payload in self.outbox(f, item.node, records):
                    self.outbox_rows += (topic, payload, self.now)
        if counter > self.highs[kid]:
            self.highs[kid] = counter
        self.touched[dev] = item
        self.counts[dev] = self.counts.get(dev, 0) + 1
        return records

    def write(self) -> int:
        """Inserts the batch's rows; returns how many samples went into samples_recent."""
        conn = self.conn
        insert_rows(conn, "INSERT INTO frames (id, device, counter, kid, kind, alg, tag, base_time, received, "
                    "source, raw)", FRAME_COLUMNS, self.frame_rows)
        for insert, rows in zip(INSERT_SAMPLES, self.sample_rows, strict=True):
            insert_rows(conn, insert, SAMPLE_COLUMNS, rows)
        insert_rows(conn, "INSERT INTO outbox (topic, payload, created)", 3, self.outbox_rows)
        insert_rows(conn, INSERT_DECLARATIONS, DECLARATION_COLUMNS, self.declaration_rows)
        conn.executemany(
            "INSERT INTO replay (kid, device, highest_counter) VALUES (?,?,?) ON CONFLICT (kid) DO UPDATE "
            "SET highest_counter=max(highest_counter, excluded.highest_counter)",
            [(kid, kid[:12], self.highs[kid]) for kid in self.stored_kids])  # a kid begins with its device
        conn.executemany(
            "INSERT INTO devices (device, name, highest_counter, frames, first_seen, last_seen, "
            "last_source, last_kind, kid) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (device) DO UPDATE SET "
            "name=excluded.name, highest_counter=CASE WHEN kid IS excluded.kid THEN "
            "max(highest_counter, excluded.highest_counter) ELSE excluded.highest_counter END, "
            "frames=frames+excluded.frames, last_seen=excluded.last_seen, "
            "last_source=excluded.last_source, last_kind=excluded.last_kind, kid=excluded.kid",
            [(dev, item.node, self.highs[item.frame.kid.hex()], self.counts[dev], item.received, item.received,
              item.source, item.frame.kind, item.frame.kid.hex()) for dev, item in self.touched.items()])
        return sum(len(rows) for rows in self.sample_rows) // SAMPLE_COLUMNS
