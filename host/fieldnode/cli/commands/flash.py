"""fieldnode flash: MicroPython plus the application on one or more nodes (or the application only)."""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from ...infra import paths
from ...infra.errors import FieldnodeError
from ...flashing.app_only import update_port
from ...node.chips import CHIPS
from ...flashing.plan import load_app, prepare_flash_job, resolve_target
from ...flashing.serial_flash import AFTER_MODES, RESET_MODES, flash_port
from ...flashing.session import run_ports
from ...ui.terminal import terminal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flash", help="write MicroPython and the fieldnode application to nodes over USB",
        description="Write MicroPython and the application (firmware/ compiled to .mpy, with the "
        "board definition, as a littlefs image) to every --port in parallel, with one esptool "
        "write per node. Each node's chip is detected first: a chip that does not match, a "
        "flash too small or an application that does not fit is refused with nothing written. "
        "--app-only updates just the application, over the REPL, on nodes already running "
        "MicroPython.",
        epilog=f"Without --firmware the newest .bin in {paths.cache_dir()}/firmware/<chip>/ is "
        "used; download it from micropython.org/download/ (ESP32_GENERIC, ESP32_GENERIC_S3, "
        "ESP32_GENERIC_C3). Offsets and messages: docs/flashing.md.")
    p.add_argument("--port", action="append", required=True, metavar="DEV",
                   help="serial device of a node in download mode; repeat for several nodes")
    p.add_argument("--firmware", metavar="FILE", help="MicroPython .bin (the full image from "
                   "micropython.org); default: the newest in the cache for the chip")
    p.add_argument("--board", metavar="B", help="board name (boards/B.json) or path to a board "
                   "file; it is validated, shipped as /board.json and sets the chip")
    p.add_argument("--chip", choices=sorted(CHIPS), help="expected chip (default: from the board, "
                   "else from the firmware, else esp32); nodes with another chip are refused")
    p.add_argument("--baud", type=int, default=460800, metavar="N",
                   help="baud rate for the transfer after the 115200 handshake (default 460800)")
    p.add_argument("--app-only", action="store_true",
                   help="update only the application through mpremote (node runs MicroPython)")
    p.add_argument("--app-dir", type=Path, default=paths.FIRMWARE_DIR, metavar="DIR",
                   help="application tree to ship: boot.py, main.py and lib/ (default: %(default)s)")
    p.add_argument("--source-lines", action="store_true",
                   help="keep line numbers in the node's tracebacks (about 3 KB more of its heap)")
    p.add_argument("--no-compress", action="store_true",
                   help="send the images uncompressed (slower; for diagnosing transfers)")
    p.add_argument("--before", choices=RESET_MODES, default="default-reset",
                   help="how to put the chip in download mode (default: DTR/RTS reset)")
    p.add_argument("--after", choices=AFTER_MODES, default="hard-reset",
                   help="what to do after writing (default: hard reset, the node boots)")
    p.add_argument("--no-reset", action="store_true",
                   help="with --app-only: do not soft-reset the node after the update")
    p.add_argument("--verbose", action="store_true", help="print each port's esptool/mpremote output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.app_only and args.firmware:
        raise FieldnodeError("--firmware and --app-only exclude each other: --app-only keeps the "
                             "MicroPython that is on the node")
    if args.baud < 9600:
        raise FieldnodeError(f"--baud {args.baud}: too slow; use 115200 to 921600")
    console = terminal()
    target = resolve_target(args.chip, args.board, args.firmware)
    app = load_app(args.app_dir, target, args.source_lines)
    board = f", board {target.board['name']}" if target.board else ", no board file"
    console.print(f"chip      {target.chip.name} (from {target.chip_source})")
    console.print(f"app       {args.app_dir}: {len(app.files)} files, {app.total_bytes} bytes{board}")
    if args.app_only:
        worker = partial(update_port, app=app, reset=not args.no_reset)
    else:
        job = prepare_flash_job(target, args.firmware, app, baud=args.baud, before=args.before,
                                after=args.after, compress=False if args.no_compress else None)
        console.print(f"firmware  {job.firmware.path} ({len(job.firmware.data)} bytes, written at "
                      f"0x{target.chip.firmware_offset:x})")
        worker = partial(flash_port, job=job)
    console.print(f"ports     {', '.join(args.port)}")
    return run_ports(args.port, lambda port, line: worker(port, line=line), console,
                     verbose=args.verbose)

