"""fieldnode sim: virtual nodes running the real firmware on the MicroPython unix port, and
emulated ESP32 ROM loaders for `fieldnode flash`."""
from __future__ import annotations

import argparse
import os
import select
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ...node.boards import load_board
from ...infra.errors import FieldnodeError
from ...wire.hostport import format_hostport, parse_destination
from ...sim.fleet import Fleet, sim_unique_id


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim", help="start virtual nodes (the real firmware, simulated hardware) and emulated ROM loaders",
        description="Starts N virtual nodes: each is the MicroPython unix port running this "
        "repository's firmware (by default the very application image `fieldnode flash` writes to a "
        "board, built at start) with emulated sensors (from the board definition) behind a "
        "pseudo-terminal that mpremote, `fieldnode provision` and `fieldnode monitor --port` use "
        "exactly like a USB board. Each node is provisioned over its pty (keys go into --keys, "
        "which a gateway reads) unless --unprovisioned, and its sensors drift slowly. --rom-loader N "
        "adds N ptys that answer like an ESP32 held in download mode, for `fieldnode flash` and "
        "esptool. Ctrl-C or SIGTERM stops them cleanly.")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3; 0 with --rom-loader)")
    p.add_argument("--board", default="virtual", help="board definition (default: virtual)")
    p.add_argument("--gateway", metavar="HOST:PORT", help="gateway the nodes send to over CoAP/UDP")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--dir", type=Path, default=None, help="where the nodes' flash, NVS and world files "
                   "live (default: a temporary directory, removed at the end)")
    p.add_argument("--keys", type=Path, default=None,
                   help="keystore to provision into (default: keys.json in --dir)")
    p.add_argument("--unprovisioned", action="store_true",
                   help="start the nodes with an empty NVS (no key, even in a --dir they ran in before), as "
                   "boards after `esptool erase-flash` and `fieldnode flash`: provision them yourself with "
                   "`fieldnode provision --port ...` (as docs/field-guide.md does)")
    p.add_argument("--rom-loader", type=int, default=0, metavar="N",
                   help="also start N emulated ROM loaders (the chip of --board, in download mode, its "
                   "flash in memory): ports for `fieldnode flash`; loader i has node i's MAC")
    p.add_argument("--source", action="store_true",
                   help="run firmware/lib as source from the working tree (an edit takes effect at the "
                   "node's next reset) instead of the compiled application image `fieldnode flash` writes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    gateway = format_hostport(*parse_destination(args.gateway, "--gateway")) if args.gateway else None
    if args.rom_loader < 0 or args.nodes < 0 or (args.nodes == 0 and not args.rom_loader):
        raise FieldnodeError("--nodes must be at least 1 (or 0 with --rom-loader N), --rom-loader N at least 0")
    if args.unprovisioned and args.keys:
        raise FieldnodeError("--keys goes without --unprovisioned: unprovisioned nodes have no key "
                             "(`fieldnode provision --keys PATH` records the ones you give them)")
    # Ctrl-C and SIGTERM stop sim the same way whenever they come, while the nodes start as well
    # as once they run: what was started is stopped as the stack unwinds.
    with _stop_signals() as stopped, tempfile.TemporaryDirectory(prefix="fieldnode-sim-") as tmp, \
            ExitStack() as stack:
        try:
            fleet, loaders = _start(args, args.dir or Path(tmp), gateway, stack)
            started = time.monotonic()
            print("Ctrl-C stops the nodes", flush=True)
            while args.duration is None or time.monotonic() - started < args.duration:
                if fleet is not None:
                    fleet.drift(time.monotonic())
                if stopped(timeout=1.0):
                    raise KeyboardInterrupt  # a signal whose own KeyboardInterrupt was lost
        except KeyboardInterrupt:
            print("stopping", flush=True)
    return 0


@contextmanager
def _stop_signals() -> Iterator[Callable[..., bool]]:
    """Ctrl-C and SIGTERM (`kill`, a service manager) stop sim the same way, nodes included:
    their processes are in sessions of their own, so a sim that died at SIGTERM's default left
    them running. The handler notes the signal and raises KeyboardInterrupt (which ends a wait of
    the start); the loop also looks at the note, and waits on the wakeup pipe that the C-level
    handler writes at once, whatever thread the kernel hands the signal to. A KeyboardInterrupt
    can be lost on its way (raised inside code that discards exceptions): a wheel-installed sim
    once ran on for 60 s after a Ctrl-C that arrived while it was starting, every signal mask
    clean; the note is not lost."""
    seen: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    read_end, write_end = os.pipe()
    previous = None
    handlers: dict[int, Any] = {}
    try:
        for fd in (read_end, write_end):
            os.set_blocking(fd, False)
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)

        def stopped(timeout: float) -> bool:
            if not seen and select.select([read_end], [], [], timeout)[0]:
                os.read(read_end, 64)
            return bool(seen)

        yield stopped
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)


def _say(line: str) -> None:
    # Each step as it happens, also into a pipe: a slow start shows where it is.
    print(line, flush=True)


def _start(args: argparse.Namespace, base: Path, gateway: str | None,
           stack: ExitStack) -> tuple[Fleet | None, list]:
    fleet = None
    if args.nodes:
        fleet = Fleet(base, args.nodes, board=args.board, keys=args.keys, gateway=gateway, log=_say,
                      source=args.source)
        _say(f"starting {args.nodes} virtual node(s) on board {args.board} in {base}")
    loaders = _rom_loaders(stack, args.board, args.rom_loader, fleet)
    if fleet is not None:
        stack.callback(fleet.stop)
        if args.unprovisioned:
            for node in fleet.nodes:
                (node.node_dir / "nvs.json").unlink(missing_ok=True)
        fleet.start(provision_nodes=not args.unprovisioned)
        _print_nodes(fleet, args.unprovisioned)
    for i, rom in enumerate(loaders, 1):
        _say(f"  rom-loader-{i}  {rom.chip.name} in download mode, MAC {rom.mac.hex(':')}  port {rom.port}")
    if loaders:
        _say(f"try: fieldnode flash --board {args.board} --port {loaders[0].port}")
    return fleet, loaders


def _rom_loaders(stack: ExitStack, board: str, count: int, fleet: Fleet | None) -> list:
    from ...sim.esp_rom import MIB, EspRomEmulator

    doc = fleet.board_doc if fleet is not None else load_board(board)
    chip, size = doc.get("chip", "esp32"), doc.get("flash_size_mb", 4) * MIB
    # The same MAC as the virtual node of the same number: flashing loader i then provisioning
    # node i reads like one board, whose label (its MAC) is its identity.
    macs = [n.unique_id for n in fleet.nodes] if fleet is not None else []
    macs += [sim_unique_id(i) for i in range(len(macs) + 1, count + 1)]
    return [stack.enter_context(EspRomEmulator(chip, flash_size=size, mac=mac)) for mac in macs[:count]]


def _print_nodes(fleet: Fleet, unprovisioned: bool) -> None:
    if unprovisioned:
        print("not provisioned: each node refuses to send until `fieldnode provision --port PORT`")
    else:
        print(f"keystore: {fleet.keys_path}")
    for name, node in zip(fleet.names, fleet.nodes, strict=True):
        print(f"  {'' if unprovisioned else name + '  '}device {node.unique_id.hex()}  port {node.port}")
    if not unprovisioned:
        print("try: fieldnode monitor --keys", fleet.keys_path, "--port", fleet.nodes[0].port)
    print(end="", flush=True)
