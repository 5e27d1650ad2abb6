"""`fieldnode decode` on a pcap/pcapng capture: each CoAP datagram as it is read (so a live
`tcpdump -U -w - | fieldnode decode -` shows the traffic as it passes), then the summary."""
from __future__ import annotations

import json
from typing import BinaryIO, TextIO

from ..node.keystore import Keystore
from ..wire.capturerender import datagram_json, datagram_line, problem_json, problem_line
from ..wire.capturesummary import CaptureSummary
from ..wire.declaration import DeclarationBook
from ..wire.exchanges import REJECTED, REQUEST, ExchangeTracker
from ..wire.pcap import CaptureProblem, CaptureReader


def decode_capture(stream: BinaryIO, head: bytes, keys: Keystore, out: TextIO, *, port: int,
                   as_json: bool, silent_after: float, declarations: DeclarationBook | None = None) -> int:
    """Shows the capture; exit status 1 if a frame was refused or the capture is damaged."""
    names = {entry.device: entry.name for entry in keys if entry.name}
    reader = CaptureReader(stream, head, port)
    tracker = ExchangeTracker(keys.lookup, declarations=declarations)
    summary = CaptureSummary(names=names, silent_after=silent_after)
    failed = False
    try:
        for item in reader:
            if isinstance(item, CaptureProblem):
                summary.add_problem(item)
                failed = True
                _write(out, problem_json(item) if as_json else problem_line(item), as_json)
                continue
            seen = tracker.observe(item)
            summary.add(seen)
            failed |= seen.role == REQUEST and seen.verdict == REJECTED
            _write(out, datagram_json(seen) if as_json else datagram_line(seen, names), as_json)
    except KeyboardInterrupt:  # a live capture ends with Ctrl-C: the summary is what it was for
        _finish(out, summary, tracker, reader, as_json)
        return 130
    _finish(out, summary, tracker, reader, as_json)
    return 1 if failed else 0


def _write(out: TextIO, item: dict | str, as_json: bool) -> None:
    out.write((json.dumps(item, separators=(",", ":")) if as_json else item) + "\n")
    out.flush()  # live: each datagram shows as it passes, not when a buffer fills


def _finish(out: TextIO, summary: CaptureSummary, tracker: ExchangeTracker, reader: CaptureReader,
            as_json: bool) -> None:
    unanswered = tracker.unanswered()
    if as_json:
        _write(out, summary.to_json(unanswered, reader.other), True)
    else:
        for line in summary.lines(unanswered, reader.other):
            _write(out, line, False)
