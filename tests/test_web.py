"""The web page in a real browser: Debian's chromium, headless, driven by Playwright, against a
gateway on loopback with virtual nodes running the real firmware (tests/support/nodesite.py).

One site for the module (booting nodes is the slow part); the tests run in file order and the
last one stops a node."""
from __future__ import annotations

import http.client
import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from fieldnode.cli.main import main
from fieldnode.node.keystore import Keystore
from fieldnode.wire import coap
from fieldnode.web.app import WebOptions
from fieldnode.web.server import WebServer
from support.charts import bucketed
from support.nodesite import Site, wait_for

XSS_NAME = "<img src=x onerror=alert(1)>"
OFFLINE_AFTER = 4.0  # shrunk from 300 s: the nodes send every second
TOKEN = "correct-horse-battery-staple-42"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("web"))
    try:
        s.node(1)
        s.node(2)
        # The second node's name is markup: the keystore says so, the gateway stores it with its frames.
        keys = Keystore.load(s.keys)
        for entry in keys:
            if entry.device == s.nodes[1].unique_id:
                entry.name = XSS_NAME
        keys.save()
        wait_for(lambda: _db_names(s.db).get(s.nodes[1].unique_id.hex()) == XSS_NAME, 30, "the new name stored")
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def web(site):
    with WebServer(WebOptions(db=site.db, offline_after=OFFLINE_AFTER, allow_commands=True, keys=site.keys),
                   "127.0.0.1:0") as server:
        yield server


