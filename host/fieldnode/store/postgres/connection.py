"""Opening a connection to the PostgreSQL store: clear errors that name the database (with its
password redacted) and say what to do, the schema in place."""
from __future__ import annotations

import psycopg

from ...infra.errors import FieldnodeError
from ..target import PgTarget, redact
from .schema import ensure_schema, schema_present

# Seconds libpq waits for the server to answer a connection attempt.
CONNECT_TIMEOUT_S = 5


def connect(target: PgTarget, *, create: bool = True, application: str = "fieldnode") -> psycopg.Connection:
    """An autocommit connection (transactions are explicit, `with conn.transaction()`); the schema
    made when `create`, else required to be there already."""
    try:
        conn = psycopg.connect(target.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name=application)
    except psycopg.OperationalError as exc:
        raise FieldnodeError(f"cannot connect to PostgreSQL {target}: {first_line(exc)}; check the --db URI "
                             "(host, port, user, database), that the server runs and accepts this user "
                             "(pg_hba.conf), and PGPASSWORD or ~/.pgpass for the password") from None
    except psycopg.ProgrammingError as exc:
        raise FieldnodeError(f"--db {target}: {first_line(exc)}; write postgresql://USER@HOST[:PORT]/DBNAME") from None
    try:
        if create:
            ensure_schema(conn)
        elif not schema_present(conn):
            raise FieldnodeError(f"PostgreSQL {target} holds no fieldnode store: start the gateway with "
                                 f"--db {target} first, or pass the --db the gateway uses")
    except psycopg.Error as exc:
        conn.close()
        raise FieldnodeError(f"PostgreSQL {target}: {first_line(exc)}; the user needs CREATE on the "
                             "database's public schema (or an owner to create the tables once)") from None
    except BaseException:
        conn.close()
        raise
    return conn


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0]) if text else type(exc).__name__
