"""Several ports at once: one thread per port, a bar each, then the summary table.

The ports are checked (present, not busy, not given twice) before any thread starts; after that
each port succeeds or fails on its own and the summary says which. The exit status is 0 only when
every port succeeded.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from rich.console import Console

from .ports import check_ports
from .report import FlashReport, PortLine, PortResult

Worker = Callable[[str, PortLine], PortResult]


def run_ports(ports: list[str], worker: Worker, console: Console, *, verbose: bool = False) -> int:
    check_ports(ports)
    with FlashReport(console, ports) as report:
        with ThreadPoolExecutor(max_workers=len(ports), thread_name_prefix="flash") as pool:
            futures = [pool.submit(worker, port, report.line(port)) for port in ports]
            results = [future.result() for future in futures]
    report.summary(results, verbose=verbose)
    return 0 if all(r.ok for r in results) else 1
