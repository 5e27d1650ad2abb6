"""A private PostgreSQL cluster for the tests: initdb and pg_ctl from Debian's postgresql package,
in a temporary directory, listening on a unix socket there and on no TCP port.

The server refuses to run as root, so the cluster belongs to the `postgres` user (the package
makes it) and its commands run through runuser; the tests connect over the socket as the
cluster's superuser, `postgres`, with trust authentication (the socket's directory is the only
way in). One cluster a pytest-xdist worker (a session fixture), one database a test."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from fieldnode.store.target import PgTarget

OWNER = "postgres"


def pg_bin(name: str) -> str:
    """A server program of the newest installed PostgreSQL (Debian keeps them off PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: run scripts/install-system-deps (Debian's postgresql)")
    return path


class Cluster:
    """initdb'd on creation; start()/stop() as often as a test needs (PostgreSQL down under load)."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fieldnode-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        user = pwd.getpwnam(OWNER)
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        os.chmod(self.dir, 0o711)  # the socket lives here: others may reach it, not list it
        # fsync off by default: the tests stop the server cleanly or with SIGKILL to the server
        # alone, never the machine; the bench turns it on.
        self.settings = {"fsync": "off", "listen_addresses": "''", "unix_socket_directories": f"'{self.dir}'",
                         "max_connections": "200", **(settings or {})}
        self._as_owner([pg_bin("initdb"), "-D", str(self.data), "-U", OWNER, "-A", "trust", "-E", "UTF8",
                        "--no-sync", "--locale=C.UTF-8"])
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("".join(f"{k} = {v}\n" for k, v in self.settings.items()))

    def _as_owner(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", OWNER, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self) -> Cluster:
        self._as_owner([pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"])
        return self

    def stop(self, mode: str = "fast") -> None:
        self._as_owner([pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def running(self) -> bool:
        return subprocess.run((["runuser", "-u", OWNER, "--"] if os.geteuid() == 0 else [])
                              + [pg_bin("pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True).returncode == 0

    def uri(self, dbname: str = "postgres") -> str:
        """A libpq URI over the unix socket (the host is the socket's directory)."""
        return f"postgresql://{OWNER}@/{dbname}?host={self.dir}"

    def target(self, dbname: str = "postgres") -> PgTarget:
        return PgTarget(self.uri(dbname))

    def new_database(self) -> PgTarget:
        """An empty database of its own for one test."""
        import psycopg
        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.target(name)

    def close(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
