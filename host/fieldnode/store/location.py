"""Where the store is when --db is not given."""
from __future__ import annotations

import os
from pathlib import Path


def default_db_path() -> Path:
    """FIELDNODE_DB, else $XDG_DATA_HOME/fieldnode/gateway.db."""
    env = os.environ.get("FIELDNODE_DB")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME", os.path.expanduser("~/.local/share"))
    return Path(base) / "fieldnode" / "gateway.db"
