"""Command line entry point: parses arguments and dispatches to one module per command.

Every module in fieldnode.cli.commands that defines ``register(subparsers)`` becomes a subcommand;
``register`` adds its parser and sets ``func`` (called with the parsed namespace, returns the
exit status).
"""
from __future__ import annotations

import sys

try:
    # The console script imports this module before main() runs: a Ctrl-C this early ends the
    # same way as one later, not in a traceback through argparse's import.
    import argparse
    import importlib
    import os
    import pkgutil
    import signal
    import threading

    from .. import __version__
    from . import commands
    from ..infra.errors import FieldnodeError
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)


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
    # Ctrl-C is handled from the first line: the command modules import esptool and rich, which
    # takes a noticeable moment, and an interrupt then is as ordinary as one later.
    try:
        _ctrl_c_interrupts()
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except FieldnodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`fieldnode decode --json | head -2`): stop quietly, as cat or grep
        # do, and keep the interpreter's final flush of stdout from failing again.
        _discard_stdout()
        return 128 + signal.SIGPIPE


def _ctrl_c_interrupts() -> None:
    # A shell without job control (a script, CI, `make test &`) starts a command put in the
    # background with SIGINT ignored, and Python then installs no KeyboardInterrupt: `sim`,
    # `monitor` and a live `decode` ignored Ctrl-C and `kill -INT` and ran on. They stop on it as
    # documented wherever they were started (the gateway sets its own handler the same way).
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _discard_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a file descriptor (captured by a test): nothing left to flush


if __name__ == "__main__":
    sys.exit(main())
