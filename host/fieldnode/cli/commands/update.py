"""fieldnode update: a staged rollout of a release to nodes, through the gateway."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ...infra.errors import FieldnodeError
from ...node.keystore import Keystore
from ...store.location import default_db_path
from ...updates.rollout import NodeProgress, Rollout
from ...store.target import parse_db
from ...updates.site import UpdateSite, updates_dir
from ..options import add_keys_option, read_keys

_STYLE = {"kept": "green", "rolled-back": "red", "refused": "red", "timed-out": "red", "trial": "yellow",
          "offered": "cyan", "skipped": "dim"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "update", help="roll a release out to nodes over the air: canaries first, stops on failures",
        description="Offers a release (`fieldnode release`) to the named nodes through the gateway: "
        "the canaries first, the others only once every canary kept the new version. A node learns "
        "of the offer from the gateway's ack of its next frame, fetches it, checks it, runs it on "
        "trial and keeps it once the gateway acks a frame from it, or rolls back by itself. The "
        "rollout stops after --stop-after failures (rolled back, refused, or no outcome within "
        "--timeout). Exit status 0 when every node kept the release.",
        epilog="docs/updates.md")
    p.add_argument("nodes", nargs="*", metavar="NODE", help="node names (as provisioned) or device ids")
    p.add_argument("--all", action="store_true", help="every node in the keystore")
    p.add_argument("--version", metavar="X.Y.Z", help="the release to roll out (default: the newest)")
    p.add_argument("--canary", type=int, default=1, metavar="N", help="nodes updated first (default 1; 0: none)")
    p.add_argument("--stop-after", type=int, default=1, metavar="K", help="stop after K failures (default 1)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="seconds a stage waits for its nodes' outcomes (default 600)")
    p.add_argument("--db", type=parse_db, default=None, help=f"the gateway's database (default {default_db_path()})")
    p.add_argument("--json", action="store_true", help="print one JSON object with each node's outcome")
    add_keys_option(p)
    p.set_defaults(func=run)


def _targets(keys: Keystore, names: list[str], every: bool) -> list[tuple[str, str]]:
    """(name, device hex) of each node asked for, in the order given."""
    known: dict[str, tuple[str, str]] = {}
    for entry in keys:
        known.setdefault(entry.name or entry.device.hex(), (entry.name or entry.device.hex(), entry.device.hex()))
        known.setdefault(entry.device.hex(), known[entry.name or entry.device.hex()])
    if every:
        if names:
            raise FieldnodeError("give node names or --all, not both")
        return sorted({v for v in known.values()})
    if not names:
        raise FieldnodeError("name the nodes to update, or pass --all")
    missing = [n for n in names if n not in known]
    if missing:
        raise FieldnodeError(f"not in the keystore: {', '.join(missing)} (see `fieldnode keys list`)")
    return list(dict.fromkeys(known[n] for n in names))


def _table(nodes: list[NodeProgress], version: str) -> Table:
    table = Table(title=f"update to {version}")
    for col in ("node", "stage", "state", "detail"):
        table.add_column(col)
    for n in nodes:
        style = _STYLE.get(n.state, "")
        table.add_row(n.name, n.stage, f"[{style}]{n.state}[/]" if style else n.state, n.detail)
    return table


def run(args: argparse.Namespace) -> int:
    if args.canary < 0 or args.stop_after < 1 or args.timeout <= 0:
        raise FieldnodeError("--canary must be 0 or more, --stop-after 1 or more, --timeout positive")
    keys = read_keys(args)
    db = args.db or default_db_path()
    if not Path(db).exists():
        raise FieldnodeError(f"no gateway database at {db}; pass the --db the gateway uses")
    site = UpdateSite(updates_dir(db))
    releases = site.releases()
    if args.version is None and not releases:
        raise FieldnodeError(f"no release in {site.root}; make one with `fieldnode release --version X.Y.Z`")
    release = site.release(args.version) if args.version else releases[-1]
    nodes = [NodeProgress(name, device, "canary" if i < args.canary else "rest")
             for i, (name, device) in enumerate(_targets(keys, args.nodes, args.all))]
    rollout = Rollout(site, keys, Path(db), release, nodes, args.canary, args.stop_after, args.timeout)
    if args.json:
        rollout.run()
    else:
        with Live(_table(nodes, release.version), console=Console(), refresh_per_second=4) as live:
            rollout.on_change = lambda ns: live.update(_table(ns, release.version))
            rollout.run()
    kept = sum(n.state == "kept" for n in nodes)
    if args.json:
        print(json.dumps({"version": release.version, "kept": kept, "nodes": [n.to_json() for n in nodes]}, indent=1))
    else:
        print(f"{kept} of {len(nodes)} nodes kept {release.version}")
    return 0 if kept == len(nodes) else 1
