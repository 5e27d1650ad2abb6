"""The replay window every gateway shares: per key id the highest counter stored and a 64-bit
bitmap of the window below it, as the gateway's in-memory ReplayWindow keeps it.

CLAIM decides and records a frame's counter in one statement: an upsert that changes the key's
row only when the counter is new (above the highest, or in the window with its bit clear), and
returns a row only then. PostgreSQL locks the key's row for the rest of the transaction, so a
second gateway claiming the same counter waits for the first one's commit (or rollback) and then
sees the bit set: a frame is taken once whichever gateway received it, and a rolled-back batch
leaves its counters free for the retransmission."""
from __future__ import annotations

from collections.abc import Iterator

import psycopg

from ..records import REPLAY_SPAN

# bit i of `seen`: counter highest_counter - i is stored. CASE keeps every shift below 64 bits
# (PostgreSQL's int8 shift does not define larger ones) and fixes the order of evaluation.
CLAIM = f"""
INSERT INTO replay AS r (kid, device, highest_counter, seen) VALUES (%s, %s, %s, 1)
ON CONFLICT (kid) DO UPDATE SET
    highest_counter = GREATEST(r.highest_counter, excluded.highest_counter),
    seen = CASE
        WHEN excluded.highest_counter - r.highest_counter >= {REPLAY_SPAN} THEN 1
        WHEN excluded.highest_counter > r.highest_counter
            THEN (r.seen << (excluded.highest_counter - r.highest_counter)::int) | 1
        ELSE r.seen | (1::bigint << (r.highest_counter - excluded.highest_counter)::int) END
WHERE CASE
    WHEN excluded.highest_counter > r.highest_counter THEN true
    WHEN r.highest_counter - excluded.highest_counter >= {REPLAY_SPAN} THEN false
    ELSE r.seen & (1::bigint << (r.highest_counter - excluded.highest_counter)::int) = 0 END
RETURNING r.highest_counter
"""

# Why a counter was not new: below the window (a replay whatever its bytes), or the stored
# frame's tag (the same frame again, or another frame with a taken counter).
REFUSED = """
SELECT r.highest_counter, f.tag FROM replay r LEFT JOIN frames f ON f.kid = r.kid AND f.counter = %s
WHERE r.kid = %s
"""


def refusal(conn: psycopg.Connection, kid: str, counter: int, tag: bytes, batch_tag: bytes | None) -> str:
    """'duplicate' (the same frame is stored, or earlier in this batch) or 'replay'."""
    row = conn.execute(REFUSED, (counter, kid)).fetchone()
    if row is not None and counter <= row[0] - REPLAY_SPAN:
        return "replay"
    stored = batch_tag if batch_tag is not None else (bytes(row[1]) if row and row[1] is not None else None)
    return "duplicate" if stored == tag else "replay"


def stored_tag(conn: psycopg.Connection, kid: bytes, counter: int) -> bytes | None:
    row = conn.execute("SELECT tag FROM frames WHERE kid=%s AND counter=%s", (kid.hex(), counter)).fetchone()
    return bytes(row[0]) if row else None


def window_counters(highest: int, seen: int) -> set[int]:
    """The counters the bitmap says are stored."""
    bits = seen & ((1 << REPLAY_SPAN) - 1)  # the column is signed: bit 63 reads as a negative number
    return {highest - i for i in range(REPLAY_SPAN) if bits >> i & 1 and highest - i > 0}


def replay_state(conn: psycopg.Connection) -> Iterator[tuple[bytes, int, set[int]]]:
    """(key id, highest counter, counters stored within the window below it)."""
    for kid, highest, seen in conn.execute("SELECT kid, highest_counter, seen FROM replay").fetchall():
        yield bytes.fromhex(kid), highest, window_counters(highest, seen)
