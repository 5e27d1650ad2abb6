"""Debian's tcpdump recording loopback UDP into a pcap file while a test runs, as a technician
records a site (tests run as root: capturing needs it)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest


def tcpdump_binary() -> str:
    found = shutil.which("tcpdump") or ("/usr/bin/tcpdump" if Path("/usr/bin/tcpdump").exists() else None)
    if not found:
        pytest.fail("tcpdump is missing: run scripts/install-system-deps (make does)")
    if os.geteuid() != 0:
        pytest.fail("the capture tests record loopback with tcpdump, which needs root: run them as root")
    return found


class Tcpdump:
    """tcpdump -i lo (or another interface: "any" gives Linux cooked headers) on the given UDP
    ports, into path (or to a pipe with path None)."""

    def __init__(self, path: Path | None, ports: list[int], stdout=None, interface: str = "lo") -> None:
        expr = " or ".join(f"udp port {p}" for p in ports)
        # -U and --immediate-mode: every packet written as it passes (a live pipe, and nothing
        # left in a buffer when the test stops the capture).
        cmd = [tcpdump_binary(), "-i", interface, "-U", "--immediate-mode", "-s", "0", "-w",
               str(path) if path else "-", expr]
        self.proc = subprocess.Popen(cmd, stdout=stdout if path is None else subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        said = b""
        while b"listening on" not in said:  # `-i any` says its link type on a line before
            line = self.proc.stderr.readline()
            said += line
            if not line:
                self.proc.wait(timeout=10)
                raise AssertionError(f"tcpdump did not start: {said!r}")

    def stop(self) -> None:
        """Stops the capture once what was sent has been seen (loopback delivers in microseconds)."""
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        self.proc.stderr.close()
        if self.proc.stdout:
            self.proc.stdout.close()
