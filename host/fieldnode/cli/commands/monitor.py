"""fieldnode monitor: live view of a node's frames from its USB console or from UDP."""
from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections import Counter

from rich.live import Live

from ..options import add_declarations_option, add_keys_option, read_declarations, read_keys
from ...wire.hostport import parse_listen
from ...ui.liveview import LiveState
from ...ui.monitor import Event, Intake, bind_udp, run_in_thread, serial_events, udp_events
from ...wire.render import frame_json
from ...node.serialsource import open_port
from ...ui.terminal import terminal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "monitor", help="live view of verified frames from a USB console or UDP",
        description="Reads frames live and verifies each against the keystore. From a USB serial "
        "console, frame lines (FN1 ...) are picked out of the node's log lines; from UDP, bare "
        "frames or CoAP messages are read and never answered. The view shows one row per node and "
        "reading: value, unit, recent values, frame counter, age, rate, verification status; "
        "rejected frames are counted by reason. If the board is unplugged the monitor says so and "
        "carries on when it is plugged back in.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--port", help="serial port of the node, e.g. /dev/ttyUSB0")
    src.add_argument("--udp", metavar="HOST:PORT", help="listen for frames on this UDP address")
    add_keys_option(p)
    add_declarations_option(p)
    p.add_argument("--json", action="store_true",
                   help="print one verified frame per line as JSON (for piping), no live view; rejections "
                   "(rejected: REASON) and, at the end, the counts by reason go to stderr")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    keys = read_keys(args)
    if len(keys) == 0:
        print("warning: the keystore is empty, every frame will be rejected as unknown-kid "
              "(pass --keys PATH or provision the node first)", file=sys.stderr)
    intake = Intake(keys, read_declarations(args))
    stop = threading.Event()
    if args.port:
        open_port(args.port).close()  # fail fast, with the clear message, before the live view
        events = serial_events(args.port, intake, stop)
    else:
        events = udp_events(bind_udp(parse_listen(args.udp, "--udp")), intake, stop)
    inbox: queue.SimpleQueue[Event] = queue.SimpleQueue()
    run_in_thread(events, inbox.put)
    deadline = time.monotonic() + args.duration if args.duration else None
    names = {e.device.hex(): e.name for e in keys if e.name}
    state = LiveState(names)
    try:
        if args.json:
            _json_loop(inbox, deadline)
        else:
            console = terminal()
            with Live(state.render(), console=console, refresh_per_second=4, transient=False) as live:
                _view_loop(inbox, deadline, state, live)
            if not console.is_terminal:  # rich ends the last line only on a terminal
                console.line()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
    return 0


def _next(inbox: queue.SimpleQueue[Event], deadline: float | None) -> Event | None:
    timeout = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
    try:
        return inbox.get(timeout=timeout)
    except queue.Empty:
        return None


def _json_loop(inbox: queue.SimpleQueue[Event], deadline: float | None) -> None:
    verified = 0
    rejected: Counter[str] = Counter()
    try:
        while deadline is None or time.monotonic() < deadline:
            event = _next(inbox, deadline)
            if event is None:
                continue
            if event.kind == "frame" and event.frame is not None:
                verified += 1
                print(frame_json(event.frame), flush=True)
            elif event.kind == "rejected":
                rejected[event.text] += 1
                print(f"rejected: {event.text}", file=sys.stderr, flush=True)
            elif event.kind == "status":
                print(event.text, file=sys.stderr, flush=True)
            elif event.kind == "end":
                return
    finally:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(rejected.items()))
        print(f"{verified} verified, {sum(rejected.values())} rejected" + (f" ({reasons})" if reasons else ""),
              file=sys.stderr, flush=True)


def _view_loop(inbox: queue.SimpleQueue[Event], deadline: float | None, state: LiveState, live: Live) -> None:
    while deadline is None or time.monotonic() < deadline:
        event = _next(inbox, deadline)
        if event is not None:
            if event.kind == "frame" and event.frame is not None:
                state.add_frame(event.frame)
            elif event.kind == "rejected":
                state.add_rejection(event.text)
            elif event.kind == "log":
                state.add_log(event.text)
            elif event.kind == "status":
                state.status = event.text
            elif event.kind == "end":
                live.update(state.render())
                return
        live.update(state.render())
