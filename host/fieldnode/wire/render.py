"""How frames are shown: one human line, a JSON object, or CBOR diagnostic notation."""
from __future__ import annotations

import json
from typing import Any

from .frame import Frame


def reading_text(rec: dict[str, Any]) -> str:
    if "err" in rec:
        value = f"ERROR {rec['err']}"
    elif "v" in rec:
        value = f"{rec['v']:g}" if isinstance(rec["v"], float) else str(rec["v"])
    elif "vs" in rec:
        value = repr(rec["vs"])
    else:
        value = str(rec["vb"]).lower()
    unit = f" {rec['u']}" if "u" in rec else ""
    return f"{rec['n']}={value}{unit}"


def frame_line(frame: Frame) -> str:
    readings = " ".join(reading_text(r) for r in frame.records())
    return f"{frame.device.hex()} #{frame.counter} {frame.kind_name} t={frame.base_time} {readings}"


def frame_json(frame: Frame, status: str = "ok", reason: str | None = None) -> str:
    obj = frame.to_json()
    obj["status"] = status
    if reason:
        obj["reason"] = reason
    return json.dumps(obj, separators=(",", ":"))
