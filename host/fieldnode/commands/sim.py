"""fieldnode sim: virtual nodes running the real firmware on the MicroPython unix port."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ..hostport import format_hostport, parse_destination
from ..sim.fleet import Fleet


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim", help="start virtual nodes (the real firmware, simulated hardware)",
        description="Starts N virtual nodes: each is the MicroPython unix port running this "
        "repository's firmware (by default the very application image `fieldnode flash` writes to a "
        "board, built at start) with emulated sensors (from the board definition) behind a "
        "pseudo-terminal that mpremote, `fieldnode provision` and `fieldnode monitor --port` use "
        "exactly like a USB board. Each node is provisioned over its pty (keys go into --keys, "
        "which a gateway reads) and its sensors drift slowly. Ctrl-C stops them cleanly.")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--board", default="virtual", help="board definition (default: virtual)")
    p.add_argument("--gateway", metavar="HOST:PORT", help="gateway the nodes send to over CoAP/UDP")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--dir", type=Path, default=None, help="where the nodes' flash, NVS and world files "
                   "live (default: a temporary directory, removed at the end)")
    p.add_argument("--keys", type=Path, default=None,
                   help="keystore to provision into (default: keys.json in --dir)")
    p.add_argument("--source", action="store_true",
                   help="run firmware/lib as source from the working tree (an edit takes effect at the "
                   "node's next reset) instead of the compiled application image `fieldnode flash` writes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    gateway = format_hostport(*parse_destination(args.gateway, "--gateway")) if args.gateway else None
    with tempfile.TemporaryDirectory(prefix="fieldnode-sim-") as tmp:
        base = args.dir or Path(tmp)
        fleet = Fleet(base, args.nodes, board=args.board, keys=args.keys, gateway=gateway, log=print,
                      source=args.source)
        print(f"starting {args.nodes} virtual node(s) on board {args.board} in {base}")
        try:
            fleet.start()
            print(f"keystore: {fleet.keys_path}")
            for name, node in zip(fleet.names, fleet.nodes):
                print(f"  {name}  device {node.unique_id.hex()}  port {node.port}")
            print("try: fieldnode monitor --keys", fleet.keys_path, "--port", fleet.nodes[0].port)
            print("Ctrl-C stops the nodes")
            started = time.monotonic()
            while args.duration is None or time.monotonic() - started < args.duration:
                fleet.drift(time.monotonic())
                time.sleep(1.0)
        except KeyboardInterrupt:
            print("stopping")
        finally:
            fleet.stop()
    return 0
