"""The gateway with frame format v2: declarations stored (and reloaded after a restart, on SQLite and
PostgreSQL), v2 telemetry expanded to full SenML before the database, 4.22 need-declaration for
telemetry under a declaration it lacks, refusals that store nothing; and a virtual node running the
real firmware with frame_version 2, whose readings arrive with their full names and units, also
after the gateway lost its declaration."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from fieldnode.cli.main import main
from fieldnode.gateway import GatewayThread
from fieldnode.node.keystore import Keystore, make_kid
from fieldnode.wire import coap
from fieldnode.wire.console import encode_console_line
from fieldnode.node.boards import load_board, validate_board
from fieldnode.node.declaring import board_readings
from fieldnode.wire.framev2 import Reading, build_declaration, build_telemetry_v2, encode_declaration
from support.gateway_peers import Client, Nodes, Observer, is_reading
from support.nodesite import Site, wait_for

READINGS = (Reading("a", "temp", "Cel", "env"), Reading("b", "hum", "%RH", "env"), Reading("c", "door", "", "door"))
BT = 1_764_057_600


@pytest.fixture
def node_count() -> int:
    return 1


@pytest.fixture
def gateway(tmp_path: Path, nodes: Nodes):
    gt = GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), health_interval=0.2).start()
    yield gt
    gt.stop()


@pytest.fixture
def client(gateway):
    c = Client(gateway.address)
    yield c
    c.close()


class Signer:
    """Frames of the test node (nodes.devices[0]) with its own counter."""

    def __init__(self, nodes: Nodes) -> None:
        self.key, self.kid, self.counter = nodes.keys[nodes.devices[0]], make_kid(nodes.devices[0], 1), 0

    def next(self) -> int:
        self.counter += 1
        return self.counter

    def declaration(self, readings=READINGS) -> tuple[bytes, bytes]:
        return build_declaration(self.key, self.kid, 4, self.next(), readings)

    def telemetry(self, did: bytes, records: list[dict]) -> bytes:
        return build_telemetry_v2(self.key, self.kid, 4, self.next(), did, BT + self.counter, records)


def rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_declared_v2_telemetry_is_stored_with_full_names_and_units(gateway, client, nodes):
    s = Signer(nodes)
    decl, did = s.declaration()
    assert client.post(decl).code == coap.CHANGED
    frame = s.telemetry(did, [{"n": "a", "v": 21.5}, {"n": "b", "v": 40}, {"n": "c", "vb": True}])
    assert client.post(frame).code == coap.CHANGED
    db = gateway.gateway.db_path
    assert rows(db, "SELECT name, unit, value, bool FROM readings ORDER BY id") == [
        ("temp", "Cel", 21.5, None), ("hum", "%RH", 40, None), ("door", None, None, 1)]
    assert rows(db, "SELECT kind FROM frames ORDER BY id") == [(0,)]  # a declaration is not a frames row
    assert rows(db, "SELECT device, id FROM declarations") == [(nodes.devices[0].hex(), did.hex())]


def test_telemetry_under_an_unknown_declaration_is_answered_need_declaration_and_kept_out(gateway, client, nodes):
    s = Signer(nodes)
    decl, did = build_declaration(s.key, s.kid, 4, 1000, READINGS)  # made, not sent yet
    frame = s.telemetry(did, [{"n": "a", "v": 21.5}])
    answer = client.post(frame)
    assert (answer.code, answer.payload) == (coap.UNPROCESSABLE_ENTITY, b"need-declaration")
    assert rows(gateway.gateway.db_path, "SELECT count(*) FROM frames") == [(0,)]
    assert client.post(decl).code == coap.CHANGED
    # The same frame again: its counter was not taken, and the declaration, far ahead of it (as
    # after a long outage), is outside the replay window.
    assert client.post(frame).code == coap.CHANGED
    assert rows(gateway.gateway.db_path, "SELECT name, value FROM readings") == [("temp", 21.5)]


@pytest.mark.parametrize(("case", "reason"), [("short-name-twice", "bad-declaration"),
                                              ("bad-mac", "bad-mac"), ("undeclared-reading", "bad-senml")])
def test_refused_v2_frames_are_answered_with_their_reason_and_store_nothing(gateway, client, nodes, case, reason):
    s = Signer(nodes)
    decl, did = s.declaration()
    assert client.post(decl).code == coap.CHANGED
    if case == "short-name-twice":
        frame = s.declaration(READINGS + (Reading("a", "again", "", "x"),))[0]
    elif case == "bad-mac":
        frame = bytearray(s.declaration((Reading("z", "other", "", "x"),))[0])
        frame[-1] ^= 1
        frame = bytes(frame)
    else:
        frame = s.telemetry(did, [{"n": "a", "v": 1}, {"n": "q", "v": 2}])
    answer = client.post(frame)
    assert answer.payload == reason.encode() and answer.code in (coap.BAD_REQUEST, coap.UNAUTHORIZED)
    db = gateway.gateway.db_path
    assert rows(db, "SELECT count(*) FROM frames") == [(0,)]
    assert rows(db, "SELECT count(*) FROM declarations") == [(1,)]  # the good one only
    assert rows(db, "SELECT count(*) FROM readings") == [(0,)]


def test_a_restarted_gateway_expands_with_the_declarations_it_stored(tmp_path, nodes):
    s = Signer(nodes)
    decl, did = s.declaration()
    for run in range(2):
        gt = GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), health_interval=0.2).start()
        c = Client(gt.address)
        try:
            if run == 0:
                assert c.post(decl).code == coap.CHANGED
            assert c.post(s.telemetry(did, [{"n": "b", "v": 50}])).code == coap.CHANGED
        finally:
            c.close()
            gt.stop()
    assert rows(tmp_path / "gw.db", "SELECT name, unit, value FROM readings") == [("hum", "%RH", 50)] * 2


def pg_rows(target, sql: str) -> list[tuple]:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def test_on_postgresql_declarations_are_kept_and_a_restarted_gateway_expands_without_asking(
        pg_db, nodes, tmp_path, capsys):
    s = Signer(nodes)
    decl, did = s.declaration()
    sent = []
    for run in range(2):
        gt = GatewayThread(nodes.keystore(), pg_db, ("127.0.0.1", 0), health_interval=0.2).start()
        c = Client(gt.address)
        try:
            if run == 0:  # telemetry before its declaration: asked for it, then taken after it
                early = s.telemetry(did, [{"n": "b", "v": 50}])
                assert c.post(early).payload == b"need-declaration"
                assert c.post(decl).code == coap.CHANGED
                assert c.post(decl).code == coap.CHANGED  # again (the node's answer lost): kept once
                assert c.post(early).code == coap.CHANGED
            else:
                sent.append(s.telemetry(did, [{"n": "b", "v": 51}]))
                answer = c.post(sent[-1])
                assert (answer.code, answer.payload) == (coap.CHANGED, b"")
                assert gt.gateway.counts.get("rejected.need-declaration", 0) == 0
        finally:
            c.close()
            gt.stop()
    assert pg_rows(pg_db, "SELECT name, unit, value FROM readings ORDER BY id") == [("hum", "%RH", 50),
                                                                                    ("hum", "%RH", 51)]
    assert pg_rows(pg_db, "SELECT kind, counter FROM frames ORDER BY id") == [(0, 2), (0, 3)]  # no declaration row
    device = nodes.devices[0].hex()
    assert pg_rows(pg_db, "SELECT device, id, counter FROM declarations") == [(device, did.hex(), 1)]
    # The first run's refusal is among the rejections the web page would list.
    assert pg_rows(pg_db, "SELECT reason, device FROM rejections") == [("need-declaration", device)]
    # decode --db takes the declarations from the PostgreSQL store too.
    capture = tmp_path / "console.log"
    capture.write_bytes(encode_console_line(sent[-1]))
    assert main(["decode", str(capture), "--json", "--keys", str(nodes.path), "--db", pg_db.dsn]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert "undeclared" not in line and [(r["n"], r["u"], r["v"]) for r in line["records"]] == [("hum", "%RH", 51)]


def test_a_database_made_before_declarations_opens_and_gets_the_table(tmp_path, nodes):
    gt = GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), health_interval=0.2).start()
    c = Client(gt.address)
    assert c.post(nodes.frame(0)).code == coap.CHANGED  # a v1 frame
    c.close()
    gt.stop()
    with sqlite3.connect(tmp_path / "gw.db") as conn:
        conn.execute("DROP TABLE declarations")  # as a database before frame format v2 was
    gt = GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), health_interval=0.2).start()
    gt.stop()
    assert rows(tmp_path / "gw.db", "SELECT count(*) FROM declarations") == [(0,)]
    assert rows(tmp_path / "gw.db", "SELECT count(*) FROM frames") == [(1,)]


def test_mqtt_gets_v2_readings_by_their_full_names_and_units(tmp_path, broker, nodes):
    obs = Observer(broker.observer_port, keep=is_reading)
    s = Signer(nodes)
    decl, did = s.declaration()
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), mqtt=broker.url) as gt:
        c = Client(gt.address)
        assert c.post(decl).code == coap.CHANGED  # a declaration publishes nothing
        assert c.post(s.telemetry(did, [{"n": "a", "v": 21.25}, {"n": "c", "vb": False}])).code == coap.CHANGED
        c.close()
        msgs = obs.wait_for(2)
    obs.close()
    by_topic = {t: json.loads(p) for t, p in msgs}
    assert set(by_topic) == {"test/farm-north/node-1/temp", "test/farm-north/node-1/door"}
    temp = by_topic["test/farm-north/node-1/temp"]
    assert (temp["sensor"], temp["value"], temp["unit"], temp["kind"]) == ("temp", 21.25, "Cel", "telemetry")
    assert "unit" not in by_topic["test/farm-north/node-1/door"]


# -- the real firmware, frame_version 2 -----------------------------------------------------------

def declarations(db: Path) -> int:
    return rows(db, "SELECT count(*) FROM declarations")[0][0]


def stored_names(site: Site, node) -> set[tuple[str, str | None]]:
    with sqlite3.connect(f"file:{site.db}?mode=ro", uri=True) as conn:
        return set(conn.execute("SELECT DISTINCT name, unit FROM readings WHERE device=?",
                                (node.unique_id.hex(),)).fetchall())


def test_a_v2_node_on_the_real_gateway_stores_full_senml_and_resends_its_declaration(tmp_path):
    site = Site(tmp_path)
    try:
        node = site.node(1, frame_version=2, health_s=2)
        expected = {("env.temp", "Cel"), ("env.hum", "%RH"), ("env.press", "Pa"), ("loop1", "bar"), ("heap.free", "B")}
        wait_for(lambda: expected <= stored_names(site, node), timeout=60, what="expanded readings in the database")
        assert declarations(site.db) == 1
        # The host's reading of the board (what `fieldnode board check` sizes) is the node's declaration.
        doc = json.loads((tmp_path / "board1.json").read_text())
        (payload,) = rows(site.db, "SELECT payload FROM declarations")[0]
        assert bytes(payload) == encode_declaration(board_readings(doc))
        names = {n for n, _ in stored_names(site, node)}
        full = {n for n, _ in expected} | {"heap.low", "heap.block", "fw", "board", "reset", "schema"}
        assert names <= full  # no short name reached the database
        # The gateway loses its database: telemetry is answered need-declaration, the node sends its
        # declaration again without a reboot, and the frames it kept arrive expanded.
        host, port = site.gateway.address
        boots = len(node.boots)
        site.gateway.stop()
        fresh = tmp_path / "fresh.db"
        site.gateway = GatewayThread(Keystore.load(site.keys), fresh, (host, port), health_interval=0.2).start()
        site.db = fresh
        wait_for(lambda: expected <= stored_names(site, node), timeout=60, what="readings in the new database")
        assert site.gateway.gateway.counts.get("rejected.need-declaration", 0) >= 1
        assert len(node.boots) == boots
        assert declarations(fresh) == 1
        assert json.loads(json.dumps(site.gateway.gateway.counts)).get("rejected.bad-senml", 0) == 0
    finally:
        site.close()


def test_a_v2_board_whose_declaration_would_not_fit_a_frame_is_refused_before_flashing():
    doc = load_board("esp32-devkitc")
    assert "frame_version" not in doc and validate_board(doc) == []  # v2 by default, and it fits
    sensor = next(s for s in doc["sensors"] if s["driver"] == "bme280")
    for i in range(8):
        doc["sensors"].append({**sensor, "name": f"greenhouse_climate_sensor_{i}", "address": 119})
    problems = validate_board(doc)
    assert len(problems) == 1 and problems[0].startswith("frame_version: 2 needs a declaration of the board's 35")
    assert validate_board({**doc, "frame_version": 1}) == []
