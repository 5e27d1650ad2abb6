"""One gateway writes a database file: an flock on <file>.lock, held while the gateway runs.

Two gateways on one database would each keep their own replay windows and duplicate caches,
and each would publish the same outbox rows to MQTT. SQLite's own locks do not prevent that,
so the second gateway is refused at start, naming the process that holds the file.

flock, not a pid file: the kernel drops the lock when its holder dies (kill -9, power cut), so
a crashed gateway never leaves a stale lock behind. The .lock file itself stays and holds
only the holder's pid (for --workers, the parent's). Without fcntl (Windows) nothing is locked.
"""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from ..infra.errors import FieldnodeError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class WriterLock:
    def __init__(self, db: Path | str) -> None:
        self.db = Path(db)
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        if fcntl is None or self._fd is not None:
            return self
        try:
            self.db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(lock_path(self.db), os.O_RDWR | os.O_CREAT, 0o600)  # owner only, as the database
        except OSError as exc:
            raise FieldnodeError(f"database {self.db}: cannot create {lock_path(self.db).name} beside it "
                                 f"({exc.strerror}); pass a --db PATH in a directory you can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise FieldnodeError(f"{self.db} is in use by another gateway (process {holder or 'unknown'}): "
                                 "stop that gateway first, or give this one another --db") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{_gateway_pid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _gateway_pid() -> int:
    # A worker of `--workers N` names the process the user started (and stops), not itself.
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid is not None else os.getpid()


def check_free(db: Path | str) -> None:
    """Raises the error acquire() would, without keeping the lock: a parent process checks
    before it starts workers, which then take the locks themselves."""
    WriterLock(db).acquire().release()