def _db_names(db: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT device, name FROM devices"))


def _temperatures(db: Path, dev: str) -> list[tuple[float, float]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT time, value FROM readings WHERE device=? AND name='env.temp' ORDER BY time",
                            (dev,)).fetchall()


def _at_least(n: int, rows: list[tuple]) -> list[tuple] | None:
    return rows if len(rows) >= n else None


def _open(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")


def _row(page: Page, device: str):
    return page.locator(f"#fleet-rows tr[data-device='{device}']")


def test_the_fleet_shows_every_node_and_a_markup_name_as_text(site, web, page):
    _open(page, web.url)
    for node, name in ((site.nodes[0], "e2e-1"), (site.nodes[1], XSS_NAME)):
        row = _row(page, node.unique_id.hex())
        expect(row.locator(".name")).to_have_text(name)
        expect(row.locator(".board")).to_have_text("virtual")
        expect(row.locator(".status")).to_have_text("online")
        expect(row.locator(".reading[data-name='env.temp'] .unit")).to_have_text("Cel")
        # The heap its boot frame reported: free and the lowest since boot, not among the readings.
        expect(row.locator(".heap")).to_have_text(re.compile(r"^\d+\.\d KB \(low \d+\.\d KB\)$"))
        assert row.locator(".reading[data-name='heap.free']").count() == 0
    assert page.locator("#fleet-rows tr").count() == 2
    assert page.locator("#fleet img").count() == 0  # the name made no element
    page.goto(f"{web.url}#/node/{site.nodes[1].unique_id.hex()}")
    expect(page.locator("#node-name")).to_have_text(XSS_NAME)
    assert page.locator("main img").count() == 0
    assert page.dialogs == [] and page.errors == []


def test_a_value_changes_on_the_page_without_reload(site, web, page):
    _open(page, web.url)
    page.evaluate("window.__sameDocument = true")
    node = site.nodes[0]
    cell = _row(page, node.unique_id.hex()).locator(".reading[data-name='env.temp'] .value")
    expect(cell).not_to_have_text("37.5")
    trend = _row(page, node.unique_id.hex()).locator(".reading[data-name='env.temp'] polyline")
    points_before = len(trend.get_attribute("points").split())
    assert points_before >= 2
    node.set_world(devices={"env": {"temp": 37.5}})
    expect(cell).to_have_text("37.5", timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True
    # The live update carried the latest value only: the page extended the trend it had.
    assert len(trend.get_attribute("points").split()) >= points_before
    # What the page shows is what the gateway stored.
    assert site.readings(node, "env.temp")[-1][1] == pytest.approx(37.5)


def _check_chart(page, url: str, dev: str, stored: list[tuple[float, float]]) -> None:
    """The node page's env.temp chart over a range that leaves some of `stored` out at both ends
    draws the stored samples in it (grouped as the server groups them)."""
    start, end = stored[1][0] - 0.5, stored[-2][0] + 0.5
    expected = [(t, v) for t, v in stored if start <= t < end]
    _open(page, f"{url}#/node/{dev}?from={start}&to={end}")
    box = page.locator(".chart[data-name='env.temp']")
    expect(box).to_have_attribute("data-points", re.compile(r"\d+"), timeout=15_000)
    drawn = page.evaluate("window.fieldnodeCharts['env.temp']")
    assert drawn["n"] == len(expected)
    points = bucketed(expected, start, drawn["bucket_s"])  # one a sample, unless two came close together
    assert box.get_attribute("data-points") == str(len(points)) and len(points) >= 2
    assert drawn["t"] == pytest.approx([t for t, _ in points])
    assert drawn["mean"] == pytest.approx([v for _, v in points])
    assert box.locator("canvas").count() >= 1  # uPlot drew it


def _queue_heater_on(page, url: str, node) -> int:
    """heater=on for the node, queued from the Commands view: the id the page says it got."""
    _open(page, f"{url}#/commands")
    page.select_option("#cmd-node", node.unique_id.hex())
    page.fill("#cmd-actuator", "heater")
    page.fill("#cmd-value", "on")
    page.click("#cmd-send")
    expect(page.locator("#cmd-result")).to_contain_text("queued command #")
    return int(page.locator("#cmd-result").inner_text().split("#")[1])


def test_a_chart_draws_the_points_stored_for_a_range(site, web, page):
    node = site.nodes[0]
    dev = node.unique_id.hex()
    # The first test of a worker's module (xdist spreads them) finds the site a few seconds old.
    stored = wait_for(lambda: _at_least(5, _temperatures(site.db, dev)), 30, "five env.temp samples")
    _check_chart(page, web.url, dev, stored)


def test_a_command_queued_from_the_page_reaches_the_node_and_its_ack_appears(site, web, page):
    node = site.nodes[0]
    command_id = _queue_heater_on(page, web.url, node)
    row = page.locator(f"#commands tr[data-id='{command_id}']")
    expect(row.locator(".state")).to_have_text("applied", timeout=30_000)
    expect(row).to_contain_text("heater=on")
    wait_for(lambda: node.outputs().get("pins", {}).get("26") == 1, 10, "the heater relay on")
    # The node page shows the actuator's state as the applied command set it, and the boot on its time axis.
    page.goto(f"{web.url}#/node/{node.unique_id.hex()}")
    actuator = page.locator("#actuators tbody tr", has_text="heater")
    expect(actuator).to_contain_text("on")
    expect(actuator).to_contain_text(f"command #{command_id}")
    expect(page.locator("#events .what").first).to_have_text("boot (hard)")
    expect(page.locator("#boot")).to_contain_text("virtual")


def test_without_allow_commands_the_form_is_absent_and_a_crafted_post_is_refused(site, page):
    before = _count_commands(site.db)
    with WebServer(WebOptions(db=site.db, keys=site.keys), "127.0.0.1:0") as server:
        _open(page, f"{server.url}#/commands")
        expect(page.locator("#commands")).to_be_visible()
        assert page.locator("#queue-form").count() == 0
        csrf = _get_json(server.url + "api/config")["csrf"]
        status, body = _post(server.url + "api/commands", {"node": "e2e-1", "actuator": "heater", "value": "on"},
                             {"x-fieldnode-csrf": csrf})
        assert status == 403 and "not allowed" in body["error"]
    assert _count_commands(site.db) == before


def test_a_post_without_the_pages_csrf_token_or_from_another_origin_is_refused(site, web):
    url = web.url + "api/commands"
    before = _count_commands(site.db)
    order = {"node": "e2e-1", "actuator": "heater", "value": "off"}
    csrf = _get_json(web.url + "api/config")["csrf"]
    assert _post(url, order, {})[0] == 403
    assert _post(url, order, {"x-fieldnode-csrf": "guess"})[0] == 403
    assert _post(url, order, {"x-fieldnode-csrf": csrf, "origin": "http://evil.example"})[0] == 403
    assert _post(url, order, {"x-fieldnode-csrf": csrf}, content_type="text/plain")[0] == 415
    assert _count_commands(site.db) == before


def test_beyond_loopback_a_wrong_or_missing_token_is_refused(site, browser):
    assert main(["web", "--db", str(site.db), "--listen", "0.0.0.0:0"]) == 2  # no token: refused at start
    with WebServer(WebOptions(db=site.db, token=TOKEN), "0.0.0.0:0") as server:
        base = f"http://127.0.0.1:{server.address[1]}/"
        assert _status(base + "api/fleet") == 401
        assert _status(base + "api/fleet", {"authorization": "Bearer wrong-token-of-some-length"}) == 401
        assert _status(base + "?token=wrong-token-of-some-length") == 401
        assert _status(base + "api/fleet", {"authorization": f"Bearer {TOKEN}"}) == 200
        conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
        conn.request("GET", f"//evil.example/?token={TOKEN}&x=1")
        answer = conn.getresponse()
        assert answer.status == 303 and answer.getheader("location") == "/evil.example/?x=1"  # stays on this site
        assert "HttpOnly" in answer.getheader("set-cookie") and "SameSite=strict" in answer.getheader("set-cookie")
        conn.close()
        context = browser.new_context()
        try:
            pg = context.new_page()
            assert pg.goto(base).status == 401
            _open(pg, f"{base}?token={TOKEN}")  # sets the cookie, then the page without the token in its URL
            assert "token" not in pg.url
            expect(pg.locator("#fleet-rows tr")).to_have_count(2)
        finally:
            context.close()


def test_a_mistake_on_the_command_line_is_one_line_and_exit_2(site, tmp_path, capsys):
    assert main(["web", "--db", str(tmp_path / "none.db")]) == 2
    assert main(["web", "--db", str(site.db), "--token", "short"]) == 2
    assert main(["web", "--db", str(site.db), "--listen", "example.org:80"]) == 2
    assert main(["web", "--db", str(site.db), "--offline-after", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err), err
    assert "short" not in "".join(err)  # the token is never printed


def test_the_gateway_serves_the_page_with_http(site, tmp_path):
    keys = tmp_path / "keys.json"
    Keystore.load(site.keys).save(keys)
    proc = subprocess.Popen([sys.executable, "-m", "fieldnode.cli", "gateway", "--listen", "127.0.0.1:0",
                             "--db", str(tmp_path / "gw.db"), "--keys", str(keys), "--http", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("fieldnode web page on http://127.0.0.1:"), line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert _get_json(url + "api/config")["allow_commands"] is False
        assert "listening on coap://" in proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_refused_datagram_shows_with_its_reason_and_source(site, web, page):
    _open(page, f"{web.url}#/rejections")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        source = f"127.0.0.1:{sock.getsockname()[1]}"
        # A POST to a resource the gateway does not have.
        sock.sendto(coap.encode(coap.Message(coap.CON, coap.POST, 4242, b"wb", [(coap.URI_PATH, b"g")])),
                    site.gateway.address)
        row = page.locator("#rejections tbody tr", has_text=source)
        expect(row.locator(".reason")).to_have_text("not-found", timeout=15_000)
    expect(page.locator("#by-reason")).to_contain_text("not-found")


def test_a_stopped_node_turns_offline_after_the_timeout(site, web, page):
    _open(page, web.url)
    stopped, running = site.nodes[1], site.nodes[0]
    expect(_row(page, stopped.unique_id.hex()).locator(".status")).to_have_text("online")
    stopped.stop()
    stopped_at = time.monotonic()
    expect(_row(page, stopped.unique_id.hex()).locator(".status")).to_have_text("offline", timeout=20_000)
    assert time.monotonic() - stopped_at >= OFFLINE_AFTER - 1.5  # not before its timeout (1 s frames)
    expect(_row(page, running.unique_id.hex()).locator(".status")).to_have_text("online")


# -- plain HTTP -----------------------------------------------------------------------------------

def _request(url: str, headers: dict | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _status(url: str, headers: dict | None = None) -> int:
    return _request(url, headers)[0]


def _get_json(url: str) -> dict:
    status, body = _request(url)
    assert status == 200, body
    return json.loads(body)


def _post(url: str, body: dict, headers: dict, content_type: str = "application/json") -> tuple[int, dict]:
    status, raw = _request(url, {"content-type": content_type, **headers}, json.dumps(body).encode())
    return status, json.loads(raw)


def _count_commands(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM commands").fetchone()[0]

