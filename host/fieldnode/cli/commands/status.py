"""fieldnode status: the gateway's health from its database (works while the gateway runs)."""
from __future__ import annotations

import argparse
import json
import time

from rich.console import Console

from rich.table import Table

from ...gateway.status import Status, read_status
from ...store.location import default_db_path
from ...ui.terminal import terminal
from ...updates.reports import update_states
from ...store.target import is_postgres, parse_db


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status", help="gateway health: frames accepted/rejected, nodes last seen, queues",
        description="Reads the gateway's database and shows whether the gateway is running, how "
        "many frames it accepted and rejected (by reason), when each node was last heard and its last "
        "reported heap (free, lowest since boot, largest free block), and how many readings wait for "
        "the MQTT broker and commands for their node. Safe to run while "
        "the gateway runs. Exit status 1 if no gateway process is running.")
    p.add_argument("--db", type=parse_db, default=None, metavar="PATH|URI",
                   help=f"the gateway's database (default {default_db_path()}, or $FIELDNODE_DB), or the "
                   "postgresql://... URI the gateways share (every gateway on it is shown)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(func=run)


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    s = max(0.0, now - t)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    if s < 172800:
        return f"{s / 3600:.1f} h ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _kb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KB"


def _heap_cells(heap: dict | None) -> tuple[str, str, str]:
    """The node's last reported heap (boot or health frame): free, lowest since boot, largest block."""
    if not heap:
        return "-", "-", "-"
    return _kb(heap.get("free")), _kb(heap.get("low")), _kb(heap.get("block"))


def run(args: argparse.Namespace) -> int:
    db = args.db or default_db_path()
    st = read_status(db)
    # docs/updates.md; a PostgreSQL store serves no updates yet
    updates = {} if is_postgres(db) else update_states(db, [d["device"] for d in st.devices])
    if args.json:
        print(json.dumps({**st.to_json(), "updates": updates}, indent=1))
    else:
        console = terminal()
        show(st, console)
        show_updates(st, updates, console)
    return 0 if st.running else 1


def show_updates(st: Status, updates: dict[str, dict], console: Console) -> None:
    if not any(u["running"] or u["update"] or u["firmware"] or u["fwupdate"] or u["offered"]
               for u in updates.values()):
        return  # no node has reported a slot or been offered an update
    # The firmware's columns once a node has tried a firmware update: most fleets never do.
    firmware = any(u["firmware"] or u["fwupdate"] for u in updates.values())
    table = Table(title="updates")
    for col in ("node", "application", "last update", *(("firmware", "last firmware update") if firmware else ()),
                "offered"):
        table.add_column(col)
    for d in st.devices:
        u = updates[d["device"]]
        fw = (u["firmware"] or "-", _outcome(u["fwupdate"], u["fwwhy"])) if firmware else ()
        table.add_row(d["name"] or d["device"], u["running"] or "-", _outcome(u["update"], u["why"]), *fw,
                      u["offered"] or "-")
    console.print(table)


def _outcome(state: str | None, why: str | None) -> str:
    return (state or "-") + (f" ({why})" if why else "")


def show(st: Status, console: Console) -> None:
    now = st.now
    workers = Table(title="gateway")
    shared = any("host" in w for w in st.workers)  # PostgreSQL: every gateway on the database
    for col in ("worker", "pid", "listening", "state", "started", "heartbeat", "uncommitted", "dedup cache"):
        workers.add_column(col, no_wrap=col in ("listening", "dedup cache"))
    if shared:
        workers.add_column("database")
    for w in st.workers:
        style = "green" if w["state"] == "running" else "red"
        cells = [str(w["worker"]), str(w["pid"]), (f"{w['host']} " if shared else "") + w["listen"],
                 f"[{style}]{w['state']}[/]", _ago(w["started"], now), _ago(w["heartbeat"], now),
                 str(w["batch_pending"]), f"{w['exchanges']} exchanges, {w['dedup_bytes'] / (1 << 20):.1f} MiB"]
        if shared:
            cells.append(f"{w['store_outages']} outages, last {w['store_detail']}" if w["store_outages"]
                         else "no outage")
        workers.add_row(*cells)
    if not st.workers:
        workers.add_row("-", "-", "-", "[red]never started[/]", "-", "-", "-", "-")
    console.print(workers)

    c = st.counters
    frames = Table(title="datagrams (since the database was created)")
    frames.add_column("outcome")
    frames.add_column("count", justify="right")
    for name in ("accepted", "duplicate", "retransmission", "failed", "ping", "ignored"):
        frames.add_row(name, str(c.get(name, 0)))
    for reason, n in sorted(st.rejected.items()):
        frames.add_row(f"[red]rejected: {reason}[/]", str(n))
    frames.add_row("[bold]total[/]", str(c.get("datagrams", 0)))
    console.print(frames)

    nodes = Table(title=f"{len(st.devices)} nodes")
    for col in ("node", "device", "last seen", "from", "frames", "counter", "heap free", "lowest", "largest block"):
        nodes.add_column(col, justify="left" if col in ("node", "device", "last seen", "from") else "right")
    for d in st.devices:
        nodes.add_row(d["name"] or "-", d["device"], _ago(d["last_seen"], now), d["last_source"] or "-",
                      str(d["frames"]), str(d["highest_counter"]), *_heap_cells(d.get("heap")))
    console.print(nodes)

    queues = Table(title="queues")
    queues.add_column("queue")
    queues.add_column("depth", justify="right")
    queues.add_column("detail")
    if st.mqtt:
        m = st.mqtt
        because = f": {m['detail']}" if m["detail"] else ""
        detail = f"{m['url']} {m['state']}{because}, {m['published']} published"
    else:
        detail = "MQTT off"
    if st.outbox:
        detail += f", oldest waiting {_ago(st.outbox_oldest, now)}"
    queues.add_row("MQTT outbox (readings)", str(st.outbox), detail)
    open_cmds = st.commands.get("pending", 0) + st.commands.get("sent", 0)
    queues.add_row("commands", str(open_cmds),
                   ", ".join(f"{k} {v}" for k, v in sorted(st.commands.items())) or "none queued")
    uncommitted = sum(w["batch_pending"] for w in st.workers if w["state"] == "running")
    queues.add_row("uncommitted frames", str(uncommitted), "")
    console.print(queues)
