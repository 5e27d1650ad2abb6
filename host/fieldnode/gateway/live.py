"""What a technician sees while the gateway runs: one line per datagram outcome, and summaries."""
from __future__ import annotations

import time
from collections.abc import Callable

from ..wire import coap
from ..wire.render import reading_text
from .events import GatewayEvent, format_source


def event_line(event: GatewayEvent) -> str | None:
    """One line for an event, or None for those not worth a line (CoAP retransmissions, pings)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
    src = format_source(event.source)
    f = event.frame
    who = ""
    if f is not None:
        who = f"{event.node} ({f.device.hex()})" if event.node else f.device.hex()
    if event.outcome == "accepted":
        readings = " ".join(reading_text(r) for r in f.records())
        cmd = f"  -> command #{event.command_id} sent" if event.command_id is not None else ""
        return f"{stamp} ok   {who} #{f.counter} {f.kind_name} {readings}  [{src}]{cmd}"
    if event.outcome == "duplicate":
        return f"{stamp} dup  {who} #{f.counter} already stored (2.03)  [{src}]"
    if event.outcome == "rejected":
        about = f" {who} #{f.counter}" if f is not None else ""
        detail = f": {event.detail}" if event.detail else ""
        code = f" {coap.code_text(event.code)}" if event.code is not None else ""
        return f"{stamp} REJ  {event.reason}{about}{code}{detail}  [{src}]"
    if event.outcome == "failed":
        return f"{stamp} FAIL {who} #{f.counter}: could not commit to the database (5.03 sent)  [{src}]"
    return None


def summary_line(counts: dict[str, int], since: float, pending: int, mqtt: str) -> str:
    rejected = {k[9:]: v for k, v in counts.items() if k.startswith("rejected.") and v}
    rej = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) or "none"
    up = time.time() - since
    uptime = f"{up:.0f} s" if up < 120 else (f"{up / 60:.0f} min" if up < 7200 else f"{up / 3600:.1f} h")
    return (f"{time.strftime('%H:%M:%S')} summary (up {uptime}): accepted {counts.get('accepted', 0)}, "
            f"duplicate {counts.get('duplicate', 0)}, retransmitted {counts.get('retransmission', 0)}, "
            f"failed {counts.get('failed', 0)}, rejected: {rej}; pending {pending}; mqtt {mqtt}")


# Outcomes whose lines a flood can multiply (garbage, replays of captured frames), and how the line
# that counts the ones left out names them.
_LIMITED = {"rejected": "REJ  ... {} more rejected datagrams not shown",
            "duplicate": "dup  ... {} more duplicates (2.03) not shown"}


class LinePrinter:
    """Prints event lines; rejections and duplicates at most `max_rejects` a second each (a flood
    of garbage or of replayed frames must not scroll the accepted frames away, nor fill the log),
    with a count of those left out."""

    def __init__(self, write: Callable[[str], None], max_rejects: int = 5) -> None:
        self.write = write
        self.max_rejects = max_rejects
        self._second = dict.fromkeys(_LIMITED, 0)
        self._shown = dict.fromkeys(_LIMITED, 0)
        self._hidden = dict.fromkeys(_LIMITED, 0)

    def __call__(self, event: GatewayEvent) -> None:
        line = event_line(event)
        if line is None:
            return
        kind = event.outcome
        if kind in _LIMITED:
            sec = int(event.time)
            if sec != self._second[kind]:
                self._flush_hidden(kind)
                self._second[kind], self._shown[kind] = sec, 0
            if self._shown[kind] >= self.max_rejects:
                self._hidden[kind] += 1
                return
            self._shown[kind] += 1
        self.write(line)

    def _flush_hidden(self, kind: str) -> None:
        if self._hidden[kind]:
            self.write(f"{time.strftime('%H:%M:%S')} " + _LIMITED[kind].format(self._hidden[kind]))
            self._hidden[kind] = 0
