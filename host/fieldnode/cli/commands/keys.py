"""fieldnode keys: list the keystore (never the keys) and export the subset a gateway needs."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.table import Table

from ..options import add_keys_option, check_writable, read_keys
from ...infra.errors import FieldnodeError
from ...node.keystore import Keystore
from ...ui.terminal import terminal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="list or export device keys (keys themselves are never shown)",
                       description="Manage the host keystore. Listings show key ids, node names "
                       "and fingerprints only; key material goes only into keystore files (mode 0600).")
    add_keys_option(p, "keystore file")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    ls = ks.add_parser("list", help="key ids, names, algorithms, fingerprints, expiry")
    ls.set_defaults(func=run_list)
    _keys_option(ls)
    ex = ks.add_parser("export", help="write the keys a gateway needs to another keystore file",
                       description="Writes a keystore holding only the given devices' keys "
                       "(all if none given), created mode 0600, for copying to a gateway. Expired "
                       "keys (rotated out, grace period over) are left out; a key still in its grace "
                       "period is exported with its expiry.")
    ex.add_argument("out", type=Path, help="file to write (refused if it exists, unless --force)")
    ex.add_argument("--device", action="append", default=[], metavar="HEX",
                    help="device id (12 hex digits) or node name; repeatable")
    ex.add_argument("--force", action="store_true", help="overwrite OUT")
    ex.set_defaults(func=run_export)
    _keys_option(ex)
    rv = ks.add_parser("revoke", help="remove every key of a node (lost or stolen node)",
                       description="Removes all key generations of the given nodes from the keystore. "
                       "A gateway reading this keystore refuses their frames (unknown-kid) within a "
                       "couple of seconds; copy the keystore again to gateways that use an export. "
                       "The key ids stay in the keystore as retired (without their keys), so "
                       "provisioning the node again gives it the next key generation, never a key id "
                       "a gateway has seen. The node must be provisioned again (--force) to send.")
    rv.add_argument("device", nargs="+", metavar="NODE", help="device id (12 hex digits) or node name")
    rv.set_defaults(func=run_revoke)
    _keys_option(rv)


def _keys_option(parser: argparse.ArgumentParser) -> None:
    # Also after the action (`keys list --keys F`), as every other command takes it; SUPPRESS
    # keeps a value given before the action when none is given after it.
    add_keys_option(parser, "keystore file", default=argparse.SUPPRESS)


def run_list(args: argparse.Namespace) -> int:
    store = read_keys(args)
    table = Table(title=f"{len(store)} keys in {store.path}")
    for col in ("node", "device", "gen", "alg", "fingerprint", "created", "expires"):
        table.add_column(col, no_wrap=col in ("device", "fingerprint"))
    now = time.time()
    for e in store:
        expires = "-" if e.expires is None else (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(e.expires)) + (" (expired)" if e.expires <= now else ""))
        table.add_row(e.name or "-", e.device.hex(), str(e.generation), str(e.alg), e.fingerprint,
                      time.strftime("%Y-%m-%d", time.localtime(e.created)), expires)
    console = terminal()
    console.print(table)
    retired = store.retired()
    if retired:
        console.print(f"{len(retired)} retired key ids, kept so that none is ever issued again: " + ", ".join(
            f"{r.kid.hex()} ({r.name or 'unnamed'}, {r.why} {time.strftime('%Y-%m-%d', time.localtime(r.retired))})"
            for r in retired), soft_wrap=True)
    return 0


def _devices(store: Keystore, tokens: list[str], what: str) -> set[bytes]:
    wanted: set[bytes] = set()
    for token in tokens:
        matches = {e.device for e in store if e.name == token or e.device.hex() == token.lower()}
        if not matches:
            raise FieldnodeError(f"{what}{token}: no such device id or node name in {store.path} "
                                 "(see `fieldnode keys list`)")
        wanted |= matches
    return wanted


def run_export(args: argparse.Namespace) -> int:
    store = read_keys(args)
    wanted = _devices(store, args.device, "--device ") if args.device else None
    if args.out.exists() and not args.force:
        raise FieldnodeError(f"{args.out} exists: choose another file or pass --force")
    check_writable(args.out, "nothing was exported")
    every = store.subset(wanted)
    subset = every.subset(valid_at=time.time())
    expired = len(every) - len(subset)
    subset.save(args.out)
    left_out = f"; left out {expired} expired (rotated-out) key(s)" if expired else ""
    print(f"exported {len(subset)} keys to {args.out} (mode 0600){left_out}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    store = read_keys(args)
    devices = _devices(store, args.device, "")  # all names checked before anything is removed
    for device in sorted(devices):
        entries = store.for_device(device)
        for entry in entries:
            store.remove(entry.kid)
        print(f"revoked {device.hex()} ({entries[0].name or 'unnamed'}): {len(entries)} key(s), "
              f"fingerprints {', '.join(e.fingerprint for e in entries)}")
    store.save()
    print(f"{store.path}: {len(store)} keys left; the revoked key ids stay retired there and are never issued "
          "again. Gateways reading this file refuse those nodes within seconds; gateways with an exported "
          "copy need a fresh `fieldnode keys export`.")
    return 0

