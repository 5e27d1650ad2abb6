"""What a flash run shows: one progress bar per port while it works, then a summary table.

`PortLine` is a port's bar and transcript. It is also the sink esplog routes esptool's output to:
esptool reports each file it writes as a separate progress segment (in compressed bytes when it
compresses), so the line maps segment i onto the uncompressed size of the i-th file and the bar
counts flash bytes from 0 to the total of all files.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn,
                           TimeElapsedColumn)
from rich.table import Table


class Stopped(Exception):
    """Ctrl-C: the port stops at the next block (raised in the worker's thread by its PortLine)."""


@dataclass
class PortResult:
    port: str
    ok: bool = False
    chip: str = "-"
    mac: str = "-"
    message: str = ""
    seconds: float = 0.0
    stopped: bool = False  # by Ctrl-C
    transcript: list[str] = field(default_factory=list)


class PortLine:
    def __init__(self, progress: Progress, task: TaskID, stop: threading.Event | None = None) -> None:
        self._progress = progress
        self._task = task
        self._stop = stop or threading.Event()
        self.transcript: list[str] = []
        self._sizes: list[int] = []
        self._index = -1
        self._done_before = 0
        self._segment_total = 0
        self._segment_done = 0
        self._lock = threading.Lock()

    def phase(self, text: str) -> None:
        self._progress.update(self._task, description=text)

    def check_stop(self) -> None:
        """Raises Stopped once Ctrl-C was pressed: called between steps and after every block
        (the progress callbacks), so a port stops with the block in flight written."""
        if self._stop.is_set():
            raise Stopped()

    def expect_writes(self, sizes: list[int]) -> None:
        """The uncompressed sizes of the files about to be written, in order."""
        self._sizes = list(sizes)
        self._index = -1
        self._done_before = 0
        self._progress.update(self._task, total=sum(sizes), completed=0)

    def bytes_done(self, done: int, total: int, description: str | None = None) -> None:
        self._progress.update(self._task, total=total, completed=done,
                              **({"description": description} if description else {}))
        self.check_stop()

    # -- esplog sink -----------------------------------------------------------------------------

    def text(self, line: str) -> None:
        with self._lock:
            self.transcript.append(line)

    def segment_started(self, total: int) -> None:
        with self._lock:
            if 0 <= self._index < len(self._sizes):
                self._done_before += self._sizes[self._index]
            self._index += 1
            self._segment_total = max(total, 1)
            self._segment_done = 0

    def segment_advanced(self, amount: int, description: str | None) -> None:
        with self._lock:
            self._segment_done += amount
            size = self._sizes[self._index] if 0 <= self._index < len(self._sizes) else 0
            completed = self._done_before + size * min(1.0, self._segment_done / self._segment_total)
        self._progress.update(self._task, completed=completed,
                              **({"description": description.lower()} if description else {}))
        self.check_stop()


class FlashReport:
    """Context manager around the live bars; `line(port)` for each port, `summary()` after."""

    def __init__(self, console: Console, ports: list[str], stop: threading.Event | None = None) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.fields[port]}", style="bold"),
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TimeElapsedColumn(),
            console=console,
        )
        self._lines = {port: PortLine(self.progress, self.progress.add_task("waiting", port=port, total=None), stop)
                       for port in ports}

    def line(self, port: str) -> PortLine:
        return self._lines[port]

    def __enter__(self) -> FlashReport:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def summary(self, results: list[PortResult], *, verbose: bool = False) -> None:
        table = Table(title="fieldnode flash")
        table.add_column("port", no_wrap=True)
        table.add_column("MAC", no_wrap=True)
        table.add_column("chip")
        table.add_column("result")
        table.add_column("seconds", justify="right")
        for r in results:
            outcome = (f"[green]ok[/green] {escape(r.message)}" if r.ok else
                       "[yellow]STOPPED[/yellow] (below)" if r.stopped else "[red]FAILED[/red] (below)")
            table.add_row(escape(r.port), r.mac, escape(r.chip), outcome, f"{r.seconds:.1f}")
        self.console.print(table)
        for r in results:
            if verbose or not r.ok:
                shown = r.transcript if verbose else r.transcript[-6:]
                if shown:
                    self.console.print(f"[dim]{escape(r.port)}: last esptool/mpremote output:[/dim]")
                    for text in shown:
                        self.console.print(f"  [dim]{escape(text)}[/dim]", highlight=False, soft_wrap=True)
        # Full sentences, one line each: easy to read, to copy, and to grep in a CI log.
        for r in results:
            if not r.ok:
                self.console.print(f"[red]{escape(r.port)}: {escape(r.message)}[/red]", highlight=False,
                                   soft_wrap=True)
