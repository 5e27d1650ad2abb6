"""Where the store is when --db is not given."""
from __future__ import annotations

import os
from pathlib import Path

from .target import Target, parse_db


def default_db_path() -> Target:
    """FIELDNODE_DB (a path, or a postgresql:// URI as --db takes it), else
    $XDG_DATA_HOME/fieldnode/gateway.db."""
    env = os.environ.get("FIELDNODE_DB")
    if env:
        return parse_db(env)
    base = os.environ.get("XDG_DATA_HOME", os.path.expanduser("~/.local/share"))
    return Path(base) / "fieldnode" / "gateway.db"
