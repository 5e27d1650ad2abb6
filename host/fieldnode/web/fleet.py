"""The Fleet view's rows: one a node, from the devices table, its latest samples and the recent
rejections; frames per minute from the arrivals the feed has seen."""
from __future__ import annotations

import time
from collections import deque

from ..gateway.status import HEAP_READINGS
from .reader import NOT_READINGS, TREND_POINTS, Reader

RATE_WINDOW_S = 300.0


class Arrivals:
    """Frame arrival times per device over the last RATE_WINDOW_S, for frames per minute."""

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = {}

    def seed(self, reader: Reader, now: float) -> None:
        for dev, received in reversed(reader.arrivals(now - RATE_WINDOW_S)):
            self.add(dev, received)

    def add(self, device: str, received: float) -> None:
        self._times.setdefault(device, deque()).append(received)

    def per_minute(self, device: str, now: float) -> float | None:
        times = self._times.get(device)
        if times is None:
            return None
        while times and times[0] < now - RATE_WINDOW_S:
            times.popleft()
        if len(times) < 2:
            return None
        span = max(now - times[0], times[-1] - times[0])
        return 60.0 * (len(times) - 1) / span if span > 0 else None


def fleet_rows(reader: Reader, arrivals: Arrivals, site: str, only: set[str] | None = None,
               trend: int = TREND_POINTS) -> list[dict]:
    """The rows of the nodes in `only` (every node when None). With trend=1 (the live feed's
    updates) each reading carries its latest value only: the page appends it to the trend it has,
    which keeps a message to 50 open pages a third of the size."""
    now = time.time()
    devices = reader.devices(only)
    latest = reader.latest(set(devices), trend)
    rejected: dict[str, dict[str, int]] = {}
    for r in reader.rejections():
        if r["device"] in devices:
            by_reason = rejected.setdefault(r["device"], {})
            by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    rows = []
    for dev, d in devices.items():
        samples = latest.get(dev, {})
        readings = {}
        for name, series in samples.items():
            if name in NOT_READINGS or not series:
                continue
            readings[name] = {**series[-1].to_json(),
                              "trend": [s.value for s in series if s.value is not None]}
        rows.append({**d, "site": site, "partial": trend < TREND_POINTS, "board": _text(samples, "board"),
                     "fw": _text(samples, "fw"), "heap": _heap(samples),
                     "per_minute": arrivals.per_minute(dev, now), "rejected": rejected.get(dev, {}),
                     "readings": readings})
    rows.sort(key=lambda r: (r["name"] or r["device"]))
    return rows


def _heap(samples: dict) -> dict[str, float] | None:
    """The node's last reported heap (boot or health frame: docs/firmware.md, "Memory"): free
    bytes, the lowest since boot and the largest free block; None before any report."""
    got = {name.removeprefix("heap."): samples[name][-1].value for name in HEAP_READINGS if samples.get(name)}
    return got or None


def _text(samples: dict, name: str) -> str:
    series = samples.get(name)
    return (series[-1].string or "") if series else ""
