"""Gateways on one PostgreSQL database, as the CLI runs them: two gateway processes on different
ports (two machines) take the same nodes' frames, each frame stored once; and PostgreSQL
stopped and started again under load loses no acknowledged frame."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack

import psycopg
import pytest

from fieldnode.wire import coap
from support.gateway_peers import Client, Nodes, gateway_port
from support.postgres import Cluster
from support.proclines import ProcessLines, stop_process

CLI = [sys.executable, "-m", "fieldnode.cli"]


@pytest.fixture
def node_count() -> int:
    return 4


def start_gateway(stack: ExitStack, nodes: Nodes, uri: str, *extra: str) -> tuple[ProcessLines, int]:
    proc = subprocess.Popen(CLI + ["gateway", "--listen", "127.0.0.1:0", "--db", uri, "--keys", str(nodes.path),
                                   "--quiet", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stack.callback(stop_process, proc)
    lines = ProcessLines(proc)
    assert lines.until("stdout", lambda ls: any("listening on" in line for line in ls), 60), lines.lines
    startup = next(line for line in lines.lines["stdout"] if "listening on" in line)
    assert "db postgresql://" in startup
    return lines, gateway_port(startup)


def stored(uri: str) -> list[tuple[str, int]]:
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT device, counter FROM frames ORDER BY device, counter").fetchall()


def status(uri: str) -> dict:
    run = subprocess.run(CLI + ["status", "--db", uri, "--json"], capture_output=True, text=True, timeout=60)
    out = json.loads(run.stdout)
    # Exit status 0 exactly when a gateway runs on the database (status.run), as the JSON says.
    assert run.returncode == (0 if any(w["state"] == "running" for w in out["workers"]) else 1), run.stderr
    return out


def post_to_both(a: Client, b: Client, frame: bytes) -> list[int]:
    """The same frame to both gateways at once (a node's retransmission that UDP took to both)."""
    a.send(a.request(frame))
    b.send(b.request(frame))
    return sorted((a.recv().code, b.recv().code))


def test_two_gateways_on_one_database_store_each_frame_once_and_refuse_every_replay(pg_db, nodes):
    per_node = 40
    with ExitStack() as stack:
        _, port_a = start_gateway(stack, nodes, pg_db.dsn)
        _, port_b = start_gateway(stack, nodes, pg_db.dsn)
        assert port_a != port_b
        sent: dict[int, list[bytes]] = {i: [nodes.frame(i) for _ in range(per_node)] for i in range(len(nodes.devices))}
        failures: list[str] = []

        def node(i: int) -> None:
            """Frames alternate between the gateways, each pair swapped (UDP reorders); then every
            frame again to both at once, and a forged one with a taken counter to both."""
            a, b = Client(("127.0.0.1", port_a)), Client(("127.0.0.1", port_b))
            try:
                frames = sent[i]
                for k in range(0, per_node, 2):
                    for n in (k + 1, k):
                        code = (a if n % 2 else b).post(frames[n]).code
                        if code != coap.CHANGED:
                            failures.append(f"node {i} counter {n + 1}: {coap.code_text(code)}")
                for k, frame in enumerate(frames):
                    codes = post_to_both(a, b, frame)
                    if codes != [coap.VALID, coap.VALID]:
                        failures.append(f"node {i} replay of {k + 1}: {[coap.code_text(c) for c in codes]}")
                forged = nodes.frame(i, counter=per_node - 3, records=[{"n": "x", "v": 1}])
                answers = [a.post(forged), b.post(forged)]
                if [(m.code, m.payload) for m in answers] != [(coap.BAD_REQUEST, b"replay")] * 2:
                    failures.append(f"node {i} forged frame: {answers}")
            finally:
                a.close()
                b.close()

        threads = [threading.Thread(target=node, args=(i,)) for i in range(len(nodes.devices))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        assert failures == []
        expected = sorted((d.hex(), c) for d in nodes.devices for c in range(1, per_node + 1))
        assert stored(pg_db.dsn) == expected  # none lost, none twice
        # Frames sent to both gateways at once: one stores it, the other answers 2.03 after its commit.
        fresh = [nodes.frame(i) for i in range(len(nodes.devices)) for _ in range(5)]
        a, b = Client(("127.0.0.1", port_a)), Client(("127.0.0.1", port_b))
        try:
            for frame in fresh:
                assert post_to_both(a, b, frame) == sorted([coap.CHANGED, coap.VALID])
        finally:
            a.close()
            b.close()
        assert len(stored(pg_db.dsn)) == len(expected) + len(fresh)
        # Counted as answered, saved with the gateway's next commit or heartbeat (every second).
        assert wait_for(lambda: status(pg_db.dsn)["counters"]["accepted"] == len(expected) + len(fresh), 30)
        st = status(pg_db.dsn)
        assert [w["state"] for w in st["workers"]] == ["running", "running"]
        assert {d["frames"] for d in st["devices"]} == {per_node + 5}


class RetryingNode:
    """A node that sends its frames in order and sends each again until a gateway acknowledges it
    (2.04, or 2.03: already stored), as the firmware's store-and-forward queue does."""

    def __init__(self, nodes: Nodes, i: int, port: int, count: int, retry_s: float,
                 failover: list[int] | None = None, timeout_s: float = 2.0) -> None:
        self.frames = [nodes.frame(i) for _ in range(count)]
        self.client = Client(("127.0.0.1", port))
        self.client.sock.settimeout(timeout_s)  # then the frame goes again, with a new message id
        self.retry_s = retry_s
        self.acked: list[int] = []
        self.refused_503 = 0
        # The gateways to move to, in turn, after 3 unanswered transmissions, as the firmware's
        # failover does (fnode.failover; tests/test_failover.py runs it on virtual nodes).
        self.gateways = [port, *(failover or [])]
        self.unanswered = 0

    def exchange(self, frame: bytes) -> coap.Message | None:
        """The answer to this request: a late answer to an earlier one is not it."""
        request = self.client.request(frame)
        self.client.send(request)
        mid = coap.decode(request).mid
        try:
            while (answer := self.client.recv()).mid != mid:
                pass
        except TimeoutError:
            return None
        return answer

    def run(self) -> None:
        for counter, frame in enumerate(self.frames, 1):
            while True:
                answer = self.exchange(frame)
                if answer is None:
                    self.unanswered += 1
                    if self.unanswered % 3 == 0 and len(self.gateways) > 1:
                        self.gateways.append(self.gateways.pop(0))
                        self.client.addr = ("127.0.0.1", self.gateways[0])
                    continue
                if answer.code in (coap.CHANGED, coap.VALID):
                    self.acked.append(counter)
                    break
                assert answer.code == coap.SERVICE_UNAVAILABLE, coap.code_text(answer.code)
                self.refused_503 += 1
                time.sleep(self.retry_s)
        self.client.close()


def test_postgresql_stopped_and_started_under_load_loses_no_acknowledged_frame(nodes, tmp_path):
    cluster = Cluster().start()
    with ExitStack() as stack:
        stack.callback(cluster.close)
        db = cluster.new_database()
        lines, port = start_gateway(stack, nodes, db.dsn, "--db-reconnect-max", "0.5", "--summary", "0.2")
        senders = [RetryingNode(nodes, i, port, 150, 0.05) for i in range(len(nodes.devices))]
        threads = [threading.Thread(target=s.run) for s in senders]
        for t in threads:
            t.start()
        assert wait_for(lambda: sum(len(s.acked) for s in senders) >= 100, 60)
        cluster.stop("fast")
        lost = lines.until("stdout", lambda ls: any("PostgreSQL" in line and "lost" in line for line in ls), 60)
        assert lost, lines.lines
        acked_before = sum(len(s.acked) for s in senders)
        assert wait_for(lambda: sum(s.refused_503 for s in senders) >= 10, 60)
        assert sum(len(s.acked) for s in senders) == acked_before  # nothing acknowledged meanwhile
        assert lines.until("stdout", lambda ls: any("; db unavailable since" in line for line in ls), 30)
        cluster.start()
        assert lines.until("stdout", lambda ls: any("reconnected after" in line for line in ls), 60), lines.lines
        for t in threads:
            t.join(240)
        assert all(s.acked == list(range(1, 151)) for s in senders)
        assert stored(db.dsn) == sorted((d.hex(), c) for d in nodes.devices for c in range(1, 151))
        assert wait_for(lambda: status(db.dsn)["workers"][0]["store_outages"] == 1, 30)


def wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_gateway_workers_on_postgresql_share_the_one_database_and_status_shows_each(pg_db, nodes):
    """--workers N on PostgreSQL: N processes on the port, no shard files, one database."""
    from support.ports import claimed_port
    with ExitStack() as stack:
        port = stack.enter_context(claimed_port())
        proc = subprocess.Popen(CLI + ["gateway", "--listen", f"127.0.0.1:{port}", "--db", pg_db.dsn, "--keys",
                                       str(nodes.path), "--quiet", "--workers", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stack.callback(stop_process, proc)
        lines = ProcessLines(proc)
        assert lines.until("stdout", lambda ls: any("workers 2" in line for line in ls), 60), lines.lines
        assert wait_for(lambda: [w["state"] for w in status(pg_db.dsn)["workers"]] == ["running"] * 2, 30)
        clients = [Client(("127.0.0.1", port)) for _ in range(8)]  # 8 source ports: both workers' sockets
        try:
            for k, client in enumerate(clients):
                for i in range(len(nodes.devices)):
                    assert client.post(nodes.frame(i, counter=k + 1)).code == coap.CHANGED
            assert clients[0].post(nodes.frame(0, counter=3)).code == coap.VALID
        finally:
            for client in clients:
                client.close()
        assert stored(pg_db.dsn) == sorted((d.hex(), c) for d in nodes.devices for c in range(1, 9))
        table = subprocess.run(CLI + ["status", "--db", pg_db.dsn], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "COLUMNS": "250"})
        assert table.returncode == 0 and table.stdout.count("no outage") == 2, table.stdout


def test_a_gateway_killed_under_load_loses_nothing_and_stores_nothing_twice_when_its_nodes_move(pg_db, nodes):
    """kill -9 of one of two gateways while its nodes send: they move to the other gateway after
    unanswered retransmissions and send again what was not acknowledged; frames the dead gateway
    committed but did not answer get 2.03 there. Every counter each node sent is stored once."""
    with ExitStack() as stack:
        lines_a, port_a = start_gateway(stack, nodes, pg_db.dsn)
        _, port_b = start_gateway(stack, nodes, pg_db.dsn)
        senders = [RetryingNode(nodes, i, port_a if i % 2 == 0 else port_b, 150, 0.05,
                                failover=[port_b if i % 2 == 0 else port_a], timeout_s=0.3)
                   for i in range(len(nodes.devices))]
        threads = [threading.Thread(target=s.run) for s in senders]
        for t in threads:
            t.start()
        assert wait_for(lambda: min(len(s.acked) for s in senders) >= 30, 60)
        lines_a.proc.kill()  # SIGKILL: no drain, no final commit
        lines_a.proc.wait(30)
        for t in threads:
            t.join(240)
        assert all(s.acked == list(range(1, 151)) for s in senders)
        assert all(s.gateways[0] == port_b for s in senders)  # the first gateway's nodes moved
        assert stored(pg_db.dsn) == sorted((d.hex(), c) for d in nodes.devices for c in range(1, 151))
