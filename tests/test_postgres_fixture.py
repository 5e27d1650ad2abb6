"""The private PostgreSQL cluster the store tests run on: a server of its own, owned by the
postgres user, reachable only over its unix socket."""
from __future__ import annotations

import psycopg


def test_the_test_cluster_runs_as_postgres_on_a_private_socket_with_no_tcp(pg_cluster, pg_db):
    with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert conn.execute("SHOW unix_socket_directories").fetchone() == (str(pg_cluster.dir),)
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname='public'").fetchone() == (0,)
    assert pg_cluster.dir.stat().st_uid != 0 and pg_cluster.data.stat().st_mode & 0o077 == 0
