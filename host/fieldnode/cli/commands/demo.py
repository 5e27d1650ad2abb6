"""fieldnode demo: virtual nodes -> gateway -> live view, all on this machine, no hardware."""
from __future__ import annotations

import argparse
import json
import queue
import signal
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from ...gateway.events import GatewayEvent
from ...infra.errors import FieldnodeError
from ...gateway.thread import GatewayThread
from ...node.boards import load_board
from ...node.keystore import Keystore
from ...ui.liveview import LiveState
from ...sim.fleet import Fleet
from ...ui.terminal import terminal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="three virtual nodes, a gateway and a live view on this machine",
        description="Starts a gateway on loopback (CoAP/UDP, SQLite in a temporary directory), "
        "then virtual nodes running the real firmware, provisions each over its pty, and shows the "
        "frames the gateway verified and committed, live. Ends after --duration, on Ctrl-C or on SIGTERM.")
    p.add_argument("--nodes", type=int, default=3, help="how many virtual nodes (default 3)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60; 0 = until Ctrl-C)")
    p.add_argument("--board", default="virtual", help="board of the virtual nodes (default: virtual)")
    p.add_argument("--frame-version", type=int, choices=(1, 2), default=2,
                   help="frame format the nodes send (default 2, as new nodes do; the virtual board file "
                   "itself pins 1 for the test suite)")
    p.add_argument("--db", type=Path, default=None,
                   help="keep the gateway's database at this path (default: a temporary one, removed at the "
                   "end); `fieldnode status --db PATH` reads it afterwards")
    p.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="serve the web page here (default 127.0.0.1:8080; another free port when it is taken; "
                   "'off' for none)")
    p.add_argument("--source", action="store_true",
                   help="run firmware/lib as source instead of the application image `fieldnode flash` writes")
    p.set_defaults(func=run)


def _board_file(board: str, frame_version: int, base: Path) -> Path:
    """The board file with the chosen frame format, written beside the demo's other files."""
    doc = load_board(board)
    doc["frame_version"] = frame_version
    path = base / f"{Path(board).stem}.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


def run(args: argparse.Namespace) -> int:
    # SIGTERM ends the demo as Ctrl-C does: its nodes run in sessions of their own and would be
    # left running by SIGTERM's default.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    console = terminal()
    with tempfile.TemporaryDirectory(prefix="fieldnode-demo-") as tmp:
        base = Path(tmp)
        board_file = _board_file(args.board, args.frame_version, base)  # a wrong --board: before anything starts
        keys_path = base / "keys.json"
        Keystore(keys_path).save()
        db = args.db or base / "gateway.db"
        events: queue.SimpleQueue[GatewayEvent] = queue.SimpleQueue()
        gateway = GatewayThread(Keystore.load(keys_path), db, ("127.0.0.1", 0)).start()
        gateway.call(gateway.gateway.subscribe, events.put)
        host, port = gateway.address
        kept = "kept" if args.db else "temporary: removed at the end, --db PATH keeps it"
        console.print(f"gateway listening on coap://{host}:{port}/f, database {db} ({kept})")
        web = _web_page(args.http, db, keys_path, console)
        fleet = Fleet(base, args.nodes, board=board_file, keys=keys_path, gateway=f"{host}:{port}",
                      log=lambda s: console.print(s), source=args.source)
        state = LiveState({n.unique_id.hex(): name for name, n in zip(fleet.names, fleet.nodes, strict=True)})
        with Live(state.render(), console=console, refresh_per_second=4, auto_refresh=False) as live:
            try:
                console.print(f"booting {args.nodes} virtual nodes (MicroPython unix port, simulated hardware)")
                fleet.start()
                for name, node in zip(fleet.names, fleet.nodes, strict=True):
                    console.print(f"  {name}: device {node.unique_id.hex()} on {node.port}")
                _live(fleet, events, args.duration, state, live)
            except KeyboardInterrupt:
                pass
            finally:
                fleet.stop()
                if web is not None:
                    web.stop()
                gateway.stop()
                # Frames the gateway took after the last refresh: the view's count and the
                # closing one are the same frames.
                _take_all(events, state)
                state.status = ""
                live.update(state.render(), refresh=True)
        console.print()
        counts = gateway.gateway.counts
        console.print("gateway counts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


def _web_page(listen: str, db: Path, keys: Path, console: Console):
    """The web page over the demo's database, read-only; the address printed."""
    if listen == "off":
        return None
    from ...web.app import WebOptions
    from ...web.server import WebServer

    opts = WebOptions(db=db, offline_after=30.0, keys=keys, site="demo")
    try:
        web = WebServer(opts, listen, "--http")
    except FieldnodeError as exc:
        if not listen.endswith(":8080"):
            raise
        console.print(f"{exc}: taking another port")
        web = WebServer(opts, "127.0.0.1:0", "--http")
    web.start()
    console.print(web.describe(None), style="bold", markup=False)
    return web


def _take(event: GatewayEvent | None, state: LiveState) -> None:
    if event is None:
        return
    if event.outcome == "accepted" and event.frame is not None:
        state.add_frame(event.frame)
    elif event.outcome == "rejected":
        state.add_rejection(event.reason)


def _take_all(events: queue.SimpleQueue[GatewayEvent], state: LiveState) -> None:
    while True:
        try:
            _take(events.get_nowait(), state)
        except queue.Empty:
            return


def _live(fleet: Fleet, events: queue.SimpleQueue[GatewayEvent], duration: float, state: LiveState,
          live: Live) -> None:
    started = time.monotonic()
    next_drift = 0.0
    while not duration or time.monotonic() - started < duration:
        now = time.monotonic()
        if now >= next_drift:
            fleet.drift(now - started)
            next_drift = now + 1.0
        try:
            _take(events.get(timeout=0.25), state)
        except queue.Empty:
            pass
        state.status = f"{time.monotonic() - started:.0f}s of {duration:.0f}s - Ctrl-C to stop" if duration \
            else "Ctrl-C to stop"
        live.update(state.render(), refresh=True)
