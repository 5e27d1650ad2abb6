"""Ctrl-C in the middle of a command run in-process, at a point the test chooses, without a race.

The device the command talks to holds still at that point (EspRomEmulator's
hold_after_flash_bytes, a relay that stops forwarding): Ctrl-C is pressed while it holds, and the
device goes on only once the command has said on stdout that it handles the Ctrl-C. So the
command can neither finish before the Ctrl-C lands nor get further than the block in flight."""
from __future__ import annotations

import _thread
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

import pytest

WAIT_S = 120  # a safety net: a hold that never comes, or a Ctrl-C never answered, fails the test


class _Watched:
    """sys.stdout that sets `printed` once `text` has gone through it."""

    def __init__(self, inner: TextIO, text: str) -> None:
        self._inner = inner
        self._text = text
        self._recent = ""
        self.printed = threading.Event()

    def write(self, s: str) -> int:
        self._recent = (self._recent + s)[-(len(self._text) + len(s)):]
        if self._text in self._recent:
            self.printed.set()
        return self._inner.write(s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def press_ctrl_c_while_held(monkeypatch: pytest.MonkeyPatch, held: threading.Event, release: Callable[[], None],
                            said: str) -> None:
    """Once `held` is set: Ctrl-C in the main thread (as the terminal's SIGINT raises it), then,
    once `said` was printed, release(). Call before running the command in the main thread."""
    watched = _Watched(sys.stdout, said)
    monkeypatch.setattr(sys, "stdout", watched)

    def press() -> None:
        try:
            if held.wait(WAIT_S):
                _thread.interrupt_main()
                watched.printed.wait(WAIT_S)
        finally:
            release()

    threading.Thread(target=press, name="ctrl-c", daemon=True).start()
