"""What PostgreSQL adds to the store: several writers (gateways) on one database share the replay
window, so each frame is stored once whichever writer gets it and however UDP orders it, and
share the command queue, so a command is handed out by one writer at a time and closed once."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import psycopg
import pytest

from fieldnode.infra.errors import FieldnodeError
from fieldnode.store.backend import make_writer
from fieldnode.store.commandqueue import enqueue_command, list_commands
from fieldnode.store.postgres.replay import window_counters
from fieldnode.store.records import REJECTIONS_KEPT, Health, StoreItem
from fieldnode.store.target import PgTarget, parse_db, redact
from fieldnode.node.keystore import make_kid
from fieldnode.wire.frame import KIND_ACK, Verifier
from fieldnode.wire.framev2 import Reading, build_declaration, build_telemetry_v2, encode_declaration


@pytest.fixture
def writers(pg_db):
    """Two writers on one database: two gateways."""
    made = [make_writer(pg_db, shard=0), make_writer(pg_db, shard=1)]
    for w in made:
        w.open()
    yield made
    for w in made:
        w.close()


def items(nodes, frames):
    verifier = Verifier(nodes.keystore().lookup)
    return [StoreItem(verifier.verify(f), f, time.time(), "127.0.0.1:5683", "n") for f in frames]


def rows(target: PgTarget, sql: str, args: tuple = ()) -> list[tuple]:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def statuses(outcomes) -> list[str]:
    return [o.status for o in outcomes]


def test_two_writers_share_one_window_frames_alternating_reordered_and_replayed(writers, pg_db, nodes):
    a, b = writers
    frames = [nodes.frame(0, counter=c) for c in range(1, 11)]
    for c in (1, 3, 2, 5, 4, 7, 6, 9, 8, 10):  # alternating writers, pairs swapped as UDP may
        writer = a if c % 2 else b
        assert statuses(writer.commit(items(nodes, [frames[c - 1]]), {}, None)) == ["stored"]
    # Every frame again, to the writer that did not store it and to the one that did.
    for c in range(1, 11):
        for writer in (a, b):
            assert statuses(writer.commit(items(nodes, [frames[c - 1]]), {}, None)) == ["duplicate"]
    forged = nodes.frame(0, counter=5, bt=7)  # a taken counter with other bytes
    assert statuses(b.commit(items(nodes, [forged]), {}, None)) == ["replay"]
    stored = [c for (c,) in rows(pg_db, "SELECT counter FROM frames ORDER BY counter")]
    assert stored == list(range(1, 11))
    assert rows(pg_db, "SELECT count(*) FROM samples") == [(20,)]


def test_the_shared_window_is_the_64_counters_below_the_highest_its_top_bit_included(writers, pg_db, nodes):
    a, b = writers
    assert statuses(a.commit(items(nodes, [nodes.frame(0, counter=100)]), {}, None)) == ["stored"]
    batch = items(nodes, [nodes.frame(0, counter=37), nodes.frame(0, counter=36), nodes.frame(0, counter=99)])
    assert statuses(b.commit(batch, {}, None)) == ["stored", "replay", "stored"]  # 37 = 100 - 63: bit 63
    assert statuses(a.commit(items(nodes, [nodes.frame(0, counter=37)]), {}, None)) == ["duplicate"]
    ((highest, seen),) = rows(pg_db, "SELECT highest_counter, seen FROM replay")
    assert (highest, window_counters(highest, seen)) == (100, {100, 99, 37})
    # 200 moves the window past everything: 137 is its new floor, 136 below it.
    batch = items(nodes, [nodes.frame(0, counter=200), nodes.frame(0, counter=137), nodes.frame(0, counter=136)])
    assert statuses(a.commit(batch, {}, None)) == ["stored", "stored", "replay"]
    ((_, high, stored),) = list(b.replay_state())  # what a gateway restores its window from
    assert (high, stored) == (200, {200, 137})


def test_the_same_frames_committed_by_two_writers_at_once_are_stored_once(writers, pg_db, nodes):
    frames = [nodes.frame(i % 2) for i in range(120)]  # 60 a device: all within one window
    results: dict[int, list[str]] = {}
    start = threading.Barrier(2)

    def commit(n: int) -> None:
        start.wait()
        results[n] = statuses(writers[n].commit(items(nodes, frames), {}, None))

    threads = [threading.Thread(target=commit, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k in range(len(frames)):
        assert sorted((results[0][k], results[1][k])) == ["duplicate", "stored"], k
    assert rows(pg_db, "SELECT count(*), count(DISTINCT (kid, counter)) FROM frames") == [(120, 120)]


DECLARED = (Reading("a", "temp", "Cel", "env"),)


def test_a_declaration_claims_no_counter_and_is_kept_once_whichever_writer_stores_it(writers, pg_db, nodes):
    a, b = writers
    key, kid = nodes.keys[nodes.devices[0]], make_kid(nodes.devices[0], 1)
    decl, did = build_declaration(key, kid, 4, 1, DECLARED)
    verifier = Verifier(nodes.keystore().lookup)  # one, as a gateway's: it learns the declaration

    def batch(*frames: bytes) -> list[StoreItem]:
        return [StoreItem(verifier.verify(f), f, time.time(), "127.0.0.1:5683", "n") for f in frames]

    telemetry = [build_telemetry_v2(key, kid, 4, c, did, 1_764_057_600 + c, [{"n": "a", "v": c / 2}]) for c in (2, 100)]
    assert statuses(a.commit(batch(decl, telemetry[0]), {}, None)) == ["stored", "stored"]
    assert statuses(b.commit(batch(telemetry[1]), {}, None)) == ["stored"]
    # Resent far below the window (as after a long outage): a frame's counter there is a replay,
    # a declaration's is not looked at; twice in one batch, through the other writer, kept once.
    assert statuses(b.commit(batch(decl), {}, None)) == ["stored"]
    assert statuses(a.commit(batch(decl, decl), {}, None)) == ["stored", "stored"]
    assert statuses(a.commit(batch(nodes.frame(0, counter=1)), {}, None)) == ["replay"]
    assert rows(pg_db, "SELECT device, id, counter FROM declarations") == [(nodes.devices[0].hex(), did.hex(), 1)]
    assert rows(pg_db, "SELECT counter FROM frames ORDER BY counter") == [(2,), (100,)]
    assert rows(pg_db, "SELECT name, unit, value FROM readings ORDER BY time") == [("temp", "Cel", 1),
                                                                                  ("temp", "Cel", 50)]
    assert [(k, high, seen) for k, high, seen in b.replay_state()] == [(kid, 100, {100})]
    assert a.declarations() == b.declarations() == [(nodes.devices[0], encode_declaration(DECLARED))]


def test_housekeeping_keeps_the_newest_rejections_of_every_gateway(writers, pg_db):
    a, b = writers
    n = REJECTIONS_KEPT - 100  # each writer's round: the two together are more than are kept

    def health(first: int) -> Health:
        return Health(0, 1, "127.0.0.1:5683", time.time(), rejections=[
            (float(i), "10.0.0.9:5683", "bad-mac", f"r{i}", "240ac4123456") for i in range(first, first + n)])

    a.housekeeping({}, health(0))
    assert rows(pg_db, "SELECT count(*), min(detail), max(time) FROM rejections") == [(n, "r0", n - 1)]
    b.housekeeping({}, health(n))
    b.housekeeping({}, Health(0, 1, "127.0.0.1:5683", time.time()))  # a round with none deletes none
    kept = [detail for (detail,) in rows(pg_db, "SELECT detail FROM rejections ORDER BY id")]
    assert kept == [f"r{i}" for i in range(2 * n - REJECTIONS_KEPT, 2 * n)]
    assert rows(pg_db, "SELECT DISTINCT reason, source, device FROM rejections") == [
        ("bad-mac", "10.0.0.9:5683", "240ac4123456")]


def test_a_schema_1_database_gets_the_declarations_and_rejections_tables(pg_db):
    writer = make_writer(pg_db)
    writer.open()
    writer.close()
    with psycopg.connect(pg_db.dsn, autocommit=True) as conn:  # as the first PostgreSQL store made it
        conn.execute("DROP TABLE declarations, rejections")
        conn.execute("UPDATE meta SET value='1' WHERE key='schema'")
    writer.open()
    try:
        assert writer.declarations() == []
    finally:
        writer.close()
    assert rows(pg_db, "SELECT value FROM meta WHERE key='schema'") == [("2",)]
    assert rows(pg_db, "SELECT count(*) FROM rejections") == [(0,)]


def test_a_command_is_handed_out_by_one_writer_at_a_time_and_closed_once(writers, pg_db, nodes):
    a, b = writers
    device = nodes.devices[0]
    command_id = enqueue_command(pg_db, device, nodes.command(0, 7, time.time() + 60), time.time() + 60)
    # Another gateway's batch holds the command (it is handing it out): this one skips it at once.
    holder = psycopg.connect(pg_db.dsn)
    holder.execute("SELECT id FROM commands WHERE id=%s FOR UPDATE", (command_id,))
    b.conn.execute("SET lock_timeout = '5s'")
    (outcome,) = b.commit(items(nodes, [nodes.frame(0)]), {}, None)
    assert (outcome.status, outcome.command_id) == ("stored", None)
    holder.rollback()
    holder.close()
    (outcome,) = a.commit(items(nodes, [nodes.frame(0)]), {}, None)
    (queued,) = list_commands(pg_db, ids=[command_id])
    assert (outcome.command_id, outcome.command) == (command_id, queued.frame)
    (again,) = b.commit(items(nodes, [nodes.frame(0)]), {}, None)
    assert again.command_id is None  # sent a moment ago by a: not resent before command_resend
    ack = [{"n": "ack", "v": 7}, {"n": "result", "vs": "applied"}]
    assert statuses(b.commit(items(nodes, [nodes.frame(0, kind=KIND_ACK, records=ack)]), {}, None)) == ["stored"]
    (info,) = list_commands(pg_db, ids=[command_id])
    assert (info.state, info.attempts) == ("applied", 1)
    refused = [{"n": "ack", "v": 7}, {"n": "result", "vs": "refused"}]  # a second ack, through the other
    a.commit(items(nodes, [nodes.frame(0, kind=KIND_ACK, records=refused)]), {}, None)
    (after,) = list_commands(pg_db.dsn, ids=[command_id])  # the URI as --db takes it does too
    assert (after.state, after.result_at) == ("applied", info.result_at)


def test_a_postgresql_uri_is_told_apart_from_a_path_and_its_password_is_never_shown():
    target = parse_db("postgresql://gw:s3cret@db.example:5433/fieldnode?sslmode=require")
    assert isinstance(target, PgTarget)
    assert str(target) == "postgresql://gw:***@db.example:5433/fieldnode?sslmode=require"
    assert "s3cret" not in repr(target)
    assert redact("host=/run/postgresql password='a b' dbname=x") == "host=/run/postgresql password=*** dbname=x"
    assert "pw" not in str(parse_db("postgresql:///fieldnode?host=/run/postgresql&password=pw"))
    assert str(parse_db("gateway.db")) == "gateway.db"
    with pytest.raises(FieldnodeError, match="begins postgresql://"):
        parse_db("postgresql:/db.example/fieldnode")
    with pytest.raises(FieldnodeError, match=r"postgresql://gw:\*\*\*@db.example/fieldnode\?colour=blue") as exc:
        parse_db("postgresql://gw:s3cret@db.example/fieldnode?colour=blue")
    assert "s3cret" not in str(exc.value)


CLI = [sys.executable, "-m", "fieldnode.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=60)


def test_a_database_that_cannot_be_reached_or_read_is_one_line_naming_it_without_its_password(pg_cluster, nodes):
    gone = f"postgresql://postgres:s3cret@/nowhere?host={pg_cluster.dir}/missing"
    for args in (["status", "--db", gone], ["gateway", "--db", gone, "--keys", str(nodes.path)],
                 ["command", "node-1", "relay1", "on", "--db", gone, "--keys", str(nodes.path)]):
        run = run_cli(*args)
        assert run.returncode == 2, (args, run.stderr)
        assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
        assert "s3cret" not in run.stderr + run.stdout and "postgres:***@" in run.stderr, run.stderr
        assert "cannot connect to PostgreSQL" in run.stderr, run.stderr
    empty = pg_cluster.new_database()  # reachable, but no gateway has made its tables
    run = run_cli("status", "--db", empty.dsn)
    assert run.returncode == 2 and "holds no fieldnode store: start the gateway with --db" in run.stderr, run.stderr
    run = run_cli("status", "--db", "postgresql://x@/db?colour=blue")
    assert run.returncode == 2 and "not a valid PostgreSQL connection string" in run.stderr, run.stderr
    with psycopg.connect(empty.dsn) as conn:  # and nothing was made by looking
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname='public'").fetchone() == (0,)



def test_fieldnode_db_names_a_postgresql_store_as_db_does(pg_cluster, nodes, monkeypatch):
    # FIELDNODE_DB is the default --db: a URI there is PostgreSQL, not a file named "postgresql:".
    gone = f"postgresql://postgres:s3cret@/nowhere?host={pg_cluster.dir}/missing"
    monkeypatch.setenv("FIELDNODE_DB", gone)
    monkeypatch.chdir(pg_cluster.dir)
    run = run_cli("status")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "cannot connect to PostgreSQL" in run.stderr and "s3cret" not in run.stderr, run.stderr
    assert not (pg_cluster.dir / "postgresql:").exists()
