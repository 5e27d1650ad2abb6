"""What the gateway hands the store's writer and what it gets back, whatever the engine."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..wire.frame import Frame, ReplayWindow

# Counters this far below a key's highest stored one are replays without a look at the frames.
REPLAY_SPAN = ReplayWindow.SIZE
# Refused datagrams kept for the web page's Rejections view, whatever the engine: the newest;
# older ones are deleted.
REJECTIONS_KEPT = 1000


@dataclass(slots=True)
class StoreItem:
    """One verified frame for the writer, with what the writer needs besides the frame."""
    frame: Frame
    raw: bytes
    received: float
    source: str
    node: str  # the node's name from the keystore, or ''


@dataclass(slots=True)
class Outcome:
    """What the writer made of an item: 'stored', 'duplicate' (same device+counter+tag already
    stored), 'replay' (the counter is taken by another frame or is below the stored window) or
    'unstorable' (the database refused the frame's values; nothing of it is stored)."""
    status: str
    command_id: int | None = None
    command: bytes | None = None


@dataclass
class Health:
    worker: int
    pid: int
    listen: str
    started: float
    batch_pending: int = 0
    exchanges: int = 0
    stopped: float | None = None
    dedup_bytes: int = 0  # the message deduplication cache's memory (MessageCache.bytes)
    # Datagrams refused since the last round: (time, source, reason, detail, device hex or ''),
    # kept by the store as the recent ones the web page's Rejections view lists.
    rejections: list[tuple[float, str, str, str, str]] = field(default_factory=list)


class StoreUnavailable(Exception):
    """The store cannot be reached (a PostgreSQL server down, the connection broken): every
    frame's problem, not one frame's. The gateway answers 5.03, so nodes keep their frames, and
    the writer reconnects with backoff; it logs the outage once, not once a batch."""


# (frame, node name, frame.records()) -> [(topic, payload)] for the MQTT outbox; None when MQTT is off.
OutboxRows = Callable[[Frame, str, "list[dict]"], "list[tuple[str, str]]"]
