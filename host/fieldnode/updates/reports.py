"""What the nodes said about updates, read from the gateway's database (every shard): the
version they run (boot frames: "app", and "firmware" once a firmware update was tried), the last
update's outcome per tier ("update"/"fwupdate", "why"/"fwwhy", "failed"/"fwfailed"), and the
update events (update.kept with "app" or "firmware", update.refused with "reason" and "offer")."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ..store.sqlite.connection import connect
from ..store.sqlite.shards import shard_paths

NAMES = ("event", "app", "update", "why", "failed", "reason", "offer", "firmware", "fwupdate", "fwwhy", "fwfailed")


@dataclass
class NodeReport:
    device: str  # hex
    last_frame: int = 0  # id of the last frame read (per shard file: see reports())
    running: str | None = None  # the version its last boot frame named
    update: str | None = None  # trial | kept | rolled-back | usb | none, from its last boot frame
    why: str | None = None
    firmware: str | None = None  # the same three for the firmware tier (None: never updated over the air)
    fwupdate: str | None = None
    fwwhy: str | None = None
    refused: tuple[str, str] | None = None  # (version offered, reason) if a refusal is the last word
    events: list[dict[str, str]] = field(default_factory=list)  # update frames after the mark, oldest first


def _frames(conn: sqlite3.Connection, device: str, after: int) -> list[tuple[int, dict[str, str]]]:
    rows = conn.execute(
        "SELECT f.id, r.name, r.string FROM readings r JOIN frames f ON r.frame_id = f.id "
        f"WHERE r.device = ? AND f.id > ? AND r.name IN ({','.join('?' * len(NAMES))}) AND r.string IS NOT NULL "
        "ORDER BY f.id", (device, after, *NAMES)).fetchall()
    frames: dict[int, dict[str, str]] = {}
    for frame_id, name, value in rows:
        frames.setdefault(frame_id, {})[name] = value
    return sorted(frames.items())


def read_reports(db_path: Path, devices: list[str], after: dict[str, int] | None = None) -> dict[str, NodeReport]:
    """Per device (hex): what it said since frame id after[device] (0: ever)."""
    out = {d: NodeReport(d) for d in devices}
    for path in (Path(db_path), *shard_paths(db_path).values()):
        if not path.exists():
            continue
        conn = connect(path, create=False)
        try:
            for device, report in out.items():
                for frame_id, values in _frames(conn, device, (after or {}).get(device, 0)):
                    report.last_frame = max(report.last_frame, frame_id)
                    _note(report, values)
                    report.events.append(values)
        finally:
            conn.close()
    return out


def _note(report: NodeReport, values: dict[str, str]) -> None:
    if values.get("event") == "update.refused":  # what runs is unchanged; the tier is the release's
        report.refused = (values.get("offer", "?"), values.get("reason", "?"))
        return
    if "update" in values or "fwupdate" in values or values.get("event") == "update.kept":
        report.refused = None  # a later boot or trial outcome is the last word
    if "app" in values and "update" in values:  # a boot frame
        report.running, report.update, report.why = values["app"], values["update"], values.get("why")
    if "firmware" in values and "fwupdate" in values:  # a boot frame after a firmware update
        report.firmware, report.fwupdate, report.fwwhy = values["firmware"], values["fwupdate"], values.get("fwwhy")
    if values.get("event") == "update.kept":  # the trial the boot frame named is over
        if "firmware" in values:
            report.firmware, report.fwupdate, report.fwwhy = values["firmware"], "kept", None
        else:
            report.running, report.update, report.why = values.get("app"), "kept", None


def last_frame_ids(db_path: Path, devices: list[str]) -> dict[str, int]:
    return {d: r.last_frame for d, r in read_reports(db_path, devices).items()}


def outcome(report: NodeReport, version: str) -> tuple[str, str]:
    """(state, detail) of an update to version from what the node said since it was offered:
    kept, rolled-back, refused (final), trial, or offered (nothing said yet)."""
    state, detail = "offered", ""
    for values in report.events:
        event = values.get("event")
        if event == "update.kept" and version in (values.get("app"), values.get("firmware")):
            return "kept", ""
        if event == "update.refused" and values.get("offer") == version:
            return "refused", values.get("reason", "")
        for prefix, name in (("", "app"), ("fw", "firmware")):
            if values.get(prefix + "update") == "rolled-back" and values.get(prefix + "failed") == version:
                return "rolled-back", values.get(prefix + "why", "")
            if values.get(prefix + "update") == "trial" and values.get(name) == version:
                state, detail = "trial", ""
    return state, detail


def update_states(db_path: Path, devices: list[str]) -> dict[str, dict[str, str | None]]:
    """Per device (hex): the application version it runs, how its last update ended (and why),
    the same for the firmware tier (a refused offer counts as its tier's last outcome, "refused"
    with "version: reason"), and the version offered to it now, for `fieldnode status`."""
    from .site import UpdateSite, updates_dir
    site = UpdateSite(updates_dir(db_path))
    offers = site.offers()
    reports = read_reports(db_path, devices)
    offered = {kid[:12]: version for kid, version in offers.items()}  # the kid's first 6 bytes: the device
    tiers = {r.version: r.tier for r in site.releases()}
    for r in reports.values():
        if r.refused is not None:  # a refused offer is the last outcome of its tier
            version, reason = r.refused
            if tiers.get(version) == "fw":
                r.fwupdate, r.fwwhy = "refused", f"{version}: {reason}"
            else:
                r.update, r.why = "refused", f"{version}: {reason}"
    return {d: {"running": r.running, "update": r.update, "why": r.why,
                "firmware": r.firmware, "fwupdate": r.fwupdate, "fwwhy": r.fwwhy, "offered": offered.get(d)}
            for d, r in reports.items()}
