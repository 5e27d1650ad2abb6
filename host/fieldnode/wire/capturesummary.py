"""The end of a capture in numbers: frames per node, retransmissions, duplicates, replays,
rejections by reason, answers by code, answer times, and the nodes that went silent."""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import coap
from .exchanges import (ANSWER, BAD_COAP, DUPLICATE, REJECTED, REPEATED_ANSWER, REQUEST, RETRANSMISSION,
                        UNMATCHED_ANSWER, VERIFIED, Seen)
from .pcap import CaptureProblem

# A node is silent when the capture ends this long after its last frame: the gateway's default
# --node-timeout, after which it publishes the node offline.
SILENT_AFTER = 300.0


@dataclass
class _Node:
    frames: int = 0
    first: float = 0.0
    last: float = 0.0


@dataclass
class CaptureSummary:
    names: dict[bytes, str] = field(default_factory=dict)  # device -> name from the keystore
    silent_after: float = SILENT_AFTER
    datagrams: int = 0
    retransmissions: int = 0
    duplicates: int = 0
    repeated_answers: int = 0
    unmatched_answers: int = 0
    bad_coap: int = 0
    problems: int = 0
    rejections: Counter = field(default_factory=Counter)
    answers: Counter = field(default_factory=Counter)  # "2.04", "4.01 bad-mac", ...
    commands: int = 0
    answer_times: list[float] = field(default_factory=list)
    nodes: dict[bytes, _Node] = field(default_factory=dict)
    start: float | None = None
    end: float | None = None

    def add(self, seen: Seen) -> None:
        t = seen.datagram.time
        self.start = t if self.start is None else min(self.start, t)
        self.end = t if self.end is None else max(self.end, t)
        self.datagrams += 1
        role = seen.role
        if role == RETRANSMISSION:
            self.retransmissions += 1
        elif role == REQUEST:
            self._request(seen)
        elif role == ANSWER:
            self._answer(seen)
        elif role == REPEATED_ANSWER:
            self.repeated_answers += 1
        elif role == UNMATCHED_ANSWER:
            self.unmatched_answers += 1
        elif role == BAD_COAP:
            self.bad_coap += 1

    def add_problem(self, problem: CaptureProblem) -> None:
        self.problems += 1

    def _request(self, seen: Seen) -> None:
        if seen.verdict == DUPLICATE:
            self.duplicates += 1
        elif seen.verdict == REJECTED:
            self.rejections[seen.reason] += 1
        elif seen.verdict == VERIFIED and seen.frame is not None:
            t = seen.datagram.time
            node = self.nodes.setdefault(seen.frame.device, _Node(first=t))
            node.frames += 1
            node.last = t

    def _answer(self, seen: Seen) -> None:
        msg = seen.message
        text = coap.code_text(msg.code)
        if seen.diagnostic:
            text += f" {seen.diagnostic}"
        self.answers[text] += 1
        if seen.answer_after is not None:
            self.answer_times.append(seen.answer_after)
        if seen.frame is not None:
            self.commands += 1

    def silent(self) -> list[tuple[bytes, float]]:
        """(device, seconds since its last frame) for nodes quiet longer than silent_after at the end."""
        if self.end is None:
            return []
        return sorted(((dev, self.end - n.last) for dev, n in self.nodes.items()
                       if self.end - n.last > self.silent_after), key=lambda x: -x[1])

    def node_label(self, device: bytes) -> str:
        name = self.names.get(device)
        return f"{name} ({device.hex()})" if name else device.hex()

    def to_json(self, unanswered: int, other_packets: int) -> dict[str, Any]:
        times = _times(self.answer_times)
        return {
            "record": "summary", "datagrams": self.datagrams, "other_packets": other_packets,
            "capture_problems": self.problems, "bad_coap": self.bad_coap,
            "start": self.start, "end": self.end,
            "frames_per_node": {dev.hex(): {"name": self.names.get(dev, ""), "frames": n.frames,
                                            "first": n.first, "last": n.last}
                                for dev, n in sorted(self.nodes.items())},
            "retransmissions": self.retransmissions, "duplicates": self.duplicates,
            "replays": self.rejections.get("replay", 0), "rejections": dict(sorted(self.rejections.items())),
            "answers": dict(sorted(self.answers.items())), "commands": self.commands,
            "repeated_answers": self.repeated_answers, "unmatched_answers": self.unmatched_answers,
            "unanswered": unanswered, "answer_time_s": times,
            "silent_after_s": self.silent_after,
            "silent": [{"device": dev.hex(), "name": self.names.get(dev, ""), "quiet_s": round(q, 3)}
                       for dev, q in self.silent()],
        }

    def lines(self, unanswered: int, other_packets: int) -> list[str]:
        span = (self.end - self.start) if self.start is not None else 0.0
        out = [f"summary: {self.datagrams} CoAP datagrams over {span:.1f} s, {other_packets} other packets, "
               f"{self.problems} capture problems, {self.bad_coap} not CoAP"]
        for dev, n in sorted(self.nodes.items()):
            out.append(f"  node {self.node_label(dev)}: {n.frames} frames verified")
        if not self.nodes:
            out.append("  no verified frames")
        out.append(f"  retransmissions {self.retransmissions}, duplicates {self.duplicates} (frame sent again, "
                   f"answered 2.03), replays {self.rejections.get('replay', 0)}")
        rejected = ", ".join(f"{r} {c}" for r, c in sorted(self.rejections.items())) or "none"
        out.append(f"  rejected by reason: {rejected}")
        answers = ", ".join(f"{a}: {c}" for a, c in sorted(self.answers.items())) or "none"
        out.append(f"  answers: {answers}; commands in answers {self.commands}; repeated answers "
                   f"{self.repeated_answers}; answers to no request seen {self.unmatched_answers}; "
                   f"requests never answered {unanswered}")
        times = _times(self.answer_times)
        if times:
            out.append(f"  answer time (from the first transmission): median {times['median'] * 1000:.1f} ms, "
                       f"p99 {times['p99'] * 1000:.1f} ms over {times['count']} answers")
        silent = self.silent()
        quiet = ", ".join(f"{self.node_label(d)} quiet {q:.0f} s" for d, q in silent) or "none"
        out.append(f"  silent (no frame in the last {self.silent_after:g} s of the capture): {quiet}")
        return out


def _times(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    # p99 as the value below which 99 % of the answers came (nearest rank): with few answers it is
    # the slowest one, never a value between two that nobody measured.
    rank = max(1, -(-99 * len(ordered) // 100))
    return {"count": len(ordered), "median": round(statistics.median(ordered), 6),
            "p99": round(ordered[rank - 1], 6), "max": round(ordered[-1], 6)}
