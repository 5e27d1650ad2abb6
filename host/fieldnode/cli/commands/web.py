"""fieldnode web: the fleet in a browser, read from the gateway's database."""
from __future__ import annotations

import argparse
import os

from ...gateway.protocol import site_from_keystore
from ...infra.errors import FieldnodeError
from ...store.location import default_db_path
from ...store.target import Target, parse_db
from ..options import add_keys_option, keys_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "web", help="the fleet in a browser: live values, charts, commands, rejections",
        description="Serves a web page over the gateway's database (read beside the running gateway; "
        "every shard): the fleet with live values, a chart per reading over any range, events, "
        "actuators, the command queue and recent rejections. Loopback only unless an access token is "
        "given. See docs/web.md.")
    p.add_argument("--db", type=parse_db, default=None, metavar="PATH|URI",
                   help=f"the gateway's store: its SQLite database (default {default_db_path()}, or "
                   "$FIELDNODE_DB) or a postgresql://USER@HOST[:PORT]/DBNAME URI")
    add_web_options(p)
    add_keys_option(p, "keystore: the site name, and the keys commands are signed with (--allow-commands)")
    p.add_argument("--site", default=None, help="site name shown (default: from the keystore's file name)")
    p.set_defaults(func=run)


def add_web_options(p: argparse.ArgumentParser, listen: str = "--listen") -> None:
    """The options `fieldnode web` and `fieldnode gateway --http` share."""
    if listen == "--listen":
        p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                       help="HTTP address (default 127.0.0.1:8080, this machine only; any other address needs "
                       "an access token)")
    p.add_argument("--offline-after", type=float, default=None, metavar="SECONDS",
                   help="a node shows offline after this long without a frame (default 300)")
    p.add_argument("--allow-commands", action="store_true",
                   help="let the page sign and queue commands (off by default: the page is read-only)")
    p.add_argument("--token", default=None, metavar="TOKEN",
                   help="access token the page asks for (at least 16 characters; $FIELDNODE_WEB_TOKEN keeps it "
                   "out of the process list); required to listen beyond loopback")


def web_options(args: argparse.Namespace, db: Target, offline_after_default: float = 300.0):
    from ...web.access import TOKEN_ENV
    from ...web.app import WebOptions

    offline = args.offline_after if args.offline_after is not None else offline_after_default
    if not offline > 0:
        raise FieldnodeError(f"--offline-after {offline:g}: a positive number of seconds")
    keys = keys_path(args)
    if args.allow_commands and not keys.exists():
        raise FieldnodeError(f"--allow-commands signs commands with the keystore {keys}, which does not exist: "
                             "pass --keys PATH")
    return WebOptions(db=db, offline_after=offline, allow_commands=args.allow_commands, keys=keys,
                      token=args.token or os.environ.get(TOKEN_ENV) or None,
                      site=getattr(args, "site", None) or site_from_keystore(keys))


def run(args: argparse.Namespace) -> int:
    from ...web.server import WebServer

    db = args.db or default_db_path()
    server = WebServer(web_options(args, db), args.listen)
    print(f"fieldnode {server.describe()}; database {db}.  Ctrl-C stops.", flush=True)
    server.start()
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
