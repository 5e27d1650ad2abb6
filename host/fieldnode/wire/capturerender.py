"""How a captured datagram is shown: one line for a person, or one JSON object for a program."""
from __future__ import annotations

import time
from typing import Any

from . import coap
from .exchanges import (ANSWERS, BAD_COAP, DUPLICATE, EMPTY_ACK, PING, REJECTED, REPEATED_ANSWER, RESET, RETRANSMISSION,
                        VERIFIED, Seen)
from .frame import Frame
from .pcap import CaptureProblem, endpoint_text
from .render import frame_line

CODE_NAMES = {coap.GET: "GET", coap.POST: "POST", coap.PUT: "PUT", coap.DELETE: "DELETE",
              coap.CHANGED: "2.04 Changed", coap.VALID: "2.03 Valid",
              coap.BAD_REQUEST: "4.00 Bad Request", coap.UNAUTHORIZED: "4.01 Unauthorized",
              coap.SERVICE_UNAVAILABLE: "5.03 Service Unavailable"}


def clock(t: float) -> str:
    """Capture time as UTC wall clock with milliseconds."""
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


def _message_text(seen: Seen) -> str:
    msg = seen.message
    if msg is None:
        return "?"
    name = CODE_NAMES.get(msg.code, coap.code_text(msg.code))
    return f"{coap.TYPE_NAMES[msg.mtype]} {name} mid={msg.mid}"


def _frame_text(frame: Frame | None, names: dict[bytes, str]) -> str:
    if frame is None:
        return ""
    name = names.get(frame.device)
    return f"{name} ({frame_line(frame)})" if name else frame_line(frame)


def _after(seen: Seen) -> str:
    return f" after {seen.answer_after * 1000:.1f} ms" if seen.answer_after is not None else ""


def _request_verdict(seen: Seen, names: dict[bytes, str]) -> str:
    if seen.verdict == VERIFIED:
        return f"ok   {_frame_text(seen.frame, names)}"
    if seen.verdict == DUPLICATE:
        return f"dup  {_frame_text(seen.frame, names)}  (same frame as #{seen.first}: the gateway answers 2.03)"
    if seen.verdict == REJECTED:
        text = f"REJ  {seen.reason}: {seen.detail}" if seen.detail else f"REJ  {seen.reason}"
        claimed = _frame_text(seen.frame, names)
        return text + (f"  (unverified: {claimed})" if claimed else "")
    return "no frame"


def _answer_verdict(seen: Seen, names: dict[bytes, str]) -> str:
    text = f"answers #{seen.first}{_after(seen)}" if seen.first is not None else "answers no request seen"
    if seen.role == REPEATED_ANSWER:
        text = f"answers #{seen.first} again (retransmission){_after(seen)}"
    if seen.diagnostic:
        text += f": {seen.diagnostic}"
    if seen.frame is not None:
        state = "verified" if seen.verdict == VERIFIED else f"REJ {seen.reason}, unverified"
        text += f"  -> command ({state}) {_frame_text(seen.frame, names)}"
    elif seen.verdict == REJECTED:
        text += f"  -> command REJ {seen.reason}: {seen.detail}"
    return text


def datagram_line(seen: Seen, names: dict[bytes, str]) -> str:
    d = seen.datagram
    head = f"#{d.number} {clock(d.time)} {endpoint_text(d.src)} > {endpoint_text(d.dst)}"
    role = seen.role
    if role == BAD_COAP:
        return f"{head} not CoAP: {seen.detail}"
    head += f" {_message_text(seen)}"
    if role == RETRANSMISSION:
        return f"{head}  retransmission of #{seen.first}"
    if role == PING:
        return f"{head}  ping"
    if role in (EMPTY_ACK, RESET):
        what = "empty ACK" if role == EMPTY_ACK else "reset"
        return f"{head}  {what}" + (f" of #{seen.first}" if seen.first is not None else "")
    if role in ANSWERS:
        return f"{head}  {_answer_verdict(seen, names)}"
    return f"{head}  {_request_verdict(seen, names)}"


def problem_line(problem: CaptureProblem) -> str:
    where = f"packet #{problem.number}" if problem.number is not None else "capture"
    return f"CAPTURE {where}: {problem.detail}"


def datagram_json(seen: Seen) -> dict[str, Any]:
    d = seen.datagram
    obj: dict[str, Any] = {"record": "datagram", "number": d.number, "time": d.time,
                           "src": endpoint_text(d.src), "dst": endpoint_text(d.dst), "role": seen.role}
    msg = seen.message
    if msg is not None:
        obj["coap"] = {"type": coap.TYPE_NAMES[msg.mtype], "code": coap.code_text(msg.code), "mid": msg.mid,
                       "token": msg.token.hex()}
    for key in ("verdict", "reason", "detail", "first", "diagnostic"):
        value = getattr(seen, key)
        if value is not None:
            obj[key] = value
    if seen.answer_after is not None:
        obj["answer_after_s"] = round(seen.answer_after, 6)
    if seen.frame is not None:
        obj["command" if seen.role in ANSWERS else "frame"] = seen.frame.to_json()
    return obj


def problem_json(problem: CaptureProblem) -> dict[str, Any]:
    return {"record": "problem", "number": problem.number, "detail": problem.detail}
