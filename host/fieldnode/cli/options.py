"""Options several commands share, added and read the same way everywhere (as aiocoap's
cli/common.py does): the keystore a command reads with --keys."""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from ..infra.errors import FieldnodeError
from ..node.keystore import Keystore
from ..infra.paths import default_keystore
from ..store.target import PgTarget, parse_db
from ..wire.declaration import DeclarationBook, parse_declaration


def add_keys_option(parser: argparse.ArgumentParser, what: str = "keystore", **kwargs) -> None:
    parser.add_argument("--keys", type=Path, metavar="PATH", **{"default": None, **kwargs},
                        help=f"{what}; default {default_keystore()} (or $FIELDNODE_KEYS)")


def keys_path(args: argparse.Namespace) -> Path:
    return getattr(args, "keys", None) or default_keystore()


def read_keys(args: argparse.Namespace) -> Keystore:
    """The keystore a command reads: a file that does not exist is the same error for every
    command (a mistyped --keys must not look like an empty keystore)."""
    return Keystore.load(keys_path(args), must_exist=True)


def add_declarations_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=parse_db, metavar="PATH|URI", default=None,
                        help="a gateway database (SQLite file or postgresql:// URI) to take frame format v2 "
                        "declarations from, so that v2 telemetry whose declaration is not in the input is shown "
                        "with full names")


def read_declarations(args: argparse.Namespace) -> DeclarationBook:
    """The v2 declarations a command starts with: those in --db, or none."""
    book = DeclarationBook()
    db = getattr(args, "db", None)
    if isinstance(db, PgTarget):
        from ..store.postgres.declarations import read_declarations as stored_pg
        found = stored_pg(db)
    elif db is not None:
        from ..store.sqlite.declarations import read_declarations as stored
        found = stored(db)
    else:
        found = []
    for device, payload in found:
        book.add(device, parse_declaration(payload))
    return book


def check_writable(path: Path, consequence: str, create_dir: bool = False) -> None:
    """Fails, before anything is changed, if a keystore (or export) cannot be written at path:
    a node given a key the host then cannot record would be a node no gateway can verify. A
    missing directory is created only when asked (the default keystore's): one in a path the
    user typed is more likely a typo than a wish, and keys written there would be lost from view."""
    if not create_dir and not path.parent.is_dir():
        raise FieldnodeError(f"cannot write {path}: the directory {path.parent} does not exist (create it "
                             f"or correct the path); {consequence}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".keys-probe-", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise FieldnodeError(f"cannot write {path}: {exc.strerror} ({exc.filename}); {consequence}") from None
