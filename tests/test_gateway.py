"""The gateway over real UDP on loopback: CoAP answers, storage, dedup, rejections, restart, downlink."""
from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from fieldnode.wire import coap
from fieldnode.wire.frame import KIND_ACK, KIND_BOOT, KIND_COMMAND, Verifier, build_frame, device_base_name
from fieldnode.gateway import GatewayThread, enqueue_command, list_commands, read_status
from fieldnode.gateway.exchange import ENTRY_BYTES
from fieldnode.infra.errors import FieldnodeError
from fieldnode.node.keystore import make_kid
from support.gateway_peers import Client, Nodes, gateway_port
from support.nodesite import wait_for

CLI = [sys.executable, "-m", "fieldnode.cli"]


@pytest.fixture
def node_count() -> int:
    return 3


@pytest.fixture
def gateway(tmp_path: Path, nodes: Nodes):
    gt = GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), health_interval=0.2)
    events: queue.Queue = queue.Queue()
    gt.start()
    gt.gateway.subscribe(events.put)
    gt.events = events
    yield gt
    gt.stop()


@pytest.fixture
def client(gateway):
    c = Client(gateway.address)
    yield c
    c.close()


def db(gt: GatewayThread) -> sqlite3.Connection:
    return sqlite3.connect(gt.gateway.db_path)


def frame_count(gt: GatewayThread) -> int:
    with db(gt) as conn:
        return conn.execute("SELECT count(*) FROM frames").fetchone()[0]


def counters(gt: GatewayThread) -> dict[str, int]:
    return gt.call(lambda: dict(gt.gateway.counts))


# -- independent peers ---------------------------------------------------------------------------

def test_aiocoap_post_is_stored_with_its_readings(gateway, nodes):
    from aiocoap import POST, Context, Message

    frame = nodes.frame(0, records=[{"n": "temp", "u": "Cel", "v": 23.5}, {"n": "door", "vb": True},
                                    {"n": "fw", "vs": "1.2"}, {"n": "loop1", "u": "A", "err": "broken-loop"}])

    async def go():
        ctx = await Context.create_client_context()
        try:
            host, port = gateway.address
            req = Message(code=POST, uri=f"coap://{host}:{port}/f", payload=frame, content_format=17)
            return await asyncio.wait_for(ctx.request(req).response, 10)
        finally:
            await ctx.shutdown()

    resp = asyncio.run(go())
    assert str(resp.code) == "2.04 Changed" and resp.payload == b""
    with db(gateway) as conn:
        rows = conn.execute("SELECT device, name, time, value, string, bool, err, unit FROM readings "
                            "ORDER BY id").fetchall()
        dev = nodes.devices[0].hex()
        t = 1_764_057_600 + 1
        assert rows == [(dev, "temp", t, 23.5, None, None, None, "Cel"),
                        (dev, "door", t, None, None, 1, None, None),
                        (dev, "fw", t, None, "1.2", None, None, None),
                        (dev, "loop1", t, None, None, None, "broken-loop", "A")]
        raw, counter = conn.execute("SELECT raw, counter FROM frames").fetchone()
        assert raw == frame and counter == 1
        name, highest, frames = conn.execute("SELECT name, highest_counter, frames FROM devices").fetchone()
        assert (name, highest, frames) == ("node-1", 1, 1)


