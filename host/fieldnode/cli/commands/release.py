"""fieldnode release: the application of a firmware tree as a versioned, signed-on-offer update."""
from __future__ import annotations

import argparse
from pathlib import Path

from ...infra import paths
from ...node.boards import load_board
from ...store.location import default_db_path
from ...updates.release import DEFAULT_MIN_FIRMWARE, build_firmware_release, build_release
from ...store.target import parse_db
from ...updates.site import UpdateSite, check_version, updates_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "release", help="build an application update the gateway serves over the air",
        description="Compiles the application's fnode package (as `flash` does) into an update "
        "image for a board and stores it, with its version, size and SHA-256, in the updates "
        "directory beside the gateway's database. `fieldnode update` offers it to nodes, with a "
        "manifest signed for each node's key. Versions only go up: nodes refuse anything not newer.",
        epilog="docs/updates.md")
    p.add_argument("--version", required=True, metavar="X.Y.Z", help="the release's version (e.g. 0.2.0)")
    p.add_argument("--board", default="virtual", metavar="B",
                   help="board name (boards/B.json) or board file the release is for (default: virtual)")
    p.add_argument("--app-dir", type=Path, default=paths.FIRMWARE_DIR, metavar="DIR",
                   help="application tree (default: %(default)s)")
    p.add_argument("--min-firmware", default=DEFAULT_MIN_FIRMWARE, metavar="X.Y.Z",
                   help="oldest MicroPython the release runs on; older nodes refuse it (default: %(default)s)")
    p.add_argument("--firmware", type=Path, metavar="BIN",
                   help="release this MicroPython app image (firmware tier, written to the node's other OTA "
                   "partition) instead of the application")
    p.add_argument("--db", type=parse_db, default=None,
                   help=f"the gateway's database; releases go beside it (default {default_db_path()})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_version(args.version)
    check_version(args.min_firmware)
    board = load_board(args.board)
    site = UpdateSite(updates_dir(args.db or default_db_path()))
    if args.firmware is not None:
        rel = build_firmware_release(site, args.firmware, args.version, board)
    else:
        rel = build_release(site, args.app_dir, args.version, board, args.min_firmware)
    print(f"release {rel.version} ({rel.tier}) for board {rel.board}: {rel.size} bytes, sha256 {rel.sha256[:16]}…, "
          f"in {site.root / 'releases' / rel.version}")
    return 0
