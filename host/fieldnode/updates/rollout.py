"""A staged rollout through the gateway (`fieldnode update`): the canaries first, the rest only
when every canary kept the new version; it stops by itself after --stop-after failures
(rolled back, refused, or no outcome before the timeout), and withdraws the offers it made to
nodes that have not started. The outcomes come from the nodes' own signed frames in the
gateway's database (reports.py)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..node.keystore import Keystore
from .release import offer_to
from .reports import last_frame_ids, outcome, read_reports
from .site import Release, UpdateSite

FINAL = ("kept", "rolled-back", "refused", "timed-out")


@dataclass
class NodeProgress:
    name: str
    device: str  # hex
    stage: str  # canary | rest
    state: str = "waiting"  # waiting | offered | trial | kept | rolled-back | refused | timed-out | skipped
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.state in ("rolled-back", "refused", "timed-out")

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "device": self.device, "stage": self.stage, "state": self.state,
                "detail": self.detail}


@dataclass
class Rollout:
    site: UpdateSite
    keys: Keystore
    db: Path
    release: Release
    nodes: list[NodeProgress]
    canary: int = 1
    stop_after: int = 1
    timeout: float = 600.0
    poll: float = 0.5
    on_change: Callable[[list[NodeProgress]], None] = lambda nodes: None

    def failures(self) -> int:
        return sum(n.failed for n in self.nodes)

    def run(self) -> list[NodeProgress]:
        canaries, rest = self.nodes[:self.canary], self.nodes[self.canary:]
        for stage in (canaries, rest):
            if not stage:
                continue
            if self.failures() >= self.stop_after or (stage is rest and any(n.failed for n in canaries)):
                self._skip(stage, "rollout stopped after failures")
                break
            self._stage(stage)
        self.on_change(self.nodes)
        return self.nodes

    def _stage(self, stage: list[NodeProgress]) -> None:
        marks = last_frame_ids(self.db, [n.device for n in stage])
        for node in stage:
            offer_to(self.site, self.keys, bytes.fromhex(node.device), self.release)
            node.state = "offered"
        self.on_change(self.nodes)
        deadline = time.monotonic() + self.timeout
        while any(n.state not in FINAL and n.state != "skipped" for n in stage):
            time.sleep(self.poll)
            reports = read_reports(self.db, [n.device for n in stage], marks)
            for node in stage:
                if node.state in FINAL or node.state == "skipped":
                    continue
                node.state, node.detail = outcome(reports[node.device], self.release.version)
                if node.state not in FINAL and time.monotonic() > deadline:
                    node.state, node.detail = "timed-out", f"no outcome within {self.timeout:.0f} s"
                if node.state in FINAL:
                    self.site.withdraw(self.keys.current(bytes.fromhex(node.device)).kid)
            if self.failures() >= self.stop_after:
                self._skip([n for n in stage if n.state == "offered"], "rollout stopped after failures")
            self.on_change(self.nodes)

    def _skip(self, nodes: list[NodeProgress], why: str) -> None:
        for node in nodes:
            if node.state == "offered":
                self.site.withdraw(self.keys.current(bytes.fromhex(node.device)).kid)
            node.state, node.detail = "skipped", why
