"""How frames are shown: one human line, a JSON object, or CBOR diagnostic notation."""
from __future__ import annotations

import json
from typing import Any

from .frame import Frame


UNDECLARED = " (undeclared)"  # v2 telemetry whose declaration is unknown: short names, no units


def reading_text(rec: dict[str, Any]) -> str:
    if "short" in rec:  # a declaration's reading
        unit = f" [{rec['u']}]" if rec["u"] else ""
        return f"{rec['short']}={rec['n']}{unit}"
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
    if frame.declared is not None:
        return f"{frame.device.hex()} #{frame.counter} declaration {frame.declaration.hex()} {readings}"
    mark = UNDECLARED if frame.undeclared else ""
    return f"{frame.device.hex()} #{frame.counter} {frame.kind_name}{mark} t={frame.base_time} {readings}"


def frame_json(frame: Frame, status: str = "ok", reason: str | None = None) -> str:
    obj = frame.to_json()
    obj["status"] = status
    if reason:
        obj["reason"] = reason
    return json.dumps(obj, separators=(",", ":"))
