"""The gateway as N workers: each device belongs to one worker, which keeps its replay window and
writes its own database file (shard); a datagram reaching another worker is handed over.

In-process workers (GatewayThreads sharing a port with SO_REUSEPORT) for the details, and the
CLI's `--workers 2` processes for the whole."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from fieldnode.wire import coap
from fieldnode.infra.errors import FieldnodeError
from fieldnode.wire.frame import KIND_ACK, Verifier
from fieldnode.gateway import GatewayThread, enqueue_command, list_commands, read_status
from fieldnode.store.owners import owner_of
from fieldnode.store.records import StoreItem
from fieldnode.store.sqlite.shards import shard_path, shard_paths
from fieldnode.store.sqlite.writer import Store
from support.gateway_peers import Client, Nodes
from support.ports import claimed_port

CLI = [sys.executable, "-m", "fieldnode.cli"]


@pytest.fixture
def node_count() -> int:
    return 6


def owned_by(nodes: Nodes, worker: int, workers: int = 2) -> list[int]:
    return [i for i, d in enumerate(nodes.devices) if owner_of(d, workers) == worker]


def start_workers(stack: ExitStack, nodes: Nodes, db: Path, workers: int = 2) -> tuple[list[GatewayThread], int]:
    """Workers sharing a claimed port (they cannot take port 0: see support/ports.py), and the port."""
    port = stack.enter_context(claimed_port())
    group = f"test-{os.getpid()}-{port}"
    return [stack.enter_context(GatewayThread(nodes.keystore(), db, ("127.0.0.1", port), reuse_port=True,
                                              worker=w, workers=workers, group=group, health_interval=0.1))
            for w in range(workers)], port


def frames_in(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT device, count(*) FROM frames GROUP BY device"))


def test_the_test_devices_belong_to_both_workers(nodes):
    # The tests below need devices of each worker; owner_of is CRC-32, so this holds for good.
    assert owned_by(nodes, 0) and owned_by(nodes, 1)


def test_each_device_is_stored_by_its_worker_whichever_worker_the_datagram_reaches(tmp_path, nodes):
    db = tmp_path / "gw.db"
    with ExitStack() as stack:
        gws, port = start_workers(stack, nodes, db)
        clients = [Client(("127.0.0.1", port)) for _ in range(16)]  # 16 source ports: both sockets
        for k, c in enumerate(clients):
            for i in range(len(nodes.devices)):
                assert c.post(nodes.frame(i, counter=100 + k)).code == coap.CHANGED, (k, i)
        handed = [gt.gateway.counts.get("handed_over", 0) for gt in gws]
        assert all(handed), f"each worker handed some datagrams to the other: {handed}"
        # A counter already stored, other contents, from every source port: refused by the owner.
        for k in range(16):
            for i in range(len(nodes.devices)):
                ans = clients[(k + 5) % 16].post(nodes.frame(i, counter=100 + k, records=[{"n": "x", "v": k}]))
                assert ans.payload == b"replay", (k, i)
        # The same frame again (a node that missed the answer): 2.03, wherever it lands.
        assert clients[3].post(nodes.frame(0, counter=107)).code == coap.VALID
        for c in clients:
            c.close()
    for w in (0, 1):
        stored = frames_in(shard_path(db, w))
        assert stored == {nodes.devices[i].hex(): 16 for i in owned_by(nodes, w)}, w
    st = read_status(db)
    assert st.counters["accepted"] == 16 * 6 and st.counters["rejected.replay"] == 16 * 6
    assert st.counters["datagrams"] == 16 * 6 * 2 + 1, "a handed-over datagram is counted once"
    assert sorted(d["frames"] for d in st.devices) == [16] * 6
    assert [w["worker"] for w in st.workers] == [0, 1] and all(w["state"] == "stopped" for w in st.workers)


def test_a_burst_of_handed_over_datagrams_waits_for_room_and_none_is_lost(tmp_path, nodes):
    """The Unix socket's queue holds few datagrams (net.unix.max_dgram_qlen, 10 by default): a
    burst beyond it waits in the sending worker until the owner has read, not dropped.

    Both owners stop reading their hand-over sockets while the burst arrives, so the queues fill
    whatever the machine's speed or its max_dgram_qlen (the sender's SO_SNDBUF bounds it too)."""
    db = tmp_path / "gw.db"
    with ExitStack() as stack:
        gws, port = start_workers(stack, nodes, db)

        def waited() -> int:
            return sum(gt.call(lambda g=gt.gateway: g._peers.waited) for gt in gws)

        for gt in gws:
            gt.call(gt.gateway._handover.pause_reading)
        clients = [Client(("127.0.0.1", port)) for _ in range(16)]
        sent = [0] * len(clients)
        while not waited():
            assert sum(sent) < 3000, "the hand-over queues never filled with both owners not reading"
            for k, c in enumerate(clients):
                c.send(c.request(nodes.frame(sent[k] % 6)))  # no waiting for answers
                sent[k] += 1
            time.sleep(0.01)  # lets the workers read the round and try to hand it over
        for gt in gws:
            gt.call(gt.gateway._handover.resume_reading)
        codes = [c.recv().code for c, n in zip(clients, sent, strict=True) for _ in range(n)]
        assert codes == [coap.CHANGED] * sum(sent)
        for c in clients:
            c.close()
        counts = [gt.gateway.counts for gt in gws]
    assert sum(c.get("handed_over", 0) for c in counts) > 10
    assert sum(c.get("hand_over_dropped", 0) for c in counts) == 0
    assert sum(sum(frames_in(shard_path(db, w)).values()) for w in (0, 1)) == sum(sent)


def test_a_device_keeps_its_replay_state_when_the_number_of_workers_changes(tmp_path, nodes):
    db = tmp_path / "gw.db"
    moved = owned_by(nodes, 1)[0]  # stored by worker 1 of 2; worker 0's alone afterwards
    with ExitStack() as stack:
        _, port = start_workers(stack, nodes, db)
        c = Client(("127.0.0.1", port))
        for counter in range(1, 11):
            assert c.post(nodes.frame(moved, counter=counter)).code == coap.CHANGED
        c.close()
    assert frames_in(shard_path(db, 1)) == {nodes.devices[moved].hex(): 10}
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0)) as gt:  # one worker now
        assert gt.gateway.restored_devices == 1
        c = Client(gt.address)
        assert c.post(nodes.frame(moved, counter=10)).code == coap.VALID  # stored, by the other shard
        assert c.post(nodes.frame(moved, counter=9, records=[{"n": "x", "v": 1}])).payload == b"replay"
        assert c.post(nodes.frame(moved, counter=11)).code == coap.CHANGED
        c.close()
    # The batch check at commit, not only the window restored at start, knows the other shard:
    store = Store(db)
    store.open()
    try:
        verifier = Verifier(nodes.keystore().lookup, None)
        raw = nodes.frame(moved, counter=5, records=[{"n": "x", "v": 2}])
        (outcome,) = store.commit([StoreItem(verifier.verify(raw), raw, time.time(), "test", "")], {}, None)
        assert outcome.status == "replay"
    finally:
        store.close()
    assert frames_in(db) == {nodes.devices[moved].hex(): 1}
    (device,) = read_status(db).devices
    assert device["frames"] == 11 and device["highest_counter"] == 11


def test_a_command_for_a_device_of_another_worker_is_delivered_and_closed(tmp_path, nodes):
    db = tmp_path / "gw.db"
    i = owned_by(nodes, 1)[0]
    exp = time.time() + 600
    with ExitStack() as stack:
        _, port = start_workers(stack, nodes, db)
        cmd = nodes.command(i, 7, exp)
        cid = enqueue_command(db, nodes.devices[i], cmd, exp)  # into shard 0, as `fieldnode command` does
        c = Client(("127.0.0.1", port))
        ans = c.post(nodes.frame(i))
        assert ans.code == coap.CHANGED and ans.payload == cmd
        assert [x.state for x in list_commands(db, ids=[cid])] == ["sent"]
        assert c.post(nodes.frame(i)).payload == b""  # delivered once (until the resend time)
        ack = nodes.frame(i, kind=KIND_ACK, records=[{"n": "ack", "v": 7}, {"n": "result", "vs": "applied"}])
        assert c.post(ack).code == coap.CHANGED
        c.close()
    (info,) = list_commands(db, ids=[cid])
    assert info.state == "applied" and info.attempts == 1


def test_too_many_shards_is_a_clear_error(tmp_path):
    db = tmp_path / "gw.db"
    for k in range(11):
        store = Store(db, shard=k)
        store.open()
        store.close()
    shutil.copy(shard_path(db, 1), shard_path(db, 11))  # none of ours makes a 12th
    assert sorted(shard_paths(db)) == list(range(12))
    with pytest.raises(FieldnodeError, match="12 shard files; the gateway reads at most 11"):
        Store(db, shard=0).open()


def test_cli_workers_share_the_port_and_each_device_has_one_worker(tmp_path, nodes):
    with claimed_port() as port:  # the workers share it: no port 0 (see support/ports.py)
        dbp = tmp_path / "workers.db"
        proc = subprocess.Popen(CLI + ["gateway", "--listen", f"127.0.0.1:{port}", "--db", str(dbp), "--keys",
                                       str(nodes.path), "--workers", "2"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert "workers 2" in proc.stdout.readline()
            deadline = time.monotonic() + 30
            while sum(w["state"] == "running" for w in read_status(dbp).workers) < 2:
                assert time.monotonic() < deadline, "the second worker did not start"
                time.sleep(0.1)
            for taken in (dbp, shard_path(dbp, 1)):  # each worker holds its shard; the error names the parent
                second = subprocess.run(CLI + ["gateway", "--listen", "127.0.0.1:0",
                                               "--db", str(taken), "--keys", str(nodes.path)],
                                        capture_output=True, text=True, timeout=60)
                assert second.returncode == 2, second.stderr
                assert f"{taken.name} is in use by another gateway (process {proc.pid})" in second.stderr
            clients = [Client(("127.0.0.1", port)) for _ in range(16)]  # 16 source ports
            for k, c in enumerate(clients):
                for i in range(len(nodes.devices)):
                    assert c.post(nodes.frame(i, counter=100 + k)).code == coap.CHANGED
            for k in range(16):  # the same counters, other contents, other source ports
                ans = clients[(k + 1) % 16].post(nodes.frame(0, counter=100 + k, records=[{"n": "x", "v": k}]))
                assert ans.payload == b"replay", k
            fresh = Client(("127.0.0.1", port))
            assert fresh.post(nodes.frame(0, counter=20)).payload == b"replay"  # below the window
            for c in clients + [fresh]:
                c.close()
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    ok_lines = [line for line in out.splitlines() if " ok " in line]
    assert len(ok_lines) == 16 * 6
    for i, name in enumerate(f"node-{k + 1}" for k in range(6)):
        prefixes = {line[:4] for line in ok_lines if f" {name} " in line}
        assert prefixes == {f"[w{owner_of(nodes.devices[i], 2)}]"}, (name, prefixes)
    assert sum(sum(frames_in(p).values()) for p in shard_paths(dbp).values()) == 16 * 6
