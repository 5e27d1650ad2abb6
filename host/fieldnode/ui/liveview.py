"""The live view's state and its rendering: one row per node and reading, rejections, log lines.

The state (LiveState) is plain data fed with verified frames, rejections and log lines, so it can
be tested without a terminal; render() turns it into a rich renderable for rich.live.Live.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..wire.frame import Frame
from ..wire.render import UNDECLARED

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 24
# Under the table: what the terse columns mean, and that each sparkline has its own scale.
LEGEND = (f"recent: last {HISTORY} values, {SPARK[0]} low to {SPARK[-1]} high in each row; #: frame counter; "
          "/min: frames a minute (- until two)")


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi == lo:
        return SPARK[3] * len(values)
    return "".join(SPARK[min(7, int((v - lo) / (hi - lo) * 8))] for v in values)


@dataclass
class ReadingRow:
    node: str
    name: str
    unit: str = ""
    value: Any = None
    error: str | None = None
    counter: int = 0
    updated: float = 0.0
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    arrivals: deque = field(default_factory=lambda: deque(maxlen=HISTORY))

    def rate(self, now: float) -> float:
        """Readings per minute over the recent arrivals."""
        if len(self.arrivals) < 2:
            return 0.0
        span = now - self.arrivals[0]
        return 60.0 * (len(self.arrivals) - 1) / span if span > 0 else 0.0


class LiveState:
    def __init__(self, names: dict[str, str] | None = None, log_lines: int = 8) -> None:
        self.names = names or {}  # device hex -> node name from the keystore
        self.rows: dict[tuple[str, str], ReadingRow] = {}
        self.rejected: Counter[str] = Counter()
        self.frames = 0
        self.events: deque[str] = deque(maxlen=log_lines)
        self.logs: deque[str] = deque(maxlen=log_lines)
        self.status: str = ""

    def node_label(self, device: bytes) -> str:
        hexid = device.hex()
        return self.names.get(hexid) or hexid

    def add_frame(self, frame: Frame, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.frames += 1
        node = self.node_label(frame.device)
        if frame.kind_name in ("event", "boot", "ack", "declaration"):
            text = " ".join(f"{r['n']}={r.get('v', r.get('vs', r.get('vb', r.get('err'))))}" if "short" not in r
                            else f"{r['short']}={r['n']}" for r in frame.records())
            self.events.append(f"{time.strftime('%H:%M:%S', time.localtime(now))} {node} "
                               f"{frame.kind_name}: {text}")
            if frame.kind_name != "event":
                return
        mark = UNDECLARED if frame.undeclared else ""  # v2 short names: the declaration is unknown
        for rec in frame.records():
            if rec["n"] == "event":
                continue
            key = (node, rec["n"] + mark)
            row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = ReadingRow(node, rec["n"] + mark)
            row.unit = rec.get("u", row.unit)
            row.counter = frame.counter
            row.updated = now
            row.arrivals.append(now)
            if "err" in rec:
                row.error, row.value = rec["err"], None
            else:
                row.error = None
                row.value = rec.get("v", rec.get("vs", rec.get("vb")))
                if isinstance(row.value, (int, float)) and not isinstance(row.value, bool):
                    row.history.append(float(row.value))

    def add_rejection(self, reason: str) -> None:
        self.rejected[reason] += 1

    def add_log(self, line: str) -> None:
        self.logs.append(line)

    def render(self, now: float | None = None) -> Group:
        now = time.time() if now is None else now
        table = Table(expand=False, title=f"{self.frames} frames verified", title_justify="left")
        for col, kw in (("node", {}), ("reading", {}), ("value", {"justify": "right"}), ("unit", {}),
                        ("recent", {}), ("#", {"justify": "right"}), ("age", {"justify": "right"}),
                        ("/min", {"justify": "right"}), ("status", {})):
            table.add_column(col, **kw)
        for (node, name), row in sorted(self.rows.items()):
            age = now - row.updated
            if row.error:
                value, status = Text(row.error, style="bold red"), Text("error", style="red")
            else:
                shown = f"{row.value:g}" if isinstance(row.value, float) else str(row.value)
                value, status = Text(shown), Text("verified", style="green")
            table.add_row(node, name, value, row.unit, sparkline(list(row.history)), str(row.counter),
                          f"{age:.0f}s", f"{row.rate(now):.1f}" if len(row.arrivals) > 1 else "-", status)
        parts: list[Any] = [table, Text(LEGEND, style="dim")]
        if self.rejected:
            parts.append(Text("rejected: " + ", ".join(f"{r} {n}" for r, n in sorted(self.rejected.items())),
                              style="bold red"))
        for line in self.events:
            parts.append(Text(line, style="cyan"))
        for line in self.logs:
            parts.append(Text(line, style="dim"))
        if self.status:
            parts.append(Text(self.status, style="yellow"))
        return Group(*parts)
