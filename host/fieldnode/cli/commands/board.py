"""fieldnode board: list the board definitions and check one before it is flashed."""
from __future__ import annotations

import argparse

from rich.table import Table

from ...node.boards import board_names, load_board, reading_names
from ...ui.terminal import terminal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("board", help="list board definitions or check one",
                       description="Board definitions (boards/*.json) say which chip, pins, buses, "
                       "sensors and actuators a node has. `check` validates files before flashing.")
    bs = p.add_subparsers(dest="board_command", metavar="ACTION", required=True)
    bs.add_parser("list", help="known boards with chip and attached devices").set_defaults(func=run_list)
    ck = bs.add_parser("check", help="validate board files or names; exit status 2 on the first bad one",
                        description="Validates each BOARD in turn and prints its readings. At the first "
                        "board with problems, prints all of that board's problems and exits with status 2; "
                        "0 means every board is valid.")
    ck.add_argument("boards", nargs="+", metavar="BOARD", help="board name or path to a .json file")
    ck.set_defaults(func=run_check)


def run_list(args: argparse.Namespace) -> int:
    table = Table(title="boards")
    for col in ("board", "chip", "sensors", "actuators"):
        table.add_column(col)
    for name in board_names():
        doc = load_board(name)
        table.add_row(name, doc["chip"], ", ".join(f"{s['name']} ({s['driver']})" for s in doc["sensors"]),
                      ", ".join(f"{a['name']} ({a['driver']})" for a in doc.get("actuators", [])) or "-")
    terminal().print(table)
    return 0


def run_check(args: argparse.Namespace) -> int:
    for board in args.boards:
        doc = load_board(board)  # BoardError carries every problem; the CLI prints it
        print(f"{board}: ok ({doc['chip']}, readings: {', '.join(sorted(reading_names(doc)))})")
    return 0
