"""Debian's tcpdump recording loopback UDP into a pcap file while a test runs, as a technician
records a site (tests run as root: capturing needs it)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from fieldnode.gateway.protocol import Gateway

from .nodesite import wait_for


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
        self.path = path
        self.proc = subprocess.Popen(cmd, stdout=stdout if path is None else subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        said = b""
        while b"listening on" not in said:  # `-i any` says its link type on a line before
            line = self.proc.stderr.readline()
            said += line
            if not line:
                self.proc.wait(timeout=10)
                raise AssertionError(f"tcpdump did not start: {said!r}")

    def packets(self) -> int:
        """The whole packets in the capture file so far (tcpdump may be mid-record)."""
        assert self.path is not None
        with open(self.path, "rb") as f:
            data = f.read()
        n, at = 0, 24  # pcap: a 24-byte file header, then a 16-byte header a packet
        while at + 16 <= len(data):
            at += 16 + int.from_bytes(data[at + 8:at + 12], "little" if data[0] in (0xD4, 0x4D) else "big")
            n += at <= len(data)
        return n

    def stop(self, gateway: Gateway | None = None, timeout: float = 30) -> None:
        """Stops the capture once it holds every datagram the gateway received and sent (a
        SIGINT loses what tcpdump has not yet read from the kernel, which on a busy machine can
        be the last datagrams): counted in the file, not waited for by the clock. A pipe (no
        file) is stopped at once: its reader has seen what it needed."""
        if gateway is not None and self.path is not None:
            wait_for(lambda: self.packets() >= gateway.counts.get("datagrams", 0) + gateway.sent, timeout,
                     "the capture to hold every datagram the gateway received and sent")
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        self.proc.stderr.close()
        if self.proc.stdout:
            self.proc.stdout.close()