def test_libcoap_client_post_is_accepted(gateway, nodes, tmp_path):
    exe = "coap-client-notls"
    frame_file = tmp_path / "frame.cbor"
    frame_file.write_bytes(nodes.frame(1))
    host, port = gateway.address
    proc = subprocess.run([exe, "-m", "post", "-t", "17", "-f", str(frame_file), "-B", "10",
                           f"coap://{host}:{port}/f"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "4." not in proc.stderr and "5." not in proc.stderr
    assert frame_count(gateway) == 1
    # the same file again is a frame already stored: 2.03, nothing new (-v 6 prints the answer)
    proc = subprocess.run([exe, "-v", "6", "-m", "post", "-t", "17", "-f", str(frame_file), "-B", "10",
                           f"coap://{host}:{port}/f"], capture_output=True, text=True, timeout=30, check=True)
    assert "t:ACK c:2.03" in proc.stdout, proc.stdout
    assert frame_count(gateway) == 1
    # libcoap prints the code and diagnostic payload of an error response
    frame_file.write_bytes(nodes.frame(1, key=bytes(32)))
    proc = subprocess.run([exe, "-m", "post", "-t", "17", "-f", str(frame_file), "-B", "10",
                           f"coap://{host}:{port}/f"], capture_output=True, text=True, timeout=30)
    assert "4.01" in proc.stderr and "bad-mac" in proc.stderr


# -- deduplication and the 2.03 answer -----------------------------------------------------------

def test_retransmitted_con_gets_the_same_answer_and_is_stored_once(gateway, client, nodes):
    data = client.request(nodes.frame(0), mid=0x1234, token=b"\xaa\xbb\xcc")
    first = client.exchange(data)
    again = client.exchange(data)  # our ACK was "lost": the node sends the very same datagram
    assert (first.mtype, first.code, first.mid, first.token) == (coap.ACK, coap.CHANGED, 0x1234, b"\xaa\xbb\xcc")
    assert coap.encode(again) == coap.encode(first)
    assert frame_count(gateway) == 1
    c = counters(gateway)
    assert c["accepted"] == 1 and c["retransmission"] == 1


def test_resent_frame_with_new_mid_is_valid_not_stored_twice(gateway, client, nodes):
    frame = nodes.frame(0)
    assert client.post(frame).code == coap.CHANGED
    second = client.post(frame)
    assert second.code == coap.VALID and second.mtype == coap.ACK
    assert frame_count(gateway) == 1
    # from another source port too (the node rebooted and lost its socket)
    other = Client(gateway.address)
    assert other.post(frame).code == coap.VALID
    other.close()
    assert frame_count(gateway) == 1 and counters(gateway)["duplicate"] == 2


def test_copy_arriving_before_the_commit_is_answered_after_it(gateway, client, nodes):
    frame = nodes.frame(0)
    client.send(client.request(frame, mid=1))
    client.send(client.request(frame, mid=2))  # same frame, new mid, same batch window
    answers = sorted((m.mid, m.code) for m in (client.recv(), client.recv()))
    assert answers == [(1, coap.CHANGED), (2, coap.VALID)]
    assert frame_count(gateway) == 1


def test_retransmission_while_pending_is_answered_once_committed(gateway, client, nodes):
    data = client.request(nodes.frame(0), mid=77)
    client.send(data)
    client.send(data)
    a = client.recv()
    assert a.mid == 77 and a.code == coap.CHANGED
    client.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        client.recv()  # the copy that came while the frame was committing gets no second answer


# -- rejections ----------------------------------------------------------------------------------

def rejected(gt: GatewayThread) -> dict[str, int]:
    return {k[9:]: v for k, v in counters(gt).items() if k.startswith("rejected.")}


def test_rejections_carry_the_reason_and_store_nothing(gateway, client, nodes, tmp_path):
    good = nodes.frame(0)
    tampered = bytearray(good)
    tampered[-12] ^= 0x01  # a payload byte
    stranger = Nodes(tmp_path / "other.json", n=1, first=200)
    cases = [
        (bytes(tampered), coap.UNAUTHORIZED, "bad-mac"),
        (stranger.frame(0), coap.UNAUTHORIZED, "unknown-kid"),
        (nodes.frame(1, kind=KIND_COMMAND), coap.BAD_REQUEST, "wrong-kind"),
        (nodes.frame(2, bn=device_base_name(nodes.devices[0])), coap.BAD_REQUEST, "device-mismatch"),
        (b"\xd1\x84", coap.BAD_REQUEST, "bad-cbor"),
        (b"\x00" * 1500, coap.BAD_REQUEST, "oversized"),
    ]
    for payload, code, reason in cases:
        ans = client.post(payload)
        assert (ans.code, ans.payload.decode()) == (code, reason), reason
    assert frame_count(gateway) == 0
    assert client.post(good).code == coap.CHANGED  # the node's real frame is still accepted
    r = rejected(gateway)
    assert {k: r[k] for k in (c[2] for c in cases)} == {c[2]: 1 for c in cases}


def test_replayed_counter_is_rejected(gateway, client, nodes):
    for c in (1, 2, 3, 100):
        assert client.post(nodes.frame(0, counter=c)).code == coap.CHANGED
    # counter 2 again with other contents (a node that lost its counter, or a forgery of a
    # replayed capture): refused
    ans = client.post(nodes.frame(0, counter=2, records=[{"n": "temp", "v": 99}]))
    assert (ans.code, ans.payload) == (coap.BAD_REQUEST, b"replay")
    # below the 64-frame window: refused even though never seen
    ans = client.post(nodes.frame(0, counter=30))
    assert (ans.code, ans.payload) == (coap.BAD_REQUEST, b"replay")
    # inside the window and never seen (UDP reordering): accepted once
    assert client.post(nodes.frame(0, counter=50)).code == coap.CHANGED
    assert frame_count(gateway) == 5 and rejected(gateway)["replay"] == 2


def test_coap_level_refusals(gateway, client, nodes):
    frame = nodes.frame(0)
    assert client.post(frame, path="x").code == coap.NOT_FOUND
    assert client.post(frame, code=coap.PUT).code == coap.METHOD_NOT_ALLOWED
    assert client.post(frame, cf=0).code == coap.UNSUPPORTED_CONTENT_FORMAT
    assert client.post(frame, cf=None).code == coap.UNSUPPORTED_CONTENT_FORMAT
    assert client.post(frame, extra=[(2049, b"x")]).code == coap.BAD_OPTION  # unknown critical option
    # an unknown elective option and Uri-Host are fine
    assert client.post(frame, extra=[(2048, b"x"), (coap.URI_HOST, b"gw.local")]).code == coap.CHANGED
    # CoAP ping: an empty CON is answered with RST
    ans = client.exchange(bytes((0x40, 0, 0x12, 0x34)))
    assert (ans.mtype, ans.code, ans.mid) == (coap.RST, 0, 0x1234)
    # a malformed CON (payload marker with no payload) is answered with RST
    ans = client.exchange(bytes((0x40, 0x02, 0x43, 0x21, 0xFF)))
    assert (ans.mtype, ans.mid) == (coap.RST, 0x4321)
    # a NON request gets a NON response with the same token
    ans = client.post(nodes.frame(1), mtype=coap.NON, token=b"\x07")
    assert (ans.mtype, ans.code, ans.token) == (coap.NON, coap.CHANGED, b"\x07")
    r = rejected(gateway)
    assert r["not-found"] == r["method-not-allowed"] == r["bad-option"] == r["bad-coap"] == 1
    assert r["content-format"] == 2 and counters(gateway)["ping"] == 1


# -- restart: the replay window comes back from the database -------------------------------------

def test_restart_restores_the_replay_window(tmp_path, nodes):
    path = tmp_path / "gw.db"
    with GatewayThread(nodes.keystore(), path, ("127.0.0.1", 0)) as gt:
        c = Client(gt.address)
        for n in (1, 2, 3, 10):
            assert c.post(nodes.frame(0, counter=n)).code == coap.CHANGED
        c.close()
    with GatewayThread(nodes.keystore(), path, ("127.0.0.1", 0)) as gt:
        assert gt.gateway.restored_devices == 1
        c = Client(gt.address)
        # an old counter with new contents: replay
        assert c.post(nodes.frame(0, counter=2, records=[{"n": "x", "v": 1}])).payload == b"replay"
        # the exact frame stored before the restart: already stored
        assert c.post(nodes.frame(0, counter=10)).code == coap.VALID
        # a counter in the window that never arrived before the restart is still acceptable
        assert c.post(nodes.frame(0, counter=5)).code == coap.CHANGED
        assert c.post(nodes.frame(0, counter=11)).code == coap.CHANGED
        c.close()
        assert frame_count(gt) == 6


def test_failed_commit_is_not_remembered_as_seen(gateway, client, nodes):
    store = gateway.gateway._store
    real = store.commit
    calls = []

    def failing_once(items, deltas, health):
        calls.append(len(items))
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return real(items, deltas, health)

    store.commit = failing_once
    frame = nodes.frame(0)
    ans = client.post(frame)
    assert (ans.code, ans.payload) == (coap.SERVICE_UNAVAILABLE, b"store-failed")
    assert ans.option(coap.MAX_AGE) is not None
    assert frame_count(gateway) == 0
    assert client.post(frame).code == coap.CHANGED  # the node's next try is taken
    assert frame_count(gateway) == 1 and counters(gateway)["failed"] == 1


# -- downlink ------------------------------------------------------------------------------------

def test_command_rides_on_the_answer_and_its_ack_closes_it(gateway, client, nodes):
    dbp = gateway.gateway.db_path
    exp = time.time() + 600
    cmd = nodes.command(0, 7, exp)
    cid = enqueue_command(dbp, nodes.devices[0], cmd, exp)
    other = Client(gateway.address)
    assert other.post(nodes.frame(1)).payload == b""  # another node's answer carries nothing
    other.close()
    ans = client.post(nodes.frame(0))
    assert ans.code == coap.CHANGED and ans.content_format == 17 and ans.payload == cmd
    assert [c.state for c in list_commands(dbp, ids=[cid])] == ["sent"]
    assert client.post(nodes.frame(0)).payload == b""  # delivered once (until the resend time)
    ack = nodes.frame(0, kind=KIND_ACK, records=[{"n": "ack", "v": 7}, {"n": "result", "vs": "applied"}])
    assert client.post(ack).code == coap.CHANGED
    (info,) = list_commands(dbp, ids=[cid])
    assert info.state == "applied" and info.attempts == 1


def test_expired_command_is_not_delivered(gateway, client, nodes):
    dbp = gateway.gateway.db_path
    exp = time.time() + 0.3
    cid = enqueue_command(dbp, nodes.devices[0], nodes.command(0, 8, exp), exp)
    while time.time() <= exp:  # the clock passes the expiry (the gateway reads the same clock)
        time.sleep(exp - time.time() + 0.01)
    assert client.post(nodes.frame(0)).payload == b""
    assert list_commands(dbp, ids=[cid])[0].state == "expired"


def test_enqueue_command_refuses_bad_input(tmp_path, nodes):
    dbp = tmp_path / "c.db"
    exp = time.time() + 60
    with pytest.raises(FieldnodeError, match="not a command"):
        enqueue_command(dbp, nodes.devices[0], nodes.frame(0), exp)
    with pytest.raises(FieldnodeError, match="belongs to device"):
        enqueue_command(dbp, nodes.devices[1], nodes.command(0, 1, exp), exp)
    with pytest.raises(FieldnodeError, match="in the past"):
        enqueue_command(dbp, nodes.devices[0], nodes.command(0, 1, exp), time.time() - 1)
    with pytest.raises(FieldnodeError, match="not a valid frame"):
        enqueue_command(dbp, nodes.devices[0], b"junk", exp)


# -- health ---------------------------------------------------------------------------------------

def test_status_reads_health_while_the_gateway_runs(gateway, client, nodes):
    client.post(nodes.frame(0))
    client.post(nodes.frame(0, key=bytes(32)))
    # the next health write (every 0.2 s here) after both
    st = wait_for(lambda: (s := read_status(gateway.gateway.db_path)).counters.get("datagrams") == 2 and s,
                  timeout=30, what="a health write counting both datagrams")
    assert st.running and st.counters["accepted"] == 1 and st.rejected == {"bad-mac": 1}
    assert [(d["name"], d["frames"]) for d in st.devices] == [("node-1", 1)]
    proc = subprocess.run(CLI + ["status", "--db", str(gateway.gateway.db_path), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["running"] and doc["rejected"] == {"bad-mac": 1} and doc["outbox"] == 0
    (worker,) = doc["workers"]  # two exchanges in the dedup cache, and what they hold
    assert worker["exchanges"] == 2 and worker["dedup_bytes"] >= 2 * ENTRY_BYTES
    proc = subprocess.run(CLI + ["status", "--db", str(gateway.gateway.db_path)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "120"})
    assert "node-1" in proc.stdout and "bad-mac" in proc.stdout and "running" in proc.stdout
    assert "2 exchanges, 0.0 MiB" in proc.stdout


def test_status_reads_a_database_from_before_the_dedup_cache_column(tmp_path, nodes):
    """`fieldnode status` run after an upgrade, before the gateway was restarted: its database has
    no gateway.dedup_bytes yet. It is read (the size shown as 0), and the gateway adds the column."""
    path = tmp_path / "gw.db"
    with GatewayThread(nodes.keystore(), path, ("127.0.0.1", 0)):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE gateway DROP COLUMN dedup_bytes")
    (worker,) = read_status(path).workers
    assert worker["state"] == "stopped" and worker["dedup_bytes"] == 0
    with GatewayThread(nodes.keystore(), path, ("127.0.0.1", 0)) as gt:
        client = Client(gt.address)
        assert client.post(nodes.frame(0)).code == coap.CHANGED
        client.close()
    (worker,) = read_status(path).workers
    assert worker["dedup_bytes"] > 0


def test_status_shows_each_nodes_latest_reported_heap(gateway, client, nodes):
    def heap(free: int, low: int, block: int) -> list[dict]:
        return [{"n": "heap.free", "u": "B", "v": free}, {"n": "heap.low", "u": "B", "v": low},
                {"n": "heap.block", "u": "B", "v": block}]

    client.post(nodes.frame(0, kind=KIND_BOOT, records=[{"n": "fw", "vs": "0.1.0"}] + heap(90000, 90000, 40000)))
    client.post(nodes.frame(0, records=heap(81920, 70656, 30720)))  # a later health frame
    client.post(nodes.frame(1))  # a node that has not reported its heap (answered once committed)
    by_name = {d["name"]: d for d in read_status(gateway.gateway.db_path).devices}
    assert {k: v for k, v in by_name["node-1"]["heap"].items() if k != "time"} == \
        {"free": 81920, "low": 70656, "block": 30720}
    assert "heap" not in by_name["node-2"]
    proc = subprocess.run(CLI + ["status", "--db", str(gateway.gateway.db_path)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "200"})
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]]
            for line in proc.stdout.splitlines() if line.startswith("│") and "node-" in line}
    assert rows["node-1"][-3:] == ["80.0 KB", "69.0 KB", "30.0 KB"]
    assert rows["node-2"][-3:] == ["-", "-", "-"]


def test_status_without_a_database_says_what_to_do(tmp_path):
    proc = subprocess.run(CLI + ["status", "--db", str(tmp_path / "none.db")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "--db" in proc.stderr


# -- the command line ----------------------------------------------------------------------------

def test_cli_gateway_runs_prints_and_stops_cleanly_on_ctrl_c(tmp_path, nodes):
    dbp = tmp_path / "cli.db"
    proc = subprocess.Popen(CLI + ["gateway", "--listen", "127.0.0.1:0", "--db", str(dbp),
                                   "--keys", str(nodes.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        startup = proc.stdout.readline()
        port = gateway_port(startup)  # the port the kernel gave it
        assert "mqtt off" in startup
        c = Client(("127.0.0.1", port))
        assert c.post(nodes.frame(0)).code == coap.CHANGED
        assert c.post(nodes.frame(0, key=bytes(32))).code == coap.UNAUTHORIZED
        c.close()
        ok = proc.stdout.readline()
        rej = proc.stdout.readline()
        assert " ok " in ok and "node-1" in ok and "temp=" in ok
        assert "REJ" in rej and "bad-mac" in rej
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "accepted 1" in out and "bad-mac 1" in out
    with sqlite3.connect(dbp) as conn:
        assert conn.execute("SELECT count(*) FROM frames").fetchone()[0] == 1
        assert conn.execute("SELECT stopped FROM gateway").fetchone()[0] is not None


def test_cli_gateway_refuses_bad_arguments(tmp_path, nodes):
    for args, msg in ((["--listen", "127.0.0.1:99999"], "port 0-65535"),
                      (["--listen", "nohost:5683"], "not an IP address"),
                      (["--mqtt", "http://x"], "mqtt://HOST"),
                      (["--keys", str(tmp_path / "none.json")], "does not exist"),
                      (["--workers", "12"], "at most 11")):
        proc = subprocess.run(CLI + ["gateway", "--db", str(tmp_path / "g.db"), "--keys", str(nodes.path)] + args,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and msg in proc.stderr, (args, proc.stderr)


def test_node_provisioned_while_running_is_accepted(tmp_path, nodes):
    late = Nodes(tmp_path / "late.json", n=1, first=50)
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), health_interval=0.1) as gt:
        c = Client(gt.address)
        assert c.post(late.frame(0)).payload == b"unknown-kid"
        keys = nodes.keystore()
        for entry in late.keystore():
            keys.add(entry)
        keys.save()  # a new file (os.replace): a new inode, whatever the clock's resolution
        deadline = time.monotonic() + 10
        while c.post(late.frame(0)).code != coap.CHANGED:
            assert time.monotonic() < deadline, "the new key was not picked up"
            time.sleep(0.1)
        c.close()


def test_revoked_node_is_refused_while_the_gateway_runs(tmp_path, nodes):
    """A stolen node: `fieldnode keys revoke` on the keystore the gateway reads shuts it out."""
    from fieldnode.cli.main import main
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), health_interval=0.1) as gt:
        c = Client(gt.address)
        assert c.post(nodes.frame(0)).code == coap.CHANGED
        assert c.post(nodes.frame(1)).code == coap.CHANGED
        assert main(["keys", "revoke", "node-1", "--keys", str(nodes.path)]) == 0
        deadline = time.monotonic() + 10
        while (answer := c.post(nodes.frame(0))).code == coap.CHANGED:
            assert time.monotonic() < deadline, "the revoked key was still accepted"
            time.sleep(0.1)
        assert answer.payload == b"unknown-kid"
        assert c.post(nodes.frame(1)).code == coap.CHANGED  # the other nodes carry on
        c.close()

def test_live_lines_rate_limit_refusals():
    from fieldnode.gateway.live import LinePrinter, summary_line
    from fieldnode.gateway.events import GatewayEvent

    lines: list[str] = []
    printer = LinePrinter(lines.append, max_rejects=3)
    t = 1_000_000.0
    for _ in range(10):
        printer(GatewayEvent("rejected", ("10.0.0.9", 5000), t, reason="bad-mac", code=coap.UNAUTHORIZED))
    printer(GatewayEvent("retransmission", ("10.0.0.9", 5000), t))  # no line for these
    printer(GatewayEvent("rejected", ("10.0.0.9", 5000), t + 1, reason="bad-cbor", code=coap.BAD_REQUEST))
    assert [("bad-mac" in x, "7 more rejected" in x, "bad-cbor" in x) for x in lines] == \
        [(True, False, False)] * 3 + [(False, True, False), (False, False, True)]
    s = summary_line({"accepted": 5, "rejected.bad-mac": 2, "datagrams": 7}, time.time() - 90, 1, "off")
    assert "accepted 5" in s and "bad-mac 2" in s and "pending 1" in s and "(up 90 s)" in s


def test_live_lines_rate_limit_duplicates_apart_from_refusals(tmp_path):
    """A replay flood of a stored frame is answered 2.03 each time: its lines are limited like
    refusals (each kind its own budget, so neither hides the other), and accepted frames all show."""
    from fieldnode.gateway.live import LinePrinter
    from fieldnode.gateway.events import GatewayEvent

    nodes = Nodes(tmp_path / "k.json", n=1)
    frame = Verifier(nodes.keystore().lookup).verify(nodes.frame(0))
    lines: list[str] = []
    printer = LinePrinter(lines.append, max_rejects=3)
    t = 1_000_000.0
    for i in range(1000):
        printer(GatewayEvent("duplicate", ("10.0.0.9", 5000), t, code=coap.VALID, frame=frame))
        if i % 250 == 0:
            printer(GatewayEvent("rejected", ("10.0.0.9", 5000), t, reason="replay", code=coap.BAD_REQUEST))
            printer(GatewayEvent("accepted", ("10.0.0.8", 5000), t, code=coap.CHANGED, frame=frame))
    printer(GatewayEvent("duplicate", ("10.0.0.9", 5000), t + 1, code=coap.VALID, frame=frame))
    kinds = Counter(line.split()[1] for line in lines)
    assert kinds == {"dup": 3 + 1 + 1, "REJ": 3, "ok": 4}, lines
    assert sum("997 more duplicates" in line for line in lines) == 1


def test_port_in_use_is_a_clear_error(tmp_path, nodes):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        gt = GatewayThread(nodes.keystore(), tmp_path / "gw.db", s.getsockname())
        with pytest.raises(FieldnodeError, match="cannot listen on 127.0.0.1"):
            gt.start()


def test_a_second_gateway_on_the_same_database_is_refused_and_the_first_carries_on(tmp_path, nodes):
    path = tmp_path / "gw.db"
    with GatewayThread(nodes.keystore(), path, ("127.0.0.1", 0)) as first:
        second = GatewayThread(nodes.keystore(), path, ("127.0.0.1", 0))
        with pytest.raises(FieldnodeError, match=rf"gw.db is in use by another gateway \(process {os.getpid()}\)"):
            second.start()
        c = Client(first.address)
        assert c.post(nodes.frame(0, counter=1)).code == coap.CHANGED
        c.close()
    with GatewayThread(nodes.keystore(), path, ("127.0.0.1", 0)) as again:  # the first one's stop freed it
        c = Client(again.address)
        assert c.post(nodes.frame(0, counter=1)).code == coap.VALID  # same database, same replay state
        c.close()


def test_cli_second_gateway_is_refused_naming_the_first_and_a_killed_one_leaves_no_lock(tmp_path, nodes):
    dbp = tmp_path / "gw.db"

    def command(*extra: str, port: int = 0) -> list[str]:
        return CLI + ["gateway", "--listen", f"127.0.0.1:{port}", "--db", str(dbp), "--keys", str(nodes.path),
                      *extra]

    def start() -> tuple[subprocess.Popen, int]:
        proc = subprocess.Popen(command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        if "listening on coap://" not in line:
            proc.kill()
            pytest.fail(f"the gateway did not start: {line!r} {proc.communicate()[1]}")
        return proc, gateway_port(line)

    first, port = start()
    try:
        # --workers needs a fixed port: the first one's, which the lock refuses before any bind
        for extra in ((), ("--workers", "2")):
            second = subprocess.run(command(*extra, port=port if extra else 0), capture_output=True, text=True,
                                    timeout=60)
            assert second.returncode == 2 and "listening" not in second.stdout, (extra, second.stderr)
            assert f"gw.db is in use by another gateway (process {first.pid})" in second.stderr, extra
            assert "Traceback" not in second.stderr
        first.kill()  # a crash: the kernel drops the lock with the process
        first.communicate(timeout=30)
        again, _ = start()
        again.send_signal(signal.SIGINT)
        _, err = again.communicate(timeout=30)
        assert again.returncode == 0, err
    finally:
        first.kill()
        first.communicate()


def test_node_reprovisioned_after_a_flash_erase_starts_a_new_counter_sequence(tmp_path, nodes):
    """`esptool erase_flash` takes the key and the counter with it: the node starts again at 1.
    `fieldnode provision --force` gives it a new key generation, and the replay state is per key
    id, so its frames are taken again; the old key's frames stay refused."""
    from fieldnode.node.keystore import KeyEntry, Keystore
    dev = nodes.devices[0]
    path = tmp_path / "gw.db"
    with GatewayThread(nodes.keystore(), path, ("127.0.0.1", 0), health_interval=0.1) as gt:
        c = Client(gt.address)
        for n in range(1, 21):
            assert c.post(nodes.frame(0, counter=n)).code == coap.CHANGED
        # What `provision --force` does to the keystore: a new generation, the old key dropped.
        new_key = os.urandom(32)
        store = Keystore.load(nodes.path)
        store.remove(make_kid(dev, 1))
        store.add(KeyEntry(make_kid(dev, 2), new_key, name="node-1"))
        store.save()

        def erased(counter: int) -> bytes:
            return build_frame(new_key, make_kid(dev, 2), 4, counter, 0, device_base_name(dev),
                               1_764_100_000 + counter, [{"n": "temp", "u": "Cel", "v": 21.0}])

        deadline = time.monotonic() + 10
        while (answer := c.post(erased(1))).payload == b"unknown-kid":  # the keystore is reloaded
            assert time.monotonic() < deadline, "the new key was never taken"
            time.sleep(0.1)
        assert answer.code == coap.CHANGED
        assert c.post(erased(2)).code == coap.CHANGED
        assert c.post(erased(2)).code == coap.VALID  # sent again: stored once
        assert c.post(nodes.frame(0, counter=21)).payload == b"unknown-kid"
        c.close()
    with GatewayThread(nodes.keystore(), path, ("127.0.0.1", 0)) as gt:  # restart: both windows kept
        c = Client(gt.address)
        assert c.post(erased(2)).code == coap.VALID
        assert c.post(build_frame(new_key, make_kid(dev, 2), 4, 1, 0, device_base_name(dev), 5,
                                  [{"n": "x", "v": 1}])).payload == b"replay"
        assert c.post(erased(3)).code == coap.CHANGED
        c.close()
    with db(gt) as conn:
        assert conn.execute("SELECT count(*) FROM frames WHERE device=?", (dev.hex(),)).fetchone()[0] == 23
        assert conn.execute("SELECT highest_counter, kid FROM devices WHERE device=?",
                            (dev.hex(),)).fetchone() == (3, make_kid(dev, 2).hex())
