"""The web page over a PostgreSQL store, in the same headless chromium as tests/test_web.py: a
gateway on loopback writing the store, a virtual node running the real firmware, and the page
(and `fieldnode web`, `gateway --http`) reading it beside them.

One site for the module; the tests run in file order."""
from __future__ import annotations

import socket
import subprocess
import sys

import psycopg
import pytest
from playwright.sync_api import expect

from fieldnode.store.target import PgTarget
from fieldnode.web.app import WebOptions
from fieldnode.web.server import WebServer
from fieldnode.wire import coap
from support.nodesite import Site, wait_for
from test_web import OFFLINE_AFTER, _at_least, _check_chart, _get_json, _open, _queue_heater_on, _row


@pytest.fixture(scope="module")
def site(tmp_path_factory, pg_cluster):
    s = Site(tmp_path_factory.mktemp("webpg"), db=pg_cluster.new_database())
    try:
        s.node(1)
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def web(site):
    with WebServer(WebOptions(db=site.db, offline_after=OFFLINE_AFTER, allow_commands=True, keys=site.keys),
                   "127.0.0.1:0") as server:
        yield server


def _rows(target: PgTarget, sql: str, args: tuple = ()) -> list[tuple]:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def test_the_fleet_lists_the_node_and_a_new_value_appears_without_reload(site, web, page):
    node = site.nodes[0]
    _open(page, web.url)
    page.evaluate("window.__sameDocument = true")
    row = _row(page, node.unique_id.hex())
    expect(row.locator(".name")).to_have_text("e2e-1")
    expect(row.locator(".board")).to_have_text("virtual")
    expect(row.locator(".status")).to_have_text("online")
    cell = row.locator(".reading[data-name='env.temp'] .value")
    expect(cell).not_to_have_text("37.5")
    node.set_world(devices={"env": {"temp": 37.5}})
    expect(cell).to_have_text("37.5", timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True
    stored = _rows(site.db, "SELECT value FROM readings WHERE device=%s AND name='env.temp' ORDER BY time DESC "
                   "LIMIT 1", (node.unique_id.hex(),))
    assert stored == [(pytest.approx(37.5),)]
    assert page.errors == []


def test_a_chart_draws_the_points_stored_for_a_range(site, web, page):
    dev = site.nodes[0].unique_id.hex()
    stored = wait_for(lambda: _at_least(5, _rows(
        site.db, "SELECT time, value FROM readings WHERE device=%s AND name='env.temp' ORDER BY time", (dev,))),
        30, "five env.temp samples")
    _check_chart(page, web.url, dev, stored)


def test_a_command_queued_from_the_page_reaches_the_queue_and_the_node_applies_it(site, web, page):
    node = site.nodes[0]
    command_id = _queue_heater_on(page, web.url, node)
    assert _rows(site.db, "SELECT device FROM commands WHERE id=%s", (command_id,)) == [(node.unique_id.hex(),)]
    row = page.locator(f"#commands tr[data-id='{command_id}']")
    expect(row.locator(".state")).to_have_text("applied", timeout=30_000)
    expect(row).to_contain_text("heater=on")
    wait_for(lambda: node.outputs().get("pins", {}).get("26") == 1, 10, "the heater relay on")
    page.goto(f"{web.url}#/node/{node.unique_id.hex()}")
    actuator = page.locator("#actuators tbody tr", has_text="heater")
    expect(actuator).to_contain_text(f"command #{command_id}")
    # The boot on the time axis and the last boot frame: a frame's records read back by its id.
    expect(page.locator("#events .what").first).to_have_text("boot (hard)")
    expect(page.locator("#boot")).to_contain_text("virtual")


def test_a_refused_datagram_is_listed_with_its_reason_and_source(site, web, page):
    _open(page, f"{web.url}#/rejections")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        source = f"127.0.0.1:{sock.getsockname()[1]}"
        sock.sendto(coap.encode(coap.Message(coap.CON, coap.POST, 4243, b"wp", [(coap.URI_PATH, b"g")])),
                    site.gateway.address)
        row = page.locator("#rejections tbody tr", has_text=source)
        expect(row.locator(".reason")).to_have_text("not-found", timeout=15_000)
    expect(page.locator("#by-reason")).to_contain_text("not-found")


def _first_line(argv: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "fieldnode.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, proc.stdout.readline()


def test_fieldnode_web_and_gateway_http_serve_the_page_from_postgresql(site, pg_db, tmp_path):
    for argv in (["web", "--db", site.db.dsn, "--listen", "127.0.0.1:0"],
                 ["gateway", "--db", pg_db.dsn, "--keys", str(site.keys), "--listen", "127.0.0.1:0",
                  "--http", "127.0.0.1:0"]):
        proc, line = _first_line(argv)
        try:
            assert line.startswith("fieldnode web page on http://127.0.0.1:"), line
            url = line.split(" on ", 1)[1].split(" ", 1)[0]
            nodes = _get_json(url + "api/fleet")["nodes"]
            if argv[0] == "web":  # the site's store: its node
                assert [n["device"] for n in nodes] == [site.nodes[0].unique_id.hex()]
            else:  # a new store the gateway made: empty, and no error
                assert nodes == [] and _get_json(url + "api/rejections")["rejections"] == []
        finally:
            proc.terminate()
            proc.wait(30)


def test_the_web_page_on_a_database_no_gateway_has_written_is_one_line_and_makes_nothing(pg_db):
    run = subprocess.run([sys.executable, "-m", "fieldnode.cli", "web", "--db", pg_db.dsn, "--listen",
                          "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == "", run.stderr
    assert run.stderr.count("\n") == 1 and "holds no fieldnode store: start the gateway" in run.stderr, run.stderr
    assert _rows(pg_db, "SELECT count(*) FROM pg_tables WHERE schemaname='public'") == [(0,)]
