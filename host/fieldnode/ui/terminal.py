"""The rich Console every command prints through."""
from __future__ import annotations

from typing import Any

from rich.console import Console


def terminal(**kwargs: Any) -> Console:
    """A Console that prints text as given: without emoji codes, a MAC address such as
    02:f1:e1:ab:00:01 would show ":ab:" as an emoji."""
    return Console(emoji=False, **kwargs)
