"""What --db names: a SQLite file (a path, the default) or a PostgreSQL database (a URI).

`parse_db` is the argparse type of every command's --db. A PostgreSQL target keeps the URI as
given for libpq and a redacted form for every message: a password in the URI (or in its
query, `?password=`) is never printed."""
from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ..infra.errors import FieldnodeError

PG_SCHEMES = ("postgresql://", "postgres://")
# key=value connection strings ("host=/run/postgresql dbname=fieldnode") as libpq takes them.
_KEYWORD_DSN = re.compile(r"^\s*(host|hostaddr|dbname|user|port|service)\s*=", re.IGNORECASE)
_PASSWORD_KEYWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class PgTarget:
    """A PostgreSQL database: `dsn` goes to libpq as given; str() is safe to print."""
    dsn: str = field(repr=False)

    def __str__(self) -> str:
        return redact(self.dsn)

    def __repr__(self) -> str:
        return f"PgTarget({redact(self.dsn)!r})"


Target = Path | PgTarget


def is_postgres(db: object) -> bool:
    return isinstance(db, PgTarget)


def redact(dsn: str) -> str:
    """dsn with any password replaced by ***: in the URI's user info, in its query, or as a
    password=... keyword."""
    if dsn.startswith(PG_SCHEMES):
        parts = urllib.parse.urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            if ":" in userinfo:
                netloc = userinfo.split(":", 1)[0] + ":***@" + host
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if any(k == "password" for k, _ in query):
            query = [(k, "***" if k == "password" else v) for k, v in query]
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path,
                                        urllib.parse.urlencode(query, safe="/*"), parts.fragment))
    return _PASSWORD_KEYWORD.sub(r"\1***", dsn)


def parse_db(value: str) -> Target:
    """--db: postgresql://... (or postgres://..., or a libpq key=value string) is PostgreSQL;
    anything else is the path of a SQLite file."""
    if value.startswith(PG_SCHEMES) or _KEYWORD_DSN.match(value):
        check_uri(value)
        return PgTarget(value)
    if value.startswith(("postgresql:", "postgres:", "pg:")):
        raise FieldnodeError(f"--db {redact(value)}: a PostgreSQL URI begins postgresql:// (e.g. "
                             "postgresql://fieldnode@db.example/fieldnode, or "
                             "postgresql:///fieldnode?host=/run/postgresql for a unix socket)")
    return Path(value)


def check_uri(dsn: str) -> None:
    """A URI libpq would refuse, refused here with the fix (psycopg names the problem)."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise FieldnodeError(f"--db {redact(dsn)}: PostgreSQL needs the psycopg package: pip install "
                             "'psycopg[binary]' (see docs/gateway.md, PostgreSQL)") from None
    try:
        conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg.ProgrammingError: libpq's own words, without the password
        raise FieldnodeError(f"--db {redact(dsn)}: not a valid PostgreSQL connection string "
                             f"({redact(str(exc)).strip()}); write postgresql://USER@HOST[:PORT]/DBNAME "
                             "(password from PGPASSWORD or ~/.pgpass)") from None
