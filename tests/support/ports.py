"""Fixed ports for the services that cannot take port 0, with no window for another process.

Where a service binds port 0 and says which port it got (the gateway's startup line and
`GatewayThread.address`, `monitor --udp`'s "listening on"), the tests do that. Two cannot: a group
of gateway workers shares one fixed port (SO_REUSEPORT), and Mosquitto does not report the port
of a port-0 listener. Binding port 0 to learn a number and handing the number on leaves a window in
which anything else can take it; and the kernel's port-0 search even gives a port held with
SO_REUSEPORT to another SO_REUSEPORT socket of the same user, which then shares its datagrams.

So `claimed_port` picks a port below the kernel's ephemeral range (no port-0 bind and no outgoing
connection is ever given one), claims it against the other tests on this machine (parallel
pytest-xdist workers, other checkouts) with a lock that lives as long as the claim, and binds it
once to see that nothing outside the tests holds it. A process that binds the number on its own
in the moment before the service does makes the service fail to start, loudly: never a shared port.
"""
from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCKS = Path(tempfile.gettempdir()) / "fieldnode-test-ports"
LOWEST = 10_000  # above the well-known and most registered service ports


def ephemeral_start() -> int:
    """The first port the kernel hands out for port 0 and outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def is_free(port: int, kind: int) -> bool:
    """Nothing holds port on 127.0.0.1 for kind (an exclusive bind succeeds)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def claimed_port(kind: int = socket.SOCK_DGRAM) -> Iterator[int]:
    """A port no other test uses and nothing held when claimed, for as long as the block runs."""
    LOCKS.mkdir(exist_ok=True)
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(LOWEST, ephemeral_start())
        fd = os.open(LOCKS / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another test has it
            os.close(fd)
            continue
        if not is_free(port, kind):
            os.close(fd)
            continue
        try:
            yield port
        finally:
            os.close(fd)  # the lock goes with it (and with the process, if it dies)
        return
    raise RuntimeError(f"no free port between {LOWEST} and {ephemeral_start()} in 1000 tries")


@contextmanager
def refusing_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that refuses every connection while the block runs: bound (port 0,
    so the kernel's own choice) and held, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]
