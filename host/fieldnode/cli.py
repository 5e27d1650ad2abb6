"""Command line entry point: parses arguments and dispatches to one module per command.

Every module in fieldnode.commands that defines ``register(subparsers)`` becomes a subcommand;
``register`` adds its parser and sets ``func`` (called with the parsed namespace, returns the
exit status).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__, commands
from .errors import FieldnodeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fieldnode",
        description="Flash, provision, monitor and simulate fieldnode ESP32 nodes; decode and "
        "verify their signed frames; run the gateway.",
    )
    parser.add_argument("--version", action="version", version=f"fieldnode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FieldnodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
