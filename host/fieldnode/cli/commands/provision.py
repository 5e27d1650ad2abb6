"""fieldnode provision: give nodes their keys and settings over USB, with proof."""
from __future__ import annotations

import argparse
import getpass
import os

from rich.table import Table

from ..options import add_keys_option, check_writable, keys_path
from ...node.devicelink import DeviceLink, check_port
from ...infra.errors import FieldnodeError
from ...wire.hostport import parse_destinations
from ...node.keystore import Keystore
from ...node.provisioning import DEFAULT_GRACE_S, Settings, provision
from ...ui.terminal import terminal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "provision", help="write a fresh key and settings into nodes over USB",
        description="For each --port: read the node's id over USB, generate a 256-bit key on this "
        "host, store key, key id and settings in the node's NVS, and check the node can MAC a "
        "random challenge with it (the key is never read back). The key is recorded in the "
        "keystore (mode 0600) only after that proof. A node that already has a key is refused "
        "unless --rotate (new key id; the old key stays valid at the gateway for --grace) or "
        "--force (replace). Keys are never printed: `fieldnode keys list` shows fingerprints.")
    p.add_argument("--port", action="append", required=True, metavar="DEV",
                   help="serial port of a node; repeat for a batch")
    p.add_argument("--name", help="node name (batch: used as a prefix, -1, -2, ... appended)")
    p.add_argument("--gateway", metavar="HOST:PORT", action="append",
                   help="gateway the node sends to: HOST:PORT, HOST (port 5683) or coap://HOST:PORT as the "
                   "gateway prints it; repeat for failover, the preferred one first (the node moves to the "
                   "next when one stops answering, and comes back); checked before any node is touched")
    p.add_argument("--wifi", metavar="SSID", help="Wi-Fi network; the password is asked for, or read "
                   "from FIELDNODE_WIFI_PASSWORD")
    p.add_argument("--alg", type=int, choices=(4, 5), default=4,
                   help="COSE MAC algorithm: 4 = HMAC 256/64 (8-byte tag, default), 5 = HMAC 256/256")
    add_keys_option(p, "keystore the new keys are recorded in, created if missing")
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.add_argument("--rotate", action="store_true", help="new key; keep the old one valid for --grace")
    p.add_argument("--no-reset", action="store_true",
                   help="leave the node in its REPL instead of restarting the application with the new key")
    p.add_argument("--grace", type=float, default=DEFAULT_GRACE_S / 86400, metavar="DAYS",
                   help="how long a rotated-out key stays valid (default 7 days)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.force and args.rotate:
        raise FieldnodeError("--force and --rotate exclude each other: rotate keeps the old key valid "
                             "for a while, force drops it")
    gateways = parse_destinations(args.gateway, "--gateway") if args.gateway else [None]
    for port in args.port:  # before the password prompt: a mistyped port is found at once
        check_port(port)
    path = keys_path(args)
    check_writable(path, "no node was touched", create_dir=args.keys is None)
    store = Keystore.load(path)
    password = None
    if args.wifi:
        password = os.environ.get("FIELDNODE_WIFI_PASSWORD")
        if password is None:
            password = getpass.getpass(f"Wi-Fi password for {args.wifi}: ")
    console = terminal(stderr=True)
    rows: list[tuple[str, str, str, str, str]] = []
    failures = 0
    for i, port in enumerate(args.port, 1):
        name = args.name
        if name and len(args.port) > 1:
            name = f"{args.name}-{i}"
        settings = Settings(name=name, gateway=gateways[0], fallbacks=gateways[1:], wifi_ssid=args.wifi,
                            wifi_password=password, alg=args.alg)
        console.print(f"[{i}/{len(args.port)}] {port}: provisioning ...")
        try:
            with DeviceLink(port) as link:
                try:
                    result = provision(link, store, settings, force=args.force, rotate=args.rotate,
                                       grace_s=args.grace * 86400)
                finally:
                    # Taking the REPL stopped the application: start it again whatever happened,
                    # so a refused node keeps sending with its old key instead of sitting idle.
                    if not args.no_reset:
                        _restart(link)
        except FieldnodeError as exc:
            failures += 1
            console.print(f"[red]{port}: {exc}[/red]")
            rows.append((port, "-", "-", "-", f"failed: {exc}"))
            continue
        rows.append((port, result.device.hex(), result.name, result.fingerprint,
                     f"{result.action} (kid {result.kid.hex()})"))
        console.print(f"[green]{port}: {result.action} {result.name} ({result.device.hex()}), "
                      f"key fingerprint {result.fingerprint}[/green]")
    table = Table(title=f"provisioned {len(args.port) - failures} of {len(args.port)}; keystore {store.path}")
    for col in ("port", "device", "name", "fingerprint", "result"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    terminal().print(table)
    return 1 if failures else 0


def _restart(link: DeviceLink) -> None:
    try:
        link.reset()
    except FieldnodeError:
        pass  # the link is gone (unplugged): the error that ended the session is the one to show

