"""esptool's output, routed per port: each flashing thread gets its own transcript and progress.

esptool reports through one process-wide logger (esp_pylib's EspLog.instance, read by every
`log.print`/`log.progress`). The first `attached()` installs a logger that hands each call to the
sink registered for the calling thread and everything else to the logger it replaced, so parallel
ports never interleave their text and each progress bar moves with its own port's bytes.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Protocol
from collections.abc import Iterator

import esptool  # noqa: F401  (installs esptool's own logger first: it becomes the fallback)
from esp_pylib.logger import EspLog, EspLogBase
from esptool.reset import ResetStrategy


class EsptoolSink(Protocol):
    def text(self, line: str) -> None: ...

    def segment_started(self, total: int) -> None: ...

    def segment_advanced(self, amount: int, description: str | None) -> None: ...


class _SegmentTask:
    """What esptool's `with log.progress(...) as task` gets: updates go to the port's sink."""

    def __init__(self, sink: EsptoolSink) -> None:
        self._sink = sink

    def update(self, advance: int = 1, description: str | None = None) -> None:
        self._sink.segment_advanced(advance, description)


class _RoutedLog(EspLogBase):
    def __init__(self, fallback: EspLogBase) -> None:
        self.fallback = fallback
        self._sinks: dict[int, EsptoolSink] = {}
        self._partial: dict[int, str] = {}  # text printed with end="" (e.g. "Connecting....")

    def _sink(self) -> EsptoolSink | None:
        return self._sinks.get(threading.get_ident())

    def _line(self, sink: EsptoolSink, args: tuple[Any, ...], end: str = "\n", prefix: str = "") -> None:
        ident = threading.get_ident()
        text = self._partial.pop(ident, "") + prefix + " ".join(str(a) for a in args)
        if end.endswith("\n"):
            for line in text.splitlines() or [""]:
                sink.text(line)
        else:
            self._partial[ident] = text + end

    def print(self, *args: Any, **kwargs: Any) -> None:
        sink = self._sink()
        if sink is None:
            self.fallback.print(*args, **kwargs)
        else:
            self._line(sink, args, kwargs.get("end", "\n"))

    def _tagged(self, method: str, prefix: str, args: tuple[Any, ...], **kwargs: Any) -> None:
        sink = self._sink()
        if sink is None:
            getattr(self.fallback, method)(*args, **kwargs)
        else:
            self._line(sink, args, prefix=prefix)

    def err(self, *args: Any, suggestion: str | None = None) -> None:
        self._tagged("err", "error: ", args, suggestion=suggestion)

    def warn(self, *args: Any, suggestion: str | None = None) -> None:
        self._tagged("warn", "warning: ", args, suggestion=suggestion)

    # esptool still calls the old names in places
    error = err
    warning = warn

    def note(self, *args: Any) -> None:
        self._tagged("note", "note: ", args)

    def hint(self, *args: Any) -> None:
        self._tagged("hint", "hint: ", args)

    def debug(self, *args: Any) -> None:
        self._tagged("debug", "", args)

    def stage(self, finish: bool = False) -> None:
        if self._sink() is None:
            self.fallback.stage(finish)

    def set_verbosity(self, mode: int | str) -> None:
        self.fallback.set_verbosity(mode)

    def progress_bar(self, cur_iter: int, total_iters: int, prefix: str = "", suffix: str = "",
                     bar_length: int = 30) -> None:
        if self._sink() is None:
            self.fallback.progress_bar(cur_iter, total_iters, prefix, suffix, bar_length)

    @contextmanager
    def progress(self, total: int, description: str = "", bar_length: int = 30, *,
                 file: Any = None, disable: bool = False, unit: str | None = None) -> Iterator[Any]:
        sink = self._sink()
        if sink is None:
            with self.fallback.progress(total, description, bar_length, file=file, disable=disable,
                                        unit=unit) as task:
                yield task
            return
        sink.segment_started(total)
        yield _SegmentTask(sink)

    def __getattr__(self, name: str) -> Any:
        # Anything esptool or esp_pylib adds later still works, on the fallback.
        return getattr(self.fallback, name)


_install_lock = threading.Lock()
_router: _RoutedLog | None = None


def _installed_router() -> _RoutedLog:
    global _router
    with _install_lock:
        current = EspLog.instance
        if _router is None or current is not _router:
            _router = _RoutedLog(current if current is not None else EspLog())
            EspLog.set_logger(_router)
            # esptool's reset warnings ("Chip was NOT reset...") go to a logger method bound when
            # esptool.reset was imported, past this router and over the live bars: route them too.
            ResetStrategy.print_once = staticmethod(_router.warn)
        return _router


@contextmanager
def attached(sink: EsptoolSink) -> Iterator[None]:
    """Sends esptool's output from the current thread to sink for the duration."""
    router = _installed_router()
    ident = threading.get_ident()
    router._sinks[ident] = sink
    try:
        yield
    finally:
        router._sinks.pop(ident, None)
        router._partial.pop(ident, None)
