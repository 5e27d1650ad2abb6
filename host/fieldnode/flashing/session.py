"""Several ports at once: one thread per port, a bar each, then the summary table.

The ports are checked (present, not busy, not given twice) before any thread starts; after that
each port succeeds or fails on its own and the summary says which. The exit status is 0 only when
every port succeeded.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from collections.abc import Callable

from rich.console import Console

from .ports import check_ports
from .report import FlashReport, PortLine, PortResult

Worker = Callable[[str, PortLine], PortResult]


def run_ports(ports: list[str], worker: Worker, console: Console, *, verbose: bool = False) -> int:
    """-> 0 when every port succeeded, 1 when one failed, 130 after Ctrl-C (the table still
    shows where each port got to)."""
    check_ports(ports)
    stop = threading.Event()
    with FlashReport(console, ports, stop) as report:
        with ThreadPoolExecutor(max_workers=len(ports), thread_name_prefix="flash") as pool:
            futures = [pool.submit(worker, port, report.line(port)) for port in ports]
            try:
                _wait_all(futures)
            except KeyboardInterrupt:
                # Said at once: the ports stop at their next block, which takes a moment.
                stop.set()
                console.print("[yellow]Ctrl-C: stopping; each port finishes the block it is writing, "
                              "then stops (a port stopped while writing must be flashed again)[/yellow]")
                _wait_all(futures)
            results = [future.result() for future in futures]
    report.summary(results, verbose=verbose)
    if stop.is_set():
        return 130
    return 0 if all(r.ok for r in results) else 1


def _wait_all(futures: list[Future]) -> None:
    # In short waits: Python raises KeyboardInterrupt only when the main thread runs, and the
    # kernel may hand the terminal's SIGINT to a worker thread while this one sleeps on a lock.
    while wait(futures, timeout=0.2).not_done:
        pass
